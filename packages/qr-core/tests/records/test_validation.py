"""Impossible records are refused where they are written, read and analysed."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from qr_core.analysis import analyze, simulate_records
from qr_core.analysis.cli import EXIT_INPUT, EXIT_OK, main
from qr_core.records import (
    InvalidRecordsError,
    JsonlFileSink,
    RecordError,
    TokenSamplingRecord,
    read_records,
    require_finite,
    validate,
)


def _lines(records: list[TokenSamplingRecord]) -> str:
    # json.dumps writes NaN and Infinity literally, as a careless writer would.
    return "".join(json.dumps(r.to_json_dict()) + "\n" for r in records)


def _file(tmp_path: Path, records: list[TokenSamplingRecord], name: str = "r.jsonl") -> Path:
    path = tmp_path / name
    path.write_text(_lines(records))
    return path


BAD_VALUES = [
    ({"z_score": float("nan")}, "z_score is nan, must be finite"),
    ({"z_score": float("inf")}, "z_score is inf, must be finite"),
    ({"sample_mean": float("-inf")}, "sample_mean is -inf, must be finite"),
    ({"u": 7.0}, r"u is 7\.0, must lie in \(0, 1\)"),
    ({"u": 0.0}, r"u is 0\.0, must lie in \(0, 1\)"),
    ({"u": 1.0}, r"u is 1\.0, must lie in \(0, 1\)"),
    ({"token_prob": 0.0}, r"token_prob is 0\.0, must lie in \(0, 1\]"),
    ({"token_prob": 1.5}, r"token_prob is 1\.5, must lie in \(0, 1\]"),
    ({"token_rank": 50}, r"token_rank is 50, must be >= 0 and below num_candidates \(50\)"),
    ({"token_rank": -1}, "token_rank is -1, must be >= 0"),
    ({"sample_count": 0}, "sample_count is 0, must be >= 1"),
    ({"token_index": -2}, "token_index is -2, must be >= 0"),
    ({"u_transform": "cdf"}, r"u_transform is 'cdf', must be one of \['randomized_pit', 'phi'\]"),
]


@pytest.mark.parametrize(("change", "message"), BAD_VALUES)
def test_reader_names_file_line_and_field(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    records = simulate_records(3, seed=1)
    records[1] = dataclasses.replace(records[1], **change)  # type: ignore[arg-type]
    path = _file(tmp_path, records)
    with pytest.raises(InvalidRecordsError, match=f"1 invalid record\\(s\\): {path}:2: {message}"):
        read_records(path)
    loaded = read_records(path, skip_invalid=True)
    assert loaded.records == (records[0], records[2])
    assert loaded.where == (f"{path}:1", f"{path}:3")
    assert [str(p.where) for p in loaded.invalid] == [f"{path}:2"]


def test_the_first_five_problems_and_the_count(tmp_path: Path) -> None:
    records = [dataclasses.replace(r, u=2.0) for r in simulate_records(8, seed=2)]
    path = _file(tmp_path, records)
    with pytest.raises(InvalidRecordsError) as info:
        read_records(path)
    text = str(info.value)
    assert text.startswith("8 invalid record(s): ")
    assert f"{path}:5: u is 2.0" in text
    assert f"{path}:6:" not in text
    assert text.endswith("; ... and 3 more")
    assert len(info.value.problems) == 8


def test_duplicates_are_refused_and_discarded_records_are_no_tokens() -> None:
    kept = simulate_records(4, seed=3)
    again = dataclasses.replace(kept[1])
    recomputed = dataclasses.replace(kept[2], discarded=True, z_score=3.0)
    other_config = dataclasses.replace(kept[3], config_hash="0" * 64)
    v = validate([*kept, again, recomputed, other_config])
    assert v.tokens == (*kept, other_config)
    assert v.discarded == 1
    assert [(p.where, p.message[:30]) for p in v.problems] == [
        ("record 4", "duplicate of record 1 (request")
    ]
    with pytest.raises(InvalidRecordsError, match="record 4: duplicate of record 1"):
        analyze([*kept, again])
    report = analyze([*kept, recomputed])
    assert (report.tokens, report.discarded, report.skipped) == (4, 1, 0)
    assert report.overall.z.mean_z == pytest.approx(sum(r.z_score for r in kept) / 4)


def test_requests_with_gaps_are_reported_incomplete() -> None:
    records = simulate_records(30, seed=4, tokens_per_request=10)  # 3 requests x 10 tokens
    gappy = [r for r in records if r.token_index not in (0, 4, 5) or r.request_id.endswith("-1")]
    v = validate(gappy)
    assert v.problems == ()
    assert [(i.request_id, i.tokens, i.missing, i.missing_count) for i in v.incomplete] == [
        (records[0].request_id, 7, (0, 4, 5), 3),
        (records[20].request_id, 7, (0, 4, 5), 3),
    ]
    # Trailing tokens cannot be told apart from a shorter output: not reported.
    assert validate(records[:25]).incomplete == ()


def test_sink_refuses_a_non_finite_value_and_writes_nothing_of_the_batch(tmp_path: Path) -> None:
    records = simulate_records(3, seed=5)
    bad = dataclasses.replace(records[1], token_prob=float("nan"))
    with pytest.raises(RecordError, match="record field 'token_prob' is nan; records hold finite"):
        require_finite(bad)
    path = tmp_path / "r.jsonl"
    with JsonlFileSink(path, install_sigterm_handler=False) as sink:
        with pytest.raises(RecordError, match=r"'token_prob' is nan.*token 1\)"):
            sink.write([records[0], bad])
        sink.write(records)  # the sink stays usable
    assert b"NaN" not in path.read_bytes()
    assert read_records(path).records == tuple(records)


def test_cli_exits_non_zero_on_doubled_records_and_skip_invalid_analyses_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The case: every record twice turned 200 tokens into 400 and moved KS p.
    records = simulate_records(200, seed=6)
    path = _file(tmp_path, records + records)
    assert main([str(path)]) == EXIT_INPUT
    out, err = capsys.readouterr()
    assert out == ""
    assert "qr-analyze: error: 200 invalid record(s)" in err
    assert f"{path}:201: duplicate of {path}:1 " in err
    assert "... and 195 more" in err
    assert "--skip-invalid" in err
    assert main([str(path), "--skip-invalid", "--json"]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert (data["tokens"], data["skipped"]) == (200, 200)
    single = analyze(records).overall.ks.p_value
    assert data["overall"]["ks"]["p_value"] == single
    assert main([str(path), "--skip-invalid"]) == EXIT_OK
    assert "invalid    200 records skipped (--skip-invalid)" in capsys.readouterr().out


def test_cli_reports_bad_lines_and_incomplete_requests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = simulate_records(20, seed=7, tokens_per_request=10)
    del records[3]
    path = tmp_path / "r.jsonl"
    nan_line = _lines([dataclasses.replace(records[0], token_index=99, z_score=float("nan"))])
    path.write_text(_lines(records[:5]) + "{not json\n" + nan_line + _lines(records[5:]))
    assert main([str(path)]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert f"{path}:6: not valid JSON" in err
    assert f"{path}:7: z_score is nan, must be finite" in err
    assert main([str(path), "--skip-invalid"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "tokens     19" in out
    assert "incomplete 1 requests have missing token indexes" in out
    assert f"{records[0].request_id}: 1 missing (3)" in out


def test_a_literal_too_large_for_a_float_is_non_finite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = simulate_records(3, seed=8)
    lines = _lines(records).splitlines(keepends=True)
    data = json.loads(lines[2])
    lines[2] = json.dumps(data).replace(json.dumps(data["z_score"]), "1e999", 1) + "\n"
    path = tmp_path / "r.jsonl"
    path.write_text("".join(lines))
    assert main([str(path), "--skip-invalid", "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["problems"] == [f"{path}:3: z_score is inf, must be finite"]
    assert (report["tokens"], report["skipped"]) == (2, 1)
