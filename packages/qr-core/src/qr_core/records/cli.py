"""``qr-analyze``: report and figures for token record files; ``qr-analyze plan``.

Exit status: 0 success; 1 unreadable, invalid or unusable input; 2 bad command line;
3 pre-registration check failed (config hash differs from ``--expect-config-hash``,
or mixed configurations without ``--allow-mixed-configs``); 4 the ``qr-core[analysis]``
extra (scipy, matplotlib) is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final, TextIO

from qr_core.records._analysis import (
    DEFAULT_PRIOR_SD,
    AnalysisReport,
    GroupKey,
    analyze_validated,
    check_config_hashes,
    group_label,
    group_records,
)
from qr_core.records._analysis import compare as compare_groups
from qr_core.records._errors import ConfigHashError, MissingExtraError, RecordError
from qr_core.records._figures import write_figures
from qr_core.records._plan import DESIGNS, plan_tokens
from qr_core.records._reader import RecordFile, read_records, segments_of
from qr_core.records._schema import TokenSamplingRecord
from qr_core.records._validate import SHOWN_PROBLEMS, Validation, validate

__all__ = ["EXIT_CONFIG", "EXIT_INPUT", "EXIT_MISSING_EXTRA", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK: Final = 0
EXIT_INPUT: Final = 1
EXIT_USAGE: Final = 2
EXIT_CONFIG: Final = 3
EXIT_MISSING_EXTRA: Final = 4

_logger = logging.getLogger("qr_core.records")

# --by source: the arm is the source instance a request asked for (entropy_source
# names the one that delivered, which differs on fallback), so "source" groups by arm.
_BY_CHOICES: Final[dict[str, GroupKey]] = {"tag": "tag", "arm": "arm", "source": "arm"}
_EPILOG: Final = (
    "exit status: 0 ok, 1 bad or invalid input, 2 bad command line, 3 config-hash check "
    "failed, 4 the qr-core[analysis] extra is missing. `qr-analyze plan --help`: tokens "
    "an experiment needs."
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
    p.add_argument("--figures", metavar="DIR", type=Path, help="write PNG figures into DIR")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def _plan_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qr-analyze plan",
        description=(
            "Tokens per arm needed to detect a shift of mean z with a two-sided test "
            "(z has sd 1 under the null hypothesis)."
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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``qr-analyze``; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["plan"]:
        return _plan(arguments[1:])
    args = _parser().parse_args(arguments)
    by, a, b = _grouping(args)
    if by is None:
        return EXIT_USAGE
    _log_to_stderr()
    try:
        files = [read_records(f, skip_invalid=True) for f in _distinct(args.files)]
        checked = _validated(files)
        if checked.problems and not args.skip_invalid:
            _print_problems(checked, sys.stderr)
            return EXIT_INPUT
        tokens = checked.tokens
        check_config_hashes(
            tokens, expected=args.expect_config_hash, allow_mixed=args.allow_mixed_configs
        )
        groups = group_records(tokens, by)
        if a is None and args.by is not None and len(groups) == 2 and None not in groups:
            a, b = (str(k) for k in groups)
        prior = {"prior_mean": args.prior_mean, "prior_sd": args.prior_sd}
        report = analyze_validated(checked, by=by, a=a, b=b, **prior)
        figure_groups: dict[str, Sequence[TokenSamplingRecord]] = {"all": tokens}
        if report.comparison is not None:
            figure_groups = {group_label(by, k): groups.get(k, []) for k in (a, b)}
        elif args.by is not None:
            figure_groups = {group_label(by, k): v for k, v in groups.items()}
        elif len(files) == 2:
            kept = {id(r) for r in tokens}
            fa, fb = ([r for r in f.records if id(r) in kept] for f in files)
            names = [str(f.path) for f in files]
            comparison = compare_groups(names[0], fa, names[1], fb, **prior)
            report = dataclasses.replace(report, comparison=comparison)
            figure_groups = {names[0]: fa, names[1]: fb}
        figures = write_figures(figure_groups, args.figures) if args.figures is not None else ()
    except ConfigHashError as exc:
        print(f"qr-analyze: pre-registration check failed: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except MissingExtraError as exc:
        print(f"qr-analyze: error: {exc}", file=sys.stderr)
        return EXIT_MISSING_EXTRA
    except RecordError as exc:
        print(f"qr-analyze: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    if args.json:
        data = report.to_json_dict()
        data["files"] = [_file_json(f) for f in files]
        data["problems"] = [str(p) for p in checked.problems]
        data["figures"] = [str(p) for p in figures]
        json.dump(data, sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
    else:
        _print_text(report, files, checked, figures, sys.stdout)
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
    if not logging.getLogger().handlers and not _logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("qr-analyze: %(levelname)s: %(message)s"))
        _logger.addHandler(handler)


def _validated(files: Sequence[RecordFile]) -> Validation:
    """Validate all files' records together (duplicates can span files); lines the
    reader already refused come first among the problems."""
    records = [r for f in files for r in f.records]
    where = [w for f in files for w in f.where]
    checked = validate(records, where)
    unread = tuple(p for f in files for p in f.invalid)
    return dataclasses.replace(checked, problems=unread + checked.problems)


def _print_problems(checked: Validation, out: TextIO) -> None:
    problems = checked.problems
    out.write(f"qr-analyze: error: {len(problems)} invalid record(s)\n")
    for p in problems[:SHOWN_PROBLEMS]:
        out.write(f"  {p}\n")
    if len(problems) > SHOWN_PROBLEMS:
        out.write(f"  ... and {len(problems) - SHOWN_PROBLEMS} more\n")
    out.write("qr-analyze: pass --skip-invalid to analyse the other records\n")


def _plan(argv: Sequence[str]) -> int:
    args = _plan_parser().parse_args(argv)
    try:
        plan = plan_tokens(args.effect, args.alpha, args.power, args.design)
    except MissingExtraError as exc:
        print(f"qr-analyze: error: {exc}", file=sys.stderr)
        return EXIT_MISSING_EXTRA
    except RecordError as exc:
        print(
            f"qr-analyze plan: error: {str(exc).replace('target_power', 'power')}", file=sys.stderr
        )
        return EXIT_USAGE
    arms = 2 if plan.design == "two-arm" else 1
    sys.stdout.write(
        f"design          {plan.design} (two-sided normal test of mean z, sd 1)\n"
        f"effect          {plan.effect:g} (shift of mean z per token)\n"
        f"alpha           {plan.alpha:g}\n"
        f"power           {plan.target_power:g} (achieved {plan.achieved_power:.4f})\n"
        f"tokens per arm  {plan.tokens_per_arm}\n"
        f"tokens in all   {arms * plan.tokens_per_arm}\n"
    )
    return EXIT_OK


def _distinct(paths: Sequence[str]) -> list[str]:
    """Drop arguments already covered by another one (``records.jsonl*`` globs)."""
    sets = [frozenset(p.resolve() for p in segments_of(path)) for path in paths]
    kept: list[int] = []
    for i, own in enumerate(sets):
        covering = next(
            (
                j
                for j, other in enumerate(sets)
                if j != i and own <= other and (own < other or j < i)
            ),
            None,
        )
        if covering is not None:
            _logger.info("%s is read as part of %s", paths[i], paths[covering])
            continue
        kept.append(i)
    for pos, i in enumerate(kept):
        for j in kept[pos + 1 :]:
            if sets[i] & sets[j]:
                raise RecordError(f"{paths[i]} and {paths[j]} share record segments")
    return [paths[i] for i in kept]


def _file_json(f: RecordFile) -> dict[str, object]:
    return {
        "path": str(f.path),
        "segments": [str(s) for s in f.segments],
        "records": len(f.records),
        "truncated_lines": list(f.truncated_lines),
    }


def _fmt_p(p: float) -> str:
    return "n/a" if math.isnan(p) else f"{p:.3g}"


def _print_text(
    report: AnalysisReport,
    files: Sequence[RecordFile],
    checked: Validation,
    figures: Sequence[Path],
    out: TextIO,
) -> None:
    w = out.write
    segments = sum(len(f.segments) for f in files)
    w(f"files      {len(files)} ({segments} segments read)\n")
    for where in (t for f in files for t in f.truncated_lines):
        w(f"           skipped partial last line {where}\n")
    if report.skipped:
        w(f"invalid    {report.skipped} records skipped (--skip-invalid), first:\n")
        for problem in checked.problems[:SHOWN_PROBLEMS]:
            w(f"           {problem}\n")
    w(f"tokens     {report.tokens}  (discarded records not counted: {report.discarded})\n")
    w(f"requests   {report.requests}\n")
    if report.incomplete:
        w(f"incomplete {len(report.incomplete)} requests have missing token indexes, first:\n")
        for r in report.incomplete[:SHOWN_PROBLEMS]:
            shown = ", ".join(str(i) for i in r.missing)
            w(f"           {r.request_id}: {r.missing_count} missing ({shown})\n")
    w("sources    " + ", ".join(f"{s}={n}" for s, n in report.sources.items()) + "\n")
    w(f"fallback   {report.fallback_tokens} tokens ({100.0 * report.fallback_share:.2f}%)\n")
    for h, n in report.config_hashes.items():
        w(f"config     {h}  ({n} tokens)\n")
    groups = (report.overall, *report.groups)
    w(
        f"\n{'group':<24}{'tokens':>9}{'requests':>9}{'mean z':>10}{'sd z':>8}"
        f"{'Stouffer Z':>12}{'p':>10}{'KS D':>9}{'KS p':>10}\n"
    )
    for g in groups:
        w(
            f"{g.label[:23]:<24}{g.tokens:>9}{g.requests:>9}{g.z.mean_z:>+10.4f}"
            f"{g.z.std_z:>8.3f}{g.z.stouffer_z:>+12.3f}{_fmt_p(g.z.p_value):>10}"
            f"{g.ks.statistic:>9.4f}{_fmt_p(g.ks.p_value):>10}\n"
        )
    w(
        f"\n{'group':<24}{'mean z 95% CI':>22}{'netvar p':>10}{'lag-1 r':>9}{'p':>8}"
        f"{'runs p':>8}{'walk p':>8}{'BF10':>10}\n"
    )
    for g in groups:
        ci = f"[{g.effect.ci_low:+.4f}, {g.effect.ci_high:+.4f}]"
        bf = "n/a" if g.bayes is None else f"{g.bayes.bf10:.3g}"
        w(
            f"{g.label[:23]:<24}{ci:>22}{_fmt_p(g.network_variance.p_value):>10}"
            f"{g.autocorrelation.r1:>+9.4f}{_fmt_p(g.autocorrelation.p_value):>8}"
            f"{_fmt_p(g.runs.p_value):>8}{_fmt_p(g.walk.p_value):>8}{bf:>10}\n"
        )
    w(
        f"\nKS: {report.overall.ks.method}; all p two-sided; serial tests in time order; "
        f"BF10 prior: shift of mean z ~ N({report.prior_mean:g}, {report.prior_sd:g}^2)\n"
    )
    c = report.comparison
    if c is not None:
        t = c.test
        w(
            f"\ncompare    A={c.label_a} (n={c.tokens_a})  B={c.label_b} (n={c.tokens_b})\n"
            f"           mean z A - B = {t.difference:+.5f}  (SE {t.standard_error:.5f}, "
            f"95% CI [{t.ci_low:+.5f}, {t.ci_high:+.5f}])\n"
            f"           {t.method}: statistic {t.statistic:+.3f}, df {t.df:.1f}, "
            f"two-sided p = {_fmt_p(t.p_value)}\n"
            f"           Bayes factor BF10 = {c.bayes.bf10:.3g} "
            f"(log10 {c.bayes.log10_bf10:+.3f})\n"
        )
    for p in figures:
        w(f"figure     {p}\n")
