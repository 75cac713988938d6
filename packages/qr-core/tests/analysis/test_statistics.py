"""The field's statistics, each against an independent computation (SciPy, a direct
formula, enumeration, numerical integration or a seeded simulation of stated size)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.integrate  # type: ignore[import-untyped]
import scipy.stats  # type: ignore[import-untyped]

from qr_core.analysis import (
    bayes_factor_normal,
    effect_size,
    lag1_autocorrelation,
    network_variance,
    plan_tokens,
    power,
    runs_test,
    walk_band_constant,
    walk_excursion,
    welch,
)
from qr_core.analysis._serial import runs_distribution
from qr_core.analysis._walk import brownian_max_sf
from qr_core.analysis.cli import EXIT_OK, EXIT_USAGE, main
from qr_core.records import RecordError

# ------------------------------------------------------------------ effect size


def test_effect_size_interval_equals_scipy_t_interval() -> None:
    z = np.random.default_rng(1).normal(0.05, 1.0, 700)
    result = effect_size(z)
    ci = scipy.stats.ttest_1samp(z, 0.0).confidence_interval(0.95)
    assert result.estimate == pytest.approx(float(z.mean()), rel=1e-12)
    assert (result.ci_low, result.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert math.isnan(effect_size([0.3]).ci_low)


def test_welch_difference_interval_equals_scipy() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.1, 1.0, 900), rng.normal(0.0, 1.3, 500)
    result = welch(a, b)
    ref = scipy.stats.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert result.statistic == pytest.approx(float(ref.statistic), rel=1e-12)
    assert result.p_value == pytest.approx(float(ref.pvalue), rel=1e-9)
    assert (result.ci_low, result.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9)


# ------------------------------------------------------------ network variance


def test_network_variance_is_the_chi_square_of_the_sum_of_squares() -> None:
    z = np.random.default_rng(3).normal(0.0, 1.1, 2_000)
    result = network_variance(z)
    s = sum(float(x) * float(x) for x in z)
    tails = (scipy.stats.chi2.sf(s, 2_000), scipy.stats.chi2.cdf(s, 2_000))
    assert (result.statistic, result.df) == (pytest.approx(s, rel=1e-12), 2_000)
    assert result.p_value == pytest.approx(2 * min(tails), rel=1e-9)
    # n = 2,000 with sd 1.1 (variance +21%), seed 3: expected statistic 6.6 sd above
    # the null mean, so beyond alpha 0.001 unless the seed were very unusual.
    assert result.p_value < 0.001
    # Too little variance is a departure too (two-sided).
    assert network_variance(np.full(400, 0.5)).p_value < 1e-10


# ------------------------------------------------------------- serial tests


def test_lag1_autocorrelation_equals_the_direct_formula() -> None:
    z = np.random.default_rng(4).standard_normal(300)
    m = sum(z) / 300
    num = sum((z[i] - m) * (z[i + 1] - m) for i in range(299))
    den = sum((x - m) ** 2 for x in z)
    result = lag1_autocorrelation(z)
    assert result.r1 == pytest.approx(num / den, rel=1e-12)
    sd = (300 - 2) / (300 * math.sqrt(299))
    assert result.statistic == pytest.approx((num / den + 1 / 300) / sd, rel=1e-12)
    assert result.p_value == pytest.approx(2 * scipy.stats.norm.sf(abs(result.statistic)), rel=1e-9)


def test_lag1_null_mean_and_variance_by_simulation() -> None:
    # 20,000 independent series of n = 50 N(0,1) values, seed 5. Standard errors:
    # mean 0.00097, variance 0.00019; the bounds are 4.5 of them (false failure < 1e-5).
    n, reps = 50, 20_000
    z = np.random.default_rng(5).standard_normal((reps, n))
    c = z - z.mean(axis=1, keepdims=True)
    r = (c[:, :-1] * c[:, 1:]).sum(axis=1) / (c * c).sum(axis=1)
    assert abs(r.mean() - (-1 / n)) < 4.5 * 0.00097
    assert abs(r.var() - (n - 2) ** 2 / (n**2 * (n - 1))) < 4.5 * 0.00019


def test_lag1_detects_dependent_tokens() -> None:
    # AR(1) with coefficient 0.2, n = 5,000, seed 6: expected statistic about 14.
    e = np.random.default_rng(6).standard_normal(5_000)
    z = np.empty_like(e)
    z[0] = e[0]
    for i in range(1, e.size):
        z[i] = 0.2 * z[i - 1] + e[i]
    assert lag1_autocorrelation(z).p_value < 1e-6
    assert runs_test(z).p_value < 1e-3


@pytest.mark.parametrize(("n1", "n2"), [(1, 1), (3, 2), (4, 4), (6, 3), (5, 7)])
def test_runs_distribution_equals_enumeration(n1: int, n2: int) -> None:
    counts: dict[int, int] = {}
    for positions in itertools.combinations(range(n1 + n2), n1):
        seq = [1 if i in positions else -1 for i in range(n1 + n2)]
        runs = 1 + sum(1 for a, b in itertools.pairwise(seq) if a != b)
        counts[runs] = counts.get(runs, 0) + 1
    total = math.comb(n1 + n2, n1)
    r, p = runs_distribution(n1, n2)
    got = {int(k): float(v) for k, v in zip(r, p, strict=True) if v > 0}
    assert got == pytest.approx({k: v / total for k, v in counts.items()}, rel=1e-10)
    assert float(p.sum()) == pytest.approx(1.0, rel=1e-12)


def test_runs_p_value_and_moments() -> None:
    z = np.array([0.5, -1.0, 2.0, -0.3, 0.0, 0.7, 0.1, -2.0, -0.4, 1.0])  # the 0 is dropped
    result = runs_test(z)
    assert (result.runs, result.positive, result.negative) == (7, 5, 4)
    r, p = runs_distribution(5, 4)
    assert result.expected == pytest.approx(float((r * p).sum()), rel=1e-12)
    lower, upper = float(p[r <= 7].sum()), float(p[r >= 7].sum())
    assert result.p_value == pytest.approx(min(1.0, 2 * min(lower, upper)), rel=1e-12)
    n1, n2, n = 300, 200, 500
    r, p = runs_distribution(n1, n2)
    mean = float((r * p).sum())
    var = float(((r - mean) ** 2 * p).sum())
    assert mean == pytest.approx(1 + 2 * n1 * n2 / n, rel=1e-10)
    assert var == pytest.approx(2 * n1 * n2 * (2 * n1 * n2 - n) / (n**2 * (n - 1)), rel=1e-9)
    assert math.isnan(runs_test([1.0, 2.0]).p_value)


# ------------------------------------------------------------------- the walk


@pytest.mark.parametrize("c", [0.6, 0.9, 1.0, 1.3, 2.0, 3.0])
def test_brownian_maximum_law_two_ways(c: float) -> None:
    # The two series used on either side of c = 1 are different formulas for the same law.
    reflection = 4 * sum((-1) ** k * scipy.stats.norm.sf((2 * k + 1) * c) for k in range(60))
    ks = np.arange(200)
    theta = 1 - 4 / math.pi * float(
        np.sum(
            (-1.0) ** ks / (2 * ks + 1) * np.exp(-((2 * ks + 1) ** 2) * math.pi**2 / (8 * c * c))
        )
    )
    assert brownian_max_sf(c) == pytest.approx(reflection, rel=1e-9, abs=1e-15)
    assert brownian_max_sf(c) == pytest.approx(theta, rel=1e-9, abs=1e-15)


def test_simultaneous_band_constant() -> None:
    c = walk_band_constant(0.95)
    assert c == pytest.approx(2.2414, abs=1e-4)
    assert brownian_max_sf(c) == pytest.approx(0.05, rel=1e-9)
    with pytest.raises(RecordError, match=r"level must lie in \(0, 1\)"):
        walk_band_constant(1.0)


def test_null_walks_cross_the_simultaneous_band_about_5_percent() -> None:
    # 4,000 null walks of N = 1,000 steps, seed 7. The crossing probability is at most
    # 5% (4.5-5% at this N); bounds 3.5%-6.5% are over 4 binomial standard errors
    # (0.34%) from both: false failure < 1e-4. The pointwise band, by contrast, is
    # crossed somewhere by most walks (the figure's old "95% envelope").
    n, walks = 1_000, 4_000
    s = np.cumsum(np.random.default_rng(7).standard_normal((walks, n)), axis=1)
    band = walk_band_constant(0.95) * math.sqrt(n)
    crossed = float((np.abs(s).max(axis=1) > band).mean())
    assert 0.035 < crossed < 0.065
    pointwise = float((np.abs(s) > 1.96 * np.sqrt(np.arange(1, n + 1))).any(axis=1).mean())
    assert pointwise > 0.4
    p = np.array([walk_excursion(row).p_value for row in np.diff(s[:400], prepend=0.0)])
    assert 0.0 < float((p < 0.05).mean()) < 0.12  # the same test, through walk_excursion


# ---------------------------------------------------------------- Bayes factor


@pytest.mark.parametrize(
    ("estimate", "se", "prior_mean", "prior_sd"),
    [
        (0.01, 0.01, 0.0, 0.02),
        (0.05, 0.01, 0.0, 0.02),
        (-0.02, 0.005, 0.01, 0.03),
        (0.0, 0.1, 0.0, 1.0),
    ],
)
def test_bayes_factor_equals_numerical_integration(
    estimate: float, se: float, prior_mean: float, prior_sd: float
) -> None:
    def integrand(mu: float) -> float:
        like = scipy.stats.norm.pdf(estimate, mu, se)
        return float(like * scipy.stats.norm.pdf(mu, prior_mean, prior_sd))

    lo, hi = prior_mean - 12 * prior_sd, prior_mean + 12 * prior_sd
    marginal, _ = scipy.integrate.quad(integrand, lo, hi, points=[estimate], epsabs=0, limit=200)
    expected = marginal / scipy.stats.norm.pdf(estimate, 0.0, se)
    result = bayes_factor_normal(estimate, se, prior_mean=prior_mean, prior_sd=prior_sd)
    assert result.bf10 == pytest.approx(expected, rel=1e-7)
    assert result.log10_bf10 == pytest.approx(math.log10(expected), rel=1e-7, abs=1e-9)
    post_var = 1 / (1 / prior_sd**2 + 1 / se**2)
    assert result.posterior_sd == pytest.approx(math.sqrt(post_var), rel=1e-12)
    assert result.posterior_mean == pytest.approx(
        post_var * (prior_mean / prior_sd**2 + estimate / se**2), rel=1e-12
    )


def test_bayes_factor_refuses_a_bad_prior() -> None:
    with pytest.raises(RecordError, match=r"prior_sd must be a positive finite number, got 0\.0"):
        bayes_factor_normal(0.1, 0.01, prior_sd=0.0)


# ------------------------------------------------------------------- planning


def test_twenty_thousand_per_group_has_52_percent_power() -> None:
    # docs/records.md: 20,000 tokens per group, effect 0.02, alpha 0.05 -> 52%.
    d, n = 0.02, 20_000
    shift = d / math.sqrt(2 / n)
    crit = scipy.stats.norm.isf(0.025)
    direct = scipy.stats.norm.sf(crit - shift) + scipy.stats.norm.cdf(-crit - shift)
    assert power(n, d, 0.05) == pytest.approx(direct, rel=1e-12)
    assert round(power(n, d, 0.05), 2) == 0.52


def test_plan_is_the_smallest_sufficient_count() -> None:
    assert plan_tokens(0.02, alpha=0.05, target_power=0.8).tokens_per_arm == 39_245
    plan = plan_tokens(0.02, alpha=0.01, target_power=0.8)
    assert plan.tokens_per_arm == 58_395
    assert power(58_394, 0.02, 0.01) < 0.8 <= power(58_395, 0.02, 0.01)
    assert plan.achieved_power == power(58_395, 0.02, 0.01)
    one = plan_tokens(0.02, alpha=0.01, target_power=0.8, design="one-sample")
    assert power(one.tokens_per_arm - 1, 0.02, 0.01, "one-sample") < 0.8
    assert power(one.tokens_per_arm, 0.02, 0.01, "one-sample") >= 0.8
    assert one.tokens_per_arm == pytest.approx(plan.tokens_per_arm / 2, abs=1)


def test_plan_by_simulation() -> None:
    # 2,000 simulated two-arm experiments of the planned size for effect 0.2 (n = 393
    # per arm at alpha 0.05, power 0.8), seed 8. Binomial sd 0.009: bounds are 4 sd.
    plan = plan_tokens(0.2, alpha=0.05, target_power=0.8)
    n = plan.tokens_per_arm
    rng = np.random.default_rng(8)
    a = rng.normal(0.2, 1.0, (2_000, n))
    b = rng.normal(0.0, 1.0, (2_000, n))
    stat = (a.mean(axis=1) - b.mean(axis=1)) / math.sqrt(2 / n)
    detected = float((np.abs(stat) > scipy.stats.norm.isf(0.025)).mean())
    assert abs(detected - 0.8) < 4 * 0.009


def test_plan_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--effect", "0.02", "--alpha", "0.01", "--power", "0.8"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "tokens per arm  58395\n" in out
    assert "tokens in all   116790\n" in out
    assert main(["plan", "--effect", "0", "--alpha", "0.01"]) == EXIT_USAGE
    assert "effect must be a non-zero finite number, got 0.0" in capsys.readouterr().err
    assert main(["plan", "--effect", "0.02", "--power", "0.01"]) == EXIT_USAGE
    assert "power must lie in (alpha, 1)" in capsys.readouterr().err
