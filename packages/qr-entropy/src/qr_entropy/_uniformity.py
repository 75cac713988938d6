"""The tests of bytes against the ideal uniform law, and :class:`StatTest`, their outcome.

Run by ``qr-entropy check`` without a calibration; a calibrated check runs the
drift tests of :mod:`qr_entropy._calibrate` instead, which report a
:class:`StatTest` too. Every p-value comes from qr-core's statistics
(``qr_core.analysis``, SciPy always), the same code ``qr-analyze`` runs, so a
p-value never depends on what is installed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from qr_core import ZScoreMeanAmplifier
from qr_core.analysis import chi_square_uniform, ks_uniform, normal_two_sided_p

__all__ = [
    "StatTest",
    "amplified_u",
    "bit_bias_test",
    "byte_chi_square_test",
    "ks_uniform_test",
]

_BITS_PER_BYTE = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1)


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


def _as_bytes(data: bytes | npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    if isinstance(data, bytes | bytearray):
        return np.frombuffer(data, dtype=np.uint8)
    return np.asarray(data, dtype=np.uint8).ravel()


def byte_chi_square_test(data: bytes | npt.NDArray[np.uint8]) -> StatTest:
    """Chi-square goodness of fit of byte values to the uniform law on 0..255 (255 df)."""
    values = _as_bytes(data)
    result = chi_square_uniform(np.bincount(values, minlength=256))
    return StatTest(
        name="byte_chi_square",
        statistic=result.statistic,
        p_value=result.p_value,
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
        p_value=normal_two_sided_p(z),
        n=bits,
        detail=f"fraction of ones {ones / bits:.6f}",
    )


def ks_uniform_test(u: npt.ArrayLike) -> StatTest:
    """Kolmogorov-Smirnov test of values against the uniform law on (0, 1).

    Raises:
        ValueError: No values.
    """
    values = np.asarray(u, dtype=np.float64).ravel()
    if values.size < 1:
        raise ValueError("ks_uniform_test needs at least one value")
    result = ks_uniform(values)
    return StatTest(
        name="ks_amplified_u",
        statistic=result.statistic,
        p_value=result.p_value,
        n=int(values.size),
        detail="one u per fetch (qr_core.ZScoreMeanAmplifier) against uniform(0, 1)",
    )


def amplified_u(matrix: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    """One amplified ``u`` per row, through qr-core's default z-score mean amplifier."""
    return np.asarray(ZScoreMeanAmplifier().amplify_batch(matrix).u, dtype=np.float64)
