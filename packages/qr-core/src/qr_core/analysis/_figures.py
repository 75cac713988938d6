"""PNG figures: cumulative deviation of z with its pointwise and simultaneous 95% bands,
histogram of u."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from qr_core.analysis._calibrated import CalibrationUncertainty, combined, parts_of
from qr_core.analysis._errors import MissingExtraError
from qr_core.analysis._groups import time_ordered, token_calibrations
from qr_core.analysis._walk import walk_band_constant
from qr_core.records._schema import TokenSamplingRecord

__all__ = [
    "CUMDEV_PNG",
    "U_HIST_PNG",
    "cumulative_deviation_figure",
    "u_histogram_figure",
    "write_figures",
]

CUMDEV_PNG = "cumulative_deviation.png"
"""File name of the cumulative-deviation figure."""
U_HIST_PNG = "u_histogram.png"
"""File name of the histogram of u."""

_SIZE_IN = (8.0, 4.5)
_DPI = 100
_U_BINS = 20


def _pyplot() -> ModuleType:
    # Imported when a figure is drawn, not with this module: matplotlib is the
    # optional `analysis` extra (and slow to import).
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError as exc:
        raise MissingExtraError(
            "figures need matplotlib; install the extra: pip install 'qr-core[analysis]'"
        ) from exc
    matplotlib.use("Agg")  # files only; never needs a display
    return importlib.import_module("matplotlib.pyplot")


Calibrations = Mapping[str, CalibrationUncertainty | None]


def write_figures(
    groups: Mapping[str, Sequence[TokenSamplingRecord]],
    directory: str | os.PathLike[str],
    calibrations: Calibrations | None = None,
) -> tuple[Path, Path]:
    """Write the two figures as PNG files of 800 x 450 pixels.

    The cumulative deviation plots ``cumsum(z)`` over tokens in time order
    (``logits_ready_ns``) for each group, with two 95% bands: the pointwise one,
    ``±1.96 sqrt(n)``, which a null walk is outside of with probability 5% at any one
    n chosen in advance; and the simultaneous one, ``±2.2414 sqrt(N)`` for the longest
    walk (N tokens), which a null walk leaves anywhere with probability at most 5%
    (:func:`~qr_core.analysis.walk_band_constant`). A calibrated group gets its own
    bands, in its colour: the calibration's offset is a random drift of the walk, so
    the pointwise band is ``±1.96 sqrt(n + n^2/B)`` and the simultaneous one
    ``±c sqrt(N)`` with c from the drifting walk's law (``calibrations`` as for
    :func:`~qr_core.analysis.analyze`; by default the records' own figures). The
    histogram shows u in
    20 bins against the uniform expectation. Legends sit below the axes, never on
    the data.

    Args:
        groups: Label -> records; one line / histogram per group.
        directory: Created if missing.

    Returns:
        Paths of the cumulative-deviation figure and of the histogram.

    Raises:
        MissingExtraError: matplotlib is not installed.
    """
    plt = _pyplot()
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    cumdev = out / CUMDEV_PNG
    hist = out / U_HIST_PNG
    _save(plt, cumulative_deviation_figure(plt, groups, calibrations), cumdev)
    _save(plt, u_histogram_figure(plt, groups), hist)
    return cumdev, hist


def cumulative_deviation_figure(
    plt: Any,
    groups: Mapping[str, Sequence[TokenSamplingRecord]],
    calibrations: Calibrations | None = None,
) -> Any:
    """Draw the cumulative-deviation figure; returns the matplotlib figure."""
    fig, ax = plt.subplots(figsize=_SIZE_IN, dpi=_DPI, layout="constrained")
    longest = 1
    for label, records in groups.items():
        ordered = time_ordered(records)
        z = np.array([r.z_score for r in ordered], dtype=np.float64)
        longest = max(longest, z.size)
        (line,) = ax.plot(
            np.arange(1, z.size + 1), np.cumsum(z), linewidth=1.0, label=f"{label} (n={z.size})"
        )
        cal = combined(parts_of(token_calibrations(ordered, calibrations), z.size), z.size)
        if cal is not None and z.size:
            _calibrated_bands(ax, z.size, cal, line.get_color())
    n = np.arange(1, longest + 1)
    pointwise = 1.96 * np.sqrt(n)
    grey = {"color": "grey", "linewidth": 0.8}
    ax.plot(n, pointwise, linestyle="--", label="pointwise 95%: ±1.96√n (each n alone)", **grey)
    ax.plot(n, -pointwise, linestyle="--", **grey)
    c = walk_band_constant(0.95)
    whole = c * np.sqrt(longest)
    ax.hlines(
        [whole, -whole],
        1,
        longest,
        colors="black",
        linestyles=":",
        linewidth=1.0,
        label=f"simultaneous 95%, whole walk: ±{c:.3f}√N (N={longest})",
    )
    ax.axhline(0.0, color="black", linewidth=0.5)
    ax.set_xlabel("token (time order)")
    ax.set_ylabel("cumulative deviation  Σz")
    ax.set_title("Cumulative deviation of z")
    fig.legend(loc="outside lower center", ncols=2, fontsize="small")
    return fig


def _calibrated_bands(ax: Any, size: int, cal: CalibrationUncertainty, colour: str) -> None:
    """A calibrated group's pointwise and simultaneous 95% bands, in its colour."""
    n = np.arange(1, size + 1)
    pointwise = 1.96 * np.sqrt(n + n * n * cal.mean_se_z**2)
    style = {"color": colour, "linewidth": 0.8, "alpha": 0.7}
    ax.plot(n, pointwise, linestyle="--", label=f"pointwise 95%, B={cal.blocks}", **style)
    ax.plot(n, -pointwise, linestyle="--", **style)
    c = walk_band_constant(0.95, n=size, calibration=cal)
    ax.hlines(
        [c * np.sqrt(size), -c * np.sqrt(size)],
        1,
        size,
        colors=colour,
        linestyles=":",
        linewidth=1.0,
        label=f"simultaneous 95%, B={cal.blocks}: ±{c:.3f}√N",
    )


def u_histogram_figure(plt: Any, groups: Mapping[str, Sequence[TokenSamplingRecord]]) -> Any:
    """Draw the histogram of u; returns the matplotlib figure."""
    fig, ax = plt.subplots(figsize=_SIZE_IN, dpi=_DPI, layout="constrained")
    edges = np.linspace(0.0, 1.0, _U_BINS + 1)
    for label, records in groups.items():
        u = np.array([r.u for r in records], dtype=np.float64)
        ax.hist(u, bins=edges, histtype="step", linewidth=1.2, label=f"{label} (n={u.size})")
        ax.axhline(u.size / _U_BINS, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("u")
    ax.set_ylabel("tokens per bin")
    ax.set_title("Histogram of u (dashed: uniform expectation)")
    fig.legend(loc="outside lower center", ncols=3, fontsize="small")
    return fig


def _save(plt: Any, fig: Any, path: Path) -> None:
    # A fixed canvas (no bbox="tight") keeps the pixel size predictable; the
    # constrained layout makes room for the legend below the axes.
    fig.savefig(path, format="png", dpi=_DPI)
    plt.close(fig)
