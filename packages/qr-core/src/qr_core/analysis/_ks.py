"""Kolmogorov-Smirnov test of u against U(0, 1): finite-n for exact tokens, a Monte Carlo
test over the calibration's sampling distribution for calibrated ones.

**Exact tokens.** The p-value of ``D = sup |F_n(x) - x|`` is scipy's finite-n
``kstwo`` up to :data:`KS_EXACT_MAX_N` values. Its cost grows linearly in n in the tail
(below p ~ 0.025), measured by ``packages/qr-core/bench/bench_kstwo.py``: at 5,000
values its worst call cost 4.5-8.9 ms (the minima of two runs on a loaded 2-core
machine), at 6,000 5.7-14 ms, at 10,000 10-23 ms: 5,000 is the largest n that stayed
under 10 ms in both. Above, Kolmogorov's limit law at
Vrbik's (2018) corrected argument ``t + 1/(6 sqrt n) + (t - 1)/(4 n)``, ``t = sqrt(n) D``,
one special-function call, within 6e-4 relative of ``kstwo`` for every p >= 0.001 (3e-3
at p = 1e-6) and better as 1/n. (The plain limit law, used before above 10,000 values,
runs 0.4-1% above ``kstwo`` at n = 20,000.)

**Calibrated tokens.** Given its calibration, u is not uniform: ``P(u <= x) =
Phi(delta + kappa Phi^-1(x))`` with ``delta = (m_hat - m) / sigma`` and ``kappa =
sigma_hat / sigma`` (sigma^2 = sd^2 + 1/12 of the jittered S), one draw per calibration
shared by all its tokens. D has no textbook null then, so the p-value is a Monte Carlo
(parametric bootstrap) test: each replicate draws the calibration's error from its
sampling distribution (``(m_hat - m)/s`` and ``s_hat/s - 1`` bivariate normal with the
records' standard errors and covariance) and T tokens given it (T sorted standard
normals ``Z``, ``u = Phi((Z - delta) / kappa)``), and ``p = (1 + #{D* >= D}) / (R + 1)``:
a test of exact level for exchangeable draws. Seeded, so a report is reproducible.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from qr_core.analysis._calibrated import CalibrationInput, CalibrationUncertainty, parts_of
from qr_core.analysis._errors import AnalysisError
from qr_core.analysis._stats import scipy_module, scipy_stats

__all__ = [
    "DEFAULT_KS_REPLICATES",
    "KS_EXACT_MAX_N",
    "KSResult",
    "derived_seed",
    "ks_calibrated_null",
    "ks_sf",
    "ks_statistic",
    "ks_uniform",
]

FloatArray = npt.NDArray[np.float64]

KS_EXACT_MAX_N: Final = 5_000
"""Up to this many values the KS p-value is scipy's finite-n ``kstwo`` (under 10 ms a
call); above, Kolmogorov's limit at Vrbik's corrected argument (see the module)."""

DEFAULT_KS_REPLICATES: Final = 1_000
"""Monte Carlo replicates R of a calibrated group's KS test (``--ks-replicates``)."""

_CHUNK_VALUES: Final = 2_000_000  # values per replicate chunk: ~16 MB per array


@dataclass(frozen=True, slots=True)
class KSResult:
    """One-sample Kolmogorov-Smirnov test of u against U(0, 1)."""

    statistic: float
    """D, the largest distance between the empirical and the uniform CDF."""
    p_value: float
    """Probability of a D at least this large under the null hypothesis."""
    method: str
    """``"exact"`` (kstwo, n <= :data:`KS_EXACT_MAX_N`), ``"vrbik"`` (corrected limit
    law), ``"bootstrap"`` (calibrated tokens) or ``"none"`` (no values)."""
    replicates: int = 0
    """R of the bootstrap (0 otherwise)."""
    seed: int | None = None
    """Seed of the bootstrap's generator."""
    seconds: float = 0.0
    """What the bootstrap cost (wall clock)."""


def ks_statistic(u: npt.ArrayLike) -> float:
    """D of ``u`` against U(0, 1) (NaN for no values)."""
    x = np.sort(np.asarray(u, dtype=np.float64).ravel())
    n = x.size
    if n == 0:
        return math.nan
    i = np.arange(1, n + 1, dtype=np.float64)
    return float(max((i / n - x).max(), (x - (i - 1) / n).max()))


def ks_sf(d: float, n: int) -> float:
    """``P(D_n >= d)`` for n independent U(0, 1) values (exact below the cut-off)."""
    if n <= KS_EXACT_MAX_N:
        return float(scipy_stats().kstwo.sf(d, n))
    t = math.sqrt(n) * d
    argument = t + 1.0 / (6.0 * math.sqrt(n)) + (t - 1.0) / (4.0 * n)
    return float(scipy_module("scipy.special").kolmogorov(argument))


def ks_uniform(
    u: npt.ArrayLike,
    calibration: CalibrationInput = None,
    *,
    replicates: int = DEFAULT_KS_REPLICATES,
    seed: int | None = None,
) -> KSResult:
    """Test ``u`` against U(0, 1); NaN figures and method ``"none"`` for no values.

    Args:
        u: The values.
        calibration: Their calibration(s) (see :func:`~qr_core.analysis.stouffer`);
            any calibrated value makes the test the Monte Carlo one.
        replicates: R of the Monte Carlo test.
        seed: Its seed; by default one derived from n and the calibrations' hashes.

    Raises:
        AnalysisError: ``replicates`` is below 1.
    """
    values = np.asarray(u, dtype=np.float64).ravel()
    n = values.size
    if n == 0:
        return KSResult(math.nan, math.nan, "none")
    d = ks_statistic(values)
    parts = [(p.index.size, p.calibration) for p in parts_of(calibration, n)]
    if all(c is None for _, c in parts):
        return KSResult(d, ks_sf(d, n), "exact" if n <= KS_EXACT_MAX_N else "vrbik")
    if replicates < 1:
        raise AnalysisError(f"replicates must be >= 1, got {replicates!r}")
    if seed is None:
        seed = derived_seed("ks", str(n), *(c.sha256 or "" for _, c in parts if c is not None))
    t0 = time.perf_counter()
    null = ks_calibrated_null(parts, replicates, seed)
    p = (1.0 + float(np.count_nonzero(null >= d))) / (replicates + 1.0)
    return KSResult(d, p, "bootstrap", replicates, seed, time.perf_counter() - t0)


def derived_seed(*keys: str) -> int:
    """A 63-bit seed from text keys (SHA-256), the same on every machine."""
    digest = hashlib.sha256("|".join(keys).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def ks_calibrated_null(
    parts: Sequence[tuple[int, CalibrationUncertainty | None]], replicates: int, seed: int
) -> FloatArray:
    """``replicates`` draws of D under the null for a group of ``sum(n_c)`` tokens, n_c of
    them standardised against calibration c (``None``: exact tokens).

    Chunks of replicates run on up to two threads (numpy and scipy release the GIL),
    each with its own generator spawned from ``seed``, so the draws do not depend on
    the threads' timing.
    """
    n = sum(k for k, _ in parts)
    rows = max(1, _CHUNK_VALUES // max(n, 1))
    sizes = [min(rows, replicates - k) for k in range(0, replicates, rows)]
    seeds = np.random.SeedSequence(seed).spawn(len(sizes))
    workers = min(2, os.cpu_count() or 1, len(sizes))
    jobs = list(zip(seeds, sizes, strict=True))
    if workers == 1:
        chunks = [_null_chunk(parts, s, r) for s, r in jobs]
    else:
        with ThreadPoolExecutor(workers) as pool:
            chunks = list(pool.map(lambda job: _null_chunk(parts, *job), jobs))
    return np.concatenate(chunks)


def _null_chunk(
    parts: Sequence[tuple[int, CalibrationUncertainty | None]],
    seed: np.random.SeedSequence,
    rows: int,
) -> FloatArray:
    special = scipy_module("scipy.special")
    rng = np.random.default_rng(seed)
    n = sum(k for k, _ in parts)
    z = rng.standard_normal((rows, n))
    start = 0
    for count, cal in parts:
        block = z[:, start : start + count]
        start += count
        if cal is None:
            continue
        # (m_hat - m)/s and s_hat/s - 1: bivariate normal with the calibration's figures.
        rho = min(1.0, max(-1.0, cal.cov_z / (cal.mean_se_z * cal.std_se_z)))
        g1, g2 = rng.standard_normal(rows), rng.standard_normal(rows)
        offset = cal.mean_se_z * g1
        scale = 1.0 + cal.std_se_z * (rho * g1 + math.sqrt(1.0 - rho * rho) * g2)
        jr = cal.jitter_ratio
        delta = offset * math.sqrt(jr)
        kappa = np.sqrt(jr * scale * scale + (1.0 - jr))
        block -= delta[:, None]
        block /= kappa[:, None]
    u = special.ndtr(z, out=z)
    u.sort(axis=1)
    grid = np.arange(n + 1, dtype=np.float64) / n
    work = np.subtract(grid[1:], u)
    above = work.max(axis=1)
    np.subtract(u, grid[:-1], out=work)
    out: FloatArray = np.maximum(above, work.max(axis=1))
    return out
