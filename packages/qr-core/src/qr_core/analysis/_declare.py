"""One declaration per statistic: how it is computed, its JSON field and its text columns.

A statistic of a group of tokens is one field of :class:`~qr_core.analysis.GroupStats`,
declared with :func:`statistic`::

    z: StoufferResult = statistic(
        lambda s: stouffer(s.z),
        Column("mean z", 10, lambda r: f"{r.mean_z:+.4f}"),
        table=1,
    )

The field's name is the statistic's name and its key in ``qr-analyze --json``; the
function computes it from the group's :class:`Sample`; each :class:`Column` is one
column of ``qr-analyze``'s text tables. :func:`~qr_core.analysis.group_stats`, the
JSON report and the text tables all walk these declarations, so adding a statistic
is adding one field (and its line in ``docs/records.md``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Final, Generic, TypeVar, cast

import numpy as np
import numpy.typing as npt

from qr_core.analysis._calibrated import CalibrationInput
from qr_core.records._schema import TokenSamplingRecord

__all__ = ["Column", "Declaration", "Sample", "declared", "format_p", "statistic"]

R = TypeVar("R")

_KEY: Final = "qr_core.analysis.statistic"


@dataclass(frozen=True, slots=True)
class Sample:
    """One group's tokens, as every statistic's function receives them."""

    records: Sequence[TokenSamplingRecord]
    """The tokens in time order (``logits_ready_ns``; ties keep file order)."""
    z: npt.NDArray[np.float64]
    """Their z-scores, in that order."""
    u: npt.NDArray[np.float64]
    """Their uniform values, in that order."""
    prior_mean: float
    """Mean of the Bayes-factor prior on the shift of mean z."""
    prior_sd: float
    """Standard deviation of that prior."""
    label: str = ""
    """The group's label (seeds its Monte Carlo tests)."""
    calibration: CalibrationInput = None
    """The tokens' calibration errors: one for all, or one per token in that order
    (``None``: exact)."""
    ks_replicates: int = 1_000
    """R of the calibrated KS test."""


@dataclass(frozen=True, slots=True)
class Column(Generic[R]):
    """One column of a ``qr-analyze`` text table, showing a statistic's result ``R``."""

    header: str
    """The column's heading."""
    width: int
    """Characters the column takes, its leading separator (one space) included; a
    longer text widens the row but never runs into the column before it."""
    cell: Callable[[R], str]
    """The text shown for a result, right-aligned."""


@dataclass(frozen=True, slots=True)
class Declaration:
    """What :func:`statistic` records about one field of ``GroupStats``."""

    compute: Callable[[Sample], object]
    """Computes the statistic from the group."""
    columns: tuple[Column[Any], ...]
    """Its columns in the text tables (none: JSON only)."""
    table: int
    """The text table its columns belong to (tables are printed in ascending order)."""


def statistic(compute: Callable[[Sample], R], *columns: Column[R], table: int = 1) -> R:
    """Declare a field of ``GroupStats`` as a statistic (use it as the field's default).

    Args:
        compute: Computes the statistic from the group's :class:`Sample`.
        *columns: Its columns in ``qr-analyze``'s text tables, in order.
        table: Which text table shows them.

    Returns:
        A dataclass field without a default, typed as the result so that a type
        checker holds ``compute`` and every column's ``cell`` to the field's type.
    """
    return cast(R, field(metadata={_KEY: Declaration(compute, columns, table)}))


def declared(cls: type) -> list[tuple[str, Declaration]]:
    """The statistics of the dataclass ``cls`` as (field name, declaration), in field order."""
    return [(f.name, f.metadata[_KEY]) for f in fields(cls) if _KEY in f.metadata]


def format_p(p: float) -> str:
    """A p-value with 3 significant digits; ``n/a`` for NaN (too few tokens)."""
    return "n/a" if math.isnan(p) else f"{p:.3g}"
