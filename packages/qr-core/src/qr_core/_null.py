"""Exact null distributions of the built-in amplifiers' integer statistics.

Under the null hypothesis the n bytes that form a statistic S are independent and
uniform on {0, ..., 255}. The two built-in statistics then have these laws:

* ``one_count`` (``zscore_bits``): the number of one bits among the 8n bits,
  Binomial(8n, 1/2).
* ``byte_sum`` (``zscore_mean``): the sum of the n bytes, the n-fold convolution of
  the uniform law on {0, ..., 255}.

A :class:`NullTable` holds ``P(S <= s)`` for every integer s of a window around the
mean; outside the window the null mass is below 1e-100 (a Hoeffding bound: the
window reaches at least 40 standard deviations each side), so the table is the
whole distribution for every purpose of float64. Tables are built once per
(statistic, n) and cached.

How each is computed, and why it is accurate (``test_null.py`` checks both against
independent references):

* ``one_count``: weights ``w(k) / w(mode)`` by the ratio recurrence
  ``w(k + 1) / w(k) = (8n - k) / (k + 1)``, multiplied outwards from the mode (the
  law is symmetric, so one side is mirrored). Every factor is below 1, so nothing
  overflows, tails underflow harmlessly to 0, and the relative error of ``w(k)`` is
  at most ``|k - mode|`` roundings: 1e-12 at 8,000 steps. This beats ``lgamma``,
  whose ~1e6-sized values carry absolute errors of 1e-10 into the log-probability.
* ``byte_sum``: the characteristic function of one byte is
  ``g(t) = e^{-i 255 t / 2} sin(128 t) / (256 sin(t / 2))``; the pmf is one inverse
  real FFT of ``g^n`` sampled at ``t = 2 pi j / M``. ``g^n`` is formed as a phase
  ``255 n j mod 2M`` (exact integer arithmetic) times ``|r|^n = exp(n log |r|)``,
  whose relative error is ``n |log r|`` ulps, below 5e-15 wherever ``|r|^n`` is
  above 1e-17. ``M`` is a power of two covering the window, so the DFT's wrap-around
  folds only the mass beyond the window (below 1e-100) onto it. FFT rounding leaves
  ~1e-17 of noise on each probability; negative noise is set to 0.

Both CDFs are accumulated in float64 and divided by their own last value, so the
table ends at exactly 1.0.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from qr_core._config import POPULATION_STD
from qr_core._errors import QRCoreError

__all__ = ["NullTable", "Statistic", "null_moments", "null_table"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

Statistic = Literal["one_count", "byte_sum"]

# Half-width of the window in standard deviations. Hoeffding's bound puts the mass
# beyond 40 sigma below exp(-800) for one_count and exp(-268) for byte_sum.
_SIGMAS: Final = 40


@dataclass(frozen=True)
class NullTable:
    """The null CDF of an integer statistic over a window of its support."""

    statistic: Statistic
    """Which statistic: ``one_count`` or ``byte_sum``."""
    byte_count: int
    """n, the bytes the statistic is computed from."""
    start: int
    """The smallest s of the window."""
    cdf: FloatArray
    """``cdf[i] = P(S <= start + i)``; non-decreasing, ``cdf[-1] == 1.0`` exactly."""
    mean: float
    """Null mean of S (``4 n`` or ``127.5 n``)."""
    std: float
    """Null standard deviation of S (``sqrt(2 n)`` or ``73.90 sqrt(n)``)."""

    def atoms(self, s: IntArray) -> tuple[FloatArray, FloatArray]:
        """Return ``(P(S < s), P(S <= s))`` for each s.

        Values below the window give ``(0, 0)``, above it ``(1, 1)``: the window
        already holds all but 1e-100 of the mass.
        """
        ext = self._extended
        i = s - self.start
        # take(mode="clip") clamps the indices in the same call: the ends of ext
        # are 0 and 1. (np.clip looks up the integer type's limits on every call,
        # several times the cost of the lookups.)
        return ext.take(i, mode="clip"), ext.take(i + 1, mode="clip")

    @functools.cached_property
    def _extended(self) -> FloatArray:
        # ext[0] = P(S < start) = 0, ext[i] = P(S <= start + i - 1).
        return np.concatenate(([0.0], self.cdf))


def null_moments(statistic: Statistic, byte_count: int) -> tuple[float, float]:
    """Null mean and standard deviation of ``statistic`` over ``byte_count`` bytes."""
    if statistic == "one_count":
        return 4.0 * byte_count, math.sqrt(2.0 * byte_count)
    return 127.5 * byte_count, POPULATION_STD * math.sqrt(byte_count)


def null_table(statistic: Statistic, byte_count: int) -> NullTable:
    """The cached null table of ``statistic`` over ``byte_count`` bytes.

    Args:
        statistic: ``one_count`` or ``byte_sum``.
        byte_count: n >= 1.

    Raises:
        QRCoreError: Unknown statistic or n < 1.
    """
    if statistic not in ("one_count", "byte_sum"):
        raise QRCoreError(f"statistic must be 'one_count' or 'byte_sum', got {statistic!r}")
    if isinstance(byte_count, bool) or not isinstance(byte_count, int) or byte_count < 1:
        raise QRCoreError(f"byte_count must be an int >= 1, got {byte_count!r}")
    return _cached(statistic, byte_count)


@functools.lru_cache(maxsize=16)
def _cached(statistic: Statistic, n: int) -> NullTable:
    if statistic == "one_count":
        return _one_count(n)
    return _byte_sum(n)


def _one_count(n: int) -> NullTable:
    m = 8 * n
    mode = m // 2  # m is even: the mode and the mean
    mean, std = null_moments("one_count", n)
    half = min(mode, math.ceil(_SIGMAS * std) + 8)
    k = np.arange(mode, mode + half, dtype=np.float64)
    upper = np.empty(half + 1, dtype=np.float64)
    upper[0] = 1.0
    np.cumprod((m - k) / (k + 1.0), out=upper[1:])
    weights = np.concatenate((upper[:0:-1], upper))
    return NullTable("one_count", n, mode - half, _normalised_cdf(weights), mean, std)


def _byte_sum(n: int) -> NullTable:
    top = 255 * n
    mean, std = null_moments("byte_sum", n)
    half = math.ceil(_SIGMAS * std) + 256
    size = 1 << (min(2 * half + 1, top + 1) - 1).bit_length()
    if size >= top + 1:
        start, length = 0, top + 1
    else:
        start, length = math.floor(mean) - size // 2, size
    j = np.arange(size // 2 + 1, dtype=np.int64)
    # r(j) = sin(256 pi j / M) / (256 sin(pi j / M)); both angles reduced exactly.
    num = np.sin(np.pi * ((256 * j) % (2 * size)) / size)
    den = 256.0 * np.sin(np.pi * j / size)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(j == 0, 1.0, num / np.where(j == 0, 1.0, den))
        magnitude = np.exp(n * np.log(np.abs(r)))
    sign = np.where((r < 0) & (n % 2 == 1), -1.0, 1.0)
    phase = np.pi * ((255 * n * j) % (2 * size)) / size
    spectrum = sign * magnitude * np.exp(-1j * phase)
    pmf = np.fft.irfft(spectrum, size)
    window = np.roll(pmf, -(start % size))[:length]
    np.maximum(window, 0.0, out=window)
    return NullTable("byte_sum", n, start, _normalised_cdf(window), mean, std)


def _normalised_cdf(weights: FloatArray) -> FloatArray:
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    cdf[-1] = 1.0
    return cdf
