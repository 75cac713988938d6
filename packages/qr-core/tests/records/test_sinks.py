"""In-process sinks: ring buffer, log sink, and the JSON Lines writer (queue, rotation)."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from qr_core.analysis import simulate_records
from qr_core.records import (
    JsonlFileSink,
    LogSink,
    RecordError,
    RecordSink,
    RingBufferSink,
    TokenSamplingRecord,
    read_records,
    rotated_segments,
)
from qr_core.records._live_file import LiveFile


def test_every_sink_satisfies_the_protocol(tmp_path: Path) -> None:
    sink = JsonlFileSink(tmp_path / "r.jsonl")
    try:
        for s in (RingBufferSink(3), LogSink("summary"), sink):
            assert isinstance(s, RecordSink)
    finally:
        sink.close()


# ----------------------------------------------------------------------- ring buffer


def test_ring_buffer_keeps_the_newest_and_counts_evictions() -> None:
    records = simulate_records(10, seed=1)
    sink = RingBufferSink(4)
    sink.write(records[:3])
    sink.write(records[3:])
    assert sink.records() == records[-4:]
    assert sink.stats() == {"capacity": 4, "held": 4, "written": 10, "evicted": 6}
    sink.clear()
    assert sink.records() == []
    assert sink.stats()["written"] == 10


@pytest.mark.parametrize("capacity", [0, -1, True, 2.5])
def test_ring_buffer_refuses_bad_capacity(capacity: object) -> None:
    with pytest.raises(RecordError, match="capacity must be a positive int"):
        RingBufferSink(capacity)  # type: ignore[arg-type]


# -------------------------------------------------------------------------- log sink


def test_log_sink_summary_is_one_line_per_token(caplog: pytest.LogCaptureFixture) -> None:
    records = simulate_records(3, seed=2, request_tag="exp")
    logger = logging.getLogger("test.qr.summary")
    sink = LogSink("summary", logger)
    with caplog.at_level(logging.INFO, logger=logger.name):
        sink.write(records)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert f"tok={records[1].token_id}" in lines[1]
    assert "tag=exp" in lines[0]
    assert f"u={records[2].u:.6f}" in lines[2]
    assert sink.stats() == {"logged": 3}


def test_log_sink_full_logs_every_field(caplog: pytest.LogCaptureFixture) -> None:
    record = simulate_records(1, seed=3)[0]
    logger = logging.getLogger("test.qr.full")
    with caplog.at_level(logging.INFO, logger=logger.name):
        LogSink("full", logger).write([record])
    (message,) = [r.getMessage() for r in caplog.records]
    payload = json.loads(message.removeprefix("qr record "))
    assert TokenSamplingRecord.from_json_dict(payload) == record


def test_log_sink_full_refuses_a_non_finite_value(caplog: pytest.LogCaptureFixture) -> None:
    record = dataclasses.replace(simulate_records(1, seed=3)[0], z_score=float("nan"))
    logger = logging.getLogger("test.qr.full.nan")
    with (
        caplog.at_level(logging.INFO, logger=logger.name),
        pytest.raises(RecordError, match="z_score"),
    ):
        LogSink("full", logger).write([record])
    assert caplog.records == []


def test_log_sink_formats_nothing_when_disabled(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.qr.off")
    sink = LogSink("summary", logger)
    with caplog.at_level(logging.WARNING, logger=logger.name):
        sink.write(simulate_records(2, seed=4))
    assert caplog.records == []
    assert sink.stats() == {"logged": 0}


def test_log_sink_refuses_unknown_level() -> None:
    with pytest.raises(RecordError, match=r"level must be one of \['summary', 'full'\]"):
        LogSink("none")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- JSON Lines


def test_jsonl_round_trip_and_stats(tmp_path: Path) -> None:
    records = simulate_records(250, seed=5)
    path = tmp_path / "sub" / "records.jsonl"
    with JsonlFileSink(path, flush_interval_s=0.05) as sink:
        for i in range(0, 250, 8):
            sink.write(records[i : i + 8])
    assert read_records(path).records == tuple(records)
    stats = sink.stats()
    assert stats["enqueued"] == stats["written"] == 250
    assert stats["pending"] == 0
    assert stats["bytes_written"] == path.stat().st_size
    assert stats["wait_count"] == 0


def test_numpy_scalars_are_stored_as_plain_numbers(tmp_path: Path) -> None:
    record = simulate_records(1, seed=17)[0]
    # mypy rightly objects; array code that forgets int()/float() does it anyway.
    numpy_typed = dataclasses.replace(
        record,
        token_id=np.int64(record.token_id),  # type: ignore[arg-type]
        u=np.float32(0.25),  # type: ignore[arg-type]
    )
    path = tmp_path / "r.jsonl"
    with JsonlFileSink(path) as sink:
        sink.write([numpy_typed])
    (loaded,) = read_records(path).records
    assert loaded == dataclasses.replace(record, u=0.25)
    assert type(loaded.token_id) is int


def test_jsonl_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    first, second = simulate_records(5, seed=6), simulate_records(5, seed=7)
    with JsonlFileSink(path) as sink:
        sink.write(first)
    with JsonlFileSink(path) as sink:
        sink.write(second)
    assert read_records(path).records == tuple(first + second)


def test_jsonl_rotation_keeps_every_record_in_order(tmp_path: Path) -> None:
    records = simulate_records(100, seed=8)
    path = tmp_path / "r.jsonl"
    with JsonlFileSink(path, max_bytes=5_000) as sink:
        sink.write(records)
    segments = rotated_segments(path)
    assert len(segments) >= 5
    assert [p.name for p in segments] == [f"r.jsonl.{i}" for i in range(1, len(segments) + 1)]
    assert all(p.stat().st_size <= 5_000 for p in [*segments, path])
    assert sink.stats()["rotations"] == len(segments)
    loaded = read_records(path)
    assert loaded.segments == (*segments, path)
    assert loaded.records == tuple(records)


def test_jsonl_rotation_continues_numbering_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    records = simulate_records(40, seed=9)
    with JsonlFileSink(path, max_bytes=4_000) as sink:
        sink.write(records[:20])
    before = len(rotated_segments(path))
    with JsonlFileSink(path, max_bytes=4_000) as sink:
        sink.write(records[20:])
    assert len(rotated_segments(path)) > before
    assert read_records(path).records == tuple(records)


def test_jsonl_backup_count_deletes_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "r.jsonl"
    with (
        caplog.at_level(logging.WARNING, logger="qr_core.records"),
        JsonlFileSink(path, max_bytes=2_000, backup_count=2) as sink,
    ):
        sink.write(simulate_records(30, seed=10))
    stats = sink.stats()
    assert len(rotated_segments(path)) == 2
    assert stats["segments_deleted"] == stats["rotations"] - 2 > 0
    assert any("backup_count reached" in r.getMessage() for r in caplog.records)


def _on_a_slow_disk(sink: JsonlFileSink) -> JsonlFileSink:
    """A writer that cannot keep up: every file write of ``sink`` takes 20 ms."""
    live: LiveFile = sink._live
    write = live.write

    def slow_write(data: bytes) -> None:
        time.sleep(0.02)
        write(data)

    live.write = slow_write  # type: ignore[method-assign]
    return sink


def test_burst_larger_than_queue_waits_and_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records = simulate_records(400, seed=11)
    path = tmp_path / "r.jsonl"
    with caplog.at_level(logging.WARNING, logger="qr_core.records"):
        sink = _on_a_slow_disk(JsonlFileSink(path, queue_size=16))
        for i in range(0, 400, 5):  # 80 steps of 5 tokens = 25 queues full
            sink.write(records[i : i + 5])
        sink.write(records[:0])
        sink.close()
    stats = sink.stats()
    assert read_records(path).records == tuple(records)
    assert stats["written"] == 400
    assert stats["wait_count"] > 0
    assert stats["wait_seconds_total"] > 0.0
    assert stats["wait_seconds_max"] <= stats["wait_seconds_total"]
    assert any("fell behind" in r.getMessage() for r in caplog.records)


def test_one_write_larger_than_the_queue_is_split_not_dropped(tmp_path: Path) -> None:
    records = simulate_records(100, seed=12)
    path = tmp_path / "r.jsonl"
    with _on_a_slow_disk(JsonlFileSink(path, queue_size=7)) as sink:
        sink.write(records)
    assert read_records(path).records == tuple(records)
    assert sink.stats()["wait_count"] == 1


def test_writers_on_several_threads_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    batches = [simulate_records(60, seed=100 + t, request_tag=f"t{t}") for t in range(4)]
    with JsonlFileSink(path, queue_size=10) as sink:

        def produce(batch: list[TokenSamplingRecord]) -> None:
            for i in range(0, 60, 3):
                sink.write(batch[i : i + 3])

        threads = [threading.Thread(target=produce, args=(b,)) for b in batches]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    loaded = read_records(path).records
    assert len(loaded) == 240
    for t, batch in enumerate(batches):
        assert [r for r in loaded if r.request_tag == f"t{t}"] == batch


def test_write_after_close_raises(tmp_path: Path) -> None:
    sink = JsonlFileSink(tmp_path / "r.jsonl")
    sink.close()
    sink.close()  # idempotent
    with pytest.raises(RecordError, match="is closed; 2 of 2 records not written"):
        sink.write(simulate_records(2, seed=13))


def test_torn_file_is_moved_aside_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    old = simulate_records(3, seed=14)
    lines = [json.dumps(r.to_json_dict()) for r in old]
    path.write_text("\n".join(lines) + "\n" + lines[0][:50])  # killed mid-line
    new = simulate_records(2, seed=15)
    with JsonlFileSink(path) as sink:
        sink.write(new)
    assert [p.name for p in rotated_segments(path)] == ["r.jsonl.1"]
    loaded = read_records(path)
    assert loaded.records == tuple(old + new)
    assert loaded.truncated_lines == (f"{tmp_path / 'r.jsonl.1'}:4",)


def test_unwritable_path_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RecordError, match="cannot open record file"):
        JsonlFileSink(blocker / "r.jsonl")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_bytes": 0}, "max_bytes"),
        ({"backup_count": 0}, "backup_count"),
        ({"queue_size": 0}, "queue_size"),
        ({"flush_interval_s": 0.0}, "flush_interval_s"),
    ],
)
def test_bad_arguments_are_named(tmp_path: Path, kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(RecordError, match=match):
        JsonlFileSink(tmp_path / "r.jsonl", **kwargs)  # type: ignore[arg-type]


def test_failed_writer_is_not_silent(tmp_path: Path) -> None:
    def full_disk(data: bytes) -> None:
        raise OSError(28, "No space left on device")

    sink = JsonlFileSink(tmp_path / "r.jsonl", queue_size=4)
    sink._live.write = full_disk  # type: ignore[method-assign]
    records = simulate_records(50, seed=16)

    def write_all() -> None:
        for i in range(0, 50, 2):
            sink.write(records[i : i + 2])

    with pytest.raises(RecordError, match="No space left on device"):
        write_all()
    with pytest.raises(RecordError, match="failed"):
        sink.close()
