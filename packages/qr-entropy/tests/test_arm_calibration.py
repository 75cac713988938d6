"""``qr-entropy calibrate --arm`` and ``check --arm``: one experiment arm of ``QR_SOURCES``.

The arm ``biased`` is the ``mock_uniform`` source with a byte mean of 127.5 + 5
(seeded: the bias is under test, not the randomness, so every run is the same
run); the top-level source is ``system``. 200 fetches of 256 bytes each: the
bias is about 15 standard errors of the byte mean, so the ideal-null tests
reject it, while the drift tests against the arm's own calibration (drawn with
another seed) accept it at alpha 0.001.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qr_core import load_calibration
from qr_entropy.cli import EXIT_ERROR, EXIT_OK, EXIT_TEST_FAILED, main

SAMPLE_COUNT = 256
BIASED = {"entropy_source_type": "mock_uniform", "mock_uniform_bias": 5.0}
CHECK = ["--samples", "200", "--alpha", "0.001", "--json"]


def _arms(monkeypatch: pytest.MonkeyPatch, seed: int, **biased: object) -> None:
    table = {
        "biased": {**BIASED, "mock_uniform_seed": seed, **biased},
        "control": {"entropy_source_type": "system"},
    }
    monkeypatch.setenv("QR_SOURCES", json.dumps(table))


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("QR_ENTROPY_SOURCE_TYPE", "system")
    monkeypatch.setenv("QR_SAMPLE_COUNT", str(SAMPLE_COUNT))
    monkeypatch.setenv("QR_SIGNAL_AMPLIFIER_TYPE", "zscore_mean")
    return monkeypatch


@pytest.fixture
def calibration(env: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    _arms(env, seed=1)
    path = tmp_path / "biased.json"
    assert main(["calibrate", "--arm", "biased", "--blocks", "400", "--output", str(path)]) == 0
    return path


def test_calibrate_arm_measures_the_arms_source(calibration: Path) -> None:
    cal = load_calibration(calibration)
    # The arm's source, not the top-level one (system), with the top-level sampling settings.
    assert cal.source_type == "mock_uniform"
    assert (cal.amplifier, cal.sample_count, cal.blocks) == ("zscore_mean", SAMPLE_COUNT, 400)
    # A byte mean of 132.5 instead of 127.5: the byte sum of the statistic's bytes
    # is 5 per byte above the null (within 4 standard errors; 1.4 in this seeded run).
    assert abs(cal.mean - cal.null_mean - 5.0 * cal.statistic_bytes) < 4 * cal.mean_se


def test_check_arm_tests_drift_from_the_arms_own_calibration(
    env: pytest.MonkeyPatch, calibration: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The same device (a seeded mock's device_id names its seed): its first 200 blocks
    # again, which the drift tests accept at alpha 0.001.
    _arms(env, seed=1, calibration_path=str(calibration))
    capsys.readouterr()
    assert main(["check", "--arm", "biased", *CHECK]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["source"] == "mock_uniform"
    assert report["bytes_per_fetch"] == SAMPLE_COUNT  # the calibration's sample_count
    assert report["amplifier"] == "zscore_mean"
    assert report["calibration_sha256"] == load_calibration(calibration).sha256
    assert next(t["name"] for t in report["tests"]) == "statistic_drift_z"


def test_check_arm_refuses_the_calibration_of_another_device(
    env: pytest.MonkeyPatch, calibration: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Another seed is another device_id: the calibration does not describe it.
    _arms(env, seed=2, calibration_path=str(calibration))
    capsys.readouterr()
    assert main(["check", "--arm", "biased", *CHECK]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "device_id 'pcg64(seed=1,bias=5.0)'" in err
    assert "reports device_id 'pcg64(seed=2,bias=5.0)'" in err
    assert err.startswith("qr-entropy check: ConfigError: QR_SOURCES: arm 'biased'")


def test_check_arm_never_uses_the_top_level_calibration(
    env: pytest.MonkeyPatch, calibration: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # QR_CALIBRATION_PATH describes the top-level device: the arm is tested against
    # the ideal null, which its bias fails.
    env.setenv("QR_CALIBRATION_PATH", str(calibration))
    _arms(env, seed=2)
    capsys.readouterr()
    assert main(["check", "--arm", "biased", "--bytes", str(SAMPLE_COUNT), *CHECK]) == (
        EXIT_TEST_FAILED
    )
    report = json.loads(capsys.readouterr().out)
    assert report["source"] == "mock_uniform"
    assert "byte_chi_square" in [t["name"] for t in report["tests"]]


@pytest.mark.parametrize("command", ["check", "calibrate"])
def test_an_unknown_arm_exits_2_with_one_line_naming_the_arms(
    env: pytest.MonkeyPatch, command: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    extra = (
        ["--blocks", "4", "--output", str(tmp_path / "x.json")] if command == "calibrate" else []
    )
    _arms(env, seed=1)
    assert main([command, "--arm", "biasd", *extra]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "--arm 'biasd' is not an arm of QR_SOURCES; configured: 'biased', 'control'" in err
    assert len(err.strip().splitlines()) == 1, err
    env.delenv("QR_SOURCES")
    assert main([command, "--arm", "biased", *extra]) == EXIT_ERROR
    assert "configured: none (QR_SOURCES is unset)" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_a_missing_arm_calibration_names_the_arm_and_the_path(
    env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.json"
    _arms(env, seed=1, calibration_path=str(missing))
    assert main(["check", "--arm", "biased", "--samples", "2"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert f"QR_SOURCES: arm 'biased': calibration_path: calibration file '{missing}'" in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("command", ["check", "calibrate"])
def test_arm_and_source_exclude_each_other(
    env: pytest.MonkeyPatch, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _arms(env, seed=1)
    extra = ["--blocks", "4", "--output", "x.json"] if command == "calibrate" else []
    with pytest.raises(SystemExit) as info:
        main([command, "--arm", "biased", "--source", "system", *extra])
    assert info.value.code == EXIT_ERROR
    assert "not allowed with argument" in capsys.readouterr().err
