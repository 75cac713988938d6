"""The cumulative deviation of z: its whole-walk test and its bands, exact or calibrated.

The walk ``S_k = z_1 + ... + z_k`` of n exact null z-scores is Brownian motion seen at
whole steps, scaled by sqrt(n). A calibration's offset b ~ N(0, mse^2) is shared by
every token, so a calibrated walk is ``r sqrt(n) (W(t) + t lambda xi)``: a random linear
drift with ``lambda^2 = n mse^2``, times the scale error ``r = s / s_hat``. Writing
``W(t) + t lambda xi = bridge(t) + t Y`` with ``Y ~ N(0, 1 + lambda^2)`` independent of
the bridge, the probability that it stays inside (-c, c) given ``Y = y`` is the method
of images' ``sum_k [phi(y + 4kc) - phi(y + 2c + 4kc)] / phi(y)``, hence the one
Gauss-Legendre integral in :func:`walk_sf` (lambda = 0 gives :func:`brownian_max_sf`
to 1e-15). The p-value averages it over r (12-node quadrature of
``1/r^2 ~ chi2_nu / nu``).

Both kinds of walk are seen at whole steps, which crosses a band less often than
Brownian motion: Siegmund's correction moves the boundary out by ``0.5826 / sqrt(n)``
(``-zeta(1/2) / sqrt(2 pi)``; Siegmund 1985, *Sequential Analysis*, ch. X). Without it
the exact walk test had level 4.77% at 0.05 and 0.94% at 0.01 for n = 1,000
(conservative); with it the simulated levels are within their Monte Carlo intervals
(``tests/analysis/test_calibrated_acceptance.py``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from qr_core.analysis._calibrated import (
    CalibrationInput,
    CalibrationUncertainty,
    combined,
    parts_of,
)
from qr_core.analysis._errors import AnalysisError
from qr_core.analysis._netvar import chi2_over_nu_nodes

__all__ = [
    "SIEGMUND_BETA",
    "WalkResult",
    "brownian_max_sf",
    "walk_band_constant",
    "walk_excursion",
    "walk_p_value",
    "walk_sf",
]

FloatArray = npt.NDArray[np.float64]

SIEGMUND_BETA: Final = 0.5825971579390106
"""``-zeta(1/2) / sqrt(2 pi)``: how far a Gaussian walk seen at whole steps overshoots."""

_SERIES_TERMS: Final = 400
_SCALE_NODES: Final = 12


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


@functools.lru_cache(maxsize=1)
def _legendre() -> tuple[FloatArray, FloatArray]:
    x, w = np.polynomial.legendre.leggauss(96)
    return x, w


def walk_sf(c: float, drift_variance: float = 0.0) -> float:
    """``P(max_{0<=t<=1} |W(t) + t lambda xi| >= c)``, ``lambda^2 = drift_variance``,
    xi ~ N(0, 1) independent of the Brownian motion W."""
    if drift_variance == 0.0:
        return brownian_max_sf(c)
    if c <= 0.0:
        return 1.0
    s2 = 1.0 + drift_variance
    x, w = _legendre()
    y = c * x
    k = np.arange(-6, 7)[:, None]
    # phi_{sqrt(s2)}(y) / phi(y), the 1/sqrt(2 pi) of the images applied below
    log_mix = -0.5 * y * y / s2 - 0.5 * math.log(s2) + 0.5 * y * y
    images = np.exp(-0.5 * (y + 4 * k * c) ** 2 + log_mix) - np.exp(
        -0.5 * (y + 2 * c + 4 * k * c) ** 2 + log_mix
    )
    inside = float((images.sum(axis=0) * w).sum()) * c / math.sqrt(2.0 * math.pi)
    return min(1.0, max(0.0, 1.0 - inside))


def walk_p_value(
    excursion: float, n: int, calibration: CalibrationUncertainty | None = None
) -> float:
    """The whole-walk p-value of ``max_k |S_k| / sqrt(n) = excursion`` (see the module)."""
    correction = SIEGMUND_BETA / math.sqrt(n)
    if calibration is None:
        return brownian_max_sf(excursion + correction)
    drift = n * calibration.mean_se_z**2
    w_nodes, weights = chi2_over_nu_nodes(calibration.df, _SCALE_NODES)
    r = 1.0 / np.sqrt(w_nodes)
    return float(
        sum(
            wi * walk_sf(excursion / ri + correction, drift)
            for ri, wi in zip(r, weights, strict=True)
        )
    )


@dataclass(frozen=True, slots=True)
class WalkResult:
    """Largest excursion of the cumulative deviation ``S_k = z_1 + ... + z_k``."""

    n: int
    """Number of steps."""
    max_excursion: float
    """``max_k |S_k| / sqrt(n)``."""
    p_value: float
    """The whole-walk test's p-value (see :func:`walk_excursion`)."""
    drift_variance: float = 0.0
    """``lambda^2 = n mse^2``: the calibration's random slope in units of the walk's sd
    (0 for exact tokens)."""


def walk_excursion(z: npt.ArrayLike, calibration: CalibrationInput = None) -> WalkResult:
    """The whole-walk test of the cumulative deviation of ``z`` in the given order.

    A group mixing calibrations takes its combined calibration: exact when their
    tokens are interleaved in time, an approximation for arms run one after another.
    """
    values = np.asarray(z, dtype=np.float64).ravel()
    n = values.size
    if n == 0:
        return WalkResult(0, math.nan, math.nan)
    m = float(np.abs(np.cumsum(values)).max()) / math.sqrt(n)
    cal = combined(parts_of(calibration, n), n)
    drift = 0.0 if cal is None else n * cal.mean_se_z**2
    return WalkResult(n, m, walk_p_value(m, n, cal), drift)


def walk_band_constant(
    level: float = 0.95, *, n: int | None = None, calibration: CalibrationUncertainty | None = None
) -> float:
    """The c with ``P(whole walk leaves ±c sqrt(N)) = 1 - level``.

    Without ``n``: Brownian motion, c = 2.2414 at 0.95 (a walk of N steps crosses less
    often). With ``n``: the walk of n whole steps (Siegmund's correction) and, with a
    ``calibration``, its random drift and scale.

    Raises:
        AnalysisError: ``level`` is not inside (0, 1), or a calibration comes without n.
    """
    if not 0.0 < level < 1.0:
        raise AnalysisError(f"level must lie in (0, 1), got {level!r}")
    if calibration is not None and n is None:
        raise AnalysisError("a calibrated walk's band needs its length n")

    def p(c: float) -> float:
        return brownian_max_sf(c) if n is None else walk_p_value(c, n, calibration)

    lo, hi = 1e-3, 40.0
    if calibration is not None and n is not None:
        hi += 10.0 * math.sqrt(n) * calibration.mean_se_z
    for _ in range(100):  # bisection: the p-value falls monotonically in c
        mid = 0.5 * (lo + hi)
        if p(mid) > 1.0 - level:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
