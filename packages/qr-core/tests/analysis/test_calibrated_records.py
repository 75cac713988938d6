"""Calibrations bound to records: calibration format 2, the builder's calibration fields,
and ``qr-analyze`` on calibrated arms (one configuration per arm, calibration files)."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from qr_core import (
    Calibration,
    SamplingConfig,
    build_amplifier,
    load_calibration,
)
from qr_core.analysis import analyze, simulate_records
from qr_core.analysis.cli import EXIT_CONFIG, EXIT_INPUT, EXIT_OK, main
from qr_core.records import (
    JsonlFileSink,
    RecordError,
    TokenSamplingRecord,
    build_token_records,
    config_hash,
    read_records,
    validate,
)

FIXTURES = Path(__file__).parents[1] / "records" / "fixtures"
H1 = config_hash({"arm": "qrng", "calibration": "x"})
H2 = config_hash({"arm": "control"})


def _calibration(rows: int = 3_000, seed: int = 18) -> Calibration:
    amp = build_amplifier(SamplingConfig(signal_amplifier_type="zscore_bits", sample_count=256))
    builder = amp.calibration_builder()
    # A skewed device: bytes below 200 only, so S has a third moment.
    builder.add(np.random.default_rng(seed).integers(0, 200, (rows, 256), dtype=np.uint8))
    return builder.finish(
        source_type="mock_uniform",
        source_address="",
        device_id="dev-18",
        started_at="2026-01-05T10:00:00+00:00",
        finished_at="2026-01-05T10:00:01+00:00",
        duration_s=1.0,
    )


# ------------------------------------------------------------- calibration format 2


def test_format_2_carries_the_covariance_of_mean_and_std() -> None:
    cal = _calibration()
    amp = build_amplifier(SamplingConfig(signal_amplifier_type="zscore_bits", sample_count=256))
    raw = np.random.default_rng(18).integers(0, 200, (3_000, 256), dtype=np.uint8)
    s = amp.integer_statistic(raw).astype(np.float64)
    d = s - s.mean()
    assert cal.format_version == 2
    assert cal.mean_std_cov == pytest.approx(np.mean(d**3) / (2 * cal.std * 3_000), rel=1e-12)


def test_a_format_1_file_still_loads_and_verifies() -> None:
    cal = load_calibration(FIXTURES / "calibration_format1.json")
    assert (cal.format_version, cal.mean_std_cov) == (1, 0.0)
    assert "mean_std_cov" not in cal.content()
    assert cal.sha256.startswith("2045cfe40b51")


def test_device_mismatch_names_both_ids() -> None:
    cal = _calibration()
    assert cal.device_mismatch("dev-18") is None
    message = cal.device_mismatch("qrng-7")
    assert message is not None
    assert "'dev-18'" in message
    assert "'qrng-7'" in message
    assert cal.sha256[:12] in message
    assert "(none)" in (cal.device_mismatch("") or "")


# ----------------------------------------------------------------------- builder


@dataclasses.dataclass(frozen=True)
class _Rows:
    u: np.ndarray
    z_score: np.ndarray
    sample_mean: np.ndarray
    temperature: np.ndarray
    shannon_entropy: np.ndarray
    token_id: np.ndarray
    token_rank: np.ndarray
    token_prob: np.ndarray
    num_candidates: np.ndarray


@dataclasses.dataclass(frozen=True)
class _Fetch:
    source: str = "grpc"
    device_id: str = "dev-18"
    sequence_id: int | None = 1
    requested_ns: int = 10
    generated_ns: int | None = None
    received_ns: int = 20
    fallback: bool = False
    fallback_reason: str | None = None


def _build(**kwargs: object) -> list[TokenSamplingRecord]:
    rows = _Rows(*(np.full(2, v) for v in (0.5, 0.1, 127.5, 0.7, 1.0, 3, 0, 0.4, 9)))
    return build_token_records(
        rows,
        rows,
        rows,
        request_id=["r0", "r1"],
        token_index=[0, 0],
        logits_ready_ns=5,
        fetch=_Fetch(),
        raw=np.zeros((2, 4), np.uint8),
        amplifier="zscore_bits",
        temperature_strategy="fixed",
        u_transform="randomized_pit",
        top_k=50,
        top_p=1.0,
        config_hash="h",
        **kwargs,  # type: ignore[arg-type]
    )


def test_the_builder_writes_the_calibrations_figures() -> None:
    cal = _calibration()
    first, second = _build(calibration=[cal, None])
    assert first.calibration_sha256 == cal.sha256
    assert (first.calibration_blocks, first.calibration_mean, first.calibration_std) == (
        3_000,
        cal.mean,
        cal.std,
    )
    assert first.calibration_mean_se_z == pytest.approx(1 / math.sqrt(3_000), rel=1e-12)
    assert first.calibration_std_se_z == pytest.approx(cal.std_se / cal.std, rel=1e-12)
    assert first.calibration_cov_z == pytest.approx(cal.mean_std_cov / cal.std**2, rel=1e-12)
    assert second.calibration_sha256 is None
    assert second.calibration_blocks is None
    assert not validate([first, second]).problems
    again = TokenSamplingRecord.from_json_dict(json.loads(json.dumps(first.to_json_dict())))
    assert again == first
    assert again.schema_version == 3
    assert _build(calibration=cal, calibration_sha256=cal.sha256)[0] == first
    with pytest.raises(RecordError, match="calibration_sha256 of row 0 is 'other'"):
        _build(calibration=cal, calibration_sha256="other")


def test_half_a_calibration_is_an_invalid_record() -> None:
    record = _build(calibration=_calibration())[0]
    broken = dataclasses.replace(record, calibration_std=None)
    problems = validate([broken]).problems
    assert problems
    assert "calibration fields come all together" in problems[0].message


# ------------------------------------------------------------------------ qr-analyze


def _arms(path: Path, *, qrng_config: str = H1, blocks: int = 2_000) -> Path:
    qrng = simulate_records(
        2_000, seed=19, arm="qrng", config=qrng_config, start_ns=0, calibration_blocks=blocks
    )
    control = simulate_records(2_000, seed=20, arm="control", config=H2, start_ns=3)
    with JsonlFileSink(path) as sink:
        sink.write([r for pair in zip(qrng, control, strict=True) for r in pair])
    return path


def test_by_arm_accepts_one_configuration_per_arm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _arms(tmp_path / "arms.jsonl")
    assert main([str(path), "--by", "arm", "--ks-replicates", "99", "--json"]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    qrng = next(g for g in data["groups"] if g["label"] == "arm=qrng")
    assert qrng["calibration"]["blocks"] == 2_000
    assert qrng["z"]["standard_error"] == pytest.approx(math.sqrt(1 / 2_000 + 1 / 2_000))
    assert qrng["ks"]["method"] == "bootstrap"
    assert qrng["ks"]["replicates"] == 99
    test = data["comparison"]["test"]
    assert test["calibration_variance"] > 1 / 2_000
    # Without --by, the two configurations are still a mix.
    assert main([str(path)]) == EXIT_CONFIG
    assert "2 configurations" in capsys.readouterr().err


def test_a_mix_inside_one_arm_is_still_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _arms(tmp_path / "arms.jsonl")
    extra = simulate_records(10, seed=21, arm="qrng", config=H2, start_ns=10**9)
    with JsonlFileSink(path) as sink:
        sink.write(extra)
    assert main([str(path), "--by", "arm"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "arm=qrng has records from 2 configurations" in err
    assert main([str(path), "--by", "arm", "--allow-mixed-configs", "--ks-replicates", "9"]) == 0


def test_the_text_report_names_the_calibration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _arms(tmp_path / "arms.jsonl")
    assert main([str(path), "--by", "arm", "--ks-replicates", "49"]) == EXIT_OK
    out = capsys.readouterr().out
    sha = read_records(path).records[0].calibration_sha256 or ""
    assert f"calibration {sha[:12]}  B=2000, offset SE 0.0224 z" in out
    assert "(calibrated: Monte Carlo, R = 49, " in out
    assert "calibrations: " in out
    assert "% of the SE's variance" in out


def test_cli_takes_calibration_files_for_old_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = str(FIXTURES / "records_v2.jsonl")
    assert main([records, "--by", "arm"]) == EXIT_INPUT
    assert "--calibration FILE" in capsys.readouterr().err
    cal = str(FIXTURES / "calibration_format1.json")
    argv = [records, "--by", "arm", "--calibration", cal, "--ks-replicates", "19", "--json"]
    assert main(argv) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert list(data["calibrations"]) == [load_calibration(cal).sha256]
    swapped = tmp_path / "swapped.json"
    shutil.copy(cal, swapped)
    other = json.loads(swapped.read_text())
    other["blocks"] = 4_000
    from qr_core._calibration import content_sha256

    other["sha256"] = content_sha256({k: v for k, v in other.items() if k != "sha256"})
    swapped.write_text(json.dumps(other))
    assert main([records, "--by", "arm", "--calibration", str(swapped)]) == EXIT_INPUT
    assert "swapped file; refused" in capsys.readouterr().err
    assert main([records, "--by", "arm", "--assume-exact-calibration"]) == EXIT_OK
    assert "taken as exact" in capsys.readouterr().out


def test_analysis_of_calibrated_arms_in_python() -> None:
    qrng = simulate_records(500, seed=22, arm="qrng", calibration_blocks=1_000, start_ns=0)
    report = analyze(qrng, ks_replicates=19)
    assert report.overall.calibration.calibrated_tokens == 500
    assert report.overall.network_variance.method == "calibrated"
    assert report.overall.walk.drift_variance == pytest.approx(0.5)


def test_the_figure_draws_a_calibrated_groups_own_bands() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qr_core.analysis._figures import cumulative_deviation_figure

    qrng = simulate_records(400, seed=23, arm="qrng", calibration_blocks=1_000, start_ns=0)
    control = simulate_records(400, seed=24, arm="control", start_ns=1)
    fig = cumulative_deviation_figure(plt, {"arm=qrng": qrng, "arm=control": control})
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    plt.close(fig)
    assert "pointwise 95%, B=1000" in labels
    assert any(label.startswith("simultaneous 95%, B=1000: ±") for label in labels)
    assert "simultaneous 95%, whole walk: ±2.241√N (N=400)" in labels
