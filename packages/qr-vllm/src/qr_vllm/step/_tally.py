"""What a step tells an observer: per arm, its fetch, its rows and the sum of their z.

A host that counts (the processor's Prometheus metrics) passes
``observe=`` to :class:`~qr_vllm.step.StepSampler` and receives, once per step
and after the tokens are forced, one :class:`ArmTally` per arm the step used.
The sums are whole-array numpy operations, one per arm; nothing loops over rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from qr_entropy import EntropyFetch
from qr_vllm.step._outputs import Drawn

__all__ = ["ArmTally", "ObserveStep", "tally"]


@dataclass(frozen=True, slots=True)
class ArmTally:
    """One arm's part of one step."""

    arm: str | None
    """The experiment arm (``None``: the default source)."""
    fetch: EntropyFetch
    """Its fetch: source, fallback and reason, timestamps, bytes, device rate."""
    tokens: int
    """Its rows: the tokens it sampled this step."""
    z_sum: float
    """The sum of its rows' z-scores (each standardised against the arm's calibration)."""


ObserveStep = Callable[[Sequence[ArmTally]], None]
"""Receives one step's tallies, one per arm in use."""


def tally(drawn: Drawn) -> tuple[ArmTally, ...]:
    """The step's tallies: one per arm, from its shares of the step's rows."""
    z = drawn.z_score
    out: list[ArmTally] = []
    for share in drawn.shares:
        rows = share.rows
        if rows is None:
            out.append(ArmTally(share.arm, share.fetch, int(z.shape[0]), float(z.sum())))
        else:
            out.append(ArmTally(share.arm, share.fetch, int(rows.shape[0]), float(z[rows].sum())))
    return tuple(out)
