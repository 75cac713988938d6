"""Reading record files: segments, partial last lines, bad lines."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from qr_core.analysis import simulate_records
from qr_core.records import RecordError, TokenSamplingRecord, read_records


def _lines(records: list[TokenSamplingRecord]) -> str:
    return "".join(json.dumps(r.to_json_dict()) + "\n" for r in records)


def test_partial_last_line_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    records = simulate_records(4, seed=1)
    path = tmp_path / "r.jsonl"
    path.write_text(_lines(records[:3]) + _lines(records[3:])[:-30])
    with caplog.at_level(logging.WARNING, logger="qr_core.records"):
        loaded = read_records(path)
    assert loaded.records == tuple(records[:3])
    assert loaded.truncated_lines == (f"{path}:4",)
    assert any("partial last line" in r.getMessage() for r in caplog.records)


def test_complete_record_without_newline_is_still_partial(tmp_path: Path) -> None:
    # The writer always ends a record with a newline; without it the line is unfinished.
    records = simulate_records(2, seed=2)
    path = tmp_path / "r.jsonl"
    path.write_text(_lines(records).rstrip("\n"))
    assert read_records(path).records == tuple(records[:1])


def test_segments_are_read_oldest_first(tmp_path: Path) -> None:
    records = simulate_records(11, seed=3)
    path = tmp_path / "r.jsonl"
    for n in (10, 2, 1, 9, 3, 8, 4, 7, 5, 6):  # numeric order, not name order (10 < 2)
        (tmp_path / f"r.jsonl.{n}").write_text(_lines(records[n - 1 : n]))
    path.write_text(_lines(records[10:]))
    (tmp_path / "r.jsonl.bak").write_text("not a segment")
    loaded = read_records(path)
    assert [p.name for p in loaded.segments] == [f"r.jsonl.{n}" for n in range(1, 11)] + ["r.jsonl"]
    assert loaded.records == tuple(records)


def test_a_single_segment_can_be_read_alone(tmp_path: Path) -> None:
    records = simulate_records(3, seed=4)
    (tmp_path / "r.jsonl.1").write_text(_lines(records))
    (tmp_path / "r.jsonl").write_text(_lines(simulate_records(2, seed=5)))
    assert read_records(tmp_path / "r.jsonl.1").records == tuple(records)


def test_segments_without_the_live_file_are_read(tmp_path: Path) -> None:
    records = simulate_records(3, seed=6)
    (tmp_path / "r.jsonl.1").write_text(_lines(records))
    assert read_records(tmp_path / "r.jsonl").records == tuple(records)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="does not exist"):
        read_records(tmp_path / "nothing.jsonl")


@pytest.mark.parametrize(
    ("bad_line", "match"),
    [
        ("{not json", r"r\.jsonl:2: not valid JSON"),
        ("[1, 2]", r"r\.jsonl:2: expected a JSON object, got list"),
        ('{"schema_version": 1}', r"r\.jsonl:2: record keys do not match .*missing=\['amplifier'"),
    ],
)
def test_bad_complete_line_names_file_and_line(tmp_path: Path, bad_line: str, match: str) -> None:
    records = simulate_records(2, seed=7)
    path = tmp_path / "r.jsonl"
    path.write_text(_lines(records[:1]) + bad_line + "\n" + _lines(records[1:]))
    with pytest.raises(RecordError, match=match):
        read_records(path)


def test_blank_lines_are_ignored(tmp_path: Path) -> None:
    records = simulate_records(2, seed=8)
    path = tmp_path / "r.jsonl"
    path.write_text(_lines(records[:1]) + "\n" + _lines(records[1:]))
    assert read_records(path).records == tuple(records)
