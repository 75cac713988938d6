"""What one step knows before it computes anything: :class:`StepMetadata`.

Built once per step from the rows and their slots, like vLLM's
``SamplingMetadata``: the per-row arrays every stage reads (top-k, top-p and the
rows' byte offsets in the step's entropy), the groups of rows that share an
amplifier and a temperature strategy, and the step's two decisions -- whether
anyone receives its records and which path (host or device) it takes. No stage
reads a per-row value from the slots again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qr_vllm.step._groups import Group, RowGrouper
from qr_vllm.step._interface import Slot

__all__ = ["StepMetadata"]


@dataclass(frozen=True)
class StepMetadata:
    """The rows of one step and their per-row arrays, row ``i`` for ``slots[i]``."""

    rows: Sequence[int]
    """The qr-sampled rows of the logits, ascending."""
    slots: Sequence[Slot]
    """The slot of each row."""
    whole: bool
    """Whether every row of the logits is qr-sampled (no row index is needed)."""
    groups: Sequence[Group]
    """The rows by shared amplifier, strategy and calibration (one group, usually)."""
    top_k: np.ndarray
    """``(B,)`` int64 top-k of each row (``<= 0``: off)."""
    top_p: np.ndarray
    """``(B,)`` float64 top-p of each row (``1.0``: off)."""
    offsets: np.ndarray
    """``(B + 1,)`` int64: row ``i`` owns bytes ``[offsets[i], offsets[i + 1])`` of the fetch."""
    recorded: bool
    """Whether the step builds records (a sink receives them): only they need each
    row's byte mean, and the entropy of a strategy that does not use it."""
    on_device: bool
    """Whether the step takes the device path (else the host path)."""

    @property
    def size(self) -> int:
        """The number of qr-sampled rows, B."""
        return len(self.slots)

    @property
    def power_laws(self) -> bool:
        """Whether every group's temperature strategy is a power law."""
        return all(group.law is not None for group in self.groups)

    @classmethod
    def build(
        cls,
        num_rows: int,
        rows: Sequence[int],
        slots: Sequence[Slot],
        grouper: RowGrouper,
        *,
        recorded: bool,
        on_device: bool,
    ) -> StepMetadata:
        """Read the step's rows once.

        Args:
            num_rows: Rows of the step's logits.
            rows: The qr-sampled rows, ascending.
            slots: The slot of each row.
            grouper: Groups the rows and holds each group's components.
            recorded: Whether the step builds records.
            on_device: Whether the step takes the device path.
        """
        n = len(slots)
        cores = [s.plan.core for s in slots]
        top_k = np.fromiter((c.top_k for c in cores), dtype=np.int64, count=n)
        top_p = np.fromiter((c.top_p for c in cores), dtype=np.float64, count=n)
        counts = np.fromiter((c.sample_count for c in cores), dtype=np.int64, count=n)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return cls(
            rows=rows,
            slots=slots,
            whole=len(rows) == num_rows,
            groups=grouper.groups(slots),
            top_k=top_k,
            top_p=top_p,
            offsets=offsets,
            recorded=recorded,
            on_device=on_device,
        )
