"""Tests on the order of tokens: are successive z-scores independent?

Each test takes z in time order (``logits_ready_ns``). Formulas and references:
``docs/records.md``, section "Statistics". A calibration changes neither: r1 is
invariant under ``z -> a z + b`` (and a calibrated z is such a map of the exact one),
and given the calibration the signs of z are independent and identically distributed,
for which the runs test's law given the counts of each sign is exact. The walk of z
is :mod:`qr_core.analysis._walk`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from qr_core.analysis._errors import AnalysisError
from qr_core.analysis._stats import normal_two_sided_p, scipy_module

__all__ = ["AutocorrelationResult", "RunsResult", "lag1_autocorrelation", "runs_test"]


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
    # Elementwise products and numpy's pairwise sum, not BLAS: a threaded BLAS dot of a
    # few thousand values costs milliseconds on a busy machine.
    denominator = float(np.square(centred).sum())
    if n < 3 or denominator == 0.0:
        return AutocorrelationResult(n, math.nan, math.nan, math.nan)
    r1 = float(np.multiply(centred[:-1], centred[1:]).sum()) / denominator
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
