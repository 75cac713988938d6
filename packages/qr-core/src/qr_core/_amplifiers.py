"""Signal amplifiers: the interface, the registry and the result types.

An amplifier turns many entropy bytes into one uniform ``u`` in (0, 1) and a
signal z. The built-ins live in :mod:`qr_core._amplifier_builtins`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Self, TypeVar

import numpy as np
import numpy.typing as npt

from qr_core._calibration import Calibration, CalibrationBuilder
from qr_core._config import SamplingConfig
from qr_core._errors import QRCoreError
from qr_core._normal import normal_cdf
from qr_core._registry import Registry

__all__ = [
    "AmplificationResult",
    "BatchAmplificationResult",
    "SignalAmplifier",
    "available_amplifiers",
    "build_amplifier",
    "register_amplifier",
]

FloatArray = npt.NDArray[np.float64]
ByteArray = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class AmplificationResult:
    """One amplified value."""

    u: float
    """Uniform value in ``(eps, 1 - eps)`` that drives token selection."""
    z_score: float
    """The standardised statistic, the signal (standard normal under the null)."""
    sample_mean: float
    """Mean byte value of all N input bytes (recorded for analysis)."""
    sample_count: int
    """Number of bytes consumed (N)."""


@dataclass(frozen=True)
class BatchAmplificationResult:
    """B amplified values from a ``(B, N)`` byte array."""

    u: FloatArray
    """Shape ``(B,)``, float64."""
    z_score: FloatArray
    """Shape ``(B,)``, float64."""
    sample_mean: FloatArray | None
    """Shape ``(B,)``, float64; None when ``amplify_batch(..., sample_mean=False)``
    was asked for u and z only."""
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

    A subclass implements :meth:`_statistic` (a z per row; u is then ``Phi(z)``,
    ``u_transform = "phi"``) or overrides :meth:`_amplify` entirely, as the
    built-ins do. Validation and the clamp are shared.

    Args:
        clamp_epsilon: u is clamped to ``(clamp_epsilon, 1 - clamp_epsilon)``.
        sample_count: If given, every input must hold exactly this many bytes.
    """

    name: ClassVar[str]
    u_transform: ClassVar[str] = "phi"
    """How u is made: ``"randomized_pit"`` (exact under the null) or ``"phi"``."""

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

    @property
    def calibration(self) -> Calibration | None:
        """The device calibration S is standardised against, or None."""
        return None

    @classmethod
    @abstractmethod
    def from_config(cls, config: SamplingConfig) -> Self:
        """Build the amplifier from a :class:`SamplingConfig`."""

    def calibrated(self, calibration: Calibration) -> SignalAmplifier:
        """A copy that standardises against ``calibration``.

        Raises:
            QRCoreError: This amplifier supports no calibration, or the
                calibration was measured for another amplifier or sample count.
        """
        raise QRCoreError(f"amplifier {self.name!r} does not support a device calibration")

    def calibration_builder(self) -> CalibrationBuilder:
        """An accumulator of device blocks into a calibration for this amplifier.

        Raises:
            QRCoreError: This amplifier supports no calibration.
        """
        raise QRCoreError(f"amplifier {self.name!r} does not support a device calibration")

    def integer_statistic(self, raw: ByteArray) -> npt.NDArray[np.int64]:
        """The integer statistic S per row of a ``(B, N)`` uint8 array.

        Raises:
            QRCoreError: This amplifier has no integer statistic.
        """
        raise QRCoreError(f"amplifier {self.name!r} has no integer statistic")

    def _statistic(self, raw: ByteArray) -> tuple[FloatArray, FloatArray]:
        """Return ``(z, sample_mean)`` per row of a validated ``(B, N)`` uint8 array."""
        raise NotImplementedError(f"{type(self).__name__} implements no _statistic")

    def _amplify(self, raw: ByteArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Return ``(u, z, sample_mean)`` per row, u before the clamp."""
        z, mean = self._statistic(raw)
        return normal_cdf(z), z, mean

    def _amplify_u_z(self, raw: ByteArray) -> tuple[FloatArray, FloatArray]:
        """Return ``(u, z)`` per row, u before the clamp.

        An amplifier whose sample mean costs a pass of its own over the bytes
        overrides this to skip it (the built-in ``zscore_bits``).
        """
        u, z, _ = self._amplify(raw)
        return u, z

    def _check_width(self, n: int) -> None:  # noqa: B027 - optional hook, no-op by default
        """Raise if rows of ``n`` bytes are too short for this amplifier."""

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
        if batch.sample_mean is None:  # asked for above; a broken override
            raise QRCoreError(f"amplifier {self.name!r} returned no sample_mean")
        return AmplificationResult(
            u=float(batch.u[0]),
            z_score=float(batch.z_score[0]),
            sample_mean=float(batch.sample_mean[0]),
            sample_count=batch.sample_count,
        )

    def amplify_batch(
        self, raw: npt.NDArray[np.generic], *, sample_mean: bool = True
    ) -> BatchAmplificationResult:
        """Amplify each row of a ``(B, N)`` uint8 array in one vectorised pass.

        Args:
            raw: The bytes, one row per value.
            sample_mean: Also compute each row's byte mean (what records hold).
                False gives ``sample_mean=None`` and saves the amplifiers whose
                statistic is not the byte sum a second pass over the bytes.

        Raises:
            QRCoreError: If ``raw`` is not a 2-D uint8 array with N >= 1 (and
                N == ``sample_count`` when that is set, N >= 9 for the built-ins'
                randomised transform).
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
        self._check_width(n)
        rows = raw.astype(np.uint8, copy=False)
        mean: FloatArray | None = None
        if sample_mean:
            u, z, mean = self._amplify(rows)
        else:
            u, z = self._amplify_u_z(rows)
        np.maximum(u, self._eps, out=u)  # NaN stays NaN, as with np.clip
        np.minimum(u, 1.0 - self._eps, out=u)
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


def build_amplifier(
    config: SamplingConfig, calibration: Calibration | None = None
) -> SignalAmplifier:
    """Instantiate ``config.signal_amplifier_type`` from ``config``.

    Args:
        config: The sampling configuration.
        calibration: A device calibration to standardise against (see
            :meth:`SignalAmplifier.calibrated`), or None.

    Raises:
        QRCoreError: If the name is unknown, its entry point fails to load, or
            the calibration does not fit the amplifier.
    """
    amplifier = _AMPLIFIERS.get(config.signal_amplifier_type).from_config(config)
    return amplifier if calibration is None else amplifier.calibrated(calibration)
