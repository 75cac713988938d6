"""Tests on the order of tokens: are successive z-scores independent, and does the
cumulative walk of z stay inside its simultaneous band?

Each test takes z in time order (``logits_ready_ns``). Formulas and references:
``docs/records.md``, section "Statistics".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from qr_core.analysis._errors import AnalysisError
from qr_core.analysis._stats import normal_two_sided_p, scipy_module

__all__ = [
    "AutocorrelationResult",
    "RunsResult",
    "WalkResult",
    "brownian_max_sf",
    "lag1_autocorrelation",
    "runs_test",
    "walk_band_constant",
    "walk_excursion",
]

_SERIES_TERMS: Final = 400


@dataclass(frozen=True, slots=True)
class AutocorrelationResult:
    """Lag-1 autocorrelation of z, tested against independence."""

    n: int
    """Number of z-scores."""
    r1: float
    """``sum((z_i - m)(z_{i+1} - m)) / sum((z_i - m)^2)`` with m the mean."""
    statistic: float
    """``(r1 + 1/n) / sqrt((n - 2)^2 / (n^2 (n - 1)))``: r1 standardised by its exact
    null mean and variance for independent normal z; about N(0, 1)."""
    p_value: float
    """Two-sided normal p-value of ``statistic``."""


def lag1_autocorrelation(z: npt.ArrayLike) -> AutocorrelationResult:
    """Lag-1 autocorrelation of ``z`` in the given order (NaN figures below 3 values)."""
    values = np.asarray(z, dtype=np.float64).ravel()
    n = values.size
    centred = values - values.mean() if n else values
    denominator = float(np.dot(centred, centred))
    if n < 3 or denominator == 0.0:
        return AutocorrelationResult(n, math.nan, math.nan, math.nan)
    r1 = float(np.dot(centred[:-1], centred[1:])) / denominator
    sd = (n - 2) / (n * math.sqrt(n - 1))
    statistic = (r1 + 1.0 / n) / sd
    return AutocorrelationResult(n, r1, statistic, normal_two_sided_p(statistic))


@dataclass(frozen=True, slots=True)
class RunsResult:
    """Wald-Wolfowitz runs test on the signs of z (0 is the null median of z)."""

    runs: int
    """Number of maximal blocks of equal sign."""
    positive: int
    """z-scores above 0."""
    negative: int
    """z-scores below 0 (exact zeros belong to neither and are left out)."""
    expected: float
    """``1 + 2 n+ n- / n``, the null mean of ``runs``."""
    p_value: float
    """Exact two-sided p-value ``min(1, 2 min(P(R <= runs), P(R >= runs)))`` from the
    conditional distribution of R given n+ and n-; NaN when one sign is absent."""


def _log_comb(a: int, b: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    gammaln = scipy_module("scipy.special").gammaln
    ok = (b >= 0) & (b <= a)
    bb = np.where(ok, b, 0)
    out = gammaln(a + 1.0) - gammaln(bb + 1.0) - gammaln(a - bb + 1.0)
    return np.where(ok, out, -np.inf)


def runs_distribution(n1: int, n2: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Exact null distribution of the number of runs of ``n1`` and ``n2`` items.

    Returns:
        The possible run counts 2, 3, ... and their probabilities.

    Raises:
        AnalysisError: ``n1`` or ``n2`` is below 1.
    """
    if n1 < 1 or n2 < 1:
        raise AnalysisError(f"runs need both kinds of item, got {n1} and {n2}")
    r = np.arange(2, 2 * min(n1, n2) + 2, dtype=np.int64)
    k = r // 2
    total = _log_comb(n1 + n2, np.array(n1, dtype=np.int64))
    even = math.log(2.0) + _log_comb(n1 - 1, k - 1) + _log_comb(n2 - 1, k - 1)
    odd = np.logaddexp(
        _log_comb(n1 - 1, k) + _log_comb(n2 - 1, k - 1),
        _log_comb(n1 - 1, k - 1) + _log_comb(n2 - 1, k),
    )
    log_p = np.where(r % 2 == 0, even, odd) - total
    return r, np.exp(log_p)


def runs_test(z: npt.ArrayLike) -> RunsResult:
    """Runs of positive and negative z in the given order."""
    values = np.asarray(z, dtype=np.float64).ravel()
    signs = np.sign(values)
    signs = signs[signs != 0]
    n1, n2 = int((signs > 0).sum()), int((signs < 0).sum())
    runs = int(np.count_nonzero(signs[1:] != signs[:-1])) + 1 if signs.size else 0
    n = n1 + n2
    expected = 1.0 + 2.0 * n1 * n2 / n if n else math.nan
    if n1 == 0 or n2 == 0:
        return RunsResult(runs, n1, n2, expected, math.nan)
    r, p = runs_distribution(n1, n2)
    lower = float(p[r <= runs].sum())
    upper = float(p[r >= runs].sum())
    return RunsResult(runs, n1, n2, expected, min(1.0, 2.0 * min(lower, upper)))


def _normal_sf(x: float) -> float:
    return 0.5 * math.erfc(x / math.sqrt(2.0))


def brownian_max_sf(c: float) -> float:
    """``P(max_{0<=t<=1} |W(t)| >= c)`` for standard Brownian motion W.

    Reflection series ``4 sum_{k>=0} (-1)^k Phi_bar((2k+1) c)`` for ``c >= 1``
    (precise in the tail); for smaller c, one minus the theta series
    ``(4/pi) sum_{k>=0} (-1)^k / (2k+1) exp(-(2k+1)^2 pi^2 / (8 c^2))``.
    """
    if c <= 0.0:
        return 1.0
    if c >= 1.0:
        total = 0.0
        for k in range(_SERIES_TERMS):
            term = _normal_sf((2 * k + 1) * c)
            total += -term if k % 2 else term
            if term < 1e-300:
                break
        return min(1.0, 4.0 * total)
    inside = 0.0
    for k in range(_SERIES_TERMS):
        m = 2 * k + 1
        term = math.exp(-(m * m) * math.pi**2 / (8.0 * c * c)) / m
        inside += -term if k % 2 else term
        if term < 1e-300:
            break
    return min(1.0, max(0.0, 1.0 - 4.0 / math.pi * inside))


def walk_band_constant(level: float = 0.95) -> float:
    """The c with ``P(max_{0<=t<=1} |W(t)| >= c) = 1 - level`` (2.2414 for 0.95).

    ``±c sqrt(N)`` is then a simultaneous band for the whole walk ``S_1 .. S_N`` of
    N independent N(0, 1) steps: the walk is Brownian motion seen at whole times,
    so it leaves the band with probability at most ``1 - level`` (and tends to it
    as N grows).

    Raises:
        AnalysisError: ``level`` is not inside (0, 1).
    """
    if not 0.0 < level < 1.0:
        raise AnalysisError(f"level must lie in (0, 1), got {level!r}")
    lo, hi = 1e-3, 40.0
    for _ in range(200):  # bisection: brownian_max_sf falls monotonically in c
        mid = 0.5 * (lo + hi)
        if brownian_max_sf(mid) > 1.0 - level:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclass(frozen=True, slots=True)
class WalkResult:
    """Largest excursion of the cumulative deviation ``S_k = z_1 + ... + z_k``."""

    n: int
    """Number of steps."""
    max_excursion: float
    """``max_k |S_k| / sqrt(n)``."""
    p_value: float
    """``P(max |W| >= max_excursion)`` on [0, 1]: the whole-walk test, conservative
    for a finite walk."""


def walk_excursion(z: npt.ArrayLike) -> WalkResult:
    """The whole-walk test of the cumulative deviation of ``z`` in the given order."""
    values = np.asarray(z, dtype=np.float64).ravel()
    if values.size == 0:
        return WalkResult(0, math.nan, math.nan)
    m = float(np.abs(np.cumsum(values)).max()) / math.sqrt(values.size)
    return WalkResult(values.size, m, brownian_max_sf(m))
