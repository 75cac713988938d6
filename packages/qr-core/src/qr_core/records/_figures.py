"""PNG figures: cumulative deviation of z with its 95% envelope, histogram of u."""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from qr_core.records._analysis import time_ordered
from qr_core.records._errors import MissingExtraError
from qr_core.records._schema import TokenSamplingRecord

__all__ = ["CUMDEV_PNG", "U_HIST_PNG", "write_figures"]

CUMDEV_PNG = "cumulative_deviation.png"
"""File name of the cumulative-deviation figure."""
U_HIST_PNG = "u_histogram.png"
"""File name of the histogram of u."""

_SIZE_IN = (8.0, 4.5)
_DPI = 100
_U_BINS = 20


def _pyplot() -> ModuleType:
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError as exc:
        raise MissingExtraError(
            "figures need matplotlib; install the extra: pip install 'qr-core[analysis]'"
        ) from exc
    matplotlib.use("Agg")  # files only; never needs a display
    return importlib.import_module("matplotlib.pyplot")


def write_figures(
    groups: Mapping[str, Sequence[TokenSamplingRecord]],
    directory: str | os.PathLike[str],
) -> tuple[Path, Path]:
    """Write the two figures as PNG files of 800 x 450 pixels.

    The cumulative deviation plots ``cumsum(z)`` over tokens in time order
    (``logits_ready_ns``) for each group, with the envelope ``±1.96 sqrt(n)`` that a
    null-hypothesis walk leaves with probability 5% at any single n. The histogram
    shows u in 20 bins against the uniform expectation.

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

    fig, ax = plt.subplots(figsize=_SIZE_IN, dpi=_DPI)
    longest = 1
    for label, records in groups.items():
        z = np.array([r.z_score for r in time_ordered(records)], dtype=np.float64)
        longest = max(longest, z.size)
        ax.plot(
            np.arange(1, z.size + 1), np.cumsum(z), linewidth=1.0, label=f"{label} (n={z.size})"
        )
    n = np.arange(1, longest + 1)
    envelope = 1.96 * np.sqrt(n)
    ax.plot(n, envelope, color="grey", linestyle="--", linewidth=0.8, label="95% envelope")
    ax.plot(n, -envelope, color="grey", linestyle="--", linewidth=0.8)
    ax.axhline(0.0, color="black", linewidth=0.5)
    ax.set_xlabel("token")
    ax.set_ylabel("cumulative deviation  Σz")
    ax.set_title("Cumulative deviation of z")
    ax.legend(loc="upper left", fontsize="small")
    _save(plt, fig, cumdev)

    fig, ax = plt.subplots(figsize=_SIZE_IN, dpi=_DPI)
    edges = np.linspace(0.0, 1.0, _U_BINS + 1)
    for label, records in groups.items():
        u = np.array([r.u for r in records], dtype=np.float64)
        ax.hist(u, bins=edges, histtype="step", linewidth=1.2, label=f"{label} (n={u.size})")
        ax.axhline(u.size / _U_BINS, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("u")
    ax.set_ylabel("tokens per bin")
    ax.set_title("Histogram of u (dashed: uniform expectation)")
    ax.legend(loc="lower right", fontsize="small")
    _save(plt, fig, hist)
    return cumdev, hist


def _save(plt: Any, fig: Any, path: Path) -> None:
    # A fixed canvas (no bbox="tight") keeps the pixel size predictable.
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=_DPI)
    plt.close(fig)
