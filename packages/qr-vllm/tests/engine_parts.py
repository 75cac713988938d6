"""The processor as vLLM's v1 engine builds and feeds it, for the unit tests."""

from __future__ import annotations

import torch
from vllm import SamplingParams
from vllm.config import VllmConfig
from vllm.v1.sample.logits_processor import BatchUpdate, build_logitsprocs

from qr_vllm import QRSamplingLogitsProcessor


def built_processor(vllm_config: VllmConfig | None = None) -> QRSamplingLogitsProcessor:
    """The one qr processor that vLLM builds from the entry point (CPU, no pinned memory)."""
    procs = build_logitsprocs(vllm_config or VllmConfig(), torch.device("cpu"), False, False)
    ours = [p for p in procs.non_argmax_invariant if isinstance(p, QRSamplingLogitsProcessor)]
    assert len(ours) == 1, "the entry point must yield exactly one qr processor"
    return ours[0]


def add_requests(proc: QRSamplingLogitsProcessor, *params: SamplingParams) -> list[list[int]]:
    """Add one request per ``params`` in rows 0, 1, ... (prompt ``[1, 2, 3]``).

    Returns:
        Each request's output-token list, which the engine (here: the test)
        appends to after each step.
    """
    outs: list[list[int]] = [[] for _ in params]
    proc.update_state(
        BatchUpdate(
            batch_size=len(params),
            removed=[],
            added=[(i, p, [1, 2, 3], outs[i]) for i, p in enumerate(params)],
            moved=[],
        )
    )
    return outs
