"""Reference selection for any array-API namespace (torch on CPU or CUDA).

One stable descending sort per row puts the vocabulary in the selection order
(logit descending, token id ascending); everything after is prefix arithmetic on
whole ``(B, V)`` arrays, so the logits never leave their device. It is also the
reference the numpy engine is tested against.
"""

from __future__ import annotations

from typing import Any

from qr_core._arrays import device_of

__all__ = ["select_sorted"]

Array = Any


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

    order = xp.argsort(x, axis=1, descending=True, stable=True)
    xs = xp.take_along_axis(x, order, axis=1)
    s = (xp.astype(xs, xp.float64) - xp.astype(m, xp.float64)[:, None]) / t_safe[:, None]
    w = xp.exp(s)

    pos = xp.arange(vocab, dtype=xp.int64, device=dev)[None, :]
    k_eff = xp.where((k <= 0) | (k >= vocab), xp.full_like(k, vocab), k)
    w = xp.where(pos < k_eff[:, None], w, xp.zeros_like(w))
    c = xp.cumulative_sum(w, axis=1)
    kept_mass = c[:, -1]

    below_p = xp.sum(xp.astype(c < (p * kept_mass)[:, None], xp.int64), axis=1)
    n = xp.where(p >= 1, k_eff, xp.minimum(below_p + 1, k_eff))
    c_n = xp.take_along_axis(c, (n - 1)[:, None], axis=1)[:, 0]
    target = u * c_n
    j = xp.sum(xp.astype((c <= target[:, None]) & (pos < n[:, None]), xp.int64), axis=1)
    j = xp.minimum(j, n - 1)

    token = xp.take_along_axis(order, j[:, None], axis=1)[:, 0]
    prob = xp.take_along_axis(w, j[:, None], axis=1)[:, 0] / c_n

    # Greedy rows: order[:, 0] is the lowest id among the maxima (stable sort).
    zero = xp.zeros_like(j)
    token = xp.where(greedy, order[:, 0], xp.astype(token, xp.int64))
    rank = xp.where(greedy, zero, j)
    prob = xp.where(greedy, xp.ones_like(prob), prob)
    n = xp.where(greedy, zero + 1, n)
    return token, rank, prob, n
