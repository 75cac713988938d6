"""``qr-analyze``: report and figures for token record files; ``qr-analyze plan``,
``drift`` and ``export`` (:mod:`qr_core.analysis._subcommands`).

Exit status: 0 success; 1 unreadable, invalid or unusable input (also calibrations that
do not belong to the records); 2 bad command line; 3 pre-registration check failed
(config hash differs from ``--expect-config-hash``, or mixed configurations without
``--allow-mixed-configs``; with ``--by arm`` one configuration per arm is expected);
4 the ``qr-core[analysis]`` extra (scipy, matplotlib, pyarrow) is missing.
A broken hash chain is bad input (1) unless ``--skip-invalid``; pre-registered records
need ``--preregistration PLAN`` (or ``--exploratory``), and a plan whose hash the
records do not carry fails the pre-registration check (3). ``qr-analyze verify``
(:mod:`qr_core.analysis._audit_cli`) exits 5 for a broken chain, 6 for an unsealed one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from qr_core._calibration import load_calibration
from qr_core._errors import QRCoreError
from qr_core.analysis import _subcommands
from qr_core.analysis._audit_cli import (
    add_audit_options,
    chain_precheck,
    registered_analysis,
    verify_main,
)
from qr_core.analysis._errors import ConfigHashError, MissingExtraError
from qr_core.analysis._figures import write_figures
from qr_core.analysis._groups import DEFAULT_PRIOR_SD, GroupKey, group_label, group_records
from qr_core.analysis._inputs import LOGGER, distinct, file_json, validated
from qr_core.analysis._ks import DEFAULT_KS_REPLICATES
from qr_core.analysis._registered_text import registered_json, write_registered
from qr_core.analysis._report import analyze_validated, check_config_hashes
from qr_core.analysis._report import compare as compare_groups
from qr_core.analysis._text import print_problems, print_report
from qr_core.records._reader import read_records
from qr_core.records._schema import TokenSamplingRecord

__all__ = ["EXIT_CONFIG", "EXIT_INPUT", "EXIT_MISSING_EXTRA", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK: Final = 0
EXIT_INPUT: Final = 1
EXIT_USAGE: Final = 2
EXIT_CONFIG: Final = 3
EXIT_MISSING_EXTRA: Final = 4

# --by source: the arm is the source instance a request asked for (entropy_source
# names the one that delivered, which differs on fallback), so "source" groups by arm.
_BY_CHOICES: Final[dict[str, GroupKey]] = {"tag": "tag", "arm": "arm", "source": "arm"}
_EPILOG: Final = (
    "exit status: 0 ok, 1 bad or invalid input, 2 bad command line, 3 config-hash check "
    "failed, 4 the qr-core[analysis] extra is missing. `qr-analyze plan --help`: tokens "
    "and calibration blocks an experiment needs; `qr-analyze drift --help`: did the "
    "device move between calibrations; `qr-analyze export --help`: records to Parquet; "
    "`qr-analyze verify --help`: check the records' hash chains."
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qr-analyze",
        description=(
            "Analyse qr-sampler token records (JSON Lines): mean z with its 95% CI, "
            "Stouffer's Z, KS test of u, network variance, lag-1 autocorrelation, runs "
            "test, whole-walk test and a Bayes factor, overall and per request tag or "
            "experiment arm, and a two-group comparison (two groups, or two files). A "
            "live FILE is read together with its rotated segments FILE.1, FILE.2, ..."
        ),
        epilog=_EPILOG,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="record file(s)")
    p.add_argument(
        "--by",
        choices=sorted(_BY_CHOICES),
        help="group tokens by request tag (default) or by experiment arm "
        "(`source` = `arm`: the source instance each request asked for); with exactly "
        "two groups they are compared",
    )
    p.add_argument("--a", metavar="NAME", help="group A of the comparison (with --b)")
    p.add_argument("--b", metavar="NAME", help="group B of the comparison (with --a)")
    p.add_argument("--tag-a", metavar="TAG", help="same as --by tag --a TAG")
    p.add_argument("--tag-b", metavar="TAG", help="same as --by tag --b TAG")
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="leave invalid records out (reported and counted) instead of failing",
    )
    p.add_argument(
        "--prior-mean",
        type=float,
        default=0.0,
        help="Bayes factor: mean of the normal prior on the shift of mean z (default 0)",
    )
    p.add_argument(
        "--prior-sd",
        type=float,
        default=DEFAULT_PRIOR_SD,
        help=f"Bayes factor: sd of that prior (default {DEFAULT_PRIOR_SD})",
    )
    p.add_argument(
        "--expect-config-hash",
        metavar="HASH",
        help="pre-registered config hash: every record must carry it",
    )
    p.add_argument(
        "--allow-mixed-configs",
        action="store_true",
        help="analyse records made under different config hashes together",
    )
    p.add_argument(
        "--calibration",
        action="append",
        default=[],
        metavar="FILE",
        help="calibration file for records that name it but do not carry its figures "
        "(written before schema 3); its sha256 must be one the records name (repeatable)",
    )
    p.add_argument(
        "--assume-exact-calibration",
        action="store_true",
        help="take such records as exact: leaves the calibration's error out of every "
        "statistic (their p-values are then too small)",
    )
    p.add_argument(
        "--ks-replicates",
        type=int,
        default=DEFAULT_KS_REPLICATES,
        metavar="R",
        help=f"Monte Carlo replicates of a calibrated group's KS test ({DEFAULT_KS_REPLICATES})",
    )
    p.add_argument("--figures", metavar="DIR", type=Path, help="write PNG figures into DIR")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_audit_options(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``qr-analyze``; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "plan": _subcommands.plan,
        "drift": _subcommands.drift,
        "export": _subcommands.export,
        "verify": verify_main,
    }
    if arguments[:1] and arguments[0] in commands:
        return commands[arguments[0]](arguments[1:])
    args = _parser().parse_args(arguments)
    by, a, b = _grouping(args)
    if by is None:
        return EXIT_USAGE
    _log_to_stderr()
    try:
        files = [read_records(f, skip_invalid=True) for f in distinct(args.files)]
        checked = validated(files)
        if checked.problems and not args.skip_invalid:
            print_problems(checked, sys.stderr)
            return EXIT_INPUT
        if not chain_precheck(args.files, args.skip_invalid, sys.stderr):
            return EXIT_INPUT
        tokens = checked.tokens
        check_config_hashes(
            tokens,
            expected=args.expect_config_hash,
            allow_mixed=args.allow_mixed_configs,
            by=by if args.by is not None else None,
        )
        registered = registered_analysis(tokens, args, sys.stderr)
        groups = group_records(tokens, by)
        if a is None and args.by is not None and len(groups) == 2 and None not in groups:
            a, b = (str(k) for k in groups)
        prior = {"prior_mean": args.prior_mean, "prior_sd": args.prior_sd}
        report = analyze_validated(
            checked,
            by=by,
            a=a,
            b=b,
            calibration_files=[load_calibration(f) for f in args.calibration],
            assume_exact_calibration=args.assume_exact_calibration,
            ks_replicates=args.ks_replicates,
            **prior,
        )
        figure_groups: dict[str, Sequence[TokenSamplingRecord]] = {"all": tokens}
        if report.comparison is not None:
            figure_groups = {group_label(by, k): groups.get(k, []) for k in (a, b)}
        elif args.by is not None:
            figure_groups = {group_label(by, k): v for k, v in groups.items()}
        elif len(files) == 2:
            kept = {id(r) for r in tokens}
            fa, fb = ([r for r in f.records if id(r) in kept] for f in files)
            names = [str(f.path) for f in files]
            comparison = compare_groups(
                names[0], fa, names[1], fb, calibrations=report.calibrations, **prior
            )
            report = dataclasses.replace(report, comparison=comparison)
            figure_groups = {names[0]: fa, names[1]: fb}
        figures = (
            write_figures(figure_groups, args.figures, report.calibrations)
            if args.figures is not None
            else ()
        )
    except ConfigHashError as exc:
        print(f"qr-analyze: pre-registration check failed: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except MissingExtraError as exc:
        print(f"qr-analyze: error: {exc}", file=sys.stderr)
        return EXIT_MISSING_EXTRA
    except QRCoreError as exc:  # RecordError (bad records), CalibrationError, a bad file
        print(f"qr-analyze: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    if args.json:
        data = report.to_json_dict()
        data["files"] = [file_json(f) for f in files]
        data["problems"] = [str(p) for p in checked.problems]
        data["figures"] = [str(p) for p in figures]
        data["registered"] = None if registered is None else registered_json(registered)
        json.dump(data, sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
    else:
        if registered is not None:
            write_registered(registered, report.tokens, sys.stdout)
        print_report(report, files, checked, figures, sys.stdout)
    return EXIT_OK


def _grouping(args: argparse.Namespace) -> tuple[GroupKey | None, str | None, str | None]:
    """(group key, A, B) from the options; key ``None`` after printing a usage error."""
    by = _BY_CHOICES[args.by] if args.by is not None else "tag"
    a, b = args.a, args.b
    if args.tag_a is not None or args.tag_b is not None:
        if by != "tag" or a is not None or b is not None:
            print("qr-analyze: error: --tag-a/--tag-b mean --by tag --a/--b", file=sys.stderr)
            return None, None, None
        a, b = args.tag_a, args.tag_b
    if (a is None) != (b is None):
        print(
            "qr-analyze: error: --a and --b (or --tag-a and --tag-b) go together", file=sys.stderr
        )
        return None, None, None
    return by, a, b


def _log_to_stderr() -> None:
    if not logging.getLogger().handlers and not LOGGER.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("qr-analyze: %(levelname)s: %(message)s"))
        LOGGER.addHandler(handler)
