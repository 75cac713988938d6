"""Signal amplifiers: many entropy bytes in, one uniform ``u`` in (0, 1) out.

Both built-ins reduce N bytes to a statistic that is, under the null hypothesis of
unbiased bytes, very nearly standard normal, and map it through the normal CDF.
A small bias in every byte adds up over N bytes and moves ``u`` measurably.

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
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Self, TypeVar

import numpy as np
import numpy.typing as npt

from qr_core._config import POPULATION_STD, SamplingConfig
from qr_core._errors import QRCoreError
from qr_core._normal import normal_cdf
from qr_core._registry import Registry

__all__ = [
    "AmplificationResult",
    "BatchAmplificationResult",
    "SignalAmplifier",
    "ZScoreBitsAmplifier",
    "ZScoreMeanAmplifier",
    "available_amplifiers",
    "build_amplifier",
    "register_amplifier",
]

FloatArray = npt.NDArray[np.float64]
ByteArray = npt.NDArray[np.uint8]

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _byte_sums(raw: ByteArray) -> FloatArray:
    """Exact row sums of a ``(B, N)`` uint8 array, as float64.

    Summing into uint32 (exact while ``255 N < 2**32``) runs about twice as fast
    as into int64; every such sum is below ``2**53``, so the float64 is exact.
    """
    acc = np.uint32 if 255 * raw.shape[1] < 2**32 else np.uint64
    sums: FloatArray = np.add.reduce(raw, axis=1, dtype=acc).astype(np.float64)
    return sums


@dataclass(frozen=True)
class AmplificationResult:
    """One amplified value."""

    u: float
    """Uniform value in ``(eps, 1 - eps)`` that drives token selection."""
    z_score: float
    """The statistic before the normal CDF (standard normal under the null)."""
    sample_mean: float
    """Mean byte value of the input (recorded for analysis)."""
    sample_count: int
    """Number of bytes consumed (N)."""


@dataclass(frozen=True)
class BatchAmplificationResult:
    """B amplified values from a ``(B, N)`` byte array."""

    u: FloatArray
    """Shape ``(B,)``, float64."""
    z_score: FloatArray
    """Shape ``(B,)``, float64."""
    sample_mean: FloatArray
    """Shape ``(B,)``, float64."""
    sample_count: int
    """N, the bytes per row."""


def _check_epsilon(clamp_epsilon: float) -> float:
    eps = float(clamp_epsilon)
    if not 0.0 < eps < 0.5:
        raise QRCoreError(f"clamp_epsilon must be in (0, 0.5), got {clamp_epsilon!r}")
    return eps


def _check_sample_count(sample_count: int | None) -> int | None:
    if sample_count is None:
        return None
    if isinstance(sample_count, bool) or not isinstance(sample_count, int) or sample_count < 1:
        raise QRCoreError(f"sample_count must be a positive int, got {sample_count!r}")
    return sample_count


class SignalAmplifier(ABC):
    """Turns N raw entropy bytes into a uniform ``u``.

    Subclasses implement :meth:`_statistic`; validation, the normal CDF and the
    clamp are shared.

    Args:
        clamp_epsilon: u is clamped to ``(clamp_epsilon, 1 - clamp_epsilon)``.
        sample_count: If given, every input must hold exactly this many bytes.
    """

    name: ClassVar[str]

    def __init__(self, *, clamp_epsilon: float = 1e-10, sample_count: int | None = None) -> None:
        self._eps = _check_epsilon(clamp_epsilon)
        self._sample_count = _check_sample_count(sample_count)

    @property
    def clamp_epsilon(self) -> float:
        """The clamp applied to u."""
        return self._eps

    @property
    def sample_count(self) -> int | None:
        """The required byte count per input, or None if any positive count is accepted."""
        return self._sample_count

    @classmethod
    @abstractmethod
    def from_config(cls, config: SamplingConfig) -> Self:
        """Build the amplifier from a :class:`SamplingConfig`."""

    @abstractmethod
    def _statistic(self, raw: ByteArray) -> tuple[FloatArray, FloatArray]:
        """Return ``(z, sample_mean)`` per row of a validated ``(B, N)`` uint8 array."""

    def amplify(self, raw: bytes) -> AmplificationResult:
        """Amplify one byte string.

        Raises:
            QRCoreError: If ``raw`` is not bytes-like, is empty, or its length
                differs from ``sample_count``.
        """
        if not isinstance(raw, bytes | bytearray | memoryview):
            raise QRCoreError(f"raw must be bytes, got {type(raw).__name__}")
        arr = np.frombuffer(raw, dtype=np.uint8)
        batch = self.amplify_batch(arr.reshape(1, -1))
        return AmplificationResult(
            u=float(batch.u[0]),
            z_score=float(batch.z_score[0]),
            sample_mean=float(batch.sample_mean[0]),
            sample_count=batch.sample_count,
        )

    def amplify_batch(self, raw: npt.NDArray[np.generic]) -> BatchAmplificationResult:
        """Amplify each row of a ``(B, N)`` uint8 array in one vectorised pass.

        Raises:
            QRCoreError: If ``raw`` is not a 2-D uint8 array with N >= 1 (and
                N == ``sample_count`` when that is set).
        """
        if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8 or raw.ndim != 2:
            got = (
                f"{raw.dtype} array of shape {raw.shape}"
                if isinstance(raw, np.ndarray)
                else type(raw).__name__
            )
            raise QRCoreError(f"raw must be a 2-D uint8 array (B, N), got {got}")
        n = raw.shape[1]
        if n == 0:
            raise QRCoreError("raw must not be empty (N >= 1 bytes per row)")
        if self._sample_count is not None and n != self._sample_count:
            raise QRCoreError(
                f"raw must hold sample_count={self._sample_count} bytes per row, got {n}"
            )
        z, mean = self._statistic(raw.astype(np.uint8, copy=False))
        u = np.clip(normal_cdf(z), self._eps, 1.0 - self._eps)
        return BatchAmplificationResult(u=u, z_score=z, sample_mean=mean, sample_count=n)


_AMPLIFIERS: Registry[SignalAmplifier] = Registry(
    "amplifier", SignalAmplifier, "qr_sampler.amplifiers"
)


_A = TypeVar("_A", bound=type[SignalAmplifier])


def register_amplifier(name: str) -> Callable[[_A], _A]:
    """Class decorator registering a :class:`SignalAmplifier` under ``name``.

    The class's ``name`` attribute is set to ``name``. Third-party classes can
    instead be published in the entry-point group (see :func:`build_amplifier`).
    """
    return _AMPLIFIERS.register(name)


def available_amplifiers() -> list[str]:
    """Names of the registered amplifiers and of those in entry-point group
    ``qr_sampler.amplifiers``."""
    return _AMPLIFIERS.names()


def build_amplifier(config: SamplingConfig) -> SignalAmplifier:
    """Instantiate ``config.signal_amplifier_type`` from ``config``.

    Raises:
        QRCoreError: If the name is unknown or its entry point fails to load.
    """
    return _AMPLIFIERS.get(config.signal_amplifier_type).from_config(config)


@register_amplifier("zscore_mean")
class ZScoreMeanAmplifier(SignalAmplifier):
    """z-score of the byte mean: ``z = (M - mu) / (sigma / sqrt(N))``, ``u = Phi(z)``.

    Args:
        population_mean: Null-hypothesis byte mean mu.
        population_std: Null-hypothesis byte standard deviation sigma; the default
            is the exact value for uniform bytes, ``sqrt((256**2 - 1) / 12)``.
        clamp_epsilon: u is clamped to ``(eps, 1 - eps)``.
        sample_count: If given, every input must hold exactly this many bytes.
    """

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

    def _statistic(self, raw: ByteArray) -> tuple[FloatArray, FloatArray]:
        n = raw.shape[1]
        # The integer sum is exact; only the final division rounds.
        mean = _byte_sums(raw) / n
        z = (mean - self._mu) * math.sqrt(n) / self._sigma
        return z, mean


@register_amplifier("zscore_bits")
class ZScoreBitsAmplifier(SignalAmplifier):
    """z-score of the one-bit count: ``z = (ones - 4N) / sqrt(2N)``, ``u = Phi(z)``.

    About 1.64 times as sensitive to a per-bit bias as ``zscore_mean`` at the same
    N (see the module docstring for the derivation: ``sqrt(32) * 73.90 / 255``).

    Args:
        clamp_epsilon: u is clamped to ``(eps, 1 - eps)``.
        sample_count: If given, every input must hold exactly this many bytes.
    """

    def __init__(self, clamp_epsilon: float = 1e-10, *, sample_count: int | None = None) -> None:
        super().__init__(clamp_epsilon=clamp_epsilon, sample_count=sample_count)

    @classmethod
    def from_config(cls, config: SamplingConfig) -> Self:
        """Build from ``uniform_clamp_epsilon`` and ``sample_count``."""
        return cls(config.uniform_clamp_epsilon, sample_count=config.sample_count)

    def _statistic(self, raw: ByteArray) -> tuple[FloatArray, FloatArray]:
        n = raw.shape[1]
        ones = _POPCOUNT[raw].sum(axis=1, dtype=np.int64)
        z = (ones - 4 * n) / math.sqrt(2 * n)
        mean = _byte_sums(raw) / n
        return z.astype(np.float64), mean
