"""The one statistics implementation of qr-sampler: ``qr-analyze`` and ``qr-entropy check``.

Every tail probability comes from SciPy, always, so a p-value never depends on what
else is installed. SciPy is imported when a test first runs (``qr_core`` itself needs
numpy only); without it a :class:`MissingExtraError` names the extra to install.
Formulas and references: ``docs/records.md``, section "Statistics".
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from qr_core.analysis._errors import AnalysisError, MissingExtraError

__all__ = [
    "BayesFactorResult",
    "ChiSquareResult",
    "EffectSizeResult",
    "KSResult",
    "StoufferResult",
    "WelchResult",
    "bayes_factor_normal",
    "chi_square_uniform",
    "effect_size",
    "ks_uniform",
    "network_variance",
    "normal_two_sided_p",
    "scipy_module",
    "scipy_stats",
    "stouffer",
    "welch",
]

KS_EXACT_MAX_N: Final = 10_000
"""Up to this many values the KS p-value is exact; beyond it, the asymptotic law
(scipy's exact distribution gets slow, and the two agree to 1e-4 there)."""

FloatArray = npt.NDArray[np.float64]


def scipy_stats() -> Any:
    """Return ``scipy.stats``.

    Raises:
        MissingExtraError: SciPy is not installed.
    """
    return scipy_module("scipy.stats")


def scipy_module(name: str) -> Any:
    """Return the SciPy submodule ``name`` (imported by name: SciPy ships no type stubs).

    Raises:
        MissingExtraError: SciPy is not installed.
    """
    # Imported when a test first runs, not with this module: SciPy is the optional
    # `analysis` extra, and importing qr_core.analysis needs numpy alone.
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise MissingExtraError(
            "statistics need scipy; install the extra: pip install 'qr-core[analysis]'"
        ) from exc


def _values(x: npt.ArrayLike) -> FloatArray:
    return np.asarray(x, dtype=np.float64).ravel()


def normal_two_sided_p(z: float) -> float:
    """Two-sided tail probability of a standard normal at ``z`` (``erfc(|z|/sqrt 2)``)."""
    return math.erfc(abs(z) / math.sqrt(2.0))


@dataclass(frozen=True, slots=True)
class KSResult:
    """One-sample Kolmogorov-Smirnov test of u against U(0, 1)."""

    statistic: float
    """D, the largest distance between the empirical and the uniform CDF."""
    p_value: float
    """Probability of a D at least this large under the null hypothesis."""
    method: str
    """``"exact"`` (n <= :data:`KS_EXACT_MAX_N`) or ``"asymptotic"`` (Kolmogorov's law)."""


def ks_uniform(u: npt.ArrayLike) -> KSResult:
    """Test ``u`` against U(0, 1); NaN figures and method ``"none"`` for no values."""
    values = _values(u)
    if values.size == 0:
        return KSResult(math.nan, math.nan, "none")
    method = "exact" if values.size <= KS_EXACT_MAX_N else "asymp"
    res = scipy_stats().kstest(values, "uniform", method=method)
    return KSResult(float(res.statistic), float(res.pvalue), method.replace("asymp", "asymptotic"))


@dataclass(frozen=True, slots=True)
class StoufferResult:
    """Stouffer's combined Z of per-token z-scores: ``sum(z) / sqrt(n)``."""

    n: int
    """Number of z-scores."""
    mean_z: float
    """Mean z; 0 under the null hypothesis."""
    std_z: float
    """Sample standard deviation of z (ddof=1); 1 under the null hypothesis."""
    stouffer_z: float
    """``sum(z) / sqrt(n)``; N(0, 1) under the null hypothesis."""
    p_value: float
    """Two-sided normal p-value of ``stouffer_z``."""


def stouffer(z: npt.ArrayLike) -> StoufferResult:
    """Combine per-token z-scores with Stouffer's method."""
    values = _values(z)
    n = values.size
    if n == 0:
        return StoufferResult(0, math.nan, math.nan, math.nan, math.nan)
    total = float(values.sum())
    combined = total / math.sqrt(n)
    std = float(values.std(ddof=1)) if n > 1 else math.nan
    return StoufferResult(n, total / n, std, combined, normal_two_sided_p(combined))


@dataclass(frozen=True, slots=True)
class EffectSizeResult:
    """Mean z per token with its confidence interval (z has sd 1 under the null,
    so mean z is the standardised effect per token)."""

    estimate: float
    """Mean z."""
    ci_low: float
    """Lower end of the confidence interval (Student t, n - 1 df)."""
    ci_high: float
    """Upper end of the confidence interval."""
    level: float
    """Confidence level, e.g. 0.95."""


def effect_size(z: npt.ArrayLike, level: float = 0.95) -> EffectSizeResult:
    """Mean z with a ``level`` Student-t confidence interval (NaN for fewer than 2)."""
    values = _values(z)
    if values.size < 2:
        mean = float(values.mean()) if values.size else math.nan
        return EffectSizeResult(mean, math.nan, math.nan, level)
    mean = float(values.mean())
    se = float(values.std(ddof=1)) / math.sqrt(values.size)
    half = float(scipy_stats().t.ppf(0.5 + level / 2.0, values.size - 1)) * se
    return EffectSizeResult(mean, mean - half, mean + half, level)


@dataclass(frozen=True, slots=True)
class WelchResult:
    """Difference of mean z between two groups, Welch's unequal-variance test."""

    difference: float
    """Mean z of group A minus mean z of group B."""
    standard_error: float
    """``sqrt(var_a / n_a + var_b / n_b)`` with ddof=1 variances."""
    statistic: float
    """``difference / standard_error``."""
    df: float
    """Welch-Satterthwaite degrees of freedom."""
    p_value: float
    """Two-sided Student-t p-value."""
    ci_low: float
    """Lower end of the 95% confidence interval of the difference (t, ``df``)."""
    ci_high: float
    """Upper end of that interval."""
    method: str = "welch-t"
    """Always ``"welch-t"``."""


def welch(a: npt.ArrayLike, b: npt.ArrayLike) -> WelchResult:
    """Welch's test of mean(a) == mean(b), with a 95% interval for the difference.

    Raises:
        AnalysisError: A group has fewer than 2 values.
    """
    xa, xb = _values(a), _values(b)
    if xa.size < 2 or xb.size < 2:
        raise AnalysisError(f"each group needs >= 2 values, got {xa.size} and {xb.size}")
    va = float(xa.var(ddof=1)) / xa.size
    vb = float(xb.var(ddof=1)) / xb.size
    diff = float(xa.mean() - xb.mean())
    se = math.sqrt(va + vb)
    if se == 0.0:
        stat = 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
        df = float(xa.size + xb.size - 2)
    else:
        stat = diff / se
        df = (va + vb) ** 2 / (va**2 / (xa.size - 1) + vb**2 / (xb.size - 1))
    t = scipy_stats().t
    half = float(t.ppf(0.975, df)) * se
    p = float(2.0 * t.sf(abs(stat), df))
    return WelchResult(diff, se, stat, df, p, diff - half, diff + half)


@dataclass(frozen=True, slots=True)
class ChiSquareResult:
    """A chi-square statistic with its degrees of freedom and p-value."""

    statistic: float
    """The chi-square statistic."""
    df: int
    """Degrees of freedom."""
    p_value: float
    """Tail probability (which tail: see the function that made it)."""


def chi_square_uniform(counts: npt.ArrayLike) -> ChiSquareResult:
    """Pearson's goodness of fit of ``counts`` to equal cell probabilities.

    ``sum((O - E)^2 / E)`` with ``E = total / cells``, against chi-square with
    ``cells - 1`` df; the p-value is the upper tail.

    Raises:
        AnalysisError: Fewer than 2 cells or no counts.
    """
    observed = _values(counts)
    total = float(observed.sum())
    if observed.size < 2 or total <= 0:
        raise AnalysisError(f"chi-square needs >= 2 cells and counts, got {observed.size} cells")
    expected = total / observed.size
    statistic = float(((observed - expected) ** 2).sum() / expected)
    df = observed.size - 1
    return ChiSquareResult(statistic, df, float(scipy_stats().chi2.sf(statistic, df)))


def network_variance(z: npt.ArrayLike) -> ChiSquareResult:
    """The network-variance statistic: ``sum(z^2)`` against chi-square with n df.

    Under the null hypothesis each z is N(0, 1), so the sum of squares is
    chi-square with n degrees of freedom. The p-value is two-sided,
    ``2 min(P(X <= s), P(X >= s))``: too much variance and too little are both
    departures (the field's one-sided "netvar" p-value is the upper tail).
    """
    values = _values(z)
    n = values.size
    if n == 0:
        return ChiSquareResult(math.nan, 0, math.nan)
    s = float(np.dot(values, values))
    chi2 = scipy_stats().chi2
    p = min(1.0, 2.0 * min(float(chi2.sf(s, n)), float(chi2.cdf(s, n))))
    return ChiSquareResult(s, n, p)


@dataclass(frozen=True, slots=True)
class BayesFactorResult:
    """Bayes factor for a mean shift of z, normal model with a normal prior."""

    bf10: float
    """``p(data | H1) / p(data | H0)``: above 1 favours a shift, below 1 no shift."""
    log10_bf10: float
    """``log10(bf10)``, exact also where ``bf10`` over- or underflows."""
    estimate: float
    """The observed mean z (or difference of means)."""
    standard_error: float
    """Its standard error under the model (z has variance 1)."""
    prior_mean: float
    """Mean of the normal prior on the shift under H1."""
    prior_sd: float
    """Standard deviation of that prior."""
    posterior_mean: float
    """Posterior mean of the shift under H1."""
    posterior_sd: float
    """Posterior standard deviation of the shift under H1."""


def bayes_factor_normal(
    estimate: float, standard_error: float, *, prior_mean: float = 0.0, prior_sd: float
) -> BayesFactorResult:
    """Closed-form Bayes factor of H1: shift ~ N(prior_mean, prior_sd^2) against H0: shift = 0.

    The estimate is N(shift, se^2); integrating the shift out under H1 leaves
    ``estimate ~ N(prior_mean, se^2 + prior_sd^2)``, so
    ``BF10 = N(estimate; prior_mean, se^2 + prior_sd^2) / N(estimate; 0, se^2)``.

    Raises:
        AnalysisError: ``standard_error`` or ``prior_sd`` is not a positive finite number.
    """
    for name, value in (("standard_error", standard_error), ("prior_sd", prior_sd)):
        if not (math.isfinite(value) and value > 0):
            raise AnalysisError(f"{name} must be a positive finite number, got {value!r}")
    v0, v1 = standard_error**2, standard_error**2 + prior_sd**2
    ln_bf = (
        -0.5 * math.log(v1 / v0)
        - (estimate - prior_mean) ** 2 / (2.0 * v1)
        + estimate**2 / (2.0 * v0)
    )
    precision = 1.0 / prior_sd**2 + 1.0 / v0
    post_mean = (prior_mean / prior_sd**2 + estimate / v0) / precision
    return BayesFactorResult(
        bf10=math.exp(ln_bf) if ln_bf < 709.0 else math.inf,  # exp overflows past 709
        log10_bf10=ln_bf / math.log(10.0),
        estimate=estimate,
        standard_error=standard_error,
        prior_mean=prior_mean,
        prior_sd=prior_sd,
        posterior_mean=post_mean,
        posterior_sd=math.sqrt(1.0 / precision),
    )
