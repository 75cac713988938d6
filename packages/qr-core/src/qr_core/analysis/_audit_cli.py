"""The audit parts of ``qr-analyze``: ``verify``, the chain check before an analysis
and the choice of the analysis as pre-registered (its text is ``_registered_text``,
``plan --write`` is ``_plan_file``).

``qr-analyze verify RECORDS... [--manifest] [--json]`` exits 0 when every series is
chained, intact and sealed, 5 (:data:`EXIT_TAMPERED`) when a chain is broken (a line
deleted, inserted, reordered or edited, a segment missing), 6
(:data:`EXIT_UNVERIFIED`) when nothing is broken but a series has no seal (a crash, or
a writer still running) or lines carry no chain (written before schema version 3),
and 1 when a file cannot be read.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final, TextIO

from qr_core.analysis._errors import ConfigHashError
from qr_core.analysis._registered import RegisteredAnalysis, analyze_as_registered
from qr_core.records._chain_check import ChainFinding
from qr_core.records._errors import RecordError
from qr_core.records._preregistration import load_preregistration
from qr_core.records._schema import TokenSamplingRecord
from qr_core.records._validate import SHOWN_PROBLEMS
from qr_core.records._verify import ChainReport, verify_chain

__all__ = [
    "EXIT_TAMPERED",
    "EXIT_UNVERIFIED",
    "add_audit_options",
    "chain_precheck",
    "manifest",
    "registered_analysis",
    "verify_main",
]

EXIT_TAMPERED: Final = 5
EXIT_UNVERIFIED: Final = 6
MANIFEST_HEADER: Final = (
    "# qr-sampler record manifest 1: final-sha256 records preregistration-sha256 "
    "series writer status"
)


def verify_main(argv: Sequence[str]) -> int:
    """``qr-analyze verify``; returns the exit status."""
    p = argparse.ArgumentParser(
        prog="qr-analyze verify",
        description="Check the hash chain of every writer series of record files: no line "
        "deleted, inserted, reordered or edited, no segment missing, every series sealed.",
        epilog="exit status: 0 intact and sealed, 1 unreadable input, 5 a chain is broken, "
        "6 intact but a series is unsealed (a crash, or still writing) or lines are unchained",
    )
    p.add_argument("files", nargs="+", metavar="RECORDS", help="record file(s) or base path(s)")
    p.add_argument(
        "--manifest",
        action="store_true",
        help="print one line per series: final SHA-256, records, pre-registration SHA-256",
    )
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    args = p.parse_args(argv)
    try:
        reports = _distinct([verify_chain(f) for f in args.files])
    except RecordError as exc:
        print(f"qr-analyze verify: error: {exc}", file=sys.stderr)
        return 1
    findings = [f for r in reports for f in r.findings]
    if args.json:
        json.dump([_report_json(r) for r in reports], sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.manifest:
        sys.stdout.write(manifest(reports))
    else:
        _print_reports(reports, sys.stdout)
    if args.manifest or args.json:
        for f in findings:
            print(f, file=sys.stderr)
    if any(f.tampering for f in findings):
        return EXIT_TAMPERED
    if findings or any(r.unchained for r in reports):
        return EXIT_UNVERIFIED
    return 0


def manifest(reports: Sequence[ChainReport]) -> str:
    """The manifest: a header line, then one line per series."""
    lines = [MANIFEST_HEADER]
    for r in reports:
        for s in r.series:
            prereg = ",".join(p or "none" for p in s.preregistrations) or "none"
            lines.append(
                f"{s.final_sha256 or '-'} {s.records} {prereg} {s.series or '-'} "
                f"{s.writer_id or '-'} {'sealed' if s.sealed else 'unsealed'}"
            )
    return "\n".join(lines) + "\n"


def _distinct(reports: list[ChainReport]) -> list[ChainReport]:
    """Drop a report whose files another one read too (``records.jsonl*``)."""
    sets = [frozenset(p.resolve() for p in r.files) for r in reports]
    return [
        r
        for i, r in enumerate(reports)
        if not any(
            j != i and (sets[i] < sets[j] or (sets[i] == sets[j] and j < i))
            for j in range(len(sets))
        )
    ]


def _print_reports(reports: Sequence[ChainReport], out: TextIO) -> None:
    for r in reports:
        records = sum(s.records for s in r.series)
        out.write(f"records    {r.path}: {len(r.series)} series, {records} records\n")
        for s in r.series:
            state = "sealed" if s.sealed else "UNSEALED"
            out.write(
                f"series     {s.series or '(start missing)'} writer {s.writer_id or '-'}: "
                f"{s.records} records, {state}, final sha256 {s.final_sha256 or '-'}\n"
            )
        if r.unchained:
            out.write(f"unchained  {r.unchained} record lines carry no hash chain\n")
        for f in r.findings:
            out.write(f"{'FOUND' if f.tampering else 'note':<10} {f}\n")
    out.write(f"result     {_verdict([f for r in reports for f in r.findings], reports)}\n")


def _verdict(findings: Sequence[ChainFinding], reports: Sequence[ChainReport]) -> str:
    kinds = collections.Counter(f.kind for f in findings if f.tampering)
    if kinds:
        shown = ", ".join(f"{k} ({n})" for k, n in sorted(kinds.items()))
        return f"TAMPERED: {shown}"
    unsealed = sum(1 for f in findings if f.kind == "unsealed")
    unchained = sum(r.unchained for r in reports)
    if unsealed or unchained:
        parts = [f"{unsealed} series unsealed"] if unsealed else []
        parts += [f"{unchained} record lines unchained"] if unchained else []
        return "intact, but " + " and ".join(parts)
    return "intact and sealed"


def _report_json(r: ChainReport) -> dict[str, object]:
    return {
        "path": str(r.path),
        "series": [
            {
                "series": s.series,
                "writer_id": s.writer_id,
                "started_ns": s.started_ns,
                "records": s.records,
                "sealed": s.sealed,
                "final_sha256": s.final_sha256,
                "last_record": s.last_record,
                "preregistrations": list(s.preregistrations),
            }
            for s in r.series
        ],
        "findings": [
            {"kind": f.kind, "where": f.where, "message": f.message, "tampering": f.tampering}
            for f in r.findings
        ],
        "unchained": r.unchained,
    }


def chain_precheck(paths: Sequence[str], skip_invalid: bool, err: TextIO) -> bool:
    """The check ``qr-analyze`` runs before any analysis: warn on unsealed series and
    unchained lines; refuse a broken chain (``False``) unless ``skip_invalid``."""
    reports: list[ChainReport] = []
    for path in paths:
        try:
            reports.append(verify_chain(path))
        except RecordError:
            continue  # the reader names the missing or unreadable file
    for report in _distinct(reports):  # a segment given with its live file: checked once
        path = str(report.path)
        broken = [f for f in report.findings if f.tampering]
        for f in report.unsealed:
            err.write(f"qr-analyze: WARNING: {f}\n")
        if report.unchained:
            err.write(
                f"qr-analyze: WARNING: {path}: {report.unchained} record lines carry no hash "
                "chain (written before schema version 3): deletions cannot be detected\n"
            )
        if not broken:
            continue
        level = "WARNING" if skip_invalid else "error"
        err.write(
            f"qr-analyze: {level}: the hash chain of {path} is broken ({len(broken)} findings)\n"
        )
        for f in broken[:SHOWN_PROBLEMS]:
            err.write(f"  {f}\n")
        if len(broken) > SHOWN_PROBLEMS:
            err.write(
                f"  ... and {len(broken) - SHOWN_PROBLEMS} more (qr-analyze verify lists all)\n"
            )
        if not skip_invalid:
            err.write("qr-analyze: pass --skip-invalid to analyse the records anyway\n")
            return False
    return True


def add_audit_options(p: argparse.ArgumentParser) -> None:
    """``--preregistration`` and ``--exploratory``."""
    p.add_argument(
        "--preregistration",
        metavar="PLAN",
        type=Path,
        help="the pre-registered plan file the records were made under: run its primary "
        "analysis exactly as registered",
    )
    p.add_argument(
        "--exploratory",
        action="store_true",
        help="analyse pre-registered records without their plan (all tokens; no registered test)",
    )


def registered_analysis(
    tokens: Sequence[TokenSamplingRecord], args: argparse.Namespace, err: TextIO
) -> RegisteredAnalysis | None:
    """The registered analysis the options ask for, or ``None``.

    Raises:
        ConfigHashError: The records carry a pre-registration and neither its plan nor
            ``--exploratory`` was given, or the plan's hash differs from the records'.
        PreregistrationError: The plan file is missing or invalid.
    """
    hashes = sorted({r.preregistration_sha256 or "none" for r in tokens})
    if args.preregistration is not None:
        return analyze_as_registered(tokens, load_preregistration(args.preregistration))
    if not set(hashes) - {"none"}:
        return None
    if not args.exploratory:
        raise ConfigHashError(
            f"the records were made under pre-registration(s) {', '.join(hashes)}; pass "
            "--preregistration PLAN to run the registered analysis, or --exploratory"
        )
    err.write(
        f"qr-analyze: WARNING: exploratory analysis of pre-registered records "
        f"({', '.join(hashes)}): not the registered test\n"
    )
    return None
