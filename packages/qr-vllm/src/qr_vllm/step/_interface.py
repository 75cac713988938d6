"""The step's contract with its host: the rows it samples and what it is given.

A host (the processor; a benchmark; a script of one's own) hands
:meth:`~qr_vllm.step.StepSampler.sample` one :class:`Slot` per qr-sampled row
and gives the sampler its entropy (:data:`Fetch`, :data:`FetchMany`), where the
records go (:data:`EmitRecords`), whether anyone wants them this step
(:data:`WantsRecords`) and, under tensor parallelism, how the chosen tokens
reach the other ranks (:class:`TokenBroadcast`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from qr_core.records import TokenSamplingRecord
from qr_entropy import EntropyFetch
from qr_vllm._request_plan import RequestPlan

__all__ = [
    "FAILED",
    "EmitRecords",
    "Fetch",
    "FetchMany",
    "Slot",
    "TokenBroadcast",
    "WantsRecords",
]


@dataclass
class Slot:
    """One qr-sampled request in the persistent batch: what the step reads of a row.

    Attributes:
        plan: The request's effective settings.
        output_ids: vLLM's live list of the request's output tokens (V1
            runner), or ``None`` where the runner gives none (V2).
        sampled: Tokens this processor has sampled for the request.
        position: Index of the token being sampled, set before each step by
            Model Runner V2 (from its sequence lengths), else ``None``.
        arm: The experiment arm (``qr_entropy_source``) whose source supplies
            the request's entropy, or ``None`` for the default source.
        added_len: Length of ``output_ids`` when the request entered this
            slot (a request resumed after preemption brings its earlier tokens).
    """

    plan: RequestPlan
    output_ids: list[int] | None
    sampled: int = field(default=0)
    position: int | None = field(default=None)
    arm: str | None = field(default=None)
    added_len: int = field(init=False)

    def __post_init__(self) -> None:
        self.added_len = len(self.output_ids) if self.output_ids is not None else 0

    @property
    def decoding(self) -> bool:
        """Whether the request's prefill in this slot is done, so that vLLM keeps
        every row's token: a kept token has grown ``output_ids`` since the slot
        was taken, or the runner passes only token-producing rows (no
        ``output_ids``; see :mod:`qr_vllm._emitted`)."""
        return self.output_ids is None or len(self.output_ids) > self.added_len

    @property
    def token_index(self) -> int:
        """Index of the token being sampled now within the request's output."""
        if self.output_ids is not None:
            return len(self.output_ids)
        if self.position is not None:
            return self.position
        return self.sampled


Fetch = Callable[[int], EntropyFetch]
"""The default entropy source's ``fetch(n)`` (rows without an arm)."""

FetchMany = Callable[[Mapping[str | None, int]], Mapping[str | None, EntropyFetch]]
"""Byte count per arm name (``None``: the default source) to each arm's fetch."""

EmitRecords = Callable[[Sequence[TokenSamplingRecord], Sequence[Slot]], None]
"""Receives one step's records; ``slots[i]`` produced ``records[i]``."""

WantsRecords = Callable[[Sequence[Slot]], bool]
"""Whether any sink would receive the records of a step with these slots."""


FAILED = -1
"""Token id the source broadcasts when it could not select tokens."""


class TokenBroadcast(Protocol):
    """Moves the selected token ids from the source rank to the other ranks."""

    @property
    def is_source(self) -> bool:
        """Whether this rank fetches entropy, selects tokens and writes records."""
        ...

    def send(self, tokens: torch.Tensor) -> None:
        """Source rank: send the selected ids (int64, one per qr-sampled row)."""
        ...

    def receive(self, out: torch.Tensor) -> None:
        """Other ranks: fill ``out`` with the source's ids.

        Raises:
            QRVllmError: The source rank failed to select tokens this step.
        """
        ...
