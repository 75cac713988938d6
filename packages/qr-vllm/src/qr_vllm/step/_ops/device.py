"""The device path's operations: one copy up, whole-batch operations, one copy started down.

After the fetch and the host-side amplification, :func:`upload` sends u, top-k,
top-p, the power-law parameters and the row indices to the device in one copy
(:mod:`~qr_vllm.step._ops.transfer`); temperatures of any mix of fixed and EDT
rows (:func:`qr_core.power_law_temperatures`) and the selection
(:func:`qr_core.select_tokens` with ``engine="device"``, ``defer_checks=True``)
are the same operations whatever the batch size and the number of groups; the
per-row values and the deferred checks start back to the host. Nothing here
reads device memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from qr_core import PowerLaw, power_law_temperatures, select_tokens
from qr_vllm.step._groups import Group
from qr_vllm.step._metadata import StepMetadata
from qr_vllm.step._ops.arrays import scatter
from qr_vllm.step._ops.transfer import LAW, ROW, TOP_K, TOP_P, HostBuffers, Readback, U

__all__ = ["Uploaded", "device_temperatures", "group_temperatures", "select_on_device", "upload"]

# The parameters of a strategy that is no power law: unused (its rows take
# group_temperatures), but finite, so that the packed upload stays valid.
_NEUTRAL = PowerLaw(1.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class Uploaded:
    """The step's per-row parameters on the logits' device, and the qr rows' logits."""

    sub: torch.Tensor
    """``(B, V)`` logits of the qr rows."""
    rows_t: torch.Tensor | None
    """The qr rows' indices (None: every row of the logits)."""
    u: torch.Tensor
    """float64 u of each row."""
    top_k: torch.Tensor
    """float64 top-k of each row (exact: far below 2**53)."""
    top_p: torch.Tensor
    """float64 top-p of each row."""
    law: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
    """Each row's power law: base, exponent, min and max temperature."""


def upload(
    logits: torch.Tensor, meta: StepMetadata, u: np.ndarray, buffers: HostBuffers
) -> Uploaded:
    """Pack the per-row parameters on the host and send them in one copy.

    Args:
        logits: ``(num_rows, vocab)`` logits of the step.
        meta: The step's rows, groups and per-row arrays.
        u: Each row's uniform value.
        buffers: The reused host buffers of the two copies.
    """
    n = meta.size
    groups = meta.groups
    packed_host = buffers.pack(n)
    packed_host[U] = u
    # top-k and top-p are per request, not per group.
    packed_host[TOP_K] = meta.top_k
    packed_host[TOP_P] = meta.top_p
    for group in groups:
        cols = slice(None) if len(groups) == 1 else group.positions
        packed_host[LAW, cols] = _law_column(group.law)
    if not meta.whole:
        packed_host[ROW] = meta.rows
    # The one host-to-device copy (asynchronous from pinned memory on a GPU;
    # copy=True so that a CPU "device" never aliases the reused host buffer).
    packed = buffers.pack_tensor(n).to(logits.device, non_blocking=True, copy=True)
    u_t, top_k, top_p, base, exponent, lo, hi, row = packed.unbind(0)
    rows_t = None if meta.whole else row.to(torch.int64)
    sub = logits if rows_t is None else logits.index_select(0, rows_t)
    return Uploaded(sub, rows_t, u_t, top_k, top_p, (base, exponent, lo, hi))


def device_temperatures(up: Uploaded, meta: StepMetadata) -> tuple[torch.Tensor, torch.Tensor]:
    """Temperature and Shannon entropy of each row, checks deferred.

    Power laws (every built-in strategy): one pass for all rows, with the entropy
    always (the same operations whether or not a row uses it; one pass over the
    logits, cheap on a device). Otherwise :func:`group_temperatures`.
    """
    if meta.power_laws:
        temp = power_law_temperatures(up.sub, *up.law, defer_checks=True)
        return temp.temperature, temp.shannon_entropy
    return group_temperatures(up.sub, meta.groups, meta.recorded)


def group_temperatures(
    sub: torch.Tensor, groups: Sequence[Group], entropy: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group temperatures, for a strategy that is no power law (a
    third-party one): a loop over the groups, each checked on the device."""
    n = sub.shape[0]
    temperature = torch.empty(n, dtype=torch.float64, device=sub.device)
    shannon = torch.empty(n, dtype=torch.float64, device=sub.device)
    for group in groups:
        pos = torch.as_tensor(group.positions, device=sub.device)
        block = sub.index_select(0, pos)
        result = group.strategy.compute_batch(block, entropy=entropy, defer_checks=True)
        scatter(temperature, pos, torch.as_tensor(result.temperature, device=sub.device))
        scatter(shannon, pos, torch.as_tensor(result.shannon_entropy, device=sub.device))
    return temperature, shannon


def select_on_device(
    up: Uploaded, temperature: torch.Tensor, shannon: torch.Tensor, buffers: HostBuffers
) -> tuple[torch.Tensor, Readback]:
    """Select each row's token on the device; start the per-row values back.

    Returns:
        The int64 token ids on the device, and the values the records need (with
        the deferred checks' codes) on their way to the host.
    """
    sel = select_tokens(
        up.sub,
        up.u,
        temperature=temperature,
        top_k=up.top_k.to(torch.int64),
        top_p=up.top_p,
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
    return sel.token_id, Readback(per_row, buffers, sel)


def _law_column(law: PowerLaw | None) -> np.ndarray:
    """``law``'s four parameters as a ``(4, 1)`` column of the packed upload."""
    if law is None:
        law = _NEUTRAL
    return np.array([[law.base_temp], [law.exponent], [law.min_temp], [law.max_temp]])
