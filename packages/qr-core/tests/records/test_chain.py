"""The hash chain the file sink writes: envelope, start marker, segments, seal."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qr_core.analysis import simulate_records
from qr_core.records import (
    JsonlFileSink,
    RecordError,
    TokenSamplingRecord,
    read_records,
    rotated_segments,
    verify_chain,
    writer_file,
)
from qr_core.records._line import record_json


def _lines(path: Path) -> list[bytes]:
    files = [*rotated_segments(path), path]
    return [line for f in files if f.exists() for line in f.read_bytes().splitlines(True)]


def _chain(line: bytes) -> dict[str, object]:
    data = json.loads(line)
    envelope = data["chain"]
    assert list(data)[-1] == "chain"  # always the last key
    assert isinstance(envelope, dict)
    return envelope


def test_every_line_carries_the_hash_of_the_one_before(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with JsonlFileSink(path, max_bytes=6_000, writer_id="host-p1-dp0") as sink:
        for i in range(0, 40, 7):
            sink.write(simulate_records(40, seed=1)[i : i + 7])
    live = writer_file(path, "host-p1-dp0")
    assert len(rotated_segments(live)) >= 3  # the chain crosses several rotations
    lines = _lines(live)
    records, seal = lines[:-1], json.loads(lines[-1])
    assert len(records) == 40
    first = _chain(records[0])
    start = first.pop("start")
    assert first == {"n": 0, "prev": None, "seg": 1}
    assert isinstance(start, dict)
    assert start["writer_id"] == "host-p1-dp0"
    assert isinstance(start["started_ns"], int)
    for n, (before, line) in enumerate(itertools.pairwise(records), start=1):
        envelope = _chain(line)
        assert envelope["n"] == n
        assert envelope["prev"] == hashlib.sha256(before).hexdigest()
        assert "start" not in envelope
    assert seal == {
        "seal": {
            "series": start["series"],
            "writer_id": "host-p1-dp0",
            "count": 40,
            "last_sha256": hashlib.sha256(records[-1]).hexdigest(),
            "sealed_ns": seal["seal"]["sealed_ns"],
        }
    }


def test_the_first_line_of_each_file_names_its_segment(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with JsonlFileSink(path, max_bytes=5_000) as sink:
        sink.write(simulate_records(30, seed=2))
    segments = rotated_segments(path)
    for number, f in enumerate([*segments, path], start=1):
        lines = f.read_bytes().splitlines(True)
        first = json.loads(lines[0])
        if "seal" not in first:
            assert first["chain"]["seg"] == number
        assert all("seg" not in json.loads(x).get("chain", {}) for x in lines[1:])


def test_reader_skips_the_seal_and_sets_the_chain_aside(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    records = simulate_records(25, seed=3)
    with JsonlFileSink(path) as sink:
        sink.write(records)
    assert read_records(path).records == tuple(records)


def test_a_sink_that_wrote_nothing_writes_no_seal(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    JsonlFileSink(path).close()
    assert path.read_bytes() == b""


def test_unchained_sink_writes_plain_lines(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with JsonlFileSink(path, chain=False) as sink:
        sink.write(simulate_records(5, seed=4))
    lines = path.read_bytes().splitlines()
    assert len(lines) == 5
    assert all("chain" not in json.loads(x) for x in lines)
    report = verify_chain(path)
    assert (report.unchained, report.series, report.findings) == (5, (), ())


def test_write_through_chains_and_seals_too(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with JsonlFileSink(path, write_through=True, max_bytes=4_000) as sink:
        for i in range(0, 30, 3):
            sink.write(simulate_records(30, seed=5)[i : i + 3])
    report = verify_chain(path)
    assert report.findings == ()
    assert [(s.records, s.sealed) for s in report.series] == [(30, True)]


def test_a_second_sink_on_one_path_starts_a_new_series(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    for seed in (6, 7):
        with JsonlFileSink(path) as sink:
            sink.write(simulate_records(10, seed=seed))
    report = verify_chain(path)
    assert report.findings == ()
    assert [(s.records, s.sealed) for s in report.series] == [(10, True), (10, True)]
    assert report.series[0].series != report.series[1].series


def test_a_failed_writer_never_seals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.jsonl"
    sink = JsonlFileSink(path, write_through=True)
    sink.write(simulate_records(3, seed=8))

    def full(data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sink._live, "write", full)
    with pytest.raises(RecordError, match="failed"):
        sink.write(simulate_records(3, seed=9))
    with pytest.raises(RecordError):
        sink.close()
    assert [s.sealed for s in verify_chain(path).series] == [False]


def test_the_seal_obeys_max_bytes(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    record = simulate_records(1, seed=10)[0]
    size = len(record_json(record)) + 200  # one chained line, not two, and no seal besides
    with JsonlFileSink(path, max_bytes=size) as sink:
        sink.write([record])
    assert all(f.stat().st_size <= size for f in [*rotated_segments(path), path])
    assert verify_chain(path).findings == ()


_FLOATS = st.floats(allow_nan=False, allow_infinity=False, width=64)
_TEXT = st.text(max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    request_id=_TEXT,
    tag=st.none() | _TEXT,
    z=_FLOATS,
    index=st.integers(0, 2**62),
    fallback=st.booleans(),
    prereg=st.none() | st.text("0123456789abcdef", min_size=64, max_size=64),
)
def test_line_text_is_exactly_what_json_writes(
    request_id: str, tag: str | None, z: float, index: int, fallback: bool, prereg: str | None
) -> None:
    record = dataclasses.replace(
        simulate_records(1, seed=11)[0],
        request_id=request_id,
        request_tag=tag,
        z_score=z,
        token_index=index,
        fallback=fallback,
        preregistration_sha256=prereg,
    )
    expected = json.dumps(record.to_json_dict(), separators=(",", ":"), allow_nan=False)
    assert record_json(record) + "}" == expected
    assert TokenSamplingRecord.from_json_dict(json.loads(expected)) == record


def test_numpy_scalars_are_written_as_the_numbers_they_hold() -> None:
    record = dataclasses.replace(
        simulate_records(1, seed=12)[0],
        z_score=np.float64(0.25),
        token_id=np.int64(7),  # type: ignore[arg-type]
        fallback=np.bool_(True),  # type: ignore[arg-type]
    )
    data = json.loads(record_json(record) + "}")
    assert (data["z_score"], data["token_id"], data["fallback"]) == (0.25, 7, True)


def test_a_non_finite_number_never_reaches_the_text() -> None:
    record = dataclasses.replace(simulate_records(1, seed=13)[0], z_score=math.inf)
    with pytest.raises(ValueError, match="no JSON number"):
        record_json(record)
