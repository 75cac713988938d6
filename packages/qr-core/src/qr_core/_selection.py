"""Token selection: the public entry points, validation and result types.

Semantics (one order throughout: probability descending, then token id
ascending; probability is the weight of step 2 as computed):

1. ``temperature <= 0``: greedy, the lowest id among the maximal logits; rank 0,
   probability 1.0, one candidate.
2. Weights ``w = exp((logit - max) / T)``, computed in float32 (as vLLM's own
   sampler does) for float32, float16 and bfloat16 logits and in float64 for
   float64 logits: the logits and their row max are cast to that dtype, the
   difference is divided by ``T`` in that dtype, and the namespace's ``exp`` is
   applied. Both engines compute these same weights; tokens with equal weights
   (equal logits, or distinct logits that round to one float32 weight) are
   ordered by id.
3. Top-k keeps the first k tokens in the order (``k <= 0`` or ``k >= V`` keeps all).
4. Top-p keeps the shortest prefix whose cumulative weight ``C_j`` satisfies
   ``C_j >= p * C_kept`` (``p == 1`` keeps all kept tokens).
5. The token is the first candidate with ``C_j > u * C_n``, where ``C_n`` is the
   cumulative weight of the last candidate: the CDF accumulated in float64 and
   normalised by its own last value. For u ~ U(0, 1) each candidate is chosen with
   exactly its renormalised probability ``w_j / C_n``; u near 0 picks rank 0.

``num_candidates`` counts the kept tokens (including any of weight 0, such as
``-inf`` logits, that a top-k without top-p keeps); ``token_rank`` is the 0-based
position of the token in the order; ``token_prob`` is ``w_j / C_n``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from qr_core._arrays import check_logits, device_of, row_max, to_row_param
from qr_core._errors import QRCoreError
from qr_core._select_generic import select_sorted
from qr_core._select_numpy import select_buckets

__all__ = ["BatchSelectionResult", "SelectionResult", "select_token", "select_tokens"]

Array = Any


@dataclass(frozen=True)
class SelectionResult:
    """The token chosen for one row."""

    token_id: int
    """Vocabulary index of the chosen token."""
    token_rank: int
    """0-based position of the token in the order (probability desc, id asc)."""
    token_prob: float
    """Renormalised probability of the token among the candidates."""
    num_candidates: int
    """Tokens kept after top-k and top-p (1 for greedy)."""


@dataclass(frozen=True)
class BatchSelectionResult:
    """Tokens chosen for a batch: ``(B,)`` arrays in the logits' namespace and device."""

    token_id: Array
    """int64."""
    token_rank: Array
    """int64."""
    token_prob: Array
    """float64."""
    num_candidates: Array
    """int64."""


def _check_params(xp: Any, u: Array, t: Array, p: Array) -> None:
    if bool(xp.any(~((u > 0) & (u < 1)))):
        raise QRCoreError(
            f"u must lie in the open interval (0, 1), got {_first_bad(xp, u, (u > 0) & (u < 1))}"
        )
    if bool(xp.any(~xp.isfinite(t))):
        raise QRCoreError(f"temperature must be finite, got {_first_bad(xp, t, xp.isfinite(t))}")
    if bool(xp.any(~((p > 0) & (p <= 1)))):
        raise QRCoreError(f"top_p must lie in (0, 1], got {_first_bad(xp, p, (p > 0) & (p <= 1))}")


def _first_bad(xp: Any, values: Array, ok: Array) -> str:
    row = int(xp.argmax(xp.astype(~ok, xp.int32)))
    return f"{float(values[row])!r} (row {row})"


def select_tokens(
    logits: Array,
    u: object,
    *,
    temperature: object,
    top_k: object,
    top_p: object,
) -> BatchSelectionResult:
    """Select one token per row of a ``(B, V)`` batch in whole-array operations.

    Host-memory input (numpy, CPU torch through a zero-copy view) uses a bucket
    engine that sorts only the few tokens near each threshold; device input (torch
    on CUDA) uses a stable sort on its own device. Both give the same tokens (up to
    float64 summation order) when they compute the same float32 weights; numpy's
    and torch's float32 ``exp`` differ by a few ulp, so across libraries tokens
    may differ where u lies within about 1e-6 of a CDF boundary.

    Args:
        logits: ``(B, V)`` real floating numpy array or torch tensor.
        u: Uniform values in (0, 1), scalar or ``(B,)``.
        temperature: Scalar or ``(B,)``; ``<= 0`` means greedy.
        top_k: int or ``(B,)`` integer array; ``<= 0`` disables.
        top_p: Scalar or ``(B,)`` in (0, 1]; 1 disables.

    Returns:
        The chosen tokens as ``(B,)`` arrays in the namespace and on the device of
        ``logits``.

    Raises:
        QRCoreError: Naming the argument: wrong dtype or shape, a logits row with
            NaN, +inf or only -inf, u outside (0, 1), a non-finite temperature, a
            non-integer top_k or top_p outside (0, 1].
    """
    xp, x = check_logits(logits, 2)
    rows = x.shape[0]
    dev = device_of(x)
    u_a = to_row_param(xp, u, "u", rows, dev)
    t_a = to_row_param(xp, temperature, "temperature", rows, dev)
    k_a = to_row_param(xp, top_k, "top_k", rows, dev, integer=True)
    p_a = to_row_param(xp, top_p, "top_p", rows, dev)
    if rows == 0:
        empty_i = xp.zeros((0,), dtype=xp.int64, device=dev)
        return BatchSelectionResult(
            empty_i, empty_i, xp.zeros((0,), dtype=xp.float64, device=dev), empty_i
        )
    _check_params(xp, u_a, t_a, p_a)
    host = _host_view(xp, x)
    if host is None:
        out = select_sorted(xp, x, row_max(xp, x), u_a, t_a, k_a, p_a)
        return BatchSelectionResult(*out)
    # Host memory: one numpy reduction validates the rows (torch's CPU reduction
    # can cost milliseconds in thread wake-ups on a busy machine).
    m = row_max(array_api_compat.array_namespace(host), host)
    if host is x:
        return BatchSelectionResult(*select_buckets(np.ascontiguousarray(x), m, u_a, t_a, k_a, p_a))
    u_h, t_h, k_h, p_h = (np.from_dlpack(a) for a in (u_a, t_a, k_a, p_a))
    out = select_buckets(np.ascontiguousarray(host), m, u_h, t_h, k_h, p_h)
    return BatchSelectionResult(*(xp.asarray(a, device=dev) for a in out))


def _host_view(xp: Any, x: Array) -> Any:
    """A numpy view of host-memory logits (numpy, CPU torch), else None.

    CPU tensors share their memory with the view (DLPack), so the bucket engine
    serves them without a copy; a CPU dtype numpy lacks (bfloat16) is widened to
    float32 first, which is exact. Device tensors take the sort engine on their
    own device.
    """
    if array_api_compat.is_numpy_array(x):
        return x
    if not array_api_compat.is_torch_array(x) or x.device.type != "cpu" or x.requires_grad:
        return None
    try:
        return np.from_dlpack(x)
    except (TypeError, BufferError, RuntimeError):
        pass
    try:
        return np.from_dlpack(xp.astype(x, xp.float32))
    except (TypeError, BufferError, RuntimeError):
        return None


def select_token(
    logits: Array,
    u: float,
    *,
    temperature: float,
    top_k: int,
    top_p: float,
) -> SelectionResult:
    """Select one token from a ``(V,)`` row of logits.

    Same semantics and errors as :func:`select_tokens`.
    """
    _, x = check_logits(logits, 1)
    batch = select_tokens(x[None, :], u, temperature=temperature, top_k=top_k, top_p=top_p)
    return SelectionResult(
        token_id=int(batch.token_id[0]),
        token_rank=int(batch.token_rank[0]),
        token_prob=float(batch.token_prob[0]),
        num_candidates=int(batch.num_candidates[0]),
    )
