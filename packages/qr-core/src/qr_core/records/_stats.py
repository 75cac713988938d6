"""Test statistics on arrays: KS against U(0, 1), Stouffer's Z, Welch's difference test.

numpy is enough for every figure; when scipy is installed (``qr-core[analysis]``)
it provides the exact KS distribution and the Student t tail for Welch's test.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import numpy.typing as npt

__all__ = ["KSResult", "StoufferResult", "WelchResult", "ks_uniform", "stouffer", "welch"]

FloatArray = npt.NDArray[np.float64]


def _scipy_stats() -> ModuleType | None:
    try:
        return importlib.import_module("scipy.stats")
    except ImportError:
        return None


@dataclass(frozen=True, slots=True)
class KSResult:
    """One-sample Kolmogorov-Smirnov test of u against U(0, 1)."""

    statistic: float
    """D, the largest distance between the empirical and the uniform CDF."""
    p_value: float
    """Probability of a D at least this large under the null hypothesis."""
    method: str
    """``"scipy-exact"``, ``"scipy-asymptotic"`` or ``"kolmogorov-asymptotic"`` (numpy only)."""


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
    """Two-sided p-value."""
    method: str
    """``"welch-t"`` (Student t tail, scipy) or ``"welch-normal"`` (normal tail, numpy only;
    equivalent for the large samples of token records)."""


def normal_two_sided_p(z: float) -> float:
    """Two-sided tail probability of a standard normal at ``z``."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def kolmogorov_sf(statistic: float, n: int) -> float:
    """Asymptotic KS p-value with Stephens' small-sample correction.

    ``Q(lam) = 2 * sum_k (-1)^(k-1) exp(-2 k^2 lam^2)`` with
    ``lam = (sqrt(n) + 0.12 + 0.11 / sqrt(n)) * D``.
    """
    root = math.sqrt(n)
    lam = (root + 0.12 + 0.11 / root) * statistic
    if lam < 0.2:
        return 1.0  # the series converges too slowly here, and Q is 1 to 1e-20
    total = 0.0
    for k in range(1, 101):
        term = math.exp(-2.0 * k * k * lam * lam)
        total += term if k % 2 else -term
        if term < 1e-16:
            break
    return min(1.0, max(0.0, 2.0 * total))


def ks_uniform(u: npt.ArrayLike) -> KSResult:
    """Test ``u`` against U(0, 1).

    Args:
        u: At least one value.

    Returns:
        D, its p-value and the method used.
    """
    values = np.sort(np.asarray(u, dtype=np.float64))
    n = values.size
    if n == 0:
        return KSResult(math.nan, math.nan, "none")
    stats = _scipy_stats()
    if stats is not None:
        exact = n <= 10_000  # scipy's exact distribution gets slow beyond this
        res = stats.kstest(values, "uniform", method="exact" if exact else "asymp")
        method = "scipy-exact" if exact else "scipy-asymptotic"
        return KSResult(float(res.statistic), float(res.pvalue), method)
    ranks = np.arange(1, n + 1, dtype=np.float64)
    d_plus = float(np.max(ranks / n - values))
    d_minus = float(np.max(values - (ranks - 1.0) / n))
    d = max(d_plus, d_minus)
    return KSResult(d, kolmogorov_sf(d, n), "kolmogorov-asymptotic")


def stouffer(z: npt.ArrayLike) -> StoufferResult:
    """Combine per-token z-scores with Stouffer's method."""
    values = np.asarray(z, dtype=np.float64)
    n = values.size
    if n == 0:
        return StoufferResult(0, math.nan, math.nan, math.nan, math.nan)
    total = float(values.sum())
    combined = total / math.sqrt(n)
    std = float(values.std(ddof=1)) if n > 1 else math.nan
    return StoufferResult(n, total / n, std, combined, normal_two_sided_p(combined))


def welch(a: npt.ArrayLike, b: npt.ArrayLike) -> WelchResult:
    """Welch's test of mean(a) == mean(b).

    Args:
        a: Group A values (at least 2).
        b: Group B values (at least 2).

    Returns:
        The difference A - B with its standard error and two-sided p-value.

    Raises:
        ValueError: A group has fewer than 2 values.
    """
    xa = np.asarray(a, dtype=np.float64)
    xb = np.asarray(b, dtype=np.float64)
    if xa.size < 2 or xb.size < 2:
        raise ValueError(f"each group needs >= 2 values, got {xa.size} and {xb.size}")
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
    stats = _scipy_stats()
    if stats is not None:
        p = float(2.0 * stats.t.sf(abs(stat), df))
        return WelchResult(diff, se, stat, df, p, "welch-t")
    return WelchResult(diff, se, stat, df, normal_two_sided_p(stat), "welch-normal")
