"""Several writers under one base path, write-through, and segment-series discovery."""

from __future__ import annotations

import dataclasses
import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from qr_core.analysis import simulate_records as _simulate
from qr_core.records import (
    JsonlFileSink,
    RecordError,
    TokenSamplingRecord,
    read_records,
    rotated_segments,
    writer_file,
    writer_files,
)
from qr_core.records._reader import segments_of

_DEADLINE_S = 30.0  # liveness bound on two shared cores, not a timing


def simulate_records(n: int, **kwargs: object) -> list[TokenSamplingRecord]:
    # Valid whatever the simulator puts into sample_count (the reader checks values).
    return [dataclasses.replace(r, sample_count=1) for r in _simulate(n, **kwargs)]  # type: ignore[arg-type]


def _as_writer(records: list[TokenSamplingRecord], writer: str) -> list[TokenSamplingRecord]:
    return [dataclasses.replace(r, writer_id=writer) for r in records]


def _wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + _DEADLINE_S
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.01)


# ------------------------------------------------------------------------- naming


def test_writer_file_names_one_series_per_writer(tmp_path: Path) -> None:
    base = tmp_path / "rec.jsonl"
    assert writer_file(base, "host.lab-p12-dp0").name == "rec.host_lab-p12-dp0.jsonl"
    assert writer_file(tmp_path / "records", "w1").name == "records.w1"
    with pytest.raises(RecordError, match="writer_id must contain a character other than a digit"):
        writer_file(base, "123")  # would read as segment rec.jsonl.123's sibling
    with pytest.raises(RecordError, match="writer_id"):
        JsonlFileSink(base, writer_id="")


def test_writer_files_finds_series_from_live_files_or_segments(tmp_path: Path) -> None:
    base = tmp_path / "rec.jsonl"
    for name in ["rec.a.jsonl", "rec.b.jsonl.1", "rec.jsonl", "rec.jsonl.1", "rec.x.y.jsonl"]:
        (tmp_path / name).write_text("")
    (tmp_path / "other.c.jsonl").write_text("")
    assert [p.name for p in writer_files(base)] == ["rec.a.jsonl", "rec.b.jsonl"]


# ------------------------------------------------------------------- many writers


def test_two_writers_rotating_on_one_base_lose_nothing(tmp_path: Path) -> None:
    base = tmp_path / "rec.jsonl"
    records = simulate_records(400, seed=21)
    a = _as_writer(records[0::2], "wa")
    b = _as_writer(records[1::2], "wb")
    sinks = [
        JsonlFileSink(base, writer_id=w, max_bytes=6_000, write_through=through)
        for w, through in (("wa", True), ("wb", False))
    ]
    for i in range(0, 200, 5):  # interleaved steps, as two engines would write
        sinks[0].write(a[i : i + 5])
        sinks[1].write(b[i : i + 5])
    for sink in sinks:
        sink.close()
    for writer in ("wa", "wb"):
        live = writer_file(base, writer)
        segments = rotated_segments(live)
        assert len(segments) >= 5
        # Each series is numbered from 1 without a gap: nobody took another's number.
        assert [p.name for p in segments] == [
            f"{live.name}.{i}" for i in range(1, len(segments) + 1)
        ]
        own = read_records(live).records
        assert {r.writer_id for r in own} == {writer}
    assert not base.exists()  # with writer ids nobody writes the base file itself
    loaded = read_records(base)
    # One set, every record once, in time order (the writers' records interleave).
    assert loaded.records == tuple(sorted(a + b, key=lambda r: r.logits_ready_ns))
    assert len(loaded.segments) == len(segments_of(base))


def test_threads_of_one_writer_through_sink_lose_nothing(tmp_path: Path) -> None:
    records = simulate_records(1_200, seed=22, tokens_per_request=10**9)
    with JsonlFileSink(
        tmp_path / "r.jsonl", writer_id="w", max_bytes=20_000, write_through=True
    ) as sink:

        def produce(part: list[TokenSamplingRecord]) -> None:
            for i in range(0, len(part), 7):
                sink.write(part[i : i + 7])

        threads = [threading.Thread(target=produce, args=(records[k::3],)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    loaded = read_records(tmp_path / "r.jsonl").records
    assert sorted(r.token_index for r in loaded) == list(range(1_200))
    assert sink.stats()["written"] == 1_200


def test_a_second_sink_on_the_same_series_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "rec.jsonl"
    with JsonlFileSink(base, writer_id="w") as first:
        with pytest.raises(RecordError, match="being written by another sink"):
            JsonlFileSink(base, writer_id="w")
        with JsonlFileSink(base, writer_id="v"):
            pass  # another writer id is another series
        first.write(simulate_records(2, seed=23))
    with JsonlFileSink(base) as legacy:
        with pytest.raises(RecordError, match="being written by another sink"):
            JsonlFileSink(base)
        legacy.write(simulate_records(2, seed=24))
    # After close the series is free again and is appended to.
    with JsonlFileSink(base, writer_id="w") as again:
        again.write(simulate_records(1, seed=25))
    assert len(read_records(writer_file(base, "w")).records) == 3


def test_old_layout_and_writer_series_read_as_one_set(tmp_path: Path) -> None:
    base = tmp_path / "rec.jsonl"
    old = simulate_records(30, seed=26, start_ns=1_000_000)
    new = _as_writer(simulate_records(30, seed=27, start_ns=1_000_500), "w")
    with JsonlFileSink(base, max_bytes=3_000) as legacy:
        legacy.write(old)
    with JsonlFileSink(base, writer_id="w", max_bytes=3_000, write_through=True) as sink:
        sink.write(new)
    loaded = read_records(base)
    assert loaded.records == tuple(sorted(old + new, key=lambda r: r.logits_ready_ns))
    assert loaded.segments[: len(rotated_segments(base)) + 1] == (*rotated_segments(base), base)


# ----------------------------------------------------------------- missing segments


def test_a_segment_lost_inside_a_series_is_an_error(tmp_path: Path) -> None:
    base = tmp_path / "rec.jsonl"
    with JsonlFileSink(base, writer_id="w", max_bytes=2_000) as sink:
        sink.write(simulate_records(40, seed=28))
    live = writer_file(base, "w")
    assert len(rotated_segments(live)) >= 4
    (tmp_path / f"{live.name}.2").unlink()
    with pytest.raises(RecordError, match=r"lacks segment\(s\) rec\.w\.jsonl\.2 between"):
        read_records(base)
    with pytest.raises(RecordError, match="records were lost"):
        segments_of(base)
    # What is left stays readable one segment at a time.
    assert read_records(tmp_path / f"{live.name}.3").records


def test_deleted_oldest_segments_are_reported_not_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = tmp_path / "rec.jsonl"
    with JsonlFileSink(base, writer_id="w", max_bytes=2_000, backup_count=2) as sink:
        sink.write(simulate_records(40, seed=29))
    with caplog.at_level(logging.WARNING, logger="qr_core.records"):
        loaded = read_records(base)
    assert loaded.records
    assert any("starts at segment" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------- write-through


def test_write_through_records_are_in_the_file_when_write_returns(tmp_path: Path) -> None:
    records = simulate_records(50, seed=30)
    sink = JsonlFileSink(
        tmp_path / "r.jsonl", write_through=True, flush_interval_s=3600.0, max_bytes=4_000
    )
    try:
        for i in range(0, 50, 5):
            sink.write(records[i : i + 5])
            # No close, no flush deadline reached: the bytes are already the OS's.
            assert len(read_records(tmp_path / "r.jsonl").records) == i + 5
        assert sink.stats()["rotations"] >= 3
        assert sink.stats()["flushes"] == 0  # fsync waits for its interval
    finally:
        sink.close()
    assert sink.stats()["flushes"] >= 1  # the final fsync at close


def test_write_through_fsyncs_within_the_interval(tmp_path: Path) -> None:
    with JsonlFileSink(tmp_path / "r.jsonl", write_through=True, flush_interval_s=0.05) as sink:
        sink.write(simulate_records(3, seed=31))
        _wait_for(lambda: sink.stats()["flushes"] >= 1, "the periodic fsync")


def test_write_through_after_close_raises(tmp_path: Path) -> None:
    sink = JsonlFileSink(tmp_path / "r.jsonl", write_through=True)
    sink.close()
    with pytest.raises(RecordError, match="is closed; 1 of 1 records not written"):
        sink.write(simulate_records(1, seed=32))


# --------------------------------------------------------------- killed processes

_THROUGH_WRITER = Path(__file__).parent / "helpers" / "through_writer.py"


def test_sigkill_right_after_writing_loses_no_write_through_record(tmp_path: Path) -> None:
    base = tmp_path / "rec.jsonl"
    children = [
        subprocess.Popen(
            [sys.executable, str(_THROUGH_WRITER), str(base), writer, "400"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for writer in ("wa", "wb")
    ]
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "written 400"  # the readiness signal
    for child in children:  # no close, no fsync, no atexit: only the OS has the records
        child.send_signal(signal.SIGKILL)
        child.wait()
    loaded = read_records(base)
    assert loaded.truncated_lines == ()
    for writer in ("wa", "wb"):
        mine = [r.token_index for r in loaded.records if r.writer_id == writer]
        assert mine == list(range(400))
        assert rotated_segments(writer_file(base, writer))  # both rotated on one base
