"""Statistics of calibrated arms: each against a direct formula, a simulation of stated
size and seed, or scipy; the calibration bound to the records."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.stats  # type: ignore[import-untyped]

from qr_core import Calibration, load_calibration
from qr_core.analysis import (
    CalibrationError,
    CalibrationUncertainty,
    analyze,
    effect_size,
    ks_sf,
    ks_uniform,
    network_variance,
    resolve_calibrations,
    simulate_records,
    stouffer,
    walk_band_constant,
    walk_excursion,
    welch,
)
from qr_core.analysis._ks import KS_EXACT_MAX_N, ks_calibrated_null
from qr_core.analysis._walk import brownian_max_sf, walk_sf
from qr_core.records import TokenSamplingRecord, read_records

FIXTURES = Path(__file__).parents[1] / "records" / "fixtures"


# ------------------------------------------------------------ the error's figures


def test_the_uncertainty_of_a_file_equals_the_records_figures() -> None:
    cal = load_calibration(FIXTURES / "calibration_format1.json")
    record = simulate_records(1, seed=1)[0]
    record = dataclasses.replace(
        record,
        calibration_sha256=cal.sha256,
        calibration_blocks=cal.blocks,
        calibration_mean=cal.mean,
        calibration_std=cal.std,
        calibration_mean_se_z=cal.mean_se / cal.std,
        calibration_std_se_z=cal.std_se / cal.std,
        calibration_cov_z=cal.mean_std_cov / cal.std**2,
    )
    assert CalibrationUncertainty.from_record(record) == CalibrationUncertainty.of(cal)
    u = CalibrationUncertainty.of(cal)
    assert u.mean_se_z == pytest.approx(1 / math.sqrt(2_000), rel=1e-12)
    # chi-square df of a near-normal S, from the sample fourth moment (its own error ~3%)
    assert u.df == pytest.approx(1_999, rel=0.05)
    assert CalibrationUncertainty.from_record(simulate_records(1, seed=1)[0]) is None


# --------------------------------------------------------------- mean-type tests


def test_stouffer_with_a_calibration_is_student_t_over_the_two_sample_se() -> None:
    z = np.random.default_rng(1).normal(0.0, 1.0, 5_000)
    cal = CalibrationUncertainty.normal(2_000, "x")
    result = stouffer(z, cal)
    se = math.sqrt(1 / 5_000 + 1 / 2_000)
    assert result.standard_error == pytest.approx(se, rel=1e-12)
    assert result.stouffer_z == pytest.approx(z.mean() / se, rel=1e-12)
    assert result.p_value == pytest.approx(2 * scipy.stats.t.sf(abs(z.mean() / se), 1_999))
    assert result.calibration_share == pytest.approx((5_000 / 2_000) / (1 + 5_000 / 2_000))
    exact = stouffer(z)
    assert exact.stouffer_z == pytest.approx(z.sum() / math.sqrt(5_000), rel=1e-12)
    assert (exact.df, exact.calibration_share) == (math.inf, 0.0)


def test_a_group_mixing_calibrations_weighs_each_offset_by_its_share() -> None:
    z = np.random.default_rng(2).normal(size=3_000)
    a, b = CalibrationUncertainty.normal(1_000, "a"), CalibrationUncertainty.normal(4_000, "b")
    per_token = [a] * 1_000 + [b] * 1_500 + [None] * 500
    offset = (1 / 3) ** 2 / 1_000 + 0.5**2 / 4_000
    assert stouffer(z, per_token).standard_error == pytest.approx(
        math.sqrt(1 / 3_000 + offset), rel=1e-12
    )
    # Two objects with one sha256 are one calibration.
    twin = CalibrationUncertainty.normal(1_000, "a")
    assert stouffer(z, [a] * 1_500 + [twin] * 1_500).standard_error == pytest.approx(
        math.sqrt(1 / 3_000 + 1 / 1_000), rel=1e-12
    )


def test_effect_size_is_welchs_interval_against_the_calibration() -> None:
    z = np.random.default_rng(3).normal(0.3, 1.0, 4_000)
    cal = dataclasses.replace(CalibrationUncertainty.normal(3_000, "c"), cov_z=1e-5)
    result = effect_size(z, calibration=cal)
    est, var = float(z.mean()), float(z.var(ddof=1))
    comps = [
        (var / 4_000, 3_999),
        (1 / 3_000 + est**2 / (2 * 2_999) + 2 * est * 1e-5, 2_999),
    ]
    se = math.sqrt(sum(c for c, _ in comps))
    df = sum(c for c, _ in comps) ** 2 / sum(c * c / d for c, d in comps)
    half = scipy.stats.t.ppf(0.975, df) * se
    assert (result.standard_error, result.df) == (pytest.approx(se), pytest.approx(df))
    assert (result.ci_low, result.ci_high) == pytest.approx((est - half, est + half), rel=1e-9)
    ci = scipy.stats.ttest_1samp(z, 0.0).confidence_interval(0.95)
    assert (effect_size(z).ci_low, effect_size(z).ci_high) == pytest.approx((ci.low, ci.high))


def test_welch_adds_independent_calibrations_and_cancels_a_shared_one() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(0.05, 1, 2_000), rng.normal(0, 1, 3_000)
    one, two = (
        CalibrationUncertainty.normal(5_000, "one"),
        CalibrationUncertainty.normal(8_000, "2"),
    )
    exact = welch(a, b)
    ref = scipy.stats.ttest_ind(a, b, equal_var=False)
    assert exact.p_value == pytest.approx(float(ref.pvalue), rel=1e-9)
    assert exact.calibration_variance == 0.0
    d = exact.difference
    ma, mb = float(a.mean()), float(b.mean())
    cal_vs_exact = welch(a, b, one, None)
    assert cal_vs_exact.calibration_variance == pytest.approx(1 / 5_000 + ma**2 / (2 * 4_999))
    assert cal_vs_exact.model_standard_error == pytest.approx(
        math.sqrt(1 / 2_000 + 1 / 3_000 + 1 / 5_000)
    )
    both = welch(a, b, one, two)
    assert both.calibration_variance == pytest.approx(
        1 / 5_000 + ma**2 / (2 * 4_999) + 1 / 8_000 + mb**2 / (2 * 7_999)
    )
    shared = welch(a, b, one, one)  # the offset cancels; the common scale stays
    assert shared.calibration_variance == pytest.approx(d * d / (2 * 4_999), rel=1e-9)
    assert shared.model_standard_error == pytest.approx(math.sqrt(1 / 2_000 + 1 / 3_000))
    # An arm half on the shared calibration: (1 - 1/2)^2 of its offset stays.
    half = welch(a, b, one, [one] * 1_500 + [None] * 1_500)
    assert half.model_standard_error == pytest.approx(
        math.sqrt(1 / 2_000 + 1 / 3_000 + 0.25 / 5_000)
    )


# --------------------------------------------------------------- network variance


@pytest.mark.parametrize(("n", "blocks"), [(2_000, 1_000), (20_000, 2_000)])
def test_network_variance_law_matches_its_representation(n: int, blocks: int) -> None:
    # 200,000 draws of [chi2_{n-1} + (1 + n/B) chi2_1] / (chi2_{B-1}/(B-1)), seed 5: the
    # library's CDF at the simulated 0.5%, 2.5%, 50%, 97.5%, 99.5% points is within
    # 0.0025 of them (the simulation's s.e. is at most 0.0011).
    rng = np.random.default_rng(5)
    size = 200_000
    draws = (rng.chisquare(n - 1, size) + (1 + n / blocks) * rng.chisquare(1, size)) / (
        rng.chisquare(blocks - 1, size) / (blocks - 1)
    )
    cal = CalibrationUncertainty.normal(blocks, "x")
    from qr_core.analysis._netvar import network_variance_cdf

    for q in (0.005, 0.025, 0.5, 0.975, 0.995):
        assert network_variance_cdf(float(np.quantile(draws, q)), n, cal) == pytest.approx(
            q, abs=0.0025
        )
    z = np.random.default_rng(6).normal(size=n)
    assert network_variance(z, cal).method == "calibrated"
    assert network_variance(z).p_value == pytest.approx(
        2 * min(scipy.stats.chi2.sf(z @ z, n), scipy.stats.chi2.cdf(z @ z, n))
    )


# ------------------------------------------------------------------------ the walk


@pytest.mark.parametrize("c", [0.6, 1.2, 2.2414, 3.0])
def test_the_drifting_walk_law_reduces_to_brownian_motion(c: float) -> None:
    assert walk_sf(c, 1e-12) == pytest.approx(brownian_max_sf(c), rel=1e-6)


@pytest.mark.slow
def test_calibrated_walks_leave_their_band_at_its_level() -> None:
    # 10,000 Gaussian walks of 400 steps with a shared offset b ~ N(0, 1/100) each
    # (lambda^2 = 4), seed 7: the whole-walk test at 0.05 rejects within 0.05 +-
    # 0.0087 (4 s.e.); without the drift term it rejects far more.
    rng = np.random.default_rng(7)
    n, walks, blocks = 400, 10_000, 100
    cal = CalibrationUncertainty(blocks, 0.1, 1e-9)  # the offset alone
    z = rng.standard_normal((walks, n)) + rng.normal(0, 0.1, (walks, 1))
    p = np.array([walk_excursion(row, cal).p_value for row in z])
    assert abs(float((p <= 0.05).mean()) - 0.05) < 0.0087
    p_exact = np.array([walk_excursion(row).p_value for row in z[:2_000]])
    assert float((p_exact <= 0.05).mean()) > 0.2
    c = walk_band_constant(0.95, n=n, calibration=cal)
    assert walk_excursion(np.zeros(n), cal).p_value > 0.999
    inside = np.abs(np.cumsum(z, axis=1)).max(axis=1) / math.sqrt(n) < c
    assert abs(float(1 - inside.mean()) - 0.05) < 0.0087


# --------------------------------------------------------------------------- KS


@pytest.mark.parametrize("n", [KS_EXACT_MAX_N + 1, 20_000])
@pytest.mark.parametrize("p", [0.05, 0.01, 0.001])
def test_ks_above_the_cut_off_is_within_1e_3_of_kstwo(n: int, p: float) -> None:
    d = scipy.stats.kstwobign.isf(p) / math.sqrt(n)
    assert ks_sf(d, n) == pytest.approx(scipy.stats.kstwo.sf(d, n), rel=1e-3)


def test_ks_up_to_the_cut_off_is_kstwo() -> None:
    u = np.random.default_rng(8).random(KS_EXACT_MAX_N) ** 1.02
    result = ks_uniform(u)
    reference = scipy.stats.kstest(u, "uniform", method="exact")
    assert result.method == "exact"
    assert result.statistic == pytest.approx(float(reference.statistic), rel=1e-12)
    assert result.p_value == pytest.approx(float(reference.pvalue), rel=1e-9)
    assert ks_uniform(np.random.default_rng(9).random(KS_EXACT_MAX_N + 1)).method == "vrbik"


def test_calibrated_ks_is_a_seeded_monte_carlo_test() -> None:
    cal = CalibrationUncertainty.normal(2_000, "k")
    u = np.random.default_rng(10).random(3_000)
    first = ks_uniform(u, cal, replicates=199, seed=11)
    assert first == dataclasses.replace(
        ks_uniform(u, cal, replicates=199, seed=11), seconds=first.seconds
    )
    null = ks_calibrated_null([(3_000, cal)], 199, 11)
    assert first.p_value == (1 + int((null >= first.statistic).sum())) / 200
    assert (first.method, first.replicates) == ("bootstrap", 199)
    # The calibration's error widens D's null: its median is above the exact one's.
    exact_median = scipy.stats.kstwo.isf(0.5, 3_000)
    assert float(np.median(null)) > exact_median


def test_calibrated_ks_cost_at_100000_tokens() -> None:
    # Not a timed assertion: the figure is printed (pytest -s) for the docs.
    cal = CalibrationUncertainty.normal(10_000, "k")
    t0 = time.perf_counter()
    result = ks_uniform(np.random.default_rng(12).random(100_000), cal)
    print(f"\ncalibrated KS, T = 100,000, R = 1,000: {time.perf_counter() - t0:.2f} s")
    assert result.replicates == 1_000
    assert 0.0 < result.p_value <= 1.0


# ------------------------------------------------------------- records and files


def _v2_records() -> list[TokenSamplingRecord]:
    return list(read_records(FIXTURES / "records_v2.jsonl").records)


def test_records_before_schema_3_read_and_analyse() -> None:
    v1 = read_records(FIXTURES / "records_v1.jsonl").records
    assert {r.schema_version for r in v1} == {1}
    assert analyze(v1).tokens == 40
    v2 = _v2_records()
    assert {r.schema_version for r in v2} == {2}
    assert all(r.calibration_blocks is None for r in v2)


def test_calibrated_records_without_figures_need_their_file() -> None:
    v2 = _v2_records()
    with pytest.raises(CalibrationError, match=r"2045cfe40b51 \(40 tokens\).*--calibration"):
        analyze(v2, by="arm")
    cal = load_calibration(FIXTURES / "calibration_format1.json")
    report = analyze(v2, by="arm", calibration_files=[cal], ks_replicates=99)
    arm = next(g for g in report.groups if g.label == "arm=cal")
    assert arm.calibration.blocks == 2_000
    assert arm.z.standard_error == pytest.approx(math.sqrt(1 / 40 + 1 / 2_000))
    exact = analyze(v2, by="arm", assume_exact_calibration=True)
    assert exact.calibrations == {cal.sha256: None}


def test_a_swapped_calibration_file_is_refused_naming_both_hashes(tmp_path: Path) -> None:
    cal = load_calibration(FIXTURES / "calibration_format1.json")
    data = json.loads(cal.to_json())
    data["device_id"] = "another-device"
    other = Calibration.from_dict(
        {**data, "sha256": _sha({k: v for k, v in data.items() if k != "sha256"})}
    )
    with pytest.raises(CalibrationError, match=rf"{other.sha256[:12]}.*2045cfe40b51.*swapped"):
        resolve_calibrations(_v2_records(), [other])


def test_records_of_one_calibration_must_agree_on_its_figures() -> None:
    records = simulate_records(10, seed=13, calibration_blocks=1_000)
    bad = dataclasses.replace(records[3], calibration_std=records[3].calibration_std * 1.01)
    with pytest.raises(CalibrationError, match="disagree on calibration_std"):
        resolve_calibrations([*records[:3], bad])
    odd = [dataclasses.replace(r, calibration_mean_se_z=0.5) for r in records]
    with pytest.raises(CalibrationError, match="not 1/sqrt"):
        resolve_calibrations(odd)


def _sha(content: dict[str, object]) -> str:
    from qr_core._calibration import content_sha256

    return content_sha256(content)
