"""Analysis on simulated records with known answers; figures; pre-registration checks.

Statistical tests use fixed seeds, so each outcome is deterministic; the stated alpha
says how unusual a failure would be if the seed were drawn at random.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import scipy.stats  # type: ignore[import-untyped]
from PIL import Image

from qr_core.analysis import (
    ConfigHashError,
    MissingExtraError,
    analyze,
    check_config_hashes,
    compare,
    simulate_records,
    write_figures,
)
from qr_core.analysis._figures import cumulative_deviation_figure, u_histogram_figure
from qr_core.analysis._stats import welch
from qr_core.records import RecordError, TokenSamplingRecord, config_hash

N = 100_000
SEED_NULL = 20_261_126
SEED_SHIFT = 6
ALPHA = 0.001
SHIFT = 0.05


@pytest.fixture(scope="module")
def null_records() -> list[TokenSamplingRecord]:
    return simulate_records(N, seed=SEED_NULL)


@pytest.fixture(scope="module")
def shifted_records() -> list[TokenSamplingRecord]:
    return simulate_records(N, seed=SEED_SHIFT, z_shift=SHIFT)


# ----------------------------------------------------------------- known results


@pytest.mark.slow
def test_null_records_look_null(null_records: list[TokenSamplingRecord]) -> None:
    # n = 100,000 tokens under the null hypothesis, seed 20261126, alpha = 0.001.
    report = analyze(null_records)
    assert report.overall.ks.p_value > ALPHA
    assert report.overall.z.p_value > ALPHA
    assert abs(report.overall.z.stouffer_z) < 3.29
    assert abs(report.overall.z.std_z - 1.0) < 0.01
    assert report.overall.ks.method == "vrbik"
    g = report.overall
    for p in (g.network_variance.p_value, g.autocorrelation.p_value, g.runs.p_value):
        assert p > ALPHA
    assert g.walk.p_value > ALPHA
    assert g.effect.ci_low < 0.0 < g.effect.ci_high or g.z.p_value < 0.05


@pytest.mark.slow
def test_planted_shift_is_detected(shifted_records: list[TokenSamplingRecord]) -> None:
    # n = 100,000 tokens with z ~ N(0.05, 1), seed 6, alpha = 0.001. Expected Z = 15.8.
    report = analyze(shifted_records)
    z = report.overall.z
    assert z.p_value < ALPHA
    assert 0.05 - 4 / math.sqrt(N) < z.mean_z < 0.05 + 4 / math.sqrt(N)
    assert z.stouffer_z == pytest.approx(z.mean_z * math.sqrt(N))
    assert report.overall.ks.p_value < ALPHA  # u = Phi(z) is no longer uniform


@pytest.mark.slow
def test_experiment_against_control(
    null_records: list[TokenSamplingRecord], shifted_records: list[TokenSamplingRecord]
) -> None:
    # 50,000 tokens with z ~ N(0.05, 1) (seed 6) against 50,000 null tokens
    # (seed 20261126); alpha = 0.001. Expected statistic 7.9.
    half = N // 2
    exp, ctl = shifted_records[:half], null_records[:half]
    c = compare("exp", exp, "ctl", ctl)
    assert (c.label_a, c.label_b, c.tokens_a, c.tokens_b) == ("exp", "ctl", half, half)
    assert c.test.p_value < ALPHA
    assert c.test.method == "welch-t"
    assert abs(c.test.difference - SHIFT) < 4 * c.test.standard_error
    reference = scipy.stats.ttest_ind(
        [r.z_score for r in exp], [r.z_score for r in ctl], equal_var=False
    )
    assert c.test.statistic == pytest.approx(reference.statistic, rel=1e-9)
    assert c.test.p_value == pytest.approx(reference.pvalue, rel=1e-6)


def test_tags_become_groups() -> None:
    exp = simulate_records(300, seed=33, z_shift=1.0, request_tag="exp")
    ctl = simulate_records(200, seed=34, request_tag="ctl")
    report = analyze(exp + ctl + simulate_records(10, seed=35), a="exp", b="ctl")
    assert report.group_by == "tag"
    assert [(g.label, g.tokens) for g in report.groups] == [
        ("tag=ctl", 200),
        ("tag=exp", 300),
        ("untagged", 10),
    ]
    c = report.comparison
    assert c is not None
    assert (c.label_a, c.label_b, c.tokens_a, c.tokens_b) == ("tag=exp", "tag=ctl", 300, 200)
    assert c.test == compare("x", exp, "y", ctl).test


def test_arms_become_groups() -> None:
    qrng = simulate_records(300, seed=36, z_shift=1.0, arm="qrng")
    control = simulate_records(200, seed=37, arm="control")
    report = analyze(qrng + control, by="arm", a="qrng", b="control")
    assert [(g.label, g.tokens) for g in report.groups] == [
        ("arm=control", 200),
        ("arm=qrng", 300),
    ]
    c = report.comparison
    assert c is not None
    assert (c.label_a, c.label_b) == ("arm=qrng", "arm=control")
    assert c.test == compare("x", qrng, "y", control).test
    # A planted shift of 1.0: the data favour a shift, though a prior of sd 0.02
    # (the default) holds shifts that large implausible, which caps the factor.
    assert 1 < c.bayes.bf10 < 1e3
    wide = analyze(qrng + control, by="arm", a="qrng", b="control", prior_sd=1.0).comparison
    assert wide is not None
    assert wide.bayes.log10_bf10 > 10
    with pytest.raises(RecordError, match="group_by must be one of \\['tag', 'arm'\\]"):
        analyze(qrng, by="source")  # type: ignore[arg-type]


def test_two_null_groups_do_not_differ() -> None:
    # 2 x 5,000 null tokens, seeds 31 and 32, alpha = 0.001.
    a, b = simulate_records(5_000, seed=31), simulate_records(5_000, seed=32)
    result = compare("a", a, "b", b)
    assert result.test.p_value > ALPHA


# ------------------------------------------------------------- one implementation


def test_without_scipy_statistics_stop_and_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # No silent fallback: a different p-value code path would change pre-registered results.
    monkeypatch.setitem(sys.modules, "scipy.stats", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'qr-core\[analysis\]'"):
        welch([0.1, 0.2, 0.3], [0.0, 0.1, 0.5])
    with pytest.raises(MissingExtraError, match="scipy"):
        analyze(simulate_records(10, seed=43))


def test_optional_extras_are_imported_lazily() -> None:
    code = (
        "import sys, qr_core.records, qr_core.analysis, qr_core.analysis.cli;"
        "print(sorted(m for m in ('scipy', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------ report


def test_report_counts_sources_requests_and_fallback() -> None:
    records = simulate_records(300, seed=40, tokens_per_request=100)
    records[:30] = [
        dataclasses.replace(r, fallback=True, fallback_reason="timeout", entropy_source="system")
        for r in records[:30]
    ]
    report = analyze(records)
    assert report.tokens == 300
    assert report.requests == 3
    assert report.sources == {"simulated": 270, "system": 30}
    assert report.fallback_tokens == 30
    assert report.fallback_share == pytest.approx(0.1)
    assert [g.label for g in report.groups] == ["untagged"]
    data = json.loads(json.dumps(report.to_json_dict(), allow_nan=False))
    assert data["overall"]["z"]["n"] == 300
    assert data["fallback_share"] == pytest.approx(0.1)
    assert data["comparison"] is None


def test_report_json_has_no_nan_for_tiny_groups() -> None:
    records = simulate_records(5, seed=41)
    records[0] = dataclasses.replace(records[0], request_tag="solo")
    data = analyze(records).to_json_dict()
    solo = next(g for g in data["groups"] if g["label"] == "tag=solo")  # type: ignore[attr-defined]
    assert solo["z"]["std_z"] is None
    json.dumps(data, allow_nan=False)


def test_analyze_refuses_empty_input_and_lonely_tag() -> None:
    with pytest.raises(RecordError, match="no records"):
        analyze([])
    records = simulate_records(10, seed=42, request_tag="exp")
    with pytest.raises(RecordError, match="together"):
        analyze(records, a="exp")
    with pytest.raises(RecordError, match="group 'tag=ctl' has 0 tokens"):
        analyze(records, a="exp", b="ctl")
    with pytest.raises(RecordError, match=r"prior_sd=0\.0"):
        analyze(records, prior_sd=0.0)


# --------------------------------------------------------------- pre-registration


def test_config_hash_checks() -> None:
    h1, h2 = config_hash({"qr_top_k": 50}), config_hash({"qr_top_k": 40})
    one = simulate_records(4, seed=50, config=h1)
    other = simulate_records(2, seed=51, config=h2)
    assert check_config_hashes(one, expected=h1) == {h1: 4}
    with pytest.raises(ConfigHashError, match=f"expected config hash {h1}.*{h2} \\(2 tokens\\)"):
        check_config_hashes(other, expected=h1)
    with pytest.raises(ConfigHashError, match="2 configurations"):
        check_config_hashes(one + other)
    assert check_config_hashes(one + other, allow_mixed=True) == {h1: 4, h2: 2}
    with pytest.raises(ConfigHashError, match="expected config hash"):
        check_config_hashes(one + other, expected=h1, allow_mixed=True)


# ------------------------------------------------------------------------ figures


@pytest.mark.slow
def test_figures_are_valid_pngs(tmp_path: Path) -> None:
    groups = {
        "exp": simulate_records(2_000, seed=60, z_shift=0.1),
        "ctl": simulate_records(1_500, seed=61),
    }
    paths = write_figures(groups, tmp_path / "figs")
    assert [p.name for p in paths] == ["cumulative_deviation.png", "u_histogram.png"]
    for p in paths:
        with Image.open(p) as image:
            image.load()
            assert image.format == "PNG"
            assert image.size == (800, 450)
            assert image.mode == "RGBA"
            # Not a blank canvas: lines and bars drew something besides the background.
            assert len(image.getcolors(maxcolors=100_000) or []) > 10


@pytest.mark.slow
def test_legends_do_not_cover_the_data() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {
        "exp": simulate_records(1_000, seed=63, z_shift=0.1),
        "ctl": simulate_records(800, seed=64),
    }
    for draw in (cumulative_deviation_figure, u_histogram_figure):
        fig = draw(plt, groups)
        fig.canvas.draw()
        (ax,) = fig.axes
        (legend,) = fig.legends
        axes_box, legend_box = ax.get_window_extent(), legend.get_window_extent()
        assert not axes_box.overlaps(legend_box)
        assert legend_box.y1 < axes_box.y0  # below the axes, inside the canvas
        assert legend_box.y0 >= 0
        labels = [t.get_text() for t in legend.get_texts()]
        if draw is cumulative_deviation_figure:
            assert "pointwise 95%: ±1.96√n (each n alone)" in labels
            assert "simultaneous 95%, whole walk: ±2.241√N (N=1000)" in labels
        plt.close(fig)


def test_figures_without_matplotlib_name_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'qr-core\[analysis\]'"):
        write_figures({"all": simulate_records(3, seed=62)}, tmp_path)
    assert not (tmp_path / "cumulative_deviation.png").exists()
