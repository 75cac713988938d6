"""The pre-registered plan of an experiment (``QR_PREREGISTRATION_PATH``): read and checked.

A plan is a small JSON file, written before the experiment (``qr-analyze plan
--write``), published with its SHA-256, and named by ``QR_PREREGISTRATION_PATH`` while
the experiment runs: the SHA-256 of the file's exact bytes goes into every record
(``preregistration_sha256``) and into the configuration hash, and ``qr-analyze
--preregistration FILE`` analyses those records exactly as the plan says. The file's
bytes are hashed as they are, so ``sha256sum plan.json`` gives the same hash.

Standard library only: qr-vllm loads the plan at start, without the analysis extra.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from qr_core.records._errors import RecordError

__all__ = [
    "PLAN_FORMAT",
    "PRIMARY_STATISTICS",
    "SEQUENTIAL_STATISTICS",
    "SPENDING_FUNCTIONS",
    "Preregistration",
    "PreregistrationError",
    "StoppingRule",
    "load_preregistration",
    "parse_preregistration",
    "preregistration_bytes",
]

PLAN_FORMAT: Final = "qr-sampler-preregistration/1"
"""The ``format`` every plan file names."""

PRIMARY_STATISTICS: Final[Mapping[str, tuple[str, ...]]] = {
    "one-sample": ("z", "ks", "network_variance", "autocorrelation", "runs", "walk"),
    "two-arm": ("z", "welch"),
}
"""Primary statistics per design. One sample: the statistics of a group that
``qr-analyze`` declares with a p-value (``z`` is Stouffer's Z). Two arms: ``z``, the
normal test of mean z(A) - mean z(B) with the model's sd 1 (the test ``qr-analyze
plan`` computes the power of), or ``welch``, qr-analyze's comparison (Welch's t)."""

SEQUENTIAL_STATISTICS: Final = ("z",)
"""Statistics a group-sequential design may use: the known-variance normal tests,
whose values at the looks have exactly the joint law the boundaries assume."""

SPENDING_FUNCTIONS: Final = ("obrien-fleming", "pocock")
"""Lan-DeMets alpha-spending functions of a group-sequential design (two-sided, alpha
spent by information fraction t, half on each side): ``obrien-fleming``:
alpha(t) = 4 - 4 Phi(z_{1-alpha/4} / sqrt(t)); ``pocock``: alpha(t) = alpha ln(1 + (e - 1) t)."""

MAX_LOOKS: Final = 20
"""Most looks a group-sequential design may plan."""

Design = Literal["two-arm", "one-sample"]
GroupBy = Literal["arm", "tag"]

_KEYS: Final = {
    "format": True,
    "hypothesis": True,
    "design": True,
    "group_by": True,
    "arms": True,
    "tokens_per_arm": True,
    "alpha": True,
    "primary_statistic": True,
    "stopping_rule": True,
    "planning": False,
    "notes": False,
}
"""Keys of a plan file: required (True) or optional."""


class PreregistrationError(RecordError):
    """A plan file is missing, unreadable or not a valid plan (the message names the
    field and what it allows)."""


@dataclass(frozen=True, slots=True)
class StoppingRule:
    """When the experiment may stop."""

    kind: Literal["fixed", "group-sequential"]
    """``fixed``: analysed once, at the planned tokens. ``group-sequential``: at
    ``looks`` equally spaced looks, stopping at the first whose boundary is crossed."""
    looks: int = 1
    """Planned analyses, the last at the planned tokens (1 for ``fixed``)."""
    spending: str | None = None
    """Alpha-spending function (see :data:`SPENDING_FUNCTIONS`); ``None`` for fixed."""


@dataclass(frozen=True, slots=True)
class Preregistration:
    """A plan, as read from its file."""

    hypothesis: str
    """The hypothesis, in words."""
    design: Design
    """``two-arm`` (arm A against arm B) or ``one-sample`` (one group against 0)."""
    group_by: GroupBy
    """What the arms are: values of the records' ``arm`` or ``request_tag``."""
    arms: tuple[str, ...]
    """The arms: A and B (two-arm; A - B is tested), or the one group (one-sample)."""
    tokens_per_arm: int
    """Planned tokens per arm (the first ones in time order are analysed)."""
    alpha: float
    """Two-sided significance level of the whole experiment."""
    primary_statistic: str
    """The one test the hypothesis is decided by (see :data:`PRIMARY_STATISTICS`)."""
    stopping: StoppingRule
    """The stopping rule."""
    planning: Mapping[str, float]
    """What the plan was computed from (``effect``, ``power``, ...); informational."""
    sha256: str
    """SHA-256 of the plan file's bytes."""

    def look_sizes(self) -> tuple[int, ...]:
        """Tokens per arm at each planned look: ``ceil(k N / K)`` for k = 1 .. K."""
        k_all = self.stopping.looks
        return tuple(-(-k * self.tokens_per_arm // k_all) for k in range(1, k_all + 1))


def load_preregistration(path: str | os.PathLike[str]) -> Preregistration:
    """Read and check the plan file at ``path``.

    Raises:
        PreregistrationError: The file is missing or unreadable, or not a valid plan.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PreregistrationError(f"cannot read plan file {str(path)!r}: {exc}") from exc
    try:
        return parse_preregistration(data)
    except PreregistrationError as exc:
        raise PreregistrationError(f"plan file {str(path)!r}: {exc}") from None


def parse_preregistration(data: bytes) -> Preregistration:
    """Check a plan file's bytes and return the plan (with their SHA-256).

    Raises:
        PreregistrationError: Not JSON, or a key is unknown, missing or out of range.
    """
    try:
        plan = json.loads(data, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PreregistrationError(f"not valid JSON ({exc})") from None
    if not isinstance(plan, dict):
        raise PreregistrationError(f"must be a JSON object, got {type(plan).__name__}")
    unknown = sorted(set(plan) - _KEYS.keys())
    missing = sorted(k for k, required in _KEYS.items() if required and k not in plan)
    if unknown or missing:
        raise PreregistrationError(
            f"keys do not match {PLAN_FORMAT}: unknown={unknown}, missing={missing}"
        )
    if plan["format"] != PLAN_FORMAT:
        raise PreregistrationError(f"format must be {PLAN_FORMAT!r}, got {plan['format']!r}")
    hypothesis = plan["hypothesis"]
    if not isinstance(hypothesis, str) or not hypothesis.strip():
        raise PreregistrationError("hypothesis must be a non-empty string")
    design = _choice(plan, "design", tuple(PRIMARY_STATISTICS))
    group_by = _choice(plan, "group_by", ("arm", "tag"))
    arms = _arms(plan["arms"], design)
    tokens = plan["tokens_per_arm"]
    if type(tokens) is not int or tokens < 2:
        raise PreregistrationError(f"tokens_per_arm must be an int >= 2, got {tokens!r}")
    alpha = plan["alpha"]
    if type(alpha) not in (int, float) or not 0.0 < alpha < 1.0:
        raise PreregistrationError(f"alpha must be a number in (0, 1), got {alpha!r}")
    statistic = _choice(plan, "primary_statistic", PRIMARY_STATISTICS[design])
    stopping = _stopping(plan["stopping_rule"], statistic, tokens)
    planning = plan.get("planning", {})
    if not isinstance(planning, dict) or not all(
        type(v) in (int, float) and math.isfinite(v) for v in planning.values()
    ):
        raise PreregistrationError("planning must be an object of finite numbers")
    if not isinstance(plan.get("notes", ""), str):
        raise PreregistrationError("notes must be a string")
    return Preregistration(
        hypothesis=hypothesis,
        design=design,  # type: ignore[arg-type]
        group_by=group_by,  # type: ignore[arg-type]
        arms=arms,
        tokens_per_arm=tokens,
        alpha=float(alpha),
        primary_statistic=statistic,
        stopping=stopping,
        planning={str(k): float(v) for k, v in planning.items()},
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _no_constant(name: str) -> object:
    raise PreregistrationError(f"{name} is no JSON number")


def _choice(plan: Mapping[str, object], key: str, allowed: tuple[str, ...]) -> str:
    value = plan[key]
    if value not in allowed or not isinstance(value, str):
        raise PreregistrationError(f"{key} must be one of {list(allowed)}, got {value!r}")
    return value


def _arms(value: object, design: str) -> tuple[str, ...]:
    count = 2 if design == "two-arm" else 1
    if (
        not isinstance(value, list)
        or len(value) != count
        or not all(isinstance(a, str) and a for a in value)
        or len(set(value)) != count
    ):
        raise PreregistrationError(
            f"arms must be a list of {count} distinct non-empty names for design "
            f"{design!r}, got {value!r}"
        )
    return tuple(value)


def _stopping(value: object, statistic: str, tokens: int) -> StoppingRule:
    if not isinstance(value, dict) or value.get("type") not in ("fixed", "group-sequential"):
        raise PreregistrationError(
            'stopping_rule must be {"type": "fixed"} or {"type": "group-sequential", '
            f'"looks": K, "spending": one of {list(SPENDING_FUNCTIONS)}}}, got {value!r}'
        )
    if value["type"] == "fixed":
        if set(value) != {"type"}:
            raise PreregistrationError(f"a fixed stopping_rule has only a type, got {value!r}")
        return StoppingRule("fixed")
    if set(value) != {"type", "looks", "spending"}:
        raise PreregistrationError(
            f"a group-sequential stopping_rule has type, looks and spending, got {value!r}"
        )
    looks, spending = value["looks"], value["spending"]
    if type(looks) is not int or not 2 <= looks <= MAX_LOOKS:
        raise PreregistrationError(
            f"stopping_rule.looks must be an int in [2, {MAX_LOOKS}], got {looks!r}"
        )
    if looks > tokens:
        raise PreregistrationError(
            f"stopping_rule.looks ({looks}) must not exceed tokens_per_arm ({tokens})"
        )
    if spending not in SPENDING_FUNCTIONS:
        raise PreregistrationError(
            f"stopping_rule.spending must be one of {list(SPENDING_FUNCTIONS)}, got {spending!r}"
        )
    if statistic not in SEQUENTIAL_STATISTICS:
        raise PreregistrationError(
            f"a group-sequential design needs primary_statistic in "
            f"{list(SEQUENTIAL_STATISTICS)}, got {statistic!r}"
        )
    return StoppingRule("group-sequential", looks, str(spending))


def preregistration_bytes(
    *,
    hypothesis: str,
    design: str,
    group_by: str,
    arms: tuple[str, ...] | list[str],
    tokens_per_arm: int,
    alpha: float,
    primary_statistic: str,
    stopping: StoppingRule,
    planning: Mapping[str, float] | None = None,
    notes: str | None = None,
) -> bytes:
    """The bytes of a plan file with these contents (checked as
    :func:`parse_preregistration` checks a file).

    Raises:
        PreregistrationError: The plan would not be valid (the message names the field).
    """
    rule: dict[str, object] = {"type": stopping.kind}
    if stopping.kind != "fixed":
        rule.update(looks=stopping.looks, spending=stopping.spending)
    plan: dict[str, object] = {
        "format": PLAN_FORMAT,
        "hypothesis": hypothesis,
        "design": design,
        "group_by": group_by,
        "arms": list(arms),
        "tokens_per_arm": tokens_per_arm,
        "alpha": alpha,
        "primary_statistic": primary_statistic,
        "stopping_rule": rule,
    }
    if planning:
        plan["planning"] = dict(planning)
    if notes is not None:
        plan["notes"] = notes
    try:
        data = (json.dumps(plan, indent=2, allow_nan=False) + "\n").encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise PreregistrationError(f"plan cannot be written as JSON: {exc}") from exc
    parse_preregistration(data)
    return data
