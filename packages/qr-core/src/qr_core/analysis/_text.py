"""The text form of ``qr-analyze``'s report and plan.

The two tables of group statistics are not written here column by column: they
follow the declarations of :class:`~qr_core.analysis.GroupStats` (header, width and
cell text of each statistic's columns), so a new statistic shows up by itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from qr_core._calibration import Calibration
from qr_core.analysis._declare import Column, declared, format_p
from qr_core.analysis._drift import DriftResult
from qr_core.analysis._groups import GroupStats
from qr_core.analysis._plan import Plan
from qr_core.analysis._report import AnalysisReport
from qr_core.records._reader import RecordFile
from qr_core.records._validate import SHOWN_PROBLEMS, Validation

__all__ = ["drift_text", "group_tables", "plan_text", "print_problems", "print_report"]

_LABEL_WIDTH = 24


def _cell(text: str, width: int) -> str:
    # One space always separates a column from the one before, however long the text.
    return " " + text.rjust(width - 1)


def group_tables(groups: Sequence[GroupStats]) -> str:
    """The text tables of ``groups``: one per declared table number, one row per group.

    Each table starts with an empty line and its header; labels are cut to 23
    characters.
    """
    declarations = declared(GroupStats)
    out: list[str] = []
    for table in sorted({d.table for _, d in declarations if d.columns}):
        columns: list[tuple[str, Column[object]]] = [
            (name, c) for name, d in declarations if d.table == table for c in d.columns
        ]
        out.append(f"\n{'group':<{_LABEL_WIDTH}}")
        out.extend(_cell(c.header, c.width) for _, c in columns)
        out.append("\n")
        for g in groups:
            out.append(f"{g.label[: _LABEL_WIDTH - 1]:<{_LABEL_WIDTH}}")
            out.extend(_cell(c.cell(getattr(g, name)), c.width) for name, c in columns)
            out.append("\n")
    return "".join(out)


def print_problems(checked: Validation, out: TextIO) -> None:
    """Write the invalid-records error: the count and the first few problems."""
    problems = checked.problems
    out.write(f"qr-analyze: error: {len(problems)} invalid record(s)\n")
    for p in problems[:SHOWN_PROBLEMS]:
        out.write(f"  {p}\n")
    if len(problems) > SHOWN_PROBLEMS:
        out.write(f"  ... and {len(problems) - SHOWN_PROBLEMS} more\n")
    out.write("qr-analyze: pass --skip-invalid to analyse the other records\n")


def print_report(
    report: AnalysisReport,
    files: Sequence[RecordFile],
    checked: Validation,
    figures: Sequence[Path],
    out: TextIO,
) -> None:
    """Write the report as ``qr-analyze`` prints it without ``--json``."""
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
    for sha, cal in report.calibrations.items():
        if cal is None:
            w(f"calibration {sha[:12]}  taken as exact (--assume-exact-calibration)\n")
        else:
            w(
                f"calibration {sha[:12]}  B={cal.blocks}, offset SE {cal.mean_se_z:.4f} z, "
                f"sd SE {cal.std_se_z:.4f}: in every statistic of its tokens\n"
            )
    groups = (report.overall, *report.groups)
    w(group_tables(groups))
    ks = ", ".join(sorted({g.ks.method for g in groups if g.ks.method != "none"}))
    boot = [g.ks for g in groups if g.ks.method == "bootstrap"]
    if boot:
        cost = sum(k.seconds for k in boot)
        ks += f" (calibrated: Monte Carlo, R = {report.ks_replicates}, {cost:.1f} s)"
    w(
        f"\nKS: {ks or 'none'}; all p two-sided; serial tests in time order; "
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
            f"two-sided p = {format_p(t.p_value)}\n"
            f"           Bayes factor BF10 = {c.bayes.bf10:.3g} "
            f"(log10 {c.bayes.log10_bf10:+.3f})\n"
        )
        if t.calibration_variance > 0:
            share = t.calibration_variance / t.standard_error**2
            w(f"           calibrations: {100 * share:.1f}% of the SE's variance\n")
    for p in figures:
        w(f"figure     {p}\n")


def plan_text(plan: Plan) -> str:
    """``qr-analyze plan``'s output."""
    arms = 2 if plan.design == "two-arm" else 1
    text = (
        f"design          {plan.design} (two-sided normal test of mean z, sd 1)\n"
        f"effect          {plan.effect:g} (shift of mean z per token)\n"
        f"alpha           {plan.alpha:g}\n"
        f"power           {plan.target_power:g} (achieved {plan.achieved_power:.4f})\n"
        f"tokens per arm  {plan.tokens_per_arm}\n"
        f"tokens in all   {arms * plan.tokens_per_arm}\n"
    )
    c = plan.calibration
    if c is None:
        return text
    t = plan.tokens_per_arm
    loss = f"{100 * c.max_power_loss:g}%" if c.relative else f"{100 * c.max_power_loss:g} pt"
    text += f"calibrated arms {c.calibrated_arms} (each with its own calibration)\n"
    if math.isfinite(c.blocks):
        points = 100 * (c.power_left - plan.achieved_power)
        text += (
            f"blocks          {c.blocks:,.0f} per calibrated arm (B/T = {c.blocks / t:.3g})\n"
            f"power left      {c.power_left:.4f} ({points:+.1f} points)\n"
        )
        restore = (
            f"{math.ceil(c.tokens_to_restore):,} per arm with {c.blocks:,.0f} blocks"
            if math.isfinite(c.tokens_to_restore)
            else f"none: {c.blocks:,.0f} blocks are at or below the floor"
        )
        text += f"tokens to restore {restore}\n"
    text += (
        f"blocks for <= {loss} loss  B >= {c.recommended_blocks:,.0f} per calibrated arm "
        f"(B/T = {c.recommended_blocks / t:.3g})\n"
        f"floor           B > {c.floor_blocks:,.0f}: below it no token count reaches "
        f"power {plan.target_power:g} for {plan.effect:g}\n"
    )
    return text


def drift_text(
    result: DriftResult, calibrations: Sequence[Calibration], names: Sequence[str]
) -> str:
    """``qr-analyze drift``'s output (calibrations in time order)."""
    head = calibrations[0]
    lines = [
        f"calibrations  {len(calibrations)} (device {head.device_id or '-'}, "
        f"{head.amplifier}, sample_count {head.sample_count})",
        f"{'':<24}{'blocks':>10}{'mean z vs first':>17}{'SE':>9}{'sd ratio':>10}  started",
    ]
    for k, i in enumerate(result.order):
        c = calibrations[i]
        se = f"{result.standard_errors_z[k]:.4f}" if k else "-"
        lines.append(
            f"{names[i][-23:]:<24}{c.blocks:>10}{result.differences_z[k]:>+17.4f}{se:>9}"
            f"{result.sd_ratios[k]:>10.4f}  {c.started_at}"
        )
    level = f"{100 * (1 - result.alpha):g}%"
    if result.df == 1:
        lines.append(
            f"mean drift    z = {result.statistic:+.2f}, p = {format_p(result.p_value)} "
            f"({level} CI of the drift in z: {result.ci_low:+.4f} .. {result.ci_high:+.4f})"
        )
        lines.append(
            f"sd drift      z = {result.sd_statistic:+.2f}, p = {format_p(result.sd_p_value)}"
        )
    else:
        lines.append(
            f"mean drift    Q = {result.statistic:.2f} on {result.df} df, "
            f"p = {format_p(result.p_value)}"
        )
        if not math.isnan(result.trend_z):
            lines.append(
                f"trend         z = {result.trend_z:+.2f}, p = {format_p(result.trend_p_value)}"
            )
        lines.append(
            f"sd drift      Q = {result.sd_statistic:.2f}, p = {format_p(result.sd_p_value)}"
        )
    lines.append(
        f"detectable    {result.min_detectable_z:.4f} in z ({100 * result.power:g}% power, "
        f"alpha {result.alpha:g}); a drift below it may have gone unseen"
    )
    return "\n".join(lines) + "\n"
