"""The randomised probability integral transform: an integer statistic to an exact U(0, 1).

For an integer statistic S with null CDF F and an independent V ~ U(0, 1),
``u = F(s - 1) + V * P(S = s)`` is exactly uniform under the null, whatever the
lattice of S: the atoms ``[F(s - 1), F(s))`` tile [0, 1) and V spreads each atom's
mass evenly over its own interval. All of the signal stays in S: u is monotone in
S, and V only orders the draws within one value of S.

V comes from 8 further entropy bytes that S does not use (:func:`uniform_53`).

**Calibrated null.** A real device has its own mean m and standard deviation sd of
S. The jittered statistic ``X = S + V - 1/2`` is continuous with the mean of S and
variance ``sd^2 + 1/12``; its null CDF is the piecewise-linear interpolation G of F
between half-integers. With a calibration, X is moved affinely onto the null's
location and scale, ``X' = mean0 + (X - m) * sqrt((sd0^2 + 1/12) / (sd^2 + 1/12))``,
and ``u = G(X')``. Without a calibration this is the plain transform above, exact
by construction; with one, u is uniform to the extent that the device's S has the
null's shape at its own location and scale (the standard errors of m and sd are
the limiting error, see the calibration's ``mean_se`` and ``std_se``).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from qr_core._null import NullTable

__all__ = ["V_BYTES", "randomized_pit", "uniform_53"]

V_BYTES = 8
"""Entropy bytes that form V: the last 8 of each row."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_TWO_TO_MINUS_53 = 2.0**-53


def uniform_53(tail: npt.NDArray[np.uint8]) -> FloatArray:
    """V per row from a ``(B, 8)`` uint8 array: ``(uint64 little-endian >> 11) / 2**53``.

    The top 53 bits of the 64 give every multiple of ``2**-53`` in [0, 1) with
    equal probability; float64 holds each of them exactly.
    """
    words = np.ascontiguousarray(tail).view("<u8").reshape(-1)
    v: FloatArray = (words >> np.uint64(11)).astype(np.float64) * _TWO_TO_MINUS_53
    return v


def randomized_pit(
    table: NullTable,
    s: IntArray,
    v: FloatArray,
    location: tuple[float, float] | None = None,
) -> FloatArray:
    """``u`` from the statistic ``s``, the uniform ``v`` and the null ``table``.

    Args:
        table: The null CDF of S.
        s: The statistic per row (int64).
        v: V per row, in [0, 1).
        location: ``(m, sd)`` of S on the device (a calibration); ``None`` for the
            exact null.

    Returns:
        u per row in [0, 1]; the caller clamps it.
    """
    if location is None:
        atom, frac = s, v
    else:
        m, sd = location
        scale = math.sqrt((table.std**2 + 1.0 / 12.0) / (sd**2 + 1.0 / 12.0))
        # X' + 1/2, with X = S + V - 1/2: atom k holds (k - 1/2, k + 1/2].
        shifted = table.mean + 0.5 + ((s - m) + (v - 0.5)) * scale
        floor = np.floor(shifted)
        atom, frac = floor.astype(np.int64), shifted - floor
    lo, hi = table.atoms(atom)
    u: FloatArray = lo + frac * (hi - lo)
    return u
