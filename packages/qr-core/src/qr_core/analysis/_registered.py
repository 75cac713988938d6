"""The primary analysis exactly as pre-registered: planned tokens, looks, the one test.

:func:`analyze_as_registered` takes the tokens of the registered arms in time order and
analyses the first ``tokens_per_arm`` of each (fixed N), or those of each planned look
(group-sequential, stopping at the first look whose boundary is crossed). Tokens after
them are counted, never silently analysed: beyond the plan after the final (or
stopping) look, not yet due before it. An analysis before the planned tokens are in is
an interim look: a fixed-N design has no test then; a group-sequential one tests at
the last look reached, against its corrected boundary.

The primary statistics (``qr_core.records.PRIMARY_STATISTICS``): ``z`` is the
known-variance normal test of mean z (Stouffer's Z = sum z / sqrt(n) for one sample;
(mean_A - mean_B) / sqrt(1/n_A + 1/n_B) for two arms), exact under the null hypothesis
(z independent N(0, 1)) and the test ``qr-analyze plan`` computes the power of; the
others are the p-values ``qr-analyze`` reports for a group (one sample) or Welch's
comparison of two (``welch``). A fixed-N one-sample ``z`` is the group statistic
``z`` itself (which accounts for a device calibration's error); the group-sequential
boundaries and the two-arm ``z`` assume z independent N(0, 1), so they refuse records
standardised against a calibration (register ``welch``, fixed N, for those).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from qr_core.analysis._errors import AnalysisError, ConfigHashError
from qr_core.analysis._groups import group_records, group_stats, time_ordered
from qr_core.analysis._report import compare
from qr_core.analysis._sequential import SequentialDesign, group_sequential
from qr_core.records._preregistration import Preregistration
from qr_core.records._schema import TokenSamplingRecord

__all__ = [
    "RegisteredAnalysis",
    "RegisteredArm",
    "RegisteredLook",
    "analyze_as_registered",
    "check_preregistration",
]

Stage = Literal["final", "stopped", "interim", "before-first-look"]
Decision = Literal["reject", "not rejected", "continue", "no test"]


@dataclass(frozen=True, slots=True)
class RegisteredArm:
    """How the tokens of one registered arm were used."""

    arm: str
    """The arm's name (a value of the plan's ``group_by`` field)."""
    available: int
    """Tokens of the arm in the records."""
    analysed: int
    """The first ones in time order that the primary analysis used."""
    beyond_plan: int
    """Tokens after the final (or stopping) look: beyond the plan, not analysed."""
    not_yet_due: int
    """Tokens after the last look reached, before the next one is due: not analysed."""


@dataclass(frozen=True, slots=True)
class RegisteredLook:
    """One look of the primary analysis."""

    look: int
    """1-based look number."""
    tokens_per_arm: int
    """Tokens per arm it analysed."""
    statistic: float
    """The primary statistic's value (``Z`` for ``z``)."""
    p_value: float
    """Its two-sided nominal p-value."""
    threshold: float
    """The level it is compared with: ``alpha`` (fixed N) or the look's nominal
    alpha from the spending function (group-sequential)."""
    critical: float | None
    """Group-sequential: the boundary ``c_k`` on ``|Z|``; fixed N: ``None``."""
    crossed: bool
    """Whether the test rejects at this look."""


@dataclass(frozen=True, slots=True)
class RegisteredAnalysis:
    """The primary analysis of pre-registered records."""

    plan: Preregistration
    """The plan analysed by (its ``sha256`` is the one every record carries)."""
    stage: Stage
    """``final`` (all planned tokens, or the last look), ``stopped`` (a boundary was
    crossed before the last look), ``interim`` (planned tokens not all in), or
    ``before-first-look`` (group-sequential, first look not reached)."""
    decision: Decision
    """``reject`` (H0 rejected at the registered level), ``not rejected``,
    ``continue`` (group-sequential interim: no boundary crossed yet) or ``no test``
    (an interim look of a fixed-N design, or before the first look)."""
    arms: tuple[RegisteredArm, ...]
    """Per registered arm, in the plan's order."""
    looks: tuple[RegisteredLook, ...]
    """The looks analysed, in order (one for a final fixed-N analysis)."""
    design: SequentialDesign | None
    """Boundaries of a group-sequential plan; ``None`` for fixed N."""
    next_look_tokens: int | None
    """Tokens per arm the next look needs (``None`` when no look is due)."""
    other_tokens: int
    """Tokens of groups the plan does not name (not analysed)."""

    @property
    def interim(self) -> bool:
        """Whether this analysis ran before the planned tokens were all in."""
        return self.stage in ("interim", "before-first-look")

    @property
    def beyond_plan(self) -> int:
        """Tokens beyond the plan, in all arms."""
        return sum(a.beyond_plan for a in self.arms)


def check_preregistration(records: Sequence[TokenSamplingRecord], plan: Preregistration) -> None:
    """Refuse records that were not made under ``plan`` (its exact file).

    Raises:
        ConfigHashError: A record carries another pre-registration hash, or none.
    """
    found: dict[str | None, int] = {}
    for r in records:
        found[r.preregistration_sha256] = found.get(r.preregistration_sha256, 0) + 1
    if set(found) != {plan.sha256}:
        shown = ", ".join(f"{h or 'none'} ({n} tokens)" for h, n in found.items())
        raise ConfigHashError(
            f"the plan file's SHA-256 is {plan.sha256}, but the records carry {shown}: "
            "the records were not made under this plan file (was it changed?)"
        )


def analyze_as_registered(
    tokens: Sequence[TokenSamplingRecord], plan: Preregistration
) -> RegisteredAnalysis:
    """Run the primary analysis of ``plan`` on ``tokens`` (valid, kept records).

    Raises:
        ConfigHashError: The tokens were not made under ``plan`` (see
            :func:`check_preregistration`).
        AnalysisError: A statistic cannot be computed on the planned tokens.
    """
    check_preregistration(tokens, plan)
    groups = group_records(tokens, plan.group_by)
    arms = [time_ordered(groups.get(a, [])) for a in plan.arms]
    other = sum(len(v) for k, v in groups.items() if k not in plan.arms)
    available = [len(a) for a in arms]
    sizes = plan.look_sizes()
    design = None
    if plan.stopping.kind == "group-sequential":
        design = group_sequential(
            [n / plan.tokens_per_arm for n in sizes], plan.alpha, plan.stopping.spending or ""
        )
    calibrated = any(r.calibration_sha256 is not None for a in arms for r in a)
    if (
        calibrated
        and plan.primary_statistic == "z"
        and (design is not None or plan.design == "two-arm")
    ):
        raise AnalysisError(
            "the registered test assumes z independent N(0, 1), but the records were "
            "standardised against a device calibration, whose shared error it leaves out; "
            "such experiments register primary_statistic 'welch' (two-arm) or a fixed-N "
            "one-sample statistic"
        )
    reached = sum(1 for n in sizes if min(available) >= n)
    looks: list[RegisteredLook] = []
    for k in range(reached):
        n = sizes[k]
        value, p = _statistic(plan, [a[:n] for a in arms])
        if design is None:
            threshold, critical, crossed = plan.alpha, None, p < plan.alpha
        else:
            critical = design.critical[k]
            threshold, crossed = design.nominal_alpha[k], abs(value) >= critical
        looks.append(RegisteredLook(k + 1, n, value, p, threshold, critical, crossed))
        if crossed:
            break
    done = bool(looks) and (looks[-1].crossed or len(looks) == len(sizes))
    stage: Stage
    decision: Decision
    if done:
        stage = "stopped" if len(looks) < len(sizes) else "final"
        decision = "reject" if looks[-1].crossed else "not rejected"
    elif looks:
        stage, decision = "interim", "continue"
    else:
        stage = "interim" if design is None else "before-first-look"
        decision = "no test"
    used = looks[-1].tokens_per_arm if looks else 0
    uses = tuple(
        RegisteredArm(
            name,
            count,
            used,
            count - used if done else 0,
            0 if done else count - used,
        )
        for name, count in zip(plan.arms, available, strict=True)
    )
    next_tokens = None if done else sizes[len(looks)]
    return RegisteredAnalysis(plan, stage, decision, uses, tuple(looks), design, next_tokens, other)


def _statistic(plan: Preregistration, arms: list[list[TokenSamplingRecord]]) -> tuple[float, float]:
    """The primary statistic's value and two-sided p-value on the planned tokens."""
    name = plan.primary_statistic
    if name == "z" and (plan.design == "two-arm" or plan.stopping.kind != "fixed"):
        sums = [sum(r.z_score for r in a) for a in arms]
        if plan.design == "one-sample":
            value = sums[0] / math.sqrt(len(arms[0]))
        else:
            na, nb = len(arms[0]), len(arms[1])
            value = (sums[0] / na - sums[1] / nb) / math.sqrt(1.0 / na + 1.0 / nb)
        return value, math.erfc(abs(value) / math.sqrt(2.0))
    if name == "welch":
        c = compare(plan.arms[0], arms[0], plan.arms[1], arms[1])
        return c.test.statistic, c.test.p_value
    stats = group_stats(plan.arms[0], arms[0])
    result = getattr(stats, name)
    value = float(getattr(result, "stouffer_z", getattr(result, "statistic", math.nan)))
    p = float(result.p_value)
    if math.isnan(p):
        raise AnalysisError(f"primary statistic {name!r} has no p-value on {len(arms[0])} tokens")
    return value, p
