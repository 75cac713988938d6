"""Which rows of a logits tensor are qr-sampled this step, and their slots.

The two model runners lay out a step's logits differently:

* the V1 runner: row ``i`` is persistent-batch slot ``i`` (:func:`v1_rows`);
* Model Runner V2: ``ctx.idx_mapping_np`` maps each row to its request's slot,
  and a row whose sequence is still shorter than its prefill produces no token
  (:func:`v2_rows`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from qr_vllm._batch import BatchState
from qr_vllm._errors import UnsupportedEngineError
from qr_vllm.step import Slot

if TYPE_CHECKING:
    from vllm.v1.worker.gpu.sample.logits_processor.interface import (
        LogitsContext,
        LogitsProcRequestState,
    )

__all__ = ["v1_rows", "v2_rows"]


def v1_rows(logits: torch.Tensor, state: BatchState) -> tuple[list[int], list[Slot]]:
    """The V1 runner: the qr rows (row = slot), ascending, with their slots."""
    occupied = state.slots()
    rows = sorted(i for i in occupied if i < logits.shape[0])
    return rows, [occupied[i] for i in rows]


def v2_rows(
    logits: torch.Tensor,
    ctx: LogitsContext,
    req_states: LogitsProcRequestState,
    state: BatchState,
) -> tuple[list[int], list[Slot]]:
    """Model Runner V2: the qr rows that produce a token this step, with their slots.

    A row whose sequence is still shorter than its prefill (a chunk of a
    long prompt) produces no token: vLLM discards its sample, so it gets no
    entropy and no record. Each returned slot's ``position`` is set to the
    index of the token its row samples.

    Raises:
        UnsupportedEngineError: The logits do not have one row per request
            (speculative decoding).
    """
    slot_of_row = ctx.idx_mapping_np
    if len(slot_of_row) != logits.shape[0]:
        raise UnsupportedEngineError(
            f"{logits.shape[0]} logits rows for {len(slot_of_row)} requests: "
            "qr sampling needs one row per request (no speculative decoding)"
        )
    # Exact without speculative decoding, which check_engine refuses.
    seq_len = ctx.seq_lens_upper_bound_np
    prompt_len = req_states.prompt_len.np
    prefill_len = req_states.prefill_len.np
    rows: list[int] = []
    slots: list[Slot] = []
    for row, index in enumerate(slot_of_row.tolist()):
        slot = state.get(index)
        if slot is None or seq_len[row] < prefill_len[index]:
            continue
        slot.position = int(seq_len[row] - prompt_len[index])
        rows.append(row)
        slots.append(slot)
    return rows, slots
