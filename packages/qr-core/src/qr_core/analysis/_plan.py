"""Planning an experiment: the power of the mean-z test, and the tokens it needs.

The test is the two-sided normal test of mean z, which is what ``qr-analyze``
reports: Stouffer's Z for one group against 0, and Welch's test of two arms (whose
t tail is the normal tail for practical purposes: with 20,000 tokens per arm the two
p-values differ by 7e-6 at 0.05). z has variance 1 under the null hypothesis and the
planned shift leaves that unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

from qr_core.analysis._errors import AnalysisError
from qr_core.analysis._stats import scipy_stats

__all__ = ["DESIGNS", "Design", "Plan", "plan_tokens", "power"]

Design = Literal["two-arm", "one-sample"]

DESIGNS: Final[tuple[Design, ...]] = ("two-arm", "one-sample")
"""``"two-arm"``: mean z of arm A against arm B (``n`` tokens each).
``"one-sample"``: mean z of one group against 0."""


@dataclass(frozen=True, slots=True)
class Plan:
    """Tokens needed to detect a shift of mean z."""

    effect: float
    """Shift of mean z to detect (between the arms, or from 0)."""
    alpha: float
    """Two-sided significance level."""
    target_power: float
    """Power asked for."""
    design: Design
    """See :data:`DESIGNS`."""
    tokens_per_arm: int
    """The smallest token count per arm (per group for one-sample) whose power
    reaches ``target_power``."""
    achieved_power: float
    """Power at ``tokens_per_arm``."""


def _check(effect: float, alpha: float, design: str) -> None:
    if not (math.isfinite(effect) and effect != 0.0):
        raise AnalysisError(f"effect must be a non-zero finite number, got {effect!r}")
    if not 0.0 < alpha < 1.0:
        raise AnalysisError(f"alpha must lie in (0, 1), got {alpha!r}")
    if design not in DESIGNS:
        raise AnalysisError(f"design must be one of {list(DESIGNS)}, got {design!r}")


def power(n: int, effect: float, alpha: float, design: Design = "two-arm") -> float:
    """Power of the two-sided level-``alpha`` test with ``n`` tokens per arm.

    ``Phi(d/se - z) + Phi(-d/se - z)`` with ``z = Phi^-1(1 - alpha/2)`` and
    ``se = sqrt(2/n)`` (two-arm) or ``sqrt(1/n)`` (one-sample).

    Raises:
        AnalysisError: An argument is out of range (the message names it).
    """
    _check(effect, alpha, design)
    if n < 1:
        raise AnalysisError(f"n must be >= 1, got {n!r}")
    norm = scipy_stats().norm
    se = math.sqrt((2.0 if design == "two-arm" else 1.0) / n)
    crit = float(norm.isf(alpha / 2.0))
    shift = abs(effect) / se
    return float(norm.sf(crit - shift) + norm.cdf(-crit - shift))


def plan_tokens(
    effect: float, alpha: float = 0.05, target_power: float = 0.8, design: Design = "two-arm"
) -> Plan:
    """The smallest token count per arm with at least ``target_power``.

    Raises:
        AnalysisError: An argument is out of range (the message names it), or
            ``target_power`` is not above ``alpha``.
    """
    _check(effect, alpha, design)
    if not alpha < target_power < 1.0:
        raise AnalysisError(f"power must lie in (alpha, 1) = ({alpha}, 1), got {target_power!r}")
    norm = scipy_stats().norm
    factor = 2.0 if design == "two-arm" else 1.0
    # The usual closed form neglects the far tail; step from it to the exact answer.
    z_sum = float(norm.isf(alpha / 2.0) + norm.ppf(target_power))
    n = max(1, math.ceil(factor * (z_sum / effect) ** 2))
    while n > 1 and power(n - 1, effect, alpha, design) >= target_power:
        n -= 1
    while power(n, effect, alpha, design) < target_power:
        n += 1
    return Plan(effect, alpha, target_power, design, n, power(n, effect, alpha, design))
