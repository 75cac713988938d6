"""verify_chain on a record set of two writers with rotation: each tampering named."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from qr_core.analysis import simulate_records
from qr_core.records import (
    TAMPERING,
    ChainReport,
    JsonlFileSink,
    read_records,
    rotated_segments,
    verify_chain,
    writer_file,
)

W1, W2 = "host-p1-dp0", "host-p2-dp0"
Lines = list[bytes]


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two writers, 60 records each in steps of 7, rotating every few records."""
    base = tmp_path_factory.mktemp("set") / "r.jsonl"
    for writer, seed in ((W1, 1), (W2, 2)):
        records = simulate_records(60, seed=seed, tokens_per_request=10)
        with JsonlFileSink(base, writer_id=writer, max_bytes=8_000) as sink:
            for i in range(0, 60, 7):
                sink.write(records[i : i + 7])
    return base


@pytest.fixture
def copy(original: Path, tmp_path: Path) -> Path:
    for f in original.parent.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path / original.name


def _edit(path: Path, change: Callable[[Lines], Lines]) -> None:
    path.write_bytes(b"".join(change(path.read_bytes().splitlines(True))))


def _only(report: ChainReport, kind: str) -> list[str]:
    """The places of the findings; every finding must be of ``kind``."""
    assert {f.kind for f in report.findings} == {kind}, [str(f) for f in report.findings]
    return [f.where for f in report.findings]


def test_untouched_set_verifies_clean(original: Path) -> None:
    report = verify_chain(original)
    assert report.findings == ()
    assert not report.tampered
    assert [(s.writer_id, s.records, s.sealed) for s in report.series] == [
        (W1, 60, True),
        (W2, 60, True),
    ]
    assert len(rotated_segments(writer_file(original, W1))) >= 4
    assert all(s.final_sha256 and len(s.final_sha256) == 64 for s in report.series)


def test_deleted_line_is_named_with_the_line_after_it(copy: Path) -> None:
    segment = writer_file(copy, W1).with_name(writer_file(copy, W1).name + ".3")
    _edit(segment, lambda lines: lines[:2] + lines[3:])
    report = verify_chain(copy)
    assert report.tampered
    assert _only(report, "deleted") == [f"{segment}:3"]
    assert "1 record(s)" in report.findings[0].message


def test_deleted_request_is_found_in_every_place(copy: Path) -> None:
    live = writer_file(copy, W1)
    victim = "sim-1-untagged-no-arm-2"  # records 20..29 of writer 1
    for f in [*rotated_segments(live), live]:
        _edit(f, lambda lines: [x for x in lines if victim.encode() not in x])
    assert _only(verify_chain(copy), "deleted")
    assert victim not in {r.request_id for r in read_records(copy).records}


def test_swapped_lines_are_reordered(copy: Path) -> None:
    segment = writer_file(copy, W2).with_name(writer_file(copy, W2).name + ".2")
    _edit(segment, lambda lines: [lines[4], *lines[1:4], lines[0], *lines[5:]])
    assert sorted(_only(verify_chain(copy), "reordered")) == [f"{segment}:1", f"{segment}:5"]


def test_neighbours_swapped_are_one_reordering(copy: Path) -> None:
    segment = writer_file(copy, W2).with_name(writer_file(copy, W2).name + ".2")
    _edit(segment, lambda lines: [lines[0], lines[2], lines[1], *lines[3:]])
    assert len(_only(verify_chain(copy), "reordered")) == 1


def test_edited_digit_of_a_z_is_named(copy: Path) -> None:
    segment = writer_file(copy, W1).with_name(writer_file(copy, W1).name + ".2")

    def edit(lines: Lines) -> Lines:
        record = json.loads(lines[1])
        text = json.dumps(record["z_score"])
        digit = next(i for i, c in enumerate(text) if c in "123456789")
        changed = text[:digit] + str(int(text[digit]) % 9 + 1) + text[digit + 1 :]
        old = b'"z_score":' + text.encode()
        assert lines[1].count(old) == 1
        return [lines[0], lines[1].replace(old, b'"z_score":' + changed.encode()), *lines[2:]]

    _edit(segment, edit)
    assert _only(verify_chain(copy), "edited") == [f"{segment}:2"]
    assert len(read_records(copy).records) == 120  # the reader alone sees nothing wrong


def test_edited_last_record_is_caught_by_the_seal(copy: Path) -> None:
    live = writer_file(copy, W2)
    _edit(
        live,
        lambda lines: [
            *lines[:-2],
            lines[-2].replace(b'"token_rank":0', b'"token_rank":1'),
            lines[-1],
        ],
    )
    assert _only(verify_chain(copy), "edited") == [
        f"{live}:{len(live.read_bytes().splitlines()) - 1}"
    ]


def test_duplicated_line_is_inserted(copy: Path) -> None:
    segment = writer_file(copy, W1).with_name(writer_file(copy, W1).name + ".2")
    _edit(segment, lambda lines: [*lines[:2], lines[1], *lines[2:]])
    assert _only(verify_chain(copy), "inserted") == [f"{segment}:3"]


def test_foreign_line_is_inserted(copy: Path) -> None:
    segment = writer_file(copy, W1).with_name(writer_file(copy, W1).name + ".2")
    plain = json.dumps(simulate_records(1, seed=99)[0].to_json_dict()).encode() + b"\n"
    _edit(segment, lambda lines: [lines[0], plain, *lines[1:]])
    assert _only(verify_chain(copy), "inserted") == [f"{segment}:2"]


def test_dropped_segment_is_named(copy: Path) -> None:
    live = writer_file(copy, W1)
    dropped = live.with_name(live.name + ".3")
    dropped.unlink()
    report = verify_chain(copy)
    places = _only(report, "missing-segment")
    assert str(dropped) in places
    assert f"{live}.4:1" in places  # where its records are missing from the chain


def test_dropped_first_segment_is_named(copy: Path) -> None:
    live = writer_file(copy, W1)
    live.with_name(live.name + ".1").unlink()
    assert str(live.with_name(live.name + ".1")) in _only(verify_chain(copy), "missing-segment")


def test_renamed_segments_hide_no_gap(copy: Path) -> None:
    live = writer_file(copy, W1)
    segments = rotated_segments(live)
    segments[2].unlink()
    for s in segments[3:]:  # close the gap in the names
        s.rename(s.with_name(f"{live.name}.{int(s.name.rsplit('.', 1)[1]) - 1}"))
    assert _only(verify_chain(copy), "missing-segment")


def test_dropped_live_file_is_named(copy: Path) -> None:
    live = writer_file(copy, W2)
    live.unlink()
    report = verify_chain(copy)
    assert report.tampered
    assert str(live) in [f.where for f in report.findings if f.kind == "missing-segment"]


def test_truncated_tail_is_unsealed_not_tampered(copy: Path) -> None:
    live = writer_file(copy, W2)
    data = live.read_bytes()
    cut = data.rfind(b"\n", 0, len(data) - 400)  # inside the last record but one
    live.write_bytes(data[: cut + 150])
    lines = live.read_bytes().splitlines(True)
    report = verify_chain(copy)
    assert not report.tampered
    (finding,) = report.findings
    assert finding.kind == "unsealed"
    assert finding.where == f"{live}:{len(lines) - 1}"  # the last intact record
    assert f"{live}:{len(lines)}" in finding.message  # the partial line after it
    assert [s.sealed for s in report.series] == [True, False]


def test_removed_seal_reads_as_unsealed(copy: Path) -> None:
    _edit(writer_file(copy, W1), lambda lines: lines[:-1])
    report = verify_chain(copy)
    assert not report.tampered
    assert [f.kind for f in report.findings] == ["unsealed"]


def test_deleted_last_records_before_the_seal(copy: Path) -> None:
    live = writer_file(copy, W1)
    _edit(live, lambda lines: [*lines[:-3], lines[-1]])
    places = _only(verify_chain(copy), "deleted")
    assert places == [f"{live}:{len(live.read_bytes().splitlines())}"]  # the seal


def test_a_line_cut_inside_a_segment_is_tampering(copy: Path) -> None:
    segment = writer_file(copy, W1).with_name(writer_file(copy, W1).name + ".2")
    data = segment.read_bytes()
    segment.write_bytes(data[: len(data) - 100])
    report = verify_chain(copy)
    assert report.tampered
    assert {f.kind for f in report.findings} <= {"edited", "deleted"}


def test_version_2_records_are_unchained_not_tampered(tmp_path: Path) -> None:
    path = tmp_path / "old.jsonl"
    lines = []
    for r in simulate_records(4, seed=5):
        d = r.to_json_dict()
        for added in ("preregistration_sha256", "calibration_blocks", "entropy_read_started_ns"):
            d.pop(added, None)
        d = {
            k: v
            for k, v in d.items()
            if not k.startswith("calibration_") or k == "calibration_sha256"
        }
        d["schema_version"] = 2
        lines.append(json.dumps(d) + "\n")
    path.write_text("".join(lines))
    assert len(read_records(path).records) == 4
    report = verify_chain(path)
    assert (report.unchained, report.findings, report.tampered) == (4, (), False)


def test_tampering_kinds_are_the_documented_ones() -> None:
    assert frozenset({"deleted", "inserted", "reordered", "edited", "missing-segment"}) == TAMPERING
