"""The ``qr-analyze`` command: report, JSON, comparisons, pre-registration, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from qr_core.analysis import simulate_records
from qr_core.analysis.cli import (
    EXIT_CONFIG,
    EXIT_INPUT,
    EXIT_MISSING_EXTRA,
    EXIT_OK,
    EXIT_USAGE,
    main,
)
from qr_core.records import JsonlFileSink, TokenSamplingRecord, config_hash

H1 = config_hash({"qr_top_k": 50, "qr_temperature_strategy": "fixed"})
H2 = config_hash({"qr_top_k": 50, "qr_temperature_strategy": "edt"})


def _write(path: Path, records: list[TokenSamplingRecord]) -> Path:
    with JsonlFileSink(path, max_bytes=200_000) as sink:
        sink.write(records)
    return path


@pytest.fixture(scope="module")
def tagged_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 3,000 tokens z ~ N(0.2, 1) tagged "exp" (seed 1) and 3,000 null tokens tagged "ctl".
    exp = simulate_records(3_000, seed=1, z_shift=0.2, request_tag="exp", config=H1)
    ctl = simulate_records(3_000, seed=2, request_tag="ctl", config=H1)
    interleaved = [r for pair in zip(exp, ctl, strict=True) for r in pair]
    return _write(tmp_path_factory.mktemp("tagged") / "run.jsonl", interleaved)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_text_report(tagged_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run([str(tagged_file), "--tag-a", "exp", "--tag-b", "ctl"], capsys)
    assert code == EXIT_OK
    assert "tokens     6000" in out
    assert "requests   60" in out
    assert "sources    simulated=6000" in out
    assert "fallback   0 tokens (0.00%)" in out
    assert f"config     {H1}  (6000 tokens)" in out
    for label in ("all", "tag=ctl", "tag=exp"):
        assert f"\n{label} " in out
    assert "compare    A=tag=exp (n=3000)  B=tag=ctl (n=3000)" in out
    assert "welch-t" in out


def test_json_report_matches_the_text(
    tagged_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run([str(tagged_file), "--json", "--tag-a", "exp", "--tag-b", "ctl"], capsys)
    assert code == EXIT_OK
    data = json.loads(out)
    assert data["tokens"] == 6000
    assert data["config_hashes"] == {H1: 6000}
    assert len(data["files"][0]["segments"]) > 1  # rotated at 200 kB, all read
    comparison = data["comparison"]
    assert comparison["label_a"] == "tag=exp"
    # Planted difference 0.2 with SE about 0.026: far beyond alpha = 0.001.
    assert comparison["test"]["p_value"] < 0.001
    assert abs(comparison["test"]["difference"] - 0.2) < 4 * comparison["test"]["standard_error"]
    assert data["figures"] == []


def test_two_files_are_compared(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write(tmp_path / "a.jsonl", simulate_records(500, seed=3, config=H1))
    b = _write(tmp_path / "b.jsonl", simulate_records(400, seed=4, config=H1))
    code, out, _ = _run([str(a), str(b), "--json"], capsys)
    assert code == EXIT_OK
    data = json.loads(out)
    assert data["tokens"] == 900
    assert (data["comparison"]["label_a"], data["comparison"]["tokens_b"]) == (str(a), 400)


def test_shell_glob_of_segments_reads_each_once(
    tagged_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    everything = sorted(str(p) for p in tagged_file.parent.glob("run.jsonl*"))
    assert len(everything) > 2  # the live file and its rotated segments
    code, out, _ = _run([*everything, "--json"], capsys)
    assert code == EXIT_OK
    data = json.loads(out)
    assert data["tokens"] == 6000
    assert [f["path"] for f in data["files"]] == [str(tagged_file)]
    assert data["comparison"] is None


@pytest.mark.slow
def test_figures_are_written(
    tagged_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figs = tmp_path / "figs"
    code, out, _ = _run(
        [str(tagged_file), "--tag-a", "exp", "--tag-b", "ctl", "--figures", str(figs)], capsys
    )
    assert code == EXIT_OK
    assert sorted(p.name for p in figs.iterdir()) == ["cumulative_deviation.png", "u_histogram.png"]
    assert f"figure     {figs / 'cumulative_deviation.png'}" in out


def test_expected_config_hash(tagged_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run([str(tagged_file), "--expect-config-hash", H1], capsys)[0] == EXIT_OK
    code, out, err = _run([str(tagged_file), "--expect-config-hash", H2], capsys)
    assert code == EXIT_CONFIG
    assert out == ""
    assert f"expected config hash {H2}" in err
    assert f"found {H1} (6000 tokens)" in err


def test_mixed_configs_refused_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _write(tmp_path / "a.jsonl", simulate_records(50, seed=5, config=H1))
    b = _write(tmp_path / "b.jsonl", simulate_records(50, seed=6, config=H2))
    code, _, err = _run([str(a), str(b)], capsys)
    assert code == EXIT_CONFIG
    assert "--allow-mixed-configs" in err
    code, out, _ = _run([str(a), str(b), "--allow-mixed-configs", "--json"], capsys)
    assert code == EXIT_OK
    assert json.loads(out)["config_hashes"] == {H1: 50, H2: 50}


def test_partial_last_line_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(tmp_path / "r.jsonl", simulate_records(20, seed=7))
    with path.open("ab") as f:
        f.write(b'{"request_id": "cut off by SIGKI')
    code, out, _ = _run([str(path)], capsys)
    assert code == EXIT_OK
    assert "tokens     20" in out
    assert f"skipped partial last line {path}:22" in out  # 20 records, the seal, the cut
    assert any("partial last line" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["missing.jsonl"], EXIT_INPUT),
        (["empty.jsonl"], EXIT_INPUT),
        (["bad.jsonl"], EXIT_INPUT),
        (["ok.jsonl", "--tag-a", "exp"], EXIT_USAGE),
        (["ok.jsonl", "--tag-a", "exp", "--tag-b", "nope"], EXIT_INPUT),
    ],
)
def test_input_and_usage_errors(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    expected: int,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "bad.jsonl").write_text("{}\n")
    _write(tmp_path / "ok.jsonl", simulate_records(10, seed=8, request_tag="exp"))
    code, out, err = _run(argv, capsys)
    assert code == expected
    assert out == ""
    assert err.startswith("qr-analyze: error:")


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == EXIT_USAGE
    assert "FILE" in capsys.readouterr().err


def test_figures_without_matplotlib_exit_4(
    tagged_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, out, err = _run([str(tagged_file), "--figures", str(tmp_path)], capsys)
    assert code == EXIT_MISSING_EXTRA
    assert "qr-core[analysis]" in err
    assert out == ""


def test_console_script_is_installed(tmp_path: Path) -> None:
    path = _write(tmp_path / "r.jsonl", simulate_records(30, seed=9))
    with path.open("ab") as f:
        f.write(b'{"request_id": "cut')
    script = Path(sysconfig.get_path("scripts")) / "qr-analyze"
    done = subprocess.run(
        [str(script), str(path), "--json"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == EXIT_OK, done.stderr
    assert json.loads(done.stdout)["tokens"] == 30
    assert done.stderr.startswith("qr-analyze: WARNING: skipping partial last line")


@pytest.fixture(scope="module")
def arms_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 1,000 tokens z ~ N(0.3, 1) in arm "qrng" (seed 11) and 800 null tokens in "control".
    qrng = simulate_records(1_000, seed=11, z_shift=0.3, arm="qrng", config=H1)
    control = simulate_records(800, seed=12, arm="control", config=H1)
    return _write(tmp_path_factory.mktemp("arms") / "arms.jsonl", qrng + control)


@pytest.mark.parametrize("by", ["arm", "source"])
def test_by_arm_compares_the_two_arms(
    arms_file: Path, capsys: pytest.CaptureFixture[str], by: str
) -> None:
    code, out, _ = _run([str(arms_file), "--by", by, "--json"], capsys)
    assert code == EXIT_OK
    data = json.loads(out)
    assert data["group_by"] == "arm"
    assert [(g["label"], g["tokens"]) for g in data["groups"]] == [
        ("arm=control", 800),
        ("arm=qrng", 1000),
    ]
    c = data["comparison"]
    assert (c["label_a"], c["label_b"]) == ("arm=control", "arm=qrng")  # sorted order
    # Planted difference -0.3 with SE about 0.047: far beyond alpha = 0.001.
    assert c["test"]["p_value"] < 0.001
    assert c["test"]["ci_high"] < 0.0  # the interval excludes no difference
    width = c["test"]["ci_high"] - c["test"]["ci_low"]
    assert width == pytest.approx(2 * 1.9606 * c["test"]["standard_error"], rel=1e-3)
    assert c["bayes"]["bf10"] > 1


def test_chosen_arms_and_text_columns(arms_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run([str(arms_file), "--by", "arm", "--a", "qrng", "--b", "control"], capsys)
    assert code == EXIT_OK
    assert "compare    A=arm=qrng (n=1000)  B=arm=control (n=800)" in out
    assert "mean z 95% CI" in out
    assert "BF10 prior: shift of mean z ~ N(0, 0.02^2)" in out
    code, out, _ = _run([str(arms_file), "--by", "tag", "--json"], capsys)
    assert code == EXIT_OK
    assert json.loads(out)["comparison"] is None  # one group ("untagged") only


@pytest.mark.parametrize(
    "extra",
    [["--a", "qrng"], ["--by", "arm", "--tag-a", "x", "--tag-b", "y"], ["--b", "control"]],
)
def test_group_option_errors(
    arms_file: Path, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    code, out, err = _run([str(arms_file), *extra], capsys)
    assert code == EXIT_USAGE
    assert out == ""
    assert err.startswith("qr-analyze: error: ")
