"""The calibration's own error, as every statistic of a calibrated arm takes it.

A calibration estimates the device's mean m and sd s of the amplifier's statistic S
from B blocks. Its error is one offset and one scale shared by every token
standardised against it: ``z = r (z0 + b)`` with z0 the token's exact z-score,
``b = (m - m_hat) / s ~ N(0, 1/B)`` and ``r = s / s_hat``. Every mean-type statistic
of a calibrated arm is therefore a two-sample statistic (tokens against calibration
blocks), computable from the records alone given B and the standard errors of the
calibrated mean and sd in units of the calibrated sd, which schema-3 records carry
(``docs/records.md``, "Calibrated arms").

:class:`CalibrationUncertainty` holds those figures; a statistic takes one for all its
values, or one per value (``None`` = an exact, uncalibrated token), so that a group
mixing calibrations is handled by one rule: the tokens standardised against
calibration c contribute ``a_c b_c`` to the mean, where ``a_c`` is their share, and
calibrations with equal sha256 are one calibration (their offsets cancel in a
difference of two arms).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from qr_core.analysis._errors import AnalysisError
from qr_core.records._rows import CalibrationFigures
from qr_core.records._schema import TokenSamplingRecord

__all__ = [
    "CalibrationInput",
    "CalibrationUncertainty",
    "Part",
    "VarianceTerm",
    "calibration_terms",
    "combined",
    "parts_of",
    "satterthwaite",
]

FloatArray = npt.NDArray[np.float64]

_JITTER_VARIANCE: Final = 1.0 / 12.0  # variance of V - 1/2 in the jittered S + V - 1/2


@dataclass(frozen=True, slots=True)
class CalibrationUncertainty:
    """The sampling error of one calibration, in units of its own sd of S."""

    blocks: int
    """B, the blocks it was measured from."""
    mean_se_z: float
    """Standard error of the calibrated mean over the calibrated sd (``1/sqrt(B)``)."""
    std_se_z: float
    """Standard error of the calibrated sd over the calibrated sd (~ ``1/sqrt(2(B-1))``)."""
    cov_z: float = 0.0
    """Covariance of the calibrated mean and sd over the calibrated sd squared
    (0 for a symmetric S such as the bit count or the byte sum)."""
    sha256: str | None = None
    """The calibration's content hash: tokens with equal hashes share one offset."""
    jitter_ratio: float = 1.0
    """``std^2 / (std^2 + 1/12)``: u is made from the jittered ``S + V - 1/2``
    (1 - 2e-6 at 20,480 bytes; it matters for a small sample_count only)."""

    @property
    def df(self) -> float:
        """nu = ``1 / (2 std_se_z^2)``: ``(s_hat / s)^2 ~ chi2_nu / nu`` (B - 1 for normal S)."""
        return 1.0 / (2.0 * self.std_se_z**2)

    @classmethod
    def normal(cls, blocks: int, sha256: str | None = None) -> CalibrationUncertainty:
        """The error of a calibration of a normal-shaped S from ``blocks`` blocks.

        Raises:
            AnalysisError: ``blocks`` is below 2.
        """
        if blocks < 2:
            raise AnalysisError(f"blocks must be >= 2, got {blocks!r}")
        return cls(
            blocks, 1.0 / math.sqrt(blocks), 1.0 / math.sqrt(2.0 * (blocks - 1)), 0.0, sha256
        )

    @classmethod
    def of(cls, calibration: CalibrationFigures) -> CalibrationUncertainty:
        """The error of a calibration file's figures (``qr_core.Calibration``)."""
        std = float(calibration.std)
        return cls(
            blocks=int(calibration.blocks),
            mean_se_z=calibration.mean_se / std,
            std_se_z=calibration.std_se / std,
            cov_z=calibration.mean_std_cov / std**2,
            sha256=calibration.sha256,
            jitter_ratio=std**2 / (std**2 + _JITTER_VARIANCE),
        )

    @classmethod
    def from_record(cls, record: TokenSamplingRecord) -> CalibrationUncertainty | None:
        """The figures a schema-3 record carries; ``None`` when it carries none."""
        r = record
        if r.calibration_blocks is None or r.calibration_std is None:
            return None
        std = r.calibration_std
        return cls(
            blocks=r.calibration_blocks,
            mean_se_z=float(r.calibration_mean_se_z or 0.0),
            std_se_z=float(r.calibration_std_se_z or 0.0),
            cov_z=float(r.calibration_cov_z or 0.0),
            sha256=r.calibration_sha256,
            jitter_ratio=std**2 / (std**2 + _JITTER_VARIANCE),
        )

    def json(self) -> dict[str, object]:
        """The figures for a JSON report."""
        return {
            "sha256": self.sha256,
            "blocks": self.blocks,
            "mean_se_z": self.mean_se_z,
            "std_se_z": self.std_se_z,
            "cov_z": self.cov_z,
        }


CalibrationInput = CalibrationUncertainty | Sequence[CalibrationUncertainty | None] | None
"""A statistic's calibration argument: one calibration for every value, one per value
(``None`` for an exact, uncalibrated token), or ``None`` (all exact)."""


@dataclass(frozen=True, slots=True)
class Part:
    """The values standardised against one calibration (or the exact ones)."""

    calibration: CalibrationUncertainty | None
    """The calibration; ``None`` for exact tokens."""
    index: npt.NDArray[np.intp]
    """Positions of those values."""


def parts_of(calibration: CalibrationInput, n: int) -> tuple[Part, ...]:
    """Split ``n`` values by calibration (equal sha256 = one calibration), in order of
    first appearance.

    Raises:
        AnalysisError: A per-value sequence does not have ``n`` entries.
    """
    everything = np.arange(n, dtype=np.intp)
    if calibration is None or isinstance(calibration, CalibrationUncertainty):
        return (Part(calibration, everything),)
    if len(calibration) != n:
        raise AnalysisError(
            f"calibration must be one value or one per value ({n}), got {len(calibration)}"
        )
    keys: dict[object, int] = {}
    first: list[CalibrationUncertainty | None] = []
    codes = np.empty(n, dtype=np.intp)
    for i, c in enumerate(calibration):
        key = None if c is None else (c.sha256 if c.sha256 is not None else id(c))
        code = keys.get(key)
        if code is None:
            code = keys[key] = len(first)
            first.append(c)
        codes[i] = code
    if len(first) == 1:
        return (Part(first[0], everything),)
    return tuple(Part(c, np.flatnonzero(codes == k)) for k, c in enumerate(first))


def _key(c: CalibrationUncertainty) -> object:
    return c.sha256 if c.sha256 is not None else id(c)


@dataclass(frozen=True, slots=True)
class VarianceTerm:
    """One calibration's share of the variance of a mean z (or of a difference)."""

    calibration: CalibrationUncertainty
    """The calibration."""
    offset: float
    """``a^2 mean_se_z^2``, a = the weight of its offset in the estimate."""
    total: float
    """``a^2 mean_se_z^2 + g^2 std_se_z^2 + 2 a g cov_z`` (at least 0), g = the
    estimate's part standardised by its sd (the scale term: 0 under the null)."""


def calibration_terms(
    a: FloatArray,
    parts_a: Sequence[Part],
    b: FloatArray | None = None,
    parts_b: Sequence[Part] = (),
) -> list[VarianceTerm]:
    """The calibrations' terms in the variance of ``mean(a)`` or ``mean(a) - mean(b)``.

    For calibration c with share ``f_c`` of a group and mean z ``m_c`` of those
    tokens, ``a_c = f_Ac - f_Bc`` weighs its offset and ``g_c = f_Ac m_Ac - f_Bc m_Bc``
    its scale error (delta method for the ratio ``(S - m_hat) / s_hat``). Arms
    standardised against one calibration have ``a_c = 0``: its offset cancels.
    """
    cals: dict[object, CalibrationUncertainty] = {}
    offset_weight: dict[object, float] = {}
    scale_weight: dict[object, float] = {}
    for values, parts, sign in ((a, parts_a, 1.0), (b, parts_b, -1.0)):
        if values is None or values.size == 0:
            continue
        for part in parts:
            c = part.calibration
            if c is None or part.index.size == 0:
                continue
            k = _key(c)
            cals[k] = c
            share = part.index.size / values.size
            offset_weight[k] = offset_weight.get(k, 0.0) + sign * share
            mean = float(values[part.index].mean())
            scale_weight[k] = scale_weight.get(k, 0.0) + sign * share * mean
    terms = []
    for k, c in cals.items():
        wa, wg = offset_weight[k], scale_weight[k]
        offset = wa * wa * c.mean_se_z**2
        total = offset + wg * wg * c.std_se_z**2 + 2.0 * wa * wg * c.cov_z
        terms.append(VarianceTerm(c, offset, max(total, 0.0)))
    return terms


def combined(parts: Sequence[Part], n: int) -> CalibrationUncertainty | None:
    """One calibration equivalent to a group's mix (``None`` when every token is exact).

    ``mean z = sum_c f_c mean_c``, so the offset variance is ``sum_c f_c^2 mse_c^2``;
    the sd error and the covariance combine with the same weights, and its df is
    ``1 / (2 std_se_z^2)``. Exact for one calibration; for several, exact for the
    offset and an approximation for the scale (only the t tails and the walk use it).
    """
    used = [(p.index.size / n, p.calibration) for p in parts if p.calibration is not None]
    if not used or n == 0:
        return None
    if len(used) == 1 and used[0][0] == 1.0:
        return used[0][1]
    mse2 = sum(f * f * c.mean_se_z**2 for f, c in used)
    sd2 = sum(f * f * c.std_se_z**2 for f, c in used)
    cov = sum(f * f * c.cov_z for f, c in used)
    return CalibrationUncertainty(
        blocks=round(1.0 / mse2),
        mean_se_z=math.sqrt(mse2),
        std_se_z=math.sqrt(sd2),
        cov_z=cov,
        sha256=None,
        jitter_ratio=min(c.jitter_ratio for _, c in used),
    )


def satterthwaite(components: Sequence[tuple[float, float]]) -> float:
    """Welch-Satterthwaite df of a sum of variance components ``(value, df)``."""
    total = sum(v for v, _ in components)
    den = sum(v * v / d for v, d in components if v > 0 and math.isfinite(d) and d > 0)
    return total * total / den if den > 0 else math.inf
