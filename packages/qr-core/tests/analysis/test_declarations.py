"""One declaration per statistic: GroupStats' declarations drive the JSON and the tables."""

from __future__ import annotations

import dataclasses
import math

from qr_core.analysis import GroupStats, WalkResult, analyze, simulate_records
from qr_core.analysis._declare import declared, format_p
from qr_core.analysis._groups import group_stats
from qr_core.analysis._text import group_tables


def _groups() -> tuple[GroupStats, ...]:
    records = simulate_records(400, seed=3, request_tag="exp", z_shift=0.1)
    records += simulate_records(3, seed=4, request_tag="a-tag-longer-than-the-label-column")
    records += simulate_records(1, seed=5, request_tag="one")
    report = analyze(records)
    return (report.overall, *report.groups)


def test_every_field_but_the_label_is_a_declared_statistic() -> None:
    names = [name for name, _ in declared(GroupStats)]
    assert names == [f.name for f in dataclasses.fields(GroupStats)][1:]


def test_the_json_report_has_one_key_per_declared_statistic() -> None:
    report = analyze(simulate_records(50, seed=1))
    overall = report.to_json_dict()["overall"]
    assert isinstance(overall, dict)
    assert list(overall) == ["label", *(name for name, _ in declared(GroupStats))]


def test_the_tables_show_every_declared_column_once() -> None:
    text = group_tables(_groups())
    headers = [line for line in text.splitlines() if line.startswith("group ")]
    assert len(headers) == len({d.table for _, d in declared(GroupStats) if d.columns})
    for _, d in declared(GroupStats):
        for column in d.columns:
            assert any(column.header in h for h in headers), column.header


def test_the_tables_equal_the_hand_written_layout() -> None:
    # The f-strings of the layout (values that fit their width): the p columns are 10
    # wide, so that "2.47e-300" never fills a column.
    groups = _groups()
    old = (
        f"\n{'group':<24}{'tokens':>9}{'requests':>9}{'mean z':>10}{'sd z':>8}"
        f"{'Stouffer Z':>12}{'p':>10}{'KS D':>9}{'KS p':>10}{'cal B':>9}\n"
    )
    for g in groups:
        old += (
            f"{g.label[:23]:<24}{g.tokens:>9}{g.requests:>9}{g.z.mean_z:>+10.4f}"
            f"{g.z.std_z:>8.3f}{g.z.stouffer_z:>+12.3f}{format_p(g.z.p_value):>10}"
            f"{g.ks.statistic:>9.4f}{format_p(g.ks.p_value):>10}{'-':>9}\n"
        )
    old += (
        f"\n{'group':<24}{'mean z 95% CI':>22}{'netvar p':>10}{'lag-1 r':>9}{'p':>10}"
        f"{'runs p':>10}{'walk p':>10}{'BF10':>10}\n"
    )
    for g in groups:
        ci = f"[{g.effect.ci_low:+.4f}, {g.effect.ci_high:+.4f}]"
        bf = "n/a" if g.bayes is None else f"{g.bayes.bf10:.3g}"
        old += (
            f"{g.label[:23]:<24}{ci:>22}{format_p(g.network_variance.p_value):>10}"
            f"{g.autocorrelation.r1:>+9.4f}{format_p(g.autocorrelation.p_value):>10}"
            f"{format_p(g.runs.p_value):>10}{format_p(g.walk.p_value):>10}{bf:>10}\n"
        )
    assert group_tables(groups) == old


def test_extreme_p_values_never_run_together() -> None:
    # Every p column at its widest ("2.47e-300") or narrowest ("1"): each cell keeps
    # its own columns, with a space before it, right-aligned under its heading.
    g = group_stats("tag=exp", simulate_records(200, seed=9))
    for tiny in (2.47e-300, 1.0):
        extreme = dataclasses.replace(
            g,
            z=dataclasses.replace(g.z, p_value=tiny),
            ks=dataclasses.replace(g.ks, p_value=1.0 - tiny if tiny < 1 else 2.47e-300),
            runs=dataclasses.replace(g.runs, p_value=tiny),
            walk=WalkResult(g.walk.n, 40.0, 2.47e-300 if tiny == 1.0 else tiny),
            autocorrelation=dataclasses.replace(g.autocorrelation, p_value=tiny),
            network_variance=dataclasses.replace(g.network_variance, p_value=tiny),
        )
        lines = group_tables([extreme]).splitlines()
        rows = {1: lines[2], 2: lines[5]}
        start = {1: 24, 2: 24}
        for name, d in declared(GroupStats):
            for column in d.columns:
                row = rows[d.table]
                cell = row[start[d.table] : start[d.table] + column.width]
                text = column.cell(getattr(extreme, name))
                assert cell == " " + text.rjust(column.width - 1), (column.header, row)
                start[d.table] += column.width
        assert all(len(row) == start[t] for t, row in rows.items())


def test_a_value_wider_than_its_column_never_runs_into_the_one_before() -> None:
    g = group_stats("tag=exp", simulate_records(200, seed=9))
    g = dataclasses.replace(g, bayes=dataclasses.replace(g.bayes, bf10=1.23456e300))
    g = dataclasses.replace(g, walk=WalkResult(g.walk.n, 5.0, 1.67e-307))
    row = group_tables([g]).splitlines()[-1]
    assert row.endswith(" 1.67e-307 1.23e+300")


def test_an_empty_group_shows_na_not_nan() -> None:
    g = group_stats("empty", [])
    assert g.bayes is None
    assert math.isnan(g.z.p_value)
    row = group_tables([g]).splitlines()[-1]
    assert row.rstrip().endswith("n/a")
