"""``qr-entropy calibrate`` and ``check``: a calibration sized by the plan and bound to its
device, its settings and its file (issue 24)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from qr_core import load_calibration
from qr_core.analysis import blocks_for_power_loss
from qr_core.analysis.cli import main as qr_analyze
from qr_entropy import cli
from qr_entropy.cli import EXIT_ERROR, EXIT_OK, main

SAMPLE_COUNT = 256


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("QR_SAMPLE_COUNT", "QR_SIGNAL_AMPLIFIER_TYPE", "QR_CALIBRATION_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QR_ENTROPY_SOURCE_TYPE", "system")
    return monkeypatch


def _calibrate(path: Path, *extra: str) -> int:
    argv = ["calibrate", "--blocks", "200", "--sample-count", str(SAMPLE_COUNT)]
    return main([*argv, "--output", str(path), *extra])


def test_the_file_carries_the_device_binding(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("QR_ENTROPY_SOURCE_TYPE", "mock_uniform")
    env.setenv("QR_MOCK_UNIFORM_SEED", "3")
    assert _calibrate(tmp_path / "cal.json") == EXIT_OK
    cal = load_calibration(tmp_path / "cal.json")
    assert (cal.format_version, cal.source_type, cal.device_id) == (
        2,
        "mock_uniform",
        "pcg64(seed=3,bias=0.0)",
    )
    assert (cal.sample_count, cal.amplifier, cal.source_address) == (
        SAMPLE_COUNT,
        "zscore_mean",  # the default amplifier
        "",
    )
    assert math.isfinite(cal.mean_std_cov)


def test_an_existing_file_is_kept_without_force(
    env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cal.json"
    assert _calibrate(path) == EXIT_OK
    before = path.read_text()
    capsys.readouterr()
    assert _calibrate(path) == EXIT_ERROR
    assert "exists; refusing to overwrite a calibration (pass --force" in capsys.readouterr().err
    assert path.read_text() == before
    assert _calibrate(path, "--force") == EXIT_OK
    assert path.read_text() != before


@pytest.mark.parametrize("where", ["missing-folder", "read-only"])
def test_an_unwritable_output_fails_before_any_draw(
    env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("drew blocks for an output that cannot be written")

    env.setattr(cli, "run_calibration", never)
    if where == "missing-folder":
        path = tmp_path / "nonexistent" / "x.json"
        expected = "does not exist"
    else:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o500)
        path = folder / "x.json"
        expected = "cannot be written"
        env.setattr(
            "tempfile.NamedTemporaryFile",
            lambda **kwargs: (_ for _ in ()).throw(PermissionError(13, "Permission denied")),
        )
    assert _calibrate(path) == EXIT_ERROR
    assert expected in capsys.readouterr().err
    assert not path.exists()


def test_for_tokens_asks_the_plan_for_its_blocks(
    env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cal.json"
    argv = ["calibrate", "--for-tokens", "20", "--sample-count", str(SAMPLE_COUNT)]
    assert main([*argv, "--output", str(path)]) == EXIT_OK
    out = capsys.readouterr().out
    blocks = math.ceil(blocks_for_power_loss(20, 0.01, 0.8, 0.02, calibrated_arms=1))
    assert blocks == 239  # 11.93 T
    assert "20 tokens per arm, 1 calibrated arm(s), at most 2 points" in out
    assert f"{blocks:,} blocks (B/T = 11.9)" in out
    assert f"calibrate: drawing {blocks:,} blocks x {SAMPLE_COUNT} bytes = " in out
    assert " MB/s about " in out
    assert load_calibration(path).blocks == blocks
    two = ["--calibrated-arms", "2", "--force"]
    assert main([*argv, "--output", str(path), *two]) == EXIT_OK
    assert load_calibration(path).blocks == math.ceil(
        blocks_for_power_loss(20, 0.01, 0.8, 0.02, calibrated_arms=2)
    )


def test_check_refuses_a_calibration_of_another_source(
    env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The case: calibrated on mock_uniform, checked against system.
    env.setenv("QR_ENTROPY_SOURCE_TYPE", "mock_uniform")
    assert _calibrate(tmp_path / "cal.json") == EXIT_OK
    env.setenv("QR_CALIBRATION_PATH", str(tmp_path / "cal.json"))
    capsys.readouterr()
    assert main(["check", "--source", "system", "--samples", "20"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "was made on source 'mock_uniform'" in err
    assert "this source is 'system' (device_id 'os.urandom')" in err


def test_check_prints_what_it_used_and_refuses_conflicting_settings(
    env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cal.json"
    assert _calibrate(path) == EXIT_OK
    sha = load_calibration(path).sha256
    env.setenv("QR_CALIBRATION_PATH", str(path))
    capsys.readouterr()
    main(["check", "--samples", "50", "--alpha", "0.001"])
    out = capsys.readouterr().out
    assert (
        f"amplifier      zscore_mean, sample_count {SAMPLE_COUNT} (from the calibration {sha[:12]}"
        in out
    )
    env.setenv("QR_SAMPLE_COUNT", "512")
    assert main(["check", "--samples", "5"]) == EXIT_ERROR
    assert "QR_SAMPLE_COUNT=512 conflicts with QR_CALIBRATION_PATH" in capsys.readouterr().err
    env.setenv("QR_SAMPLE_COUNT", str(SAMPLE_COUNT))  # explicit, and equal: fine
    env.setenv("QR_SIGNAL_AMPLIFIER_TYPE", "zscore_bits")
    assert main(["check", "--samples", "5"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "QR_SIGNAL_AMPLIFIER_TYPE='zscore_bits' conflicts with QR_CALIBRATION_PATH" in err
    assert "measured for amplifier 'zscore_mean'" in err
    env.delenv("QR_CALIBRATION_PATH")
    main(["check", "--samples", "20", "--bytes", "512"])
    assert "amplifier      zscore_mean, sample_count 512 (tests against the ideal null)" in (
        capsys.readouterr().out
    )


def test_calibrate_before_and_after_a_run_then_compare(
    env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before, after = tmp_path / "before.json", tmp_path / "after.json"
    assert _calibrate(before) == EXIT_OK
    assert _calibrate(after) == EXIT_OK
    capsys.readouterr()
    assert qr_analyze(["drift", str(before), str(after), "--json"]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert data["df"] == 1
    assert data["min_detectable_z"] == pytest.approx(2.8016 * math.sqrt(2 / 200), rel=1e-3)
