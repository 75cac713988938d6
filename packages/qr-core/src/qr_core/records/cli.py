"""``qr-analyze``: report and figures for token record files.

Exit status: 0 success; 1 unreadable or unusable input; 2 bad command line;
3 pre-registration check failed (config hash differs from ``--expect-config-hash``,
or mixed configurations without ``--allow-mixed-configs``); 4 ``--figures`` asked for
without the ``qr-core[analysis]`` extra.
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

from qr_core.records._analysis import AnalysisReport, GroupStats, analyze, check_config_hashes
from qr_core.records._analysis import compare as compare_groups
from qr_core.records._errors import ConfigHashError, MissingExtraError, RecordError
from qr_core.records._figures import write_figures
from qr_core.records._reader import RecordFile, read_records, segments_of
from qr_core.records._schema import TokenSamplingRecord

__all__ = ["EXIT_CONFIG", "EXIT_INPUT", "EXIT_MISSING_EXTRA", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK: Final = 0
EXIT_INPUT: Final = 1
EXIT_USAGE: Final = 2
EXIT_CONFIG: Final = 3
EXIT_MISSING_EXTRA: Final = 4

_logger = logging.getLogger("qr_core.records")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="qr-analyze",
        description=(
            "Analyse qr-sampler token records (JSON Lines): KS test of u against U(0,1), "
            "mean z and Stouffer's Z overall and per request tag, and a two-group comparison "
            "(two tags, or two files). A live FILE is read together with its rotated "
            "segments FILE.1, FILE.2, ..."
        ),
        epilog=(
            "exit status: 0 ok, 1 bad input, 2 bad command line, 3 config-hash check failed, "
            "4 figures without the qr-core[analysis] extra"
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="record file(s)")
    p.add_argument("--tag-a", metavar="TAG", help="group A: requests tagged TAG (with --tag-b)")
    p.add_argument("--tag-b", metavar="TAG", help="group B: requests tagged TAG (with --tag-a)")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``qr-analyze``; returns the exit status."""
    args = _parser().parse_args(argv)
    if (args.tag_a is None) != (args.tag_b is None):
        print("qr-analyze: error: --tag-a and --tag-b go together", file=sys.stderr)
        return EXIT_USAGE
    if not logging.getLogger().handlers and not _logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("qr-analyze: %(levelname)s: %(message)s"))
        _logger.addHandler(handler)
    try:
        files = [read_records(f) for f in _distinct(args.files)]
        records = [r for f in files for r in f.records]
        check_config_hashes(
            records, expected=args.expect_config_hash, allow_mixed=args.allow_mixed_configs
        )
        report = analyze(records, tag_a=args.tag_a, tag_b=args.tag_b)
        groups: dict[str, Sequence[TokenSamplingRecord]] = {"all": records}
        if args.tag_a is not None:
            groups = {
                g.label: [r for r in records if r.request_tag == tag]
                for g, tag in zip(_compared(report), (args.tag_a, args.tag_b), strict=True)
            }
        elif len(files) == 2:
            a, b = files
            report = _with_comparison(report, a, b)
            groups = {str(a.path): a.records, str(b.path): b.records}
        figures = write_figures(groups, args.figures) if args.figures is not None else ()
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
        data["figures"] = [str(p) for p in figures]
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_text(report, files, figures, sys.stdout)
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


def _compared(report: AnalysisReport) -> tuple[GroupStats, GroupStats]:
    comparison = report.comparison
    assert comparison is not None
    by_label = {g.label: g for g in report.by_tag}
    return by_label[comparison.label_a], by_label[comparison.label_b]


def _with_comparison(report: AnalysisReport, a: RecordFile, b: RecordFile) -> AnalysisReport:
    comparison = compare_groups(str(a.path), a.records, str(b.path), b.records)
    return dataclasses.replace(report, comparison=comparison)


def _file_json(f: RecordFile) -> dict[str, object]:
    return {
        "path": str(f.path),
        "segments": [str(s) for s in f.segments],
        "tokens": len(f.records),
        "truncated_lines": list(f.truncated_lines),
    }


def _fmt_p(p: float) -> str:
    return "n/a" if math.isnan(p) else f"{p:.3g}"


def _print_text(
    report: AnalysisReport, files: Sequence[RecordFile], figures: Sequence[Path], out: TextIO
) -> None:
    w = out.write
    segments = sum(len(f.segments) for f in files)
    truncated = [t for f in files for t in f.truncated_lines]
    w(f"files      {len(files)} ({segments} segments read)\n")
    for where in truncated:
        w(f"           skipped partial last line {where}\n")
    w(f"tokens     {report.tokens}\n")
    w(f"requests   {report.requests}\n")
    w("sources    " + ", ".join(f"{s}={n}" for s, n in report.sources.items()) + "\n")
    w(f"fallback   {report.fallback_tokens} tokens ({100.0 * report.fallback_share:.2f}%)\n")
    for h, n in report.config_hashes.items():
        w(f"config     {h}  ({n} tokens)\n")
    w("\n")
    w(
        f"{'group':<24}{'tokens':>9}{'requests':>9}{'mean z':>10}{'sd z':>8}"
        f"{'Stouffer Z':>12}{'p':>10}{'KS D':>9}{'KS p':>10}\n"
    )
    for g in (report.overall, *report.by_tag):
        w(
            f"{g.label[:23]:<24}{g.tokens:>9}{g.requests:>9}{g.z.mean_z:>+10.4f}"
            f"{g.z.std_z:>8.3f}{g.z.stouffer_z:>+12.3f}{_fmt_p(g.z.p_value):>10}"
            f"{g.ks.statistic:>9.4f}{_fmt_p(g.ks.p_value):>10}\n"
        )
    w(f"\nKS method: {report.overall.ks.method}; Stouffer Z = sum(z)/sqrt(n), two-sided p\n")
    c = report.comparison
    if c is not None:
        t = c.test
        w(
            f"\ncompare    A={c.label_a} (n={c.tokens_a})  B={c.label_b} (n={c.tokens_b})\n"
            f"           mean z A - B = {t.difference:+.5f}  (SE {t.standard_error:.5f})\n"
            f"           {t.method}: statistic {t.statistic:+.3f}, df {t.df:.1f}, "
            f"two-sided p = {_fmt_p(t.p_value)}\n"
        )
    for p in figures:
        w(f"figure     {p}\n")
