"""Reference selection for any array-API namespace (torch on CPU or CUDA).

Both engines weigh tokens with :func:`token_weights`; one stable descending sort
of the weights per row puts the vocabulary in the selection order (weight
descending, token id ascending); everything after is prefix arithmetic on whole
``(B, V)`` arrays, so the logits never leave their device. It is also the
reference the numpy engine is tested against.
"""

from __future__ import annotations

from typing import Any

from qr_core._arrays import device_of

__all__ = ["select_sorted", "token_weights", "weight_divisor", "weight_dtype"]

Array = Any


def weight_dtype(xp: Any, dtype: Any) -> Any:
    """The dtype weights are computed in: float64 for float64 logits, else float32.

    float32 is what the model produces and what vLLM's own sampler computes its
    softmax in; float16 and bfloat16 logits are widened to it exactly.
    """
    return xp.float64 if dtype == xp.float64 else xp.float32


def weight_divisor(xp: Any, t: Array, wd: Any) -> Array:
    """Temperatures in the weight dtype, clamped to its positive finite range.

    The clamp only matters for temperatures a float32 cannot hold: one that
    rounds to 0 or to inf would turn ``0 / T`` or ``-inf / T`` into NaN.
    """
    fi = xp.finfo(wd)
    return xp.clip(xp.astype(t, wd, copy=False), float(fi.smallest_normal), float(fi.max))


def token_weights(xp: Any, x: Array, m: Array, t: Array) -> Array:
    """Unnormalised probabilities ``exp((x - max) / T)`` of a ``(B, V)`` batch.

    Computed in :func:`weight_dtype` by the namespace's own ``exp``; the numpy
    engine repeats exactly these operations in place, so both engines see the
    same weights bit for bit when they share a namespace.
    """
    wd = weight_dtype(xp, x.dtype)
    # copy=False: float32 logits are used as they are, not copied (B x V).
    s = xp.astype(x, wd, copy=False) - xp.astype(m, wd, copy=False)[:, None]
    return xp.exp(s / weight_divisor(xp, t, wd)[:, None])


def select_sorted(
    xp: Any, x: Array, m: Array, u: Array, t: Array, k: Array, p: Array
) -> tuple[Array, Array, Array, Array]:
    """Select one token per row; inputs validated, parameters ``(B,)`` on x's device.

    Returns:
        ``(token_id, token_rank, token_prob, num_candidates)``, each ``(B,)``.
    """
    vocab = x.shape[1]
    dev = device_of(x)
    greedy = t <= 0
    t_safe = xp.where(greedy, xp.ones_like(t), t)

    weights = token_weights(xp, x, m, t_safe)
    order = xp.argsort(weights, axis=1, descending=True, stable=True)
    w = xp.astype(xp.take_along_axis(weights, order, axis=1), xp.float64)

    pos = xp.arange(vocab, dtype=xp.int64, device=dev)[None, :]
    k_eff = xp.where((k <= 0) | (k >= vocab), xp.full_like(k, vocab), k)
    w = xp.where(pos < k_eff[:, None], w, xp.zeros_like(w))
    c = xp.cumulative_sum(w, axis=1)
    kept_mass = c[:, -1]

    below_p = xp.sum(c < (p * kept_mass)[:, None], axis=1, dtype=xp.int64)
    n = xp.where(p >= 1, k_eff, xp.minimum(below_p + 1, k_eff))
    c_n = xp.take_along_axis(c, (n - 1)[:, None], axis=1)[:, 0]
    target = u * c_n
    j = xp.sum((c <= target[:, None]) & (pos < n[:, None]), axis=1, dtype=xp.int64)
    j = xp.minimum(j, n - 1)

    token = xp.take_along_axis(order, j[:, None], axis=1)[:, 0]
    prob = xp.take_along_axis(w, j[:, None], axis=1)[:, 0] / c_n

    # Greedy rows: the lowest id among the maximal logits (argmax takes the first).
    # Not order[:, 0]: a logit just below the maximum can round to weight 1 too.
    zero = xp.zeros_like(j)
    first_max = xp.astype(xp.argmax(x, axis=1), xp.int64, copy=False)
    token = xp.where(greedy, first_max, xp.astype(token, xp.int64, copy=False))
    rank = xp.where(greedy, zero, j)
    prob = xp.where(greedy, xp.ones_like(prob), prob)
    n = xp.where(greedy, zero + 1, n)
    return token, rank, prob, n
