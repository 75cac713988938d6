"""Planning an experiment: the power of the mean-z test, the tokens it needs, and the
calibration blocks that keep its power.

The test is the two-sided normal test of mean z, which is what ``qr-analyze``
reports: Stouffer's Z for one group against 0, and Welch's test of two arms (whose
t tail is the normal tail for practical purposes: with 20,000 tokens per arm the two
p-values differ by 7e-6 at 0.05). z has variance 1 under the null hypothesis and the
planned shift leaves that unchanged.

A calibrated arm adds its calibration's offset, one N(0, 1/B) shared by all its
tokens, so the test's variance is ``a/T + c/B`` (a = 2 for two arms, 1 for one sample;
c = arms with their own calibration: arms standardised against one calibration share
its offset, which cancels, so they count 0). The power depends on the calibration only
through B/T, and an offset that does not shrink with T sets a floor: with B blocks no
token count detects less than ``(z_{1-alpha/2} + z_power) sqrt(c/B)``. (The Student-t
tail with B - 1 df and the scale term change these powers by < 1e-4 at B >= 1,000.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

from qr_core.analysis._errors import AnalysisError
from qr_core.analysis._stats import scipy_module, scipy_stats

__all__ = [
    "DESIGNS",
    "CalibrationPlan",
    "Design",
    "Plan",
    "blocks_for_power_loss",
    "calibration_plan",
    "plan_tokens",
    "power",
]

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
    calibration: CalibrationPlan | None = None
    """What calibrated arms leave of that power, and the blocks to ask for."""


@dataclass(frozen=True, slots=True)
class CalibrationPlan:
    """The power a plan keeps with calibrated arms, and the calibration it needs."""

    calibrated_arms: int
    """Arms with their own calibration (c): 0, 1 or 2 (two-arm), 0 or 1 (one-sample)."""
    blocks: float
    """B per calibrated arm asked about (inf: none given)."""
    power_left: float
    """Power at ``tokens_per_arm`` with B blocks."""
    max_power_loss: float
    """The loss allowed (points of power, or a fraction when ``relative``)."""
    relative: bool
    """Whether ``max_power_loss`` is a fraction of the exact design's power."""
    recommended_blocks: float
    """The smallest B per calibrated arm whose power is within the allowed loss."""
    tokens_to_restore: float
    """Tokens per arm that give back the exact design's power with B blocks
    (inf: no token count can)."""
    floor_blocks: float
    """B must exceed this for the target power to be reachable at any token count."""


def _check(effect: float, alpha: float, design: str) -> None:
    if not (math.isfinite(effect) and effect != 0.0):
        raise AnalysisError(f"effect must be a non-zero finite number, got {effect!r}")
    if not 0.0 < alpha < 1.0:
        raise AnalysisError(f"alpha must lie in (0, 1), got {alpha!r}")
    if design not in DESIGNS:
        raise AnalysisError(f"design must be one of {list(DESIGNS)}, got {design!r}")


def _arms(design: Design) -> float:
    return 2.0 if design == "two-arm" else 1.0


def _check_calibration(design: Design, calibrated_arms: int, blocks: float) -> None:
    most = 2 if design == "two-arm" else 1
    if calibrated_arms not in range(most + 1):
        raise AnalysisError(
            f"calibrated_arms must be one of {list(range(most + 1))} for design {design!r}, "
            f"got {calibrated_arms!r}"
        )
    if not blocks >= 2:
        raise AnalysisError(f"calibration_blocks must be >= 2, got {blocks!r}")


def power(
    n: float,
    effect: float,
    alpha: float,
    design: Design = "two-arm",
    *,
    calibrated_arms: int = 0,
    calibration_blocks: float = math.inf,
) -> float:
    """Power of the two-sided level-``alpha`` test with ``n`` tokens per arm.

    ``Phi(d/se - z) + Phi(-d/se - z)`` with ``z = Phi^-1(1 - alpha/2)`` and
    ``se^2 = a/n + c/B``: a = 2 (two-arm) or 1 (one-sample), c = ``calibrated_arms``,
    B = ``calibration_blocks`` per calibrated arm.

    Raises:
        AnalysisError: An argument is out of range (the message names it).
    """
    _check(effect, alpha, design)
    _check_calibration(design, calibrated_arms, calibration_blocks)
    if not n >= 1:
        raise AnalysisError(f"n must be >= 1, got {n!r}")
    norm = scipy_stats().norm
    se = math.sqrt(_arms(design) / n + calibrated_arms / calibration_blocks)
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


def _noncentrality(target: float, alpha: float) -> float:
    """The d/se at which the two-sided test has power ``target``."""
    norm = scipy_stats().norm
    crit = float(norm.isf(alpha / 2.0))

    def gap(x: float) -> float:
        return float(norm.sf(crit - x) + norm.cdf(-crit - x)) - target

    brentq = scipy_module("scipy.optimize").brentq
    return float(brentq(gap, 0.0, 80.0, xtol=1e-14)) if gap(0.0) < 0 else 0.0


def blocks_for_power_loss(
    tokens: float,
    alpha: float = 0.01,
    target_power: float = 0.8,
    max_power_loss: float = 0.02,
    *,
    calibrated_arms: int = 1,
    design: Design = "two-arm",
    effect: float | None = None,
    relative: bool = False,
) -> float:
    """The smallest B per calibrated arm that costs at most ``max_power_loss`` of power.

    With ``effect``, the power lost is measured from the exact design's power at
    ``tokens``; without, ``tokens`` is taken as planned for ``target_power`` at
    ``alpha`` (the effect that gives it), so that B depends on the plan only through
    ``alpha``, ``target_power`` and the loss: ``B/T = c / (a ((d0/d)^2 - 1))`` with d0
    and d the noncentralities of the exact and the allowed power (11.93 for one
    calibrated arm against an exact one at alpha 0.01, power 0.8, 2 points).

    Returns:
        B (not rounded; ``math.ceil`` it), 0 when no arm is calibrated, inf when no B
        is enough (a loss of 0).

    Raises:
        AnalysisError: An argument is out of range.
    """
    if effect is None:
        if not 0.0 < alpha < target_power < 1.0:
            raise AnalysisError(
                f"power must lie in (alpha, 1) = ({alpha}, 1), got {target_power!r}"
            )
        effect = _noncentrality(target_power, alpha) * math.sqrt(_arms(design) / tokens)
    _check(effect, alpha, design)
    _check_calibration(design, calibrated_arms, math.inf)
    if not 0.0 <= max_power_loss < 1.0:
        raise AnalysisError(f"max_power_loss must lie in [0, 1), got {max_power_loss!r}")
    if calibrated_arms == 0:
        return 0.0
    exact = power(tokens, effect, alpha, design)
    target = exact * (1.0 - max_power_loss) if relative else exact - max_power_loss
    needed = _noncentrality(max(target, alpha), alpha)
    extra = (abs(effect) / needed) ** 2 - _arms(design) / tokens if needed > 0 else math.inf
    return calibrated_arms / extra if extra > 0 else math.inf


def calibration_plan(
    plan: Plan,
    calibrated_arms: int,
    calibration_blocks: float = math.inf,
    *,
    max_power_loss: float = 0.02,
    relative: bool = False,
) -> CalibrationPlan:
    """What ``calibrated_arms`` arms of ``calibration_blocks`` blocks leave of ``plan``'s
    power, the B that keeps it within ``max_power_loss``, and the floor on B.

    Raises:
        AnalysisError: An argument is out of range.
    """
    _check_calibration(plan.design, calibrated_arms, calibration_blocks)
    t, a, c = plan.tokens_per_arm, _arms(plan.design), calibrated_arms
    left = power(
        t,
        plan.effect,
        plan.alpha,
        plan.design,
        calibrated_arms=c,
        calibration_blocks=calibration_blocks,
    )
    recommended = blocks_for_power_loss(
        t,
        plan.alpha,
        plan.target_power,
        max_power_loss,
        calibrated_arms=c,
        design=plan.design,
        effect=plan.effect,
        relative=relative,
    )
    rest = a / t - c / calibration_blocks
    norm = scipy_stats().norm
    z_sum = float(norm.isf(plan.alpha / 2.0) + norm.ppf(plan.target_power))
    return CalibrationPlan(
        calibrated_arms=c,
        blocks=calibration_blocks,
        power_left=left,
        max_power_loss=max_power_loss,
        relative=relative,
        recommended_blocks=math.ceil(recommended) if math.isfinite(recommended) else recommended,
        tokens_to_restore=a / rest if rest > 0 else math.inf,
        floor_blocks=c * (z_sum / plan.effect) ** 2,
    )
