"""``qr-analyze plan --write FILE``: the pre-registration file from the power calculation."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import TextIO

from qr_core.analysis._plan import Plan
from qr_core.analysis._sequential import sequential_tokens
from qr_core.records._preregistration import (
    PRIMARY_STATISTICS,
    SPENDING_FUNCTIONS,
    PreregistrationError,
    StoppingRule,
    preregistration_bytes,
)

__all__ = ["add_plan_write_options", "write_plan"]

_DEFAULT_ARMS = {"two-arm": "qrng,control", "one-sample": "qrng"}


def add_plan_write_options(p: argparse.ArgumentParser) -> None:
    """The options of ``plan --write``."""
    p.add_argument(
        "--write", metavar="FILE", type=Path, help="write the pre-registration plan file FILE"
    )
    p.add_argument("--hypothesis", help="--write: the hypothesis, in words (required)")
    p.add_argument(
        "--arms",
        help="--write: arm A,B (two-arm; A - B is tested) or the one group (one-sample); "
        "default qrng,control or qrng",
    )
    p.add_argument(
        "--by", choices=("arm", "tag"), default="arm", help="--write: what the arms are (arm)"
    )
    statistics = sorted({s for v in PRIMARY_STATISTICS.values() for s in v})
    p.add_argument(
        "--statistic",
        choices=statistics,
        default="z",
        help="--write: the primary statistic (z: the normal test of mean z this power is for)",
    )
    p.add_argument(
        "--stopping",
        choices=("fixed", *SPENDING_FUNCTIONS),
        default="fixed",
        help="--write: fixed N, or a group-sequential design with this alpha spending",
    )
    p.add_argument("--looks", type=int, default=4, help="--write: looks of a sequential design (4)")
    p.add_argument("--notes", help="--write: free text kept in the plan")


def write_plan(args: argparse.Namespace, plan: Plan, out: TextIO) -> None:
    """Write the plan file ``args.write`` from ``plan`` (and a group-sequential design's
    own token count) and say what was written.

    Raises:
        PreregistrationError: The plan would be invalid, or the file exists.
        AnalysisError: The sequential design's arguments are out of range.
    """
    if not args.hypothesis:
        raise PreregistrationError("--write needs --hypothesis TEXT")
    arms = (args.arms or _DEFAULT_ARMS[plan.design]).split(",")
    tokens, power = plan.tokens_per_arm, plan.achieved_power
    stopping = StoppingRule("fixed")
    if args.stopping != "fixed":
        stopping = StoppingRule("group-sequential", args.looks, args.stopping)
        count = 2 if plan.design == "two-arm" else 1
        tokens, power, design = sequential_tokens(
            plan.effect, plan.alpha, plan.target_power, count, args.looks, args.stopping
        )
        bounds = ", ".join(f"{c:.4f}" for c in design.critical)
        out.write(
            f"sequential      {args.looks} looks, {args.stopping} alpha spending: "
            f"{tokens} tokens per arm (power {power:.4f}); boundaries |Z| >= {bounds}\n"
        )
    data = preregistration_bytes(
        hypothesis=args.hypothesis,
        design=plan.design,
        group_by=args.by,
        arms=arms,
        tokens_per_arm=tokens,
        alpha=plan.alpha,
        primary_statistic=args.statistic,
        stopping=stopping,
        planning={"effect": plan.effect, "power": plan.target_power, "achieved_power": power},
        notes=args.notes,
    )
    try:
        with args.write.open("xb") as f:
            f.write(data)
    except FileExistsError:
        raise PreregistrationError(
            f"{args.write} exists; a plan file is never overwritten (choose another name)"
        ) from None
    except OSError as exc:
        raise PreregistrationError(f"cannot write plan file {str(args.write)!r}: {exc}") from exc
    out.write(f"plan file       {args.write}  sha256 {hashlib.sha256(data).hexdigest()}\n")
