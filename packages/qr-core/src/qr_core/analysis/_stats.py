"""The one statistics implementation of qr-sampler: ``qr-analyze`` and ``qr-entropy check``.

Every tail probability comes from SciPy, always, so a p-value never depends on what
else is installed. Each mean-type statistic takes the calibration of its values
(:mod:`qr_core.analysis._calibrated`) and reduces to the textbook statistic for exact,
uncalibrated tokens. SciPy is imported when a test first runs (``qr_core`` itself needs
numpy only); without it a :class:`MissingExtraError` names the extra to install.
Formulas and references: ``docs/records.md``, section "Statistics".
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from qr_core.analysis._calibrated import (
    CalibrationInput,
    calibration_terms,
    combined,
    parts_of,
    satterthwaite,
)
from qr_core.analysis._errors import AnalysisError, MissingExtraError

__all__ = [
    "BayesFactorResult",
    "ChiSquareResult",
    "EffectSizeResult",
    "StoufferResult",
    "WelchResult",
    "bayes_factor_normal",
    "chi_square_uniform",
    "effect_size",
    "normal_two_sided_p",
    "scipy_module",
    "scipy_stats",
    "stouffer",
    "welch",
]

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
class StoufferResult:
    """Stouffer's combined Z of per-token z-scores, with the calibration's offset."""

    n: int
    """Number of z-scores."""
    mean_z: float
    """Mean z; 0 under the null hypothesis."""
    std_z: float
    """Sample standard deviation of z (ddof=1); 1 under the null hypothesis."""
    stouffer_z: float
    """``mean_z / standard_error``: ``sum(z) / sqrt(n)`` for exact tokens."""
    p_value: float
    """Two-sided: normal for exact tokens, Student t with ``df`` for calibrated ones."""
    standard_error: float = math.nan
    """The model standard error of mean z, ``sqrt(1/n + offset variance)``: the
    offset variance is ``mean_se_z^2 = 1/B`` for an arm with one calibration."""
    df: float = math.inf
    """Degrees of freedom of the t tail: ``1 / (2 std_se_z^2)`` (B - 1), inf when exact."""
    calibration_share: float = 0.0
    """Share of the variance of mean z that is the calibration's (T/B / (1 + T/B))."""


def stouffer(z: npt.ArrayLike, calibration: CalibrationInput = None) -> StoufferResult:
    """Combine per-token z-scores with Stouffer's method.

    With a calibration, ``mean z = r (N(0, 1/n) + b)`` with the offset b ~ N(0, 1/B)
    and ``1/r^2 ~ chi2_nu / nu`` independent, so ``mean z / sqrt(1/n + 1/B)`` is
    Student t with nu df: exact for a normal-shaped S.
    """
    values = _values(z)
    n = values.size
    if n == 0:
        return StoufferResult(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if n > 1 else math.nan
    parts = parts_of(calibration, n)
    offset = sum(t.offset for t in calibration_terms(values, parts))
    se = math.sqrt(1.0 / n + offset)
    statistic = mean / se
    cal = combined(parts, n)
    if cal is None:
        return StoufferResult(n, mean, std, statistic, normal_two_sided_p(statistic), se)
    p = float(2.0 * scipy_stats().t.sf(abs(statistic), cal.df))
    return StoufferResult(n, mean, std, statistic, p, se, cal.df, offset / se**2)


@dataclass(frozen=True, slots=True)
class EffectSizeResult:
    """Mean z per token with its confidence interval (z has sd 1 under the null,
    so mean z is the standardised effect per token, in units of the calibrated sd
    for a calibrated arm)."""

    estimate: float
    """Mean z."""
    ci_low: float
    """Lower end of the confidence interval (Student t, ``df``)."""
    ci_high: float
    """Upper end of the confidence interval."""
    level: float
    """Confidence level, e.g. 0.95."""
    standard_error: float = math.nan
    """``sqrt(var_z/n + calibration terms)``; ``s/sqrt(n)`` for exact tokens."""
    df: float = math.nan
    """Welch-Satterthwaite df over (n - 1) and each calibration's B - 1."""


def effect_size(
    z: npt.ArrayLike, level: float = 0.95, calibration: CalibrationInput = None
) -> EffectSizeResult:
    """Mean z with a ``level`` Student-t confidence interval (NaN for fewer than 2).

    With a calibration it is Welch's interval for the tokens against the calibration
    blocks: ``se^2 = var_z/n + mse^2 + est^2 sdse^2 + 2 est cov`` (one calibration;
    the scale terms make it cover a non-zero effect and vanish under the null).
    """
    values = _values(z)
    n = values.size
    if n < 2:
        mean = float(values.mean()) if n else math.nan
        return EffectSizeResult(mean, math.nan, math.nan, level)
    mean = float(values.mean())
    components = [(float(values.var(ddof=1)) / n, n - 1.0)]
    components += [
        (t.total, t.calibration.df)
        for t in calibration_terms(values, parts_of(calibration, n))
        if t.total > 0
    ]
    se = math.sqrt(sum(v for v, _ in components))
    df = satterthwaite(components) if len(components) > 1 else n - 1.0
    half = float(scipy_stats().t.ppf(0.5 + level / 2.0, df)) * se
    return EffectSizeResult(mean, mean - half, mean + half, level, se, df)


@dataclass(frozen=True, slots=True)
class WelchResult:
    """Difference of mean z between two groups, Welch's unequal-variance test with the
    calibrations' terms."""

    difference: float
    """Mean z of group A minus mean z of group B."""
    standard_error: float
    """``sqrt(var_a/n_a + var_b/n_b + calibration_variance)`` with ddof=1 variances."""
    statistic: float
    """``difference / standard_error``."""
    df: float
    """Welch-Satterthwaite degrees of freedom (each calibration adds its B - 1)."""
    p_value: float
    """Two-sided Student-t p-value."""
    ci_low: float
    """Lower end of the 95% confidence interval of the difference (t, ``df``)."""
    ci_high: float
    """Upper end of that interval."""
    method: str = "welch-t"
    """Always ``"welch-t"``."""
    calibration_variance: float = 0.0
    """The calibrations' share of ``standard_error^2``: ``1/B_a + 1/B_b`` for two arms
    with their own calibrations, ``1/B`` for one calibrated arm against an exact one,
    0 (plus a scale term that vanishes under the null) for arms sharing one."""
    model_standard_error: float = math.nan
    """``sqrt(1/n_a + 1/n_b + offset variance)``: the Bayes factor's."""


def welch(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    calibration_a: CalibrationInput = None,
    calibration_b: CalibrationInput = None,
) -> WelchResult:
    """Welch's test of mean(a) == mean(b), with a 95% interval for the difference.

    Each group's calibration (see :func:`stouffer`) adds its offset and scale
    terms; calibrations with equal sha256 in both groups cancel by the share of
    each group's tokens they standardised (exactly, for two arms on one calibration).

    Raises:
        AnalysisError: A group has fewer than 2 values.
    """
    xa, xb = _values(a), _values(b)
    if xa.size < 2 or xb.size < 2:
        raise AnalysisError(f"each group needs >= 2 values, got {xa.size} and {xb.size}")
    va = float(xa.var(ddof=1)) / xa.size
    vb = float(xb.var(ddof=1)) / xb.size
    terms = calibration_terms(
        xa, parts_of(calibration_a, xa.size), xb, parts_of(calibration_b, xb.size)
    )
    components = [(va, xa.size - 1.0), (vb, xb.size - 1.0)]
    components += [(t.total, t.calibration.df) for t in terms if t.total > 0]
    cal_variance = sum(t.total for t in terms)
    model = math.sqrt(1.0 / xa.size + 1.0 / xb.size + sum(t.offset for t in terms))
    diff = float(xa.mean() - xb.mean())
    se = math.sqrt(va + vb + cal_variance)
    if se == 0.0:
        stat = 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
        df = float(xa.size + xb.size - 2)
    else:
        stat = diff / se
        df = satterthwaite(components)
    t = scipy_stats().t
    half = float(t.ppf(0.975, df)) * se
    p = float(2.0 * t.sf(abs(stat), df))
    return WelchResult(
        diff, se, stat, df, p, diff - half, diff + half, "welch-t", cal_variance, model
    )


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
