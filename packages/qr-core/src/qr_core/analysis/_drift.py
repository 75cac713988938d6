"""Did the device move between calibrations? (``qr-analyze drift CAL1 CAL2 ...``)

Calibration c has mean m_c with standard error e_c (units of S; ``mean_se``) and sd
s_c with standard error f_c. Under "no drift" (one device law throughout) the m_c are
independent N(m, e_c^2), exact to the central limit theorem over B >= 1,000 blocks of
a near-normal S, and the log s_c independent N(log s, (f_c/s_c)^2). Hence:

* two calibrations: ``Z = (m_2 - m_1) / sqrt(e_1^2 + e_2^2)``, two-sided normal p;
* K calibrations: Cochran's heterogeneity ``Q = sum w_c (m_c - m_w)^2``, ``w_c = 1/e_c^2``,
  against chi-square with K - 1 df, and a linear trend in time (weighted least squares
  of m_c on each calibration's mid-time), which has more power against a steady drift;
* the scale: the same Q on ``log s_c``.

Differences are reported in units of z (the pooled sd ``sqrt(mean s_c^2)``), with the
smallest drift between two calibrations (the two with the largest standard errors)
detected with ``power`` at ``alpha``: ``(z_{1-alpha/2} + z_power) sqrt(e_i^2 + e_j^2)``,
= 2.80 sqrt(1/B_1 + 1/B_2) in z at alpha 0.05 and power 0.8.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qr_core._calibration import Calibration
from qr_core.analysis._errors import AnalysisError
from qr_core.analysis._stats import normal_two_sided_p, scipy_stats

__all__ = ["DRIFT_FIELDS", "DriftResult", "drift_test"]

DRIFT_FIELDS = ("amplifier", "sample_count", "statistic", "statistic_bytes", "device_id")
"""What the compared calibrations must share: one device, one statistic."""


@dataclass(frozen=True, slots=True)
class DriftResult:
    """The drift test of K calibrations of one device, in their time order."""

    order: tuple[int, ...]
    """Index of each calibration in the input, sorted by ``started_at`` (ties keep input order)."""
    differences_z: tuple[float, ...]
    """``(m_c - m_first) / s_pooled`` for each calibration (0 for the first)."""
    standard_errors_z: tuple[float, ...]
    """``sqrt(e_first^2 + e_c^2) / s_pooled`` (0 for the first)."""
    sd_ratios: tuple[float, ...]
    """``s_c / s_first``."""
    statistic: float
    """Two calibrations: Z of the difference; more: Cochran's Q."""
    df: int
    """K - 1."""
    p_value: float
    """Two-sided normal p (two calibrations) or chi-square upper tail (more)."""
    ci_low: float
    """Two calibrations: lower end of the 1 - alpha interval of the drift in z (NaN for more)."""
    ci_high: float
    """Upper end of that interval."""
    trend_z: float
    """K >= 3: the weighted linear trend's slope over its standard error (NaN below 3)."""
    trend_p_value: float
    """Its two-sided normal p-value."""
    sd_statistic: float
    """Q (or Z for two) of ``log s_c``."""
    sd_p_value: float
    """Its p-value."""
    min_detectable_z: float
    """The smallest drift in z between two of the calibrations detected with ``power``."""
    alpha: float
    """Level of the tests and of the detectable drift."""
    power: float
    """Power of the detectable drift."""


def _time(text: str) -> float:
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return math.nan


def _heterogeneity(x: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    w = 1.0 / v
    mean = float((w * x).sum() / w.sum())
    q = float((w * (x - mean) ** 2).sum())
    return q, float(scipy_stats().chi2.sf(q, x.size - 1))


def drift_test(
    calibrations: Sequence[Calibration], *, alpha: float = 0.05, power: float = 0.8
) -> DriftResult:
    """Test whether the device moved between ``calibrations`` (see the module).

    Raises:
        AnalysisError: Fewer than two calibrations, ``alpha`` or ``power`` out of
            range, or calibrations that differ in one of :data:`DRIFT_FIELDS` (the
            message names the field and both values).
    """
    if len(calibrations) < 2:
        raise AnalysisError(f"drift needs >= 2 calibrations, got {len(calibrations)}")
    if not (0.0 < alpha < 1.0 and 0.0 < power < 1.0):
        raise AnalysisError(f"alpha and power must lie in (0, 1), got {alpha!r} and {power!r}")
    head = calibrations[0]
    for i, c in enumerate(calibrations[1:], start=2):
        for name in DRIFT_FIELDS:
            if getattr(c, name) != getattr(head, name):
                raise AnalysisError(
                    f"calibration {i}: {name} {getattr(c, name)!r} differs from calibration "
                    f"1's {getattr(head, name)!r}; drift compares one device and statistic"
                )
    order = tuple(sorted(range(len(calibrations)), key=lambda i: calibrations[i].started_at))
    cals = [calibrations[i] for i in order]
    m = np.array([c.mean for c in cals])
    e = np.array([c.mean_se for c in cals])
    s = np.array([c.std for c in cals])
    f = np.array([c.std_se for c in cals])
    unit = float(np.sqrt(np.mean(s**2)))
    se_diff = np.sqrt(e[0] ** 2 + e**2) / unit
    se_diff[0] = 0.0
    norm = scipy_stats().norm
    z_alpha = float(norm.isf(alpha / 2.0))
    k = m.size
    log_s, log_v = np.log(s), (f / s) ** 2
    if k == 2:
        stat = float((m[1] - m[0]) / math.sqrt(e[0] ** 2 + e[1] ** 2))
        p = normal_two_sided_p(stat)
        d = float(m[1] - m[0]) / unit
        ci = (d - z_alpha * float(se_diff[1]), d + z_alpha * float(se_diff[1]))
        sd_stat = float((log_s[1] - log_s[0]) / math.sqrt(log_v.sum()))
        sd_p = normal_two_sided_p(sd_stat)
    else:
        stat, p = _heterogeneity(m, e**2)
        ci = (math.nan, math.nan)
        sd_stat, sd_p = _heterogeneity(log_s, log_v)
    trend_z, trend_p = math.nan, math.nan
    times = np.array([(_time(c.started_at) + _time(c.finished_at)) / 2.0 for c in cals])
    if k >= 3 and np.isfinite(times).all() and np.ptp(times) > 0:
        w = 1.0 / e**2
        t_mean = float((w * times).sum() / w.sum())
        sxx = float((w * (times - t_mean) ** 2).sum())
        slope = float((w * (times - t_mean) * m).sum()) / sxx
        trend_z = slope * math.sqrt(sxx)
        trend_p = normal_two_sided_p(trend_z)
    top_two = np.sort(e)[-2:]
    detectable = (z_alpha + float(norm.ppf(power))) * math.sqrt(float((top_two**2).sum())) / unit
    return DriftResult(
        order=order,
        differences_z=tuple(float(x) for x in (m - m[0]) / unit),
        standard_errors_z=tuple(float(x) for x in se_diff),
        sd_ratios=tuple(float(x) for x in s / s[0]),
        statistic=stat,
        df=k - 1,
        p_value=p,
        ci_low=ci[0],
        ci_high=ci[1],
        trend_z=trend_z,
        trend_p_value=trend_p,
        sd_statistic=sd_stat,
        sd_p_value=sd_p,
        min_detectable_z=detectable,
        alpha=alpha,
        power=power,
    )
