"""QR_CALIBRATION_PATH in the processor: checked at start and per request, and recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate

from qr_core import Calibration
from qr_core.records import TokenSamplingRecord
from qr_entropy import EntropyConfig, run_calibration
from qr_vllm import QRParamsError, QRSamplingLogitsProcessor, calibrated_hash

from .engine_parts import built_processor

SAMPLE_COUNT = 256


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("QR_ENTROPY_SOURCE_TYPE", "mock_uniform")
    monkeypatch.setenv("QR_MOCK_UNIFORM_SEED", "99")
    monkeypatch.setenv("QR_SAMPLE_COUNT", str(SAMPLE_COUNT))
    monkeypatch.setenv("QR_DIAGNOSTIC_MODE", "true")
    return monkeypatch


def _calibration(
    tmp_path: Path, sample_count: int = SAMPLE_COUNT, seed: int = 99
) -> tuple[Path, Calibration]:
    # Seed 99 is the engine's source (``env``): the same device_id, so the same device.
    config = EntropyConfig(entropy_source_type="mock_uniform", mock_uniform_seed=seed)
    cal = run_calibration(config, blocks=40, amplifier="zscore_mean", sample_count=sample_count)
    path = tmp_path / f"cal-{sample_count}.json"
    cal.save(path)
    return path, cal


def _one_record(proc: QRSamplingLogitsProcessor) -> TokenSamplingRecord:
    params = SamplingParams(extra_args={"qr_request_tag": "cal"})
    proc.update_state(BatchUpdate(batch_size=1, removed=[], added=[(0, params, [1], [])], moved=[]))
    proc.apply(torch.randn(1, 32))
    (record,) = proc.diagnostic_records()
    proc.close()
    return record


def test_records_carry_the_calibration_and_its_hash(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    plain = _one_record(built_processor())
    assert plain.calibration_sha256 is None
    assert plain.u_transform == "randomized_pit"

    path, cal = _calibration(tmp_path)
    env.setenv("QR_CALIBRATION_PATH", str(path))
    calibrated = _one_record(built_processor())
    assert calibrated.calibration_sha256 == cal.sha256
    assert calibrated.u_transform == "randomized_pit"
    assert calibrated.config_hash == calibrated_hash(plain.config_hash, cal)
    assert calibrated.config_hash != plain.config_hash
    # The figures the analysis needs (schema 3).
    assert calibrated.calibration_blocks == 40
    assert (calibrated.calibration_mean, calibrated.calibration_std) == (cal.mean, cal.std)
    assert calibrated.calibration_mean_se_z == pytest.approx(1 / 40**0.5, rel=1e-12)
    assert calibrated.calibration_std_se_z == pytest.approx(cal.std_se / cal.std, rel=1e-12)


def test_a_calibration_of_another_device_is_refused_at_start(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The start-up probe reads the device_id the source reports: seed 5 is another device.
    path, _ = _calibration(tmp_path, seed=5)
    env.setenv("QR_CALIBRATION_PATH", str(path))
    with pytest.raises(
        QRParamsError,
        match=r"QR_CALIBRATION_PATH: .*device_id 'pcg64\(seed=5,bias=0.0\)'.*"
        r"reports device_id 'pcg64\(seed=99,bias=0.0\)'",
    ):
        built_processor()


def test_the_phi_setting_is_recorded(env: pytest.MonkeyPatch) -> None:
    env.setenv("QR_SIGNAL_AMPLIFIER_TYPE", "phi_approx_zscore_mean")
    record = _one_record(built_processor())
    assert record.u_transform == "phi"
    assert record.amplifier == "phi_approx_zscore_mean"


def test_a_mismatching_calibration_is_refused_at_start(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path, _ = _calibration(tmp_path, sample_count=512)
    env.setenv("QR_CALIBRATION_PATH", str(path))
    with pytest.raises(QRParamsError, match=r"calibration sample_count=512.*sample_count=256"):
        built_processor()
    env.setenv("QR_CALIBRATION_PATH", str(tmp_path / "missing.json"))
    with pytest.raises(QRParamsError, match="QR_CALIBRATION_PATH: calibration file"):
        built_processor()


def test_a_request_may_not_leave_the_calibrated_settings(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path, _ = _calibration(tmp_path)
    env.setenv("QR_CALIBRATION_PATH", str(path))
    QRSamplingLogitsProcessor.validate_params(SamplingParams(extra_args={"qr_top_k": 5}))
    bad = SamplingParams(extra_args={"qr_sample_count": 512})
    with pytest.raises(QRParamsError, match=r"calibration sample_count=256.*sample_count=512"):
        QRSamplingLogitsProcessor.validate_params(bad)
    bad = SamplingParams(extra_args={"qr_signal_amplifier_type": "zscore_bits"})
    with pytest.raises(QRParamsError, match="calibration amplifier 'zscore_mean'"):
        QRSamplingLogitsProcessor.validate_params(bad)
