"""The built-in amplifiers: many entropy bytes in, one uniform ``u`` in (0, 1) out.

The built-ins reduce the bytes to an integer statistic S whose exact null law (for
independent uniform bytes) is known (:mod:`qr_core._null`), and turn S into u by
the randomised probability integral transform (:mod:`qr_core._pit`): u is then
exactly U(0, 1) under the null, not a point of a lattice. Byte layout of each row
of ``N = sample_count`` bytes: the first ``N - 8`` bytes form S, the last 8 form V
(a 53-bit uniform). The fetch size is unchanged; N must be at least 9.

The old mapping ``u = Phi(z)`` over all N bytes stays available, by name, as
``phi_approx_zscore_mean`` and ``phi_approx_zscore_bits``. It is approximate: u
lives on the lattice of S (3.8e-5 apart for the byte sum at N = 20,480, about 2e-3
for the bit count), so some tokens are unreachable and some over-drawn.

z stays the signal: ``z = (S - m) / sd`` against the null (or a device
calibration's) mean and standard deviation.

Sensitivity of ``zscore_bits`` versus ``zscore_mean`` to a per-bit bias: if every
bit is 1 with probability ``1/2 + d``, the byte mean moves by
``d * (1 + 2 + ... + 128) = 255 d``, so the mean's z moves by
``255 d sqrt(N) / 73.90`` = ``3.45 d sqrt(N)``. The one-count over 8N bits moves by
``8 N d`` with null standard deviation ``sqrt(2N)``, so its z moves by
``sqrt(32 N) d`` = ``5.66 d sqrt(N)``: 1.64 times as far. Counting bits weighs every
bit equally, which is the optimal (likelihood-ratio) statistic for an i.i.d. bit
bias; the byte mean weighs the high bits 128 times more than the low bit and so
wastes the low bits' evidence. For a bias that shifts whole byte values (rather
than each bit) the byte mean is the better statistic.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import ClassVar, Self

import numpy as np
import numpy.typing as npt

from qr_core._amplifiers import SignalAmplifier, register_amplifier
from qr_core._calibration import Calibration, CalibrationBuilder
from qr_core._config import POPULATION_STD, SamplingConfig
from qr_core._errors import QRCoreError
from qr_core._normal import normal_cdf
from qr_core._null import Statistic, null_moments, null_table
from qr_core._pit import V_BYTES, randomized_pit, uniform_53

__all__ = [
    "PhiZScoreBitsAmplifier",
    "PhiZScoreMeanAmplifier",
    "ZScoreBitsAmplifier",
    "ZScoreMeanAmplifier",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
ByteArray = npt.NDArray[np.uint8]

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _byte_sums(raw: ByteArray) -> IntArray:
    """Exact row sums of a ``(B, N)`` uint8 array.

    Summing into uint32 (exact while ``255 N < 2**32``) runs about twice as fast
    as into int64.
    """
    acc = np.uint32 if 255 * raw.shape[1] < 2**32 else np.uint64
    sums: IntArray = np.add.reduce(raw, axis=1, dtype=acc).astype(np.int64)
    return sums


def _one_counts(raw: ByteArray) -> IntArray:
    """One bits per row of a ``(B, n)`` uint8 array.

    With numpy >= 2.0, whole 8-byte words go through its SIMD popcount on a uint64
    view (8 times fewer elements than bytes); the rest byte by byte.
    """
    if not hasattr(np, "bitwise_count"):
        counts: IntArray = np.add.reduce(_POPCOUNT[raw], axis=1, dtype=np.uint32).astype(np.int64)
        return counts
    whole = raw.shape[1] // 8 * 8
    words = raw[:, :whole]
    if words.strides[1] == 1 and raw.strides[0] % 8 == 0:
        bits = np.bitwise_count(words.view(np.uint64))
    else:
        bits = np.bitwise_count(words)
    total: IntArray = np.add.reduce(bits, axis=1, dtype=np.uint32).astype(np.int64)
    if whole < raw.shape[1]:
        total += np.add.reduce(np.bitwise_count(raw[:, whole:]), axis=1, dtype=np.uint32)
    return total


class _IntegerAmplifier(SignalAmplifier):
    """Shared machinery of the built-ins: an integer statistic with an exact null."""

    statistic: ClassVar[Statistic]
    """Which integer statistic S is (``one_count`` or ``byte_sum``)."""
    u_transform: ClassVar[str] = "randomized_pit"

    def __init__(self, *, clamp_epsilon: float, sample_count: int | None) -> None:
        super().__init__(clamp_epsilon=clamp_epsilon, sample_count=sample_count)
        if sample_count is not None:
            self._check_width(sample_count)
        self._calibration: Calibration | None = None

    @property
    def calibration(self) -> Calibration | None:
        """The device calibration S is standardised against, or None."""
        return self._calibration

    def statistic_bytes(self, n: int) -> int:
        """How many of a row's ``n`` bytes form S (the first ones)."""
        return n - V_BYTES if self.u_transform == "randomized_pit" else n

    def _check_width(self, n: int) -> None:
        if self.u_transform == "randomized_pit" and n <= V_BYTES:
            raise QRCoreError(
                f"sample_count must be >= {V_BYTES + 1} for amplifier {self.name!r} "
                f"(the last {V_BYTES} bytes of each row form V), got {n}"
            )

    @abstractmethod
    def _integer(self, raw: ByteArray) -> IntArray:
        """S per row of the statistic's bytes."""

    def _head_sums(self, raw: ByteArray, s: IntArray) -> IntArray:
        """The byte sums of the statistic's bytes, given their S."""
        return _byte_sums(raw)

    def _null_location(self, n: int) -> tuple[float, float] | None:
        """``(m, sd)`` of S under this amplifier's null, or None for the ideal null."""
        return None

    def integer_statistic(self, raw: ByteArray) -> IntArray:
        """S per row of a ``(B, N)`` uint8 array (the first ``N - 8`` bytes)."""
        return self._integer(raw[:, : self.statistic_bytes(raw.shape[1])])

    def calibration_builder(self) -> CalibrationBuilder:
        """An accumulator of blocks into a calibration for this amplifier.

        Raises:
            QRCoreError: The amplifier has no fixed ``sample_count``.
        """
        if self._sample_count is None:
            raise QRCoreError("a calibration needs an amplifier with a fixed sample_count")
        nb = self.statistic_bytes(self._sample_count)
        null_mean, null_std = null_moments(self.statistic, nb)
        return CalibrationBuilder(
            amplifier=self.name,
            sample_count=self._sample_count,
            statistic=self.statistic,
            statistic_bytes=nb,
            integer_statistic=self.integer_statistic,
            null_mean=null_mean,
            null_std=null_std,
        )

    def calibrated(self, calibration: Calibration) -> Self:
        """A copy that standardises S against ``calibration``'s mean and std.

        Raises:
            QRCoreError: The calibration's amplifier or sample_count differs from
                this amplifier's (the message names both values).
        """
        if calibration.amplifier != self.name:
            raise QRCoreError(
                f"calibration amplifier {calibration.amplifier!r} does not match "
                f"signal_amplifier_type {self.name!r}"
            )
        if calibration.sample_count != self._sample_count:
            raise QRCoreError(
                f"calibration sample_count={calibration.sample_count} does not match "
                f"sample_count={self._sample_count}"
            )
        if self._null_location(calibration.sample_count) is not None:
            raise QRCoreError(
                "population_mean and population_std must keep their defaults (127.5, "
                f"{POPULATION_STD}) with a calibration, which replaces them"
            )
        copy = type(self).__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy._calibration = calibration
        return copy

    def _amplify(self, raw: ByteArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        n = raw.shape[1]
        nb = self.statistic_bytes(n)
        s = self._integer(raw[:, :nb])
        u, z = self._u_z(raw, s)
        # sample_mean is the mean of all N bytes, as records have always held it.
        head_sum = self._head_sums(raw[:, :nb], s)
        total = head_sum if nb == n else head_sum + _byte_sums(raw[:, nb:])
        mean: FloatArray = total / n
        return u, z, mean

    def _amplify_u_z(self, raw: ByteArray) -> tuple[FloatArray, FloatArray]:
        if type(self)._amplify is not _IntegerAmplifier._amplify:
            return super()._amplify_u_z(raw)  # a subclass makes its own u: ask it
        return self._u_z(raw, self._integer(raw[:, : self.statistic_bytes(raw.shape[1])]))

    def _u_z(self, raw: ByteArray, s: IntArray) -> tuple[FloatArray, FloatArray]:
        """u and z per row of ``raw`` whose statistic bytes gave ``s``."""
        n = raw.shape[1]
        nb = self.statistic_bytes(n)
        cal = self._calibration
        location = (cal.mean, cal.std) if cal is not None else self._null_location(n)
        m, sd = location if location is not None else null_moments(self.statistic, nb)
        z: FloatArray = (s - m) / np.float64(sd)
        if self.u_transform == "phi":
            return normal_cdf(z), z
        table = null_table(self.statistic, nb)
        return randomized_pit(table, s, uniform_53(raw[:, nb:]), location), z


@register_amplifier("zscore_mean")
class ZScoreMeanAmplifier(_IntegerAmplifier):
    """The byte sum S of the first ``N - 8`` bytes; u by the randomised transform.

    ``z = (M - mu) / (sigma / sqrt(n))`` with M the mean of those n bytes. The null
    of S is the exact law of a sum of n uniform bytes (:mod:`qr_core._null`).

    Args:
        population_mean: Null-hypothesis byte mean mu. Other than 127.5 (or a
            ``population_std`` other than the default), S is standardised against
            ``(n mu, sqrt(n) sigma)`` and mapped onto the exact null's shape, like
            a calibration.
        population_std: Null-hypothesis byte standard deviation sigma; the default
            is the exact value for uniform bytes, ``sqrt((256**2 - 1) / 12)``.
        clamp_epsilon: u is clamped to ``(eps, 1 - eps)``.
        sample_count: If given, every input must hold exactly this many bytes.
    """

    statistic: ClassVar[Statistic] = "byte_sum"

    def __init__(
        self,
        population_mean: float = 127.5,
        population_std: float = POPULATION_STD,
        clamp_epsilon: float = 1e-10,
        *,
        sample_count: int | None = None,
    ) -> None:
        super().__init__(clamp_epsilon=clamp_epsilon, sample_count=sample_count)
        if not math.isfinite(population_mean):
            raise QRCoreError(f"population_mean must be finite, got {population_mean!r}")
        if not (math.isfinite(population_std) and population_std > 0):
            raise QRCoreError(f"population_std must be finite and > 0, got {population_std!r}")
        self._mu = float(population_mean)
        self._sigma = float(population_std)

    @classmethod
    def from_config(cls, config: SamplingConfig) -> Self:
        """Build from ``population_mean``, ``population_std``,
        ``uniform_clamp_epsilon`` and ``sample_count``."""
        return cls(
            config.population_mean,
            config.population_std,
            config.uniform_clamp_epsilon,
            sample_count=config.sample_count,
        )

    def _null_location(self, n: int) -> tuple[float, float] | None:
        if self._mu == 127.5 and self._sigma == POPULATION_STD:
            return None
        nb = self.statistic_bytes(n)
        return nb * self._mu, math.sqrt(nb) * self._sigma

    def _integer(self, raw: ByteArray) -> IntArray:
        return _byte_sums(raw)

    def _head_sums(self, raw: ByteArray, s: IntArray) -> IntArray:
        return s  # S is the byte sum: the mean costs nothing more


@register_amplifier("zscore_bits")
class ZScoreBitsAmplifier(_IntegerAmplifier):
    """The one-bit count S of the first ``N - 8`` bytes; u by the randomised transform.

    ``z = (S - 4n) / sqrt(2n)``; the null of S is Binomial(8n, 1/2). About 1.64
    times as sensitive to a per-bit bias as ``zscore_mean`` at the same N (see
    the module docstring: ``sqrt(32) * 73.90 / 255``).

    Args:
        clamp_epsilon: u is clamped to ``(eps, 1 - eps)``.
        sample_count: If given, every input must hold exactly this many bytes.
    """

    statistic: ClassVar[Statistic] = "one_count"

    def __init__(self, clamp_epsilon: float = 1e-10, *, sample_count: int | None = None) -> None:
        super().__init__(clamp_epsilon=clamp_epsilon, sample_count=sample_count)

    @classmethod
    def from_config(cls, config: SamplingConfig) -> Self:
        """Build from ``uniform_clamp_epsilon`` and ``sample_count``."""
        return cls(config.uniform_clamp_epsilon, sample_count=config.sample_count)

    def _integer(self, raw: ByteArray) -> IntArray:
        return _one_counts(raw)


@register_amplifier("phi_approx_zscore_mean")
class PhiZScoreMeanAmplifier(ZScoreMeanAmplifier):
    """APPROXIMATE: ``zscore_mean`` over all N bytes with ``u = Phi(z)`` (the old mapping).

    u lies on the lattice of the byte sum, so it is not uniform: kept only for
    reproducing records made before the randomised transform.
    """

    u_transform: ClassVar[str] = "phi"


@register_amplifier("phi_approx_zscore_bits")
class PhiZScoreBitsAmplifier(ZScoreBitsAmplifier):
    """APPROXIMATE: ``zscore_bits`` over all N bytes with ``u = Phi(z)`` (the old mapping).

    u lies on the lattice of the bit count (about 2e-3 apart at N = 20,480): kept
    only for reproducing records made before the randomised transform.
    """

    u_transform: ClassVar[str] = "phi"
