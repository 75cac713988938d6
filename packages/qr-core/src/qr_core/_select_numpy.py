"""Exact batched selection for numpy without sorting the vocabulary.

Weights are those of :func:`qr_core._select_generic.token_weights` (float32
``exp`` for float32 and narrower logits, float64 for float64 logits), computed
in place in one reused buffer. The selection order is weight descending, then
token id ascending. Only the tokens near a threshold are ever sorted; the result
equals that of a full sort (``_select_generic``) up to float64 summation order.

* Top-k rows (``0 < k < V``): a weight threshold taken from an order statistic
  of every 32nd column keeps a few hundred tokens, at least k (rows where it
  keeps fewer retry deeper). Any threshold with k tokens at or above it contains
  the first k tokens of the order, ties included. Those are sorted; the top-p
  cut and u lookup then run on the first k of them (:mod:`qr_core._select_top_k`).
* Other rows (this module): the total weight is one float64 sum. The crossing (the top-p
  cut, or the u crossing without top-p) needs a prefix of the order holding the
  fraction ``f`` (p, or u) of the total, so the row can leave out
  ``spare = (1 - f) * total``. Tokens below ``spare / V`` weigh less than that
  together, so the *head*, every token at or above ``spare / V``, is a prefix of
  the order that holds the crossing. The first try takes ``16 * spare / V``
  (a few hundred tokens of an LLM-shaped row); rows where that head misses the
  crossing are redone with ``spare / V``, and rows where rounding of the two
  sums still leaves the crossing at the very end with the whole row. Only the
  head is bucketed, by the top bits of the weight (exponent and 4 mantissa
  bits, ratio 2**(1/16) per bucket, so bucket order is the global order and
  equal weights share a bucket); one batched ``bincount`` gives every head
  bucket's mass and count, cumulative sums find the bucket where the top-p cut
  falls, then the one where the u crossing falls, and only their members are
  sorted. Everything before a bucket contributes its summed mass and count.

Weights, the total and the head are computed in blocks of rows of about 2**20
logits, so that each pass over a block runs in cache: a handful of passes over
the batch in all (row max, weights, sum, head mask), no ``exp`` in float64 and
no ``bincount`` over the whole vocabulary (:mod:`qr_core._select_weights`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from qr_core._select_top_k import select_top_k
from qr_core._select_weights import (
    AnyFloat,
    FloatArray,
    IntArray,
    Members,
    first_exceeding,
    take,
    weights,
)

__all__ = ["select_buckets"]

# Weight buckets: the bit pattern shifted right keeps the exponent and the top 4
# mantissa bits (ratio 2**(1/16) per bucket); 1.0 has key bias << 4. The last
# bucket also holds everything further down (and all zeros).
# weight dtype -> (same-size integer, mantissa bits, exponent bias)
_BITS: dict[np.dtype[Any], tuple[type[np.signedinteger[Any]], int, int]] = {
    np.dtype(np.float32): (np.int32, 23, 127),
    np.dtype(np.float64): (np.int64, 52, 1023),
}
_MANTISSA_KEPT = 4

_MAX_BUCKETS = 1024

# First head threshold: this many times spare / V. Rows of an LLM's peaked
# distribution then keep a few hundred tokens; rows whose head misses the
# crossing are redone with spare / V itself, which cannot miss.
_HEAD_FACTOR = 16.0


def _bucket_count(vocab: int) -> int:
    """Buckets per row: up to 1024, fewer for small vocabularies so that the
    per-row bins never dwarf the data (a 100,000-row batch of V = 20 stays cheap)."""
    return int(min(_MAX_BUCKETS, max(16, 1 << (vocab // 8).bit_length())))


def _head_threshold(
    frac: FloatArray, total: FloatArray, vocab: int, factor: float, wd: Any
) -> AnyFloat:
    """``factor * spare / V`` per row as a ``(rows, 1)`` column of dtype ``wd``.

    With factor 1 the head surely holds the crossing: tokens below spare / V
    weigh less than spare together. Shrinking spare by 2**-20 covers rounding
    the threshold to the weight dtype.
    """
    spare = (1 - frac) * total * (1 - 2.0**-20)
    thr: AnyFloat = (spare * (factor / vocab)).astype(wd)[:, None]
    return thr


def _select_head(
    w: AnyFloat, flat: IntArray, u: FloatArray, p: FloatArray, total: FloatArray | None
) -> tuple[IntArray, IntArray, FloatArray, IntArray, npt.NDArray[np.bool_]]:
    """Select within the head: the flat indices ``flat`` of a prefix of each row's order.

    ``total`` is each row's whole mass, or None when the head is the whole row
    (its bucket masses then give the total). Returns the four results and a mask
    of the rows whose crossing lay inside the head; other rows' results are void.
    """
    rows, vocab = w.shape
    nb = _bucket_count(vocab)
    int_type, mantissa, bias = _BITS[w.dtype]
    # flat is sorted, so each row's entries are one run.
    ends = np.searchsorted(flat, np.arange(1, rows + 1) * vocab)
    r = np.repeat(np.arange(rows), np.diff(ends, prepend=0))
    ids = flat - r * vocab
    hw = w.ravel()[flat]
    # Bucket 0 of each row is the most probable; rows are laid end to end.
    key = np.right_shift(hw.view(int_type), mantissa - _MANTISSA_KEPT)
    base = np.arange(rows, dtype=np.intp) * nb
    bins = np.clip((bias << _MANTISSA_KEPT) - key.astype(np.intp), 0, nb - 1) + base[r]
    mass = np.bincount(bins, weights=hw, minlength=rows * nb)
    counts = np.bincount(bins, minlength=rows * nb)
    # Column b of cm / cc: mass / count of buckets 0..b.
    cm = np.cumsum(mass.reshape(rows, nb), axis=1)
    cc = np.cumsum(counts.reshape(rows, nb), axis=1)
    head_mass = cm[:, -1]
    if total is None:
        total = head_mass
    ar = np.arange(rows)

    def before(cum: npt.NDArray[Any], b: IntArray) -> npt.NDArray[Any]:
        return np.where(b > 0, cum[ar, np.maximum(b - 1, 0)], 0)

    def bucket_of(target: FloatArray) -> IntArray:
        # First bucket whose cumulative mass exceeds target.
        index: IntArray = np.minimum((cm <= target[:, None]).sum(axis=1), nb - 1)
        return index.astype(np.int64)

    def members(b: IntArray, of: IntArray | None = None) -> Members:
        want = np.full(rows, -1, dtype=np.intp)
        sel_rows = ar if of is None else of
        want[sel_rows] = b[sel_rows] + base[sel_rows]
        sel = bins == want[r]
        return Members(r[sel], ids[sel], hw[sel], rows)

    nucleus = p < 1
    ok = np.where(nucleus, head_mass >= p * total, head_mass > u * total)
    p_bucket = np.minimum((cm < (p * total)[:, None]).sum(axis=1), nb - 1)
    first = np.where(nucleus, p_bucket, bucket_of(u * total)).astype(np.int64)
    inner = members(first)
    mass_before = before(cm, first).astype(np.float64)
    count_before = before(cc, first).astype(np.int64)
    c = mass_before[:, None] + np.cumsum(inner.prob, axis=1)
    inside = np.arange(c.shape[1])[None, :] < inner.count[:, None]
    positive = (inner.prob > 0).sum(axis=1)

    # Top-p: the cut lies in `first`; without top-p every token is a candidate.
    n_in = ((c < (p * total)[:, None]) & inside).sum(axis=1) + 1
    n_in = np.minimum(n_in, inner.count)
    n = np.where(nucleus, count_before + n_in, vocab).astype(np.int64)
    c_n = np.where(nucleus, take(c, np.maximum(n_in - 1, 0)), total)
    target = u * c_n
    u_bucket = np.where(nucleus, np.minimum(bucket_of(target), first), first)

    # The u crossing usually lies in the bucket already extracted.
    limit = np.where(nucleus, n_in, positive)
    j = np.maximum(np.minimum(first_exceeding(c, target, limit), limit - 1), 0)
    token = take(inner.ids, j)
    prob = take(inner.prob, j)
    rank = count_before + j

    again = np.flatnonzero((u_bucket != first) & ok)
    if again.size:
        # Rows whose u crossing lies above the top-p bucket: extract that bucket.
        sub = members(u_bucket, again)
        c2 = before(cm, u_bucket).astype(np.float64)[:, None] + np.cumsum(sub.prob, axis=1)
        pos2 = (sub.prob > 0).sum(axis=1)
        j2 = np.maximum(np.minimum(first_exceeding(c2, target, sub.count), pos2 - 1), 0)
        token[again] = take(sub.ids, j2)[again]
        prob[again] = take(sub.prob, j2)[again]
        rank[again] = (before(cc, u_bucket) + j2)[again]
    # Rows whose head missed the crossing may have c_n = 0; they are redone.
    return token, rank, prob / np.where(ok, c_n, 1.0), n, ok


def _select_full(
    x: AnyFloat, m: AnyFloat, u: FloatArray, t: FloatArray, p: FloatArray
) -> tuple[IntArray, IntArray, FloatArray, IntArray]:
    frac = np.where(p < 1, p, u)
    total = np.zeros(x.shape[0], dtype=np.float64)

    def head_rule(wb: AnyFloat, rows: slice) -> AnyFloat:
        wb.sum(axis=1, dtype=np.float64, out=total[rows])
        return _head_threshold(frac[rows], total[rows], x.shape[1], _HEAD_FACTOR, wb.dtype)

    w, head = weights(x, m, t, head_rule)
    *out, ok = _select_head(w, head, u, p, total)
    for stage in ("bound", "whole"):
        redo = np.flatnonzero(~ok)
        if not redo.size:
            break
        ws, ur, pr = w[redo], u[redo], p[redo]
        if stage == "bound":
            thr = _head_threshold(frac[redo], total[redo], w.shape[1], 1.0, w.dtype)
            *again, ok_r = _select_head(ws, np.flatnonzero(ws >= thr), ur, pr, total[redo])
        else:
            # Rounding of the two sums left the crossing at the very end of the
            # order: the whole row is the head, its bucket sums the total.
            *again, ok_r = _select_head(ws, np.arange(ws.size), ur, pr, None)
        for a, b in zip(out, again, strict=True):
            a[redo] = b
        ok[redo] = ok_r
    token, rank, prob, n = out
    return token, rank, prob, n


def select_buckets(
    x: AnyFloat, m: AnyFloat, u: FloatArray, t: FloatArray, k: IntArray, p: FloatArray
) -> tuple[IntArray, IntArray, FloatArray, IntArray]:
    """Select one token per row of validated numpy logits.

    Args:
        x: ``(B, V)`` C-contiguous floating logits, every row max finite.
        m: ``(B,)`` row maxima of ``x``.
        u, t, k, p: ``(B,)`` uniform values, temperatures, top-k, top-p.

    Returns:
        ``(token_id, token_rank, token_prob, num_candidates)``, each ``(B,)``.
    """
    rows, vocab = x.shape
    token = np.zeros(rows, dtype=np.int64)
    rank = np.zeros(rows, dtype=np.int64)
    prob = np.ones(rows, dtype=np.float64)
    n = np.ones(rows, dtype=np.int64)

    greedy = t <= 0
    if greedy.any():
        g = np.flatnonzero(greedy)
        token[g] = np.argmax(x[g], axis=1)

    top_k = ~greedy & (k > 0) & (k < vocab)
    for sel, engine in ((top_k, "k"), (~greedy & ~top_k, "full")):
        if not sel.any():
            continue
        part = np.flatnonzero(sel)
        whole = part.size == rows
        xs, ms, us, ts, ks, ps = (a if whole else a[part] for a in (x, m, u, t, k, p))
        if engine == "k":
            out = select_top_k(xs, ms, us, ts, ks, ps)
        else:
            out = _select_full(xs, ms, us, ts, ps)
        token[part], rank[part], prob[part], n[part] = out
    return token, rank, prob, n
