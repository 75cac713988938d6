"""Basic statistical tests of random bytes, with or without SciPy.

SciPy computes the p-values when it is installed. Without it, pure
implementations take over: the chi-square tail from the regularised upper
incomplete gamma function; the Kolmogorov-Smirnov test is qr-core's
(:func:`qr_core.records.ks_uniform`).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from qr_core.records import ks_uniform

__all__ = [
    "StatTest",
    "bit_bias_test",
    "byte_chi_square_test",
    "chi2_sf",
    "ks_uniform_test",
    "scipy_available",
]

_BITS_PER_BYTE = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1)


def _scipy_stats() -> Any:
    # Imported by name: SciPy is optional and ships no type stubs.
    try:
        return importlib.import_module("scipy.stats")
    except ImportError:
        return None


def scipy_available() -> bool:
    """Whether SciPy is importable (its p-values are then used)."""
    return _scipy_stats() is not None


@dataclass(frozen=True, slots=True)
class StatTest:
    """Outcome of one statistical test."""

    name: str
    """Short name, e.g. ``"byte_chi_square"``."""
    statistic: float
    """The test statistic (chi-square, z, or KS D)."""
    p_value: float
    """Probability of a statistic at least this extreme under the null hypothesis."""
    n: int
    """Number of observations the test used (bytes, bits, or u values)."""
    detail: str
    """One line for humans, e.g. degrees of freedom or the fraction of ones."""

    def passed(self, alpha: float) -> bool:
        """Whether the null hypothesis survives at significance level ``alpha``."""
        return self.p_value >= alpha


def _gamma_q_series(a: float, x: float) -> float:
    # Lower regularised gamma P(a, x) by its power series, returned as Q = 1 - P.
    term = 1.0 / a
    total = term
    k = 1
    while abs(term) > abs(total) * 1e-16 and k < 100_000:
        term *= x / (a + k)
        total += term
        k += 1
    log_p = math.log(total) - x + a * math.log(x) - math.lgamma(a)
    return max(0.0, 1.0 - math.exp(log_p))


def _gamma_q_fraction(a: float, x: float) -> float:
    # Upper regularised gamma Q(a, x) by its continued fraction (modified Lentz).
    tiny = 1e-300
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for i in range(1, 100_000):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def chi2_sf(x: float, df: int) -> float:
    """Chi-square survival function ``P(X >= x)`` for ``df`` degrees of freedom."""
    stats = _scipy_stats()
    if stats is not None:
        return float(stats.chi2.sf(x, df))
    if x <= 0:
        return 1.0
    a, half = df / 2.0, x / 2.0
    return _gamma_q_series(a, half) if half < a + 1.0 else _gamma_q_fraction(a, half)


def _as_bytes(data: bytes | npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    if isinstance(data, bytes | bytearray):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(data, dtype=np.uint8).ravel()


def byte_chi_square_test(data: bytes | npt.NDArray[np.uint8]) -> StatTest:
    """Chi-square goodness of fit of byte values to the uniform law on 0..255 (255 df)."""
    values = _as_bytes(data)
    counts = np.bincount(values, minlength=256).astype(np.float64)
    expected = values.size / 256.0
    statistic = float(((counts - expected) ** 2).sum() / expected)
    return StatTest(
        name="byte_chi_square",
        statistic=statistic,
        p_value=chi2_sf(statistic, 255),
        n=int(values.size),
        detail="256 bins, 255 degrees of freedom",
    )


def bit_bias_test(data: bytes | npt.NDArray[np.uint8]) -> StatTest:
    """Two-sided z test that each bit is 1 with probability 1/2."""
    values = _as_bytes(data)
    bits = 8 * values.size
    ones = int(_BITS_PER_BYTE[values].sum())
    z = (ones - bits / 2.0) / math.sqrt(bits / 4.0)
    return StatTest(
        name="bit_bias_z",
        statistic=z,
        p_value=math.erfc(abs(z) / math.sqrt(2.0)),
        n=bits,
        detail=f"fraction of ones {ones / bits:.6f}",
    )


def ks_uniform_test(u: npt.ArrayLike) -> StatTest:
    """Kolmogorov-Smirnov test of values against the uniform law on (0, 1).

    The test itself is qr-core's (:func:`qr_core.records.ks_uniform`: SciPy when
    installed, else the asymptotic Kolmogorov series), so the check and
    ``qr-analyze`` report the same statistic for the same values.
    """
    values = np.asarray(u, dtype=np.float64).ravel()
    n = values.size
    if n < 1:
        raise ValueError("ks_uniform_test needs at least one value")
    result = ks_uniform(values)
    statistic, p_value = result.statistic, result.p_value
    return StatTest(
        name="ks_amplified_u",
        statistic=statistic,
        p_value=p_value,
        n=int(n),
        detail="one u per fetch (qr_core.ZScoreMeanAmplifier) against uniform(0, 1)",
    )
