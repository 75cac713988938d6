"""Where the time of the sampling steps goes: one named total per stage.

:class:`StageClock` is what :class:`~qr_vllm.step.StepSampler` adds to while
it runs; :class:`StepTimings` is the frozen copy that callers read.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StageClock", "StepTimings"]


@dataclass(frozen=True)
class StepTimings:
    """Cumulative time spent in each stage of :meth:`StepSampler.sample`."""

    steps: int
    """Steps that had at least one qr-sampled row."""
    rows: int
    """qr-sampled rows over all steps."""
    temperature_s: float
    """Temperature strategies."""
    fetch_s: float
    """The entropy fetch (generating and transporting the bytes), with the wait
    for the logits just before it on a GPU."""
    amplify_s: float
    """Signal amplification (and, on the device path, packing the per-row
    parameters for their one copy to the device)."""
    select_s: float
    """Token selection."""
    force_s: float
    """Writing 0.0 / ``-inf`` into the logits."""
    record_s: float
    """Reading the per-row values back, building and writing records."""
    total_s: float
    """Whole steps, including the above."""

    @property
    def adapter_s(self) -> float:
        """The adapter's own work: everything except the entropy fetch."""
        return self.total_s - self.fetch_s


@dataclass
class StageClock:
    """Running totals, in seconds, of the stages of the steps so far."""

    steps: int = 0
    """Steps that had at least one qr-sampled row."""
    rows: int = 0
    """qr-sampled rows over all steps."""
    temperature_s: float = 0.0
    """See :attr:`StepTimings.temperature_s`."""
    fetch_s: float = 0.0
    """See :attr:`StepTimings.fetch_s`."""
    amplify_s: float = 0.0
    """See :attr:`StepTimings.amplify_s`."""
    select_s: float = 0.0
    """See :attr:`StepTimings.select_s`."""
    force_s: float = 0.0
    """See :attr:`StepTimings.force_s`."""
    record_s: float = 0.0
    """See :attr:`StepTimings.record_s`."""
    total_s: float = 0.0
    """See :attr:`StepTimings.total_s`."""

    def snapshot(self) -> StepTimings:
        """The totals so far, frozen."""
        return StepTimings(
            steps=self.steps,
            rows=self.rows,
            temperature_s=self.temperature_s,
            fetch_s=self.fetch_s,
            amplify_s=self.amplify_s,
            select_s=self.select_s,
            force_s=self.force_s,
            record_s=self.record_s,
            total_s=self.total_s,
        )
