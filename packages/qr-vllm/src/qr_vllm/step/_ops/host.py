"""The host path's temperatures and selection (CPU logits).

Every per-row array stays in numpy: qr_core works on a zero-copy view of the
CPU logits (:func:`~qr_vllm.step._ops.arrays.native`), and a value becomes a
tensor only where one is needed, without a copy. Rows of several groups take
one temperature strategy call per group; the selection is one call for all rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from qr_core import BatchSelectionResult, Engine, select_tokens
from qr_vllm.step._groups import Group
from qr_vllm.step._metadata import StepMetadata
from qr_vllm.step._ops.arrays import host, host_array, native, scatter, tensor
from qr_vllm.step._outputs import StepValues

__all__ = ["host_temperatures", "host_values", "select_on_host"]

Values = torch.Tensor | np.ndarray


def host_temperatures(
    sub: torch.Tensor, groups: Sequence[Group], entropy: bool
) -> tuple[Values, Values]:
    """Temperature and Shannon entropy of each row of ``sub``.

    Args:
        sub: ``(B, V)`` logits of the qr rows.
        groups: The rows' groups.
        entropy: Whether the records need the entropy (strategies that use it
            compute it anyway).
    """
    if len(groups) == 1:
        result = groups[0].strategy.compute_batch(native(sub), entropy=entropy)
        return result.temperature, result.shannon_entropy
    n = sub.shape[0]
    device = sub.device
    temperature = torch.empty(n, dtype=torch.float64, device=device)
    shannon = torch.empty(n, dtype=torch.float64, device=device)
    for group in groups:
        pos = torch.as_tensor(group.positions, device=device)
        block = native(sub.index_select(0, pos))
        result = group.strategy.compute_batch(block, entropy=entropy)
        scatter(temperature, pos, torch.as_tensor(result.temperature, device=device))
        scatter(shannon, pos, torch.as_tensor(result.shannon_entropy, device=device))
    return temperature, shannon


def select_on_host(
    sub: torch.Tensor, u: np.ndarray, temperature: Values, meta: StepMetadata, engine: Engine
) -> tuple[torch.Tensor, BatchSelectionResult]:
    """Select each row's token; return the int64 tokens on ``sub``'s device and the result.

    Args:
        sub: ``(B, V)`` logits of the qr rows.
        u: Each row's uniform value.
        temperature: Each row's temperature.
        meta: The step's per-row top-k and top-p.
        engine: qr_core's selection engine (``"host"`` or ``"auto"``).
    """
    device = sub.device
    logits = native(sub)
    if isinstance(logits, np.ndarray):
        sel = select_tokens(
            logits,
            u,
            temperature=host(temperature),
            top_k=meta.top_k,
            top_p=meta.top_p,
            engine=engine,
        )
    else:
        sel = select_tokens(
            logits,
            torch.from_numpy(u).to(device),
            temperature=torch.as_tensor(temperature, device=device),
            top_k=torch.from_numpy(meta.top_k).to(device),
            top_p=torch.from_numpy(meta.top_p).to(device),
            engine=engine,
        )
    return tensor(sel.token_id, device).to(torch.int64), sel


def host_values(temperature: Values, shannon: Values, sel: BatchSelectionResult) -> StepValues:
    """The step's per-row values as numpy arrays (zero-copy views of CPU tensors)."""
    return StepValues(
        temperature=host_array(temperature),
        shannon_entropy=host_array(shannon),
        token_id=host_array(sel.token_id),
        token_rank=host_array(sel.token_rank),
        token_prob=host_array(sel.token_prob),
        num_candidates=host_array(sel.num_candidates),
    )
