"""The device path of a sampling step: one copy up, whole-batch operations, one copy down.

After the fetch and the host-side amplification, u, top-k, top-p, the
power-law parameters and the row indices go to the device in one copy
(:mod:`qr_vllm._step_transfer`); temperatures of any mix of fixed and EDT rows
(:func:`qr_core.power_law_temperatures`) and the selection
(:func:`qr_core.select_tokens` with ``engine="device"``, ``defer_checks=True``)
are the same operations whatever the batch size and the number of groups; the
per-row values and the deferred checks start back to the host. Nothing here
reads device memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from qr_core import power_law_temperatures, select_tokens
from qr_vllm._batch import Slot
from qr_vllm._step_records import Drawn, Selected
from qr_vllm._step_timings import StageClock
from qr_vllm._step_transfer import LAW, ROW, TOP_K, TOP_P, HostBuffers, Readback, U

__all__ = ["Law", "select_on_device"]

Law = tuple[float, float, float, float]
"""A :class:`qr_core.PowerLaw` as (base, exponent, min, max)."""


def select_on_device(
    logits: torch.Tensor,
    rows: Sequence[int],
    slots: Sequence[Slot],
    drawn: Drawn,
    laws: Sequence[tuple[np.ndarray, Law | None]],
    buffers: HostBuffers,
    fallback: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    clock: StageClock,
) -> Selected:
    """Select the tokens of ``rows`` on the logits' device (forcing is the caller's).

    Args:
        logits: ``(num_rows, vocab)`` logits of the step.
        rows: The qr-sampled rows, ascending.
        slots: The slot of each row.
        drawn: The step's entropy and amplification.
        laws: Per group of settings: its positions among ``rows`` and its
            temperature strategy as a power law (``None``: no power law).
        buffers: The reused host buffers of the two copies.
        fallback: Temperatures and entropies of the selected rows, group by
            group, where some strategy is no power law.
        clock: Receives the stage times.
    """
    n = len(slots)
    device = logits.device
    t3 = time.perf_counter()
    packed_host = buffers.pack(n)
    packed_host[U] = drawn.u
    # top-k and top-p are per request, not per group.
    packed_host[TOP_K] = np.fromiter((s.plan.core.top_k for s in slots), np.float64, n)
    packed_host[TOP_P] = np.fromiter((s.plan.core.top_p for s in slots), np.float64, n)
    for positions, law in laws:
        cols = slice(None) if len(laws) == 1 else positions
        # A strategy that is no power law gets neutral parameters, unused.
        packed_host[LAW, cols] = np.asarray(law or (1.0, 0.0, 1.0, 1.0))[:, None]
    whole = n == logits.shape[0]
    if not whole:
        packed_host[ROW] = rows
    # The one host-to-device copy (asynchronous from pinned memory on a GPU;
    # copy=True so that a CPU "device" never aliases the reused host buffer).
    packed = buffers.pack_tensor(n).to(device, non_blocking=True, copy=True)
    u, top_k, top_p, base, exponent, lo, hi, row = packed.unbind(0)
    rows_t = None if whole else row.to(torch.int64)
    sub = logits if rows_t is None else logits.index_select(0, rows_t)
    clock.amplify_s += time.perf_counter() - t3

    t4 = time.perf_counter()
    if all(law is not None for _, law in laws):
        # The entropy always: the same operations whether or not a row
        # uses it (one pass over the logits, cheap on a device).
        temp = power_law_temperatures(sub, base, exponent, lo, hi, defer_checks=True)
        temperature, shannon = temp.temperature, temp.shannon_entropy
    else:
        temperature, shannon = fallback(sub)
    t5 = time.perf_counter()
    clock.temperature_s += t5 - t4
    sel = select_tokens(
        sub,
        u,
        temperature=temperature,
        top_k=top_k.to(torch.int64),
        top_p=top_p,
        engine="device",
        defer_checks=True,
    )
    assert sel.invalid is not None  # the device engine with defer_checks
    per_row = torch.stack(
        [
            temperature,
            shannon,
            sel.token_id.to(torch.float64),
            sel.token_rank.to(torch.float64),
            sel.token_prob,
            sel.num_candidates.to(torch.float64),
            sel.invalid.to(torch.float64),
        ]
    )
    readback = Readback(per_row, buffers, sel)
    clock.select_s += time.perf_counter() - t5
    return Selected(token=sel.token_id, drawn=drawn, host=None, readback=readback, rows_t=rows_t)
