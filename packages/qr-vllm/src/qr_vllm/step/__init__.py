"""The sampling step: what :meth:`QRSamplingLogitsProcessor.apply` runs on each logits tensor.

Modelled on vLLM's ``vllm/v1/sample/``: the contract with the host that drives
the step (:class:`Slot` per row, the entropy and record callables,
:class:`TokenBroadcast`), one :class:`StepMetadata` built per step, the
sampler (:class:`StepSampler`) that runs the operations in order, and the
operations themselves apart from it (fetch, amplification, temperatures,
selection, the device path's copies, forcing). :class:`StepSampler` runs
without vLLM, so benchmarks and other hosts can drive it directly::

    sampler = StepSampler(source.fetch, emit)
    sampler.sample(logits, rows, slots)  # forces one token per row, in place
"""

from qr_vllm.step._interface import (
    FAILED,
    EmitRecords,
    Fetch,
    FetchMany,
    Slot,
    TokenBroadcast,
    WantsRecords,
)
from qr_vllm.step._metadata import StepMetadata
from qr_vllm.step._sampler import StepSampler
from qr_vllm.step._tally import ArmTally, ObserveStep
from qr_vllm.step._timings import StepTimings

__all__ = [
    "FAILED",
    "ArmTally",
    "EmitRecords",
    "Fetch",
    "FetchMany",
    "ObserveStep",
    "Slot",
    "StepMetadata",
    "StepSampler",
    "StepTimings",
    "TokenBroadcast",
    "WantsRecords",
]
