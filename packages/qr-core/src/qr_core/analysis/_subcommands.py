"""``qr-analyze plan``, ``qr-analyze drift`` and ``qr-analyze export``.

Each takes its own arguments and returns the exit status of :mod:`qr_core.analysis.cli`:
0 success, 1 unusable input (a calibration or record file), 2 bad command line (or a
``plan`` argument out of range), 4 a missing extra. ``drift --fail-on-drift`` exits 1
when the device moved at ``--alpha``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from qr_core._calibration import load_calibration
from qr_core._errors import QRCoreError
from qr_core.analysis._drift import drift_test
from qr_core.analysis._errors import MissingExtraError
from qr_core.analysis._export import EXPORT_FORMATS, export_parquet
from qr_core.analysis._inputs import distinct
from qr_core.analysis._plan import DESIGNS, calibration_plan, plan_tokens
from qr_core.analysis._plan_file import add_plan_write_options, write_plan
from qr_core.analysis._text import drift_text, plan_text
from qr_core.records._errors import RecordError
from qr_core.records._reader import read_records

__all__ = ["drift", "export", "plan"]

_OK: Final = 0
_INPUT: Final = 1
_USAGE: Final = 2
_MISSING_EXTRA: Final = 4


def _json(data: object) -> None:
    def safe(value: object) -> object:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: safe(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [safe(v) for v in value]
        return value

    json.dump(safe(data), sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")


def _plan_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qr-analyze plan",
        description=(
            "Tokens per arm needed to detect a shift of mean z with a two-sided test "
            "(z has sd 1 under the null hypothesis), and what calibrated arms leave of "
            "its power: a calibration's offset, one N(0, 1/B) shared by all of an arm's "
            "tokens, adds c/B to the test's variance."
        ),
    )
    p.add_argument("--effect", type=float, required=True, help="shift of mean z, e.g. 0.02")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (0.05)")
    p.add_argument("--power", type=float, default=0.8, help="power wanted (0.8)")
    p.add_argument(
        "--design",
        choices=DESIGNS,
        default="two-arm",
        help="two-arm: arm A against arm B (default); one-sample: one group against 0",
    )
    p.add_argument(
        "--calibrated-arms",
        type=int,
        help="arms with their own calibration: 0, 1 or 2 (arms on ONE calibration count "
        "0: its offset cancels); default 1 with --calibration-blocks, else 0",
    )
    p.add_argument(
        "--calibration-blocks",
        type=float,
        default=math.inf,
        metavar="B",
        help="blocks per calibrated arm: report the power they leave",
    )
    p.add_argument(
        "--max-power-loss",
        type=float,
        default=0.02,
        metavar="L",
        help="power the calibration may cost, in points (0.02), for the blocks recommended",
    )
    p.add_argument(
        "--relative", action="store_true", help="read --max-power-loss as a fraction of the power"
    )
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    add_plan_write_options(p)
    return p


def plan(argv: Sequence[str]) -> int:
    """``qr-analyze plan``."""
    args = _plan_parser().parse_args(argv)
    arms = args.calibrated_arms
    if arms is None:
        arms = 1 if math.isfinite(args.calibration_blocks) else 0
    try:
        result = plan_tokens(args.effect, args.alpha, args.power, args.design)
        if arms:
            result = dataclasses.replace(
                result,
                calibration=calibration_plan(
                    result,
                    arms,
                    args.calibration_blocks,
                    max_power_loss=args.max_power_loss,
                    relative=args.relative,
                ),
            )
    except MissingExtraError as exc:
        print(f"qr-analyze: error: {exc}", file=sys.stderr)
        return _MISSING_EXTRA
    except RecordError as exc:
        message = str(exc).replace("target_power", "power")
        print(f"qr-analyze plan: error: {message}", file=sys.stderr)
        return _USAGE
    if args.json:
        _json(dataclasses.asdict(result))
    else:
        sys.stdout.write(plan_text(result))
    if args.write is not None:
        try:
            write_plan(args, result, sys.stderr if args.json else sys.stdout)
        except MissingExtraError as exc:
            print(f"qr-analyze: error: {exc}", file=sys.stderr)
            return _MISSING_EXTRA
        except RecordError as exc:  # the plan file, or a sequential design's arguments
            print(f"qr-analyze plan: error: {exc}", file=sys.stderr)
            return _USAGE
    return _OK


def drift(argv: Sequence[str]) -> int:
    """``qr-analyze drift CAL1 CAL2 ...``."""
    p = argparse.ArgumentParser(
        prog="qr-analyze drift",
        description=(
            "Did the device move between calibrations? Tests the calibrated means (and "
            "sds) of two or more calibration files of one device against each other with "
            "their standard errors, and reports the smallest drift it could have seen."
        ),
    )
    p.add_argument("files", nargs="+", metavar="CAL", help="calibration files (>= 2)")
    p.add_argument("--alpha", type=float, default=0.05, help="level (0.05)")
    p.add_argument("--power", type=float, default=0.8, help="power of the detectable drift")
    p.add_argument(
        "--fail-on-drift", action="store_true", help="exit 1 when the mean drifted at --alpha"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    try:
        calibrations = [load_calibration(f) for f in args.files]
        result = drift_test(calibrations, alpha=args.alpha, power=args.power)
    except MissingExtraError as exc:
        print(f"qr-analyze: error: {exc}", file=sys.stderr)
        return _MISSING_EXTRA
    except QRCoreError as exc:
        print(f"qr-analyze drift: error: {exc}", file=sys.stderr)
        return _INPUT
    if args.json:
        data = dataclasses.asdict(result)
        data["calibrations"] = [
            {
                "path": args.files[i],
                "sha256": calibrations[i].sha256,
                "blocks": calibrations[i].blocks,
                "mean": calibrations[i].mean,
                "mean_se": calibrations[i].mean_se,
                "std": calibrations[i].std,
                "std_se": calibrations[i].std_se,
                "started_at": calibrations[i].started_at,
            }
            for i in result.order
        ]
        _json(data)
    else:
        sys.stdout.write(drift_text(result, calibrations, args.files))
    drifted = result.p_value <= args.alpha
    return _INPUT if args.fail_on_drift and drifted else _OK


def export(argv: Sequence[str]) -> int:
    """``qr-analyze export --format parquet --output FILE RECORDS...``."""
    p = argparse.ArgumentParser(
        prog="qr-analyze export",
        description="Write records as one typed row per record, every field (Parquet).",
    )
    p.add_argument("files", nargs="+", metavar="RECORDS", help="record file(s)")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="parquet", help="parquet")
    p.add_argument("--output", required=True, type=Path, metavar="FILE", help="file to write")
    p.add_argument(
        "--skip-invalid", action="store_true", help="leave unreadable lines out instead of failing"
    )
    args = p.parse_args(argv)
    try:
        files = [read_records(f, skip_invalid=args.skip_invalid) for f in distinct(args.files)]
        records = [r for f in files for r in f.records]
        rows = export_parquet(records, args.output)
    except MissingExtraError as exc:
        print(f"qr-analyze: error: {exc}", file=sys.stderr)
        return _MISSING_EXTRA
    except (RecordError, OSError) as exc:
        print(f"qr-analyze export: error: {exc}", file=sys.stderr)
        return _INPUT
    print(f"{rows} records -> {args.output} ({args.format})")
    return _OK
