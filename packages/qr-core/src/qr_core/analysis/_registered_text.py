"""The text and JSON of the primary analysis as pre-registered (``qr-analyze
--preregistration PLAN``)."""

from __future__ import annotations

from dataclasses import asdict
from typing import TextIO

from qr_core.analysis._declare import format_p
from qr_core.analysis._registered import RegisteredAnalysis

__all__ = ["registered_json", "write_registered"]

_STAGES = {
    "final": "final analysis",
    "stopped": "stopped early: a boundary was crossed",
    "interim": "INTERIM LOOK: the planned tokens are not all in",
    "before-first-look": "INTERIM LOOK: before the first planned look",
}


def write_registered(a: RegisteredAnalysis, total_tokens: int, out: TextIO) -> None:
    """Write the registered analysis as ``qr-analyze`` prints it (before its report)."""
    plan, w = a.plan, out.write
    rule = plan.stopping
    stopping = (
        "fixed N"
        if rule.kind == "fixed"
        else f"group-sequential, {rule.looks} looks, {rule.spending} alpha spending"
    )
    w(f"registered plan {plan.sha256}\n")
    w(f"hypothesis      {plan.hypothesis}\n")
    w(
        f"design          {plan.design} by {plan.group_by}: {' - '.join(plan.arms)}; "
        f"{plan.tokens_per_arm} tokens per arm; alpha {plan.alpha:g} (two-sided); "
        f"primary statistic {plan.primary_statistic}; {stopping}\n"
    )
    w(f"stage           {_STAGES[a.stage]}\n")
    for arm in a.arms:
        extra = ""
        if arm.beyond_plan:
            extra = f"; {arm.beyond_plan} BEYOND THE PLAN, not analysed"
        if arm.not_yet_due:
            extra = f"; {arm.not_yet_due} since the last look, not analysed"
        w(
            f"arm             {arm.arm}: {arm.available} tokens, first {arm.analysed} "
            f"analysed{extra}\n"
        )
    if a.other_tokens:
        w(f"other groups    {a.other_tokens} tokens outside the registered arms, not analysed\n")
    for look in a.looks:
        bound = (
            f"|Z| >= {look.critical:.4f} (nominal alpha {look.threshold:.3g})"
            if look.critical is not None
            else f"p < {look.threshold:g}"
        )
        w(
            f"look {look.look:<10} {look.tokens_per_arm} tokens per arm: "
            f"{plan.primary_statistic} = {look.statistic:+.4f}, p = {format_p(look.p_value)}; "
            f"reject if {bound}: "
            f"{'crossed' if look.crossed else 'not crossed'}\n"
        )
    w(f"decision        {_decision(a)}\n")
    analysed = sum(arm.analysed for arm in a.arms)
    w(
        f"exploratory     the tables below use all {total_tokens} tokens, not the "
        f"{analysed} the registered analysis used; they are no registered test\n\n"
    )


def _decision(a: RegisteredAnalysis) -> str:
    if a.decision == "reject":
        return f"H0 rejected at the registered level (look {a.looks[-1].look})"
    if a.decision == "not rejected":
        return "H0 not rejected at the registered level"
    if a.decision == "continue":
        return (
            f"no boundary crossed; continue to the next look ({a.next_look_tokens} tokens per arm)"
        )
    return (
        f"no test before the planned tokens are in ({a.next_look_tokens} per arm); stopping "
        "on what an interim look shows would be optional stopping"
    )


def registered_json(a: RegisteredAnalysis) -> dict[str, object]:
    """The registered analysis as ``--json`` reports it (key ``registered``)."""
    plan = a.plan
    return {
        "plan_sha256": plan.sha256,
        "hypothesis": plan.hypothesis,
        "design": plan.design,
        "group_by": plan.group_by,
        "arms": list(plan.arms),
        "tokens_per_arm": plan.tokens_per_arm,
        "alpha": plan.alpha,
        "primary_statistic": plan.primary_statistic,
        "stopping_rule": asdict(plan.stopping),
        "stage": a.stage,
        "interim": a.interim,
        "decision": a.decision,
        "arm_tokens": [asdict(t) for t in a.arms],
        "beyond_plan": a.beyond_plan,
        "other_tokens": a.other_tokens,
        "looks": [asdict(look) for look in a.looks],
        "next_look_tokens": a.next_look_tokens,
        "boundaries": None if a.design is None else list(a.design.critical),
    }
