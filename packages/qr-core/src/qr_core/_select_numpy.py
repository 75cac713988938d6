"""Exact batched selection for numpy without sorting the vocabulary.

The selection order is logit descending, then token id ascending (probability is
monotone in the logit). Only the tokens near a threshold are ever sorted; the
result equals that of a full sort (``_select_generic``) up to float64 summation
order.

* Top-k rows (``0 < k < V``): a threshold taken from an order statistic of every
  32nd column keeps a few hundred tokens, at least k (rows where it keeps fewer
  retry deeper). Any threshold with k tokens at or above it contains the first k
  tokens of the order, ties included. Those are sorted; the softmax, top-p cut
  and u lookup then run on the first k of them. No ``exp`` touches the rest of
  the vocabulary.
* Other rows: weights ``exp((x - max) / T)`` in float64 for every token (the
  total mass needs them all). Buckets are the top bits of the float64 weight
  (exponent and 4 mantissa bits, ratio 2**(1/16) per bucket), so bucket order is
  the global order and equal weights share a bucket. One batched ``bincount``
  (bin = row * buckets + bucket) gives every bucket's mass and count; cumulative
  sums over the buckets find the bucket where the top-p cut falls, then the one
  where the u crossing falls (usually the same), and only their members are
  sorted. Everything before a bucket contributes its summed mass and count.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["select_buckets"]

# numpy's stubs cannot follow dtypes through bincount, take_along_axis and the
# like, so internal arrays are typed loosely; the public layer states the dtypes.
IntArray = npt.NDArray[Any]
FloatArray = npt.NDArray[Any]
AnyFloat = npt.NDArray[Any]

# Top-k cover: an order statistic of every 32nd column, deep enough that about
# 32 * (ceil(k / 32) + 8) tokens pass; fewer than k pass for roughly 1 row in 300.
_COVER_STRIDE = 32
_COVER_MARGIN = 8

# Probability buckets: the float64 bit pattern shifted right keeps the exponent
# and the top 4 mantissa bits (ratio 2**(1/16) per bucket); 1.0 has key 1023 << 4.
# The last bucket also holds everything further down (and all zeros).
_P_SHIFT = 52 - 4
_P_TOP_KEY = 1023 << 4

_MAX_BUCKETS = 1024


def _bucket_count(vocab: int) -> int:
    """Buckets per row: up to 1024, fewer for small vocabularies so that the
    per-row bins never dwarf the data (a 100,000-row batch of V = 20 stays cheap)."""
    return int(min(_MAX_BUCKETS, max(16, 1 << (vocab // 8).bit_length())))


class _Workspace(threading.local):
    """Per-thread scratch buffers reused across calls.

    Fresh multi-megabyte arrays are returned to the OS on free and page-faulted
    back in on every call, which costs as much as the arithmetic; reusing them
    keeps the steady state to the arithmetic alone. The price is that the largest
    batch seen stays allocated (about 17 bytes per logit).
    """

    def __init__(self) -> None:
        self.buffers: dict[str, npt.NDArray[np.generic]] = {}

    def get(self, name: str, shape: tuple[int, int], dtype: type[np.generic]) -> npt.NDArray[Any]:
        size = shape[0] * shape[1]
        buf = self.buffers.get(name)
        if buf is None or buf.dtype != dtype or buf.size < size:
            buf = np.empty(size, dtype=dtype)
            self.buffers[name] = buf
        return buf[:size].reshape(shape)


_WORKSPACE = _Workspace()


class _Members:
    """Sorted members of one extracted bucket range per row, padded to 2-D."""

    def __init__(self, rows: int, width: int) -> None:
        self.prob = np.zeros((rows, width), dtype=np.float64)
        self.ids = np.zeros((rows, width), dtype=np.int64)
        self.count = np.zeros(rows, dtype=np.int64)

    @staticmethod
    def rows_of(members: _Members, rows: IntArray) -> _Members:
        out = _Members(0, 0)
        out.prob, out.ids, out.count = members.prob[rows], members.ids[rows], members.count[rows]
        return out


def _extract(
    mask: npt.NDArray[np.bool_],
    x: AnyFloat,
    m64: FloatArray,
    t: FloatArray,
    limit: IntArray | None = None,
) -> _Members:
    """Sort the tokens selected by ``mask`` per row and compute their weights.

    Weights are ``exp((x - max) / T)`` in float64, computed the same way as in the
    full pass so that both paths agree bit for bit. ``limit`` keeps only the
    first ``limit[r]`` members of row r.
    """
    rows, vocab = x.shape
    flat = np.flatnonzero(mask)
    r = flat // vocab
    ids = flat - r * vocab
    lv = x.ravel()[flat].astype(np.float64)
    order = np.lexsort((ids, -lv, r))
    r, ids, lv = r[order], ids[order], lv[order]
    counts = np.bincount(r, minlength=rows)
    starts = np.cumsum(counts) - counts
    j = np.arange(r.size) - starts[r]
    if limit is not None:
        keep = j < limit[r]
        r, ids, lv, j = r[keep], ids[keep], lv[keep], j[keep]
        counts = np.minimum(counts, limit)
    out = _Members(rows, max(int(counts.max(initial=0)), 1))
    out.count = counts.astype(np.int64)
    out.prob[r, j] = np.exp((lv - m64[r]) / t[r])
    out.ids[r, j] = ids
    return out


def _first_exceeding(c: FloatArray, target: FloatArray, valid: IntArray) -> IntArray:
    """Index of the first column with ``c > target`` among the first ``valid``."""
    cols = np.arange(c.shape[1])[None, :]
    hits = (c <= target[:, None]) & (cols < valid[:, None])
    index: IntArray = hits.sum(axis=1).astype(np.int64)
    return index


def _take(a: npt.NDArray[Any], j: IntArray) -> npt.NDArray[Any]:
    return np.take_along_axis(a, j[:, None], axis=1)[:, 0]


def _top_k_cover(x: AnyFloat, k: IntArray) -> npt.NDArray[np.bool_]:
    """Mask of ``x >= thr`` per row, with a threshold that keeps at least k tokens.

    The threshold is a high order statistic of every 32nd column, chosen so that
    a few hundred tokens pass; rows where fewer than k pass retry with a four
    times deeper statistic, and finally with -inf (every token). Any threshold
    with at least k tokens at or above it contains the first k tokens of the
    order, ties included, so the choice only affects speed.
    """
    rows, vocab = x.shape
    stride = _COVER_STRIDE if vocab >= 64 * _COVER_STRIDE else 1
    sub = x[:, ::stride]
    n_sub = sub.shape[1]
    depth = np.minimum(-(-k // stride) + _COVER_MARGIN, n_sub)
    mask = _WORKSPACE.get("mask", x.shape, np.bool_)
    todo = np.arange(rows)
    while todo.size:
        deepest = int(depth[todo].max())
        top = np.partition(sub[todo], n_sub - deepest, axis=1)[:, n_sub - deepest :]
        top.sort(axis=1)
        thr = np.take_along_axis(top, (deepest - depth[todo])[:, None], axis=1)
        if deepest >= n_sub and stride == 1:
            thr = np.full_like(thr, -np.inf)
        if todo.size == rows:
            np.greater_equal(x, thr, out=mask)
            passed = np.count_nonzero(mask, axis=1)
        else:
            mask[todo] = x[todo] >= thr
            passed = np.count_nonzero(mask[todo], axis=1)
        short = passed < k[todo]
        todo = todo[short]
        depth[todo] = np.minimum(depth[todo] * 4, n_sub)
        if stride > 1 and todo.size and (depth[todo] >= n_sub).any():
            stride, sub, n_sub = 1, x, vocab
            depth[todo] = vocab
    return mask


def _select_top_k(
    x: AnyFloat, m: AnyFloat, u: FloatArray, t: FloatArray, k: IntArray, p: FloatArray
) -> tuple[IntArray, IntArray, FloatArray, IntArray]:
    m64 = m.astype(np.float64)
    mask = _top_k_cover(x, k)
    members = _extract(mask, x, m64, t, limit=k)

    c = np.cumsum(members.prob, axis=1)
    kept = members.count
    kept_mass = _take(c, kept - 1)
    below_p = ((c < (p * kept_mass)[:, None]) & (np.arange(c.shape[1]) < kept[:, None])).sum(axis=1)
    n = np.where(p >= 1, kept, np.minimum(below_p + 1, kept)).astype(np.int64)
    c_n = _take(c, n - 1)
    j = np.minimum(_first_exceeding(c, u * c_n, n), n - 1)
    return _take(members.ids, j), j, _take(members.prob, j) / c_n, n


def _select_full(
    x: AnyFloat, m: AnyFloat, u: FloatArray, t: FloatArray, p: FloatArray
) -> tuple[IntArray, IntArray, FloatArray, IntArray]:
    rows, vocab = x.shape
    nb = _bucket_count(vocab)
    m64 = m.astype(np.float64)
    w = _WORKSPACE.get("f64", x.shape, np.float64)
    np.subtract(x, m64[:, None], out=w, dtype=np.float64)
    w /= t[:, None]
    np.exp(w, out=w)
    bucket = _WORKSPACE.get("intp", x.shape, np.intp)
    np.right_shift(w.view(np.intp), _P_SHIFT, out=bucket)
    # Bucket 0 of each row is the most probable; rows are laid end to end:
    # bin = row * nb + min(top_key - key, nb - 1), in two passes.
    base = np.arange(rows, dtype=np.intp) * nb
    np.subtract((base + _P_TOP_KEY)[:, None], bucket, out=bucket)
    np.minimum(bucket, (base + nb - 1)[:, None], out=bucket)
    flat = bucket.ravel()
    mass = np.bincount(flat, weights=w.ravel(), minlength=rows * nb)
    counts = np.bincount(flat, minlength=rows * nb)
    # Column b of cm / cc: mass / count of buckets 0..b.
    cm = np.cumsum(mass.reshape(rows, nb), axis=1)
    cc = np.cumsum(counts.reshape(rows, nb), axis=1)
    total = cm[:, -1]
    ar = np.arange(rows)
    mask = _WORKSPACE.get("mask", x.shape, np.bool_)

    def before(cum: npt.NDArray[Any], b: IntArray) -> npt.NDArray[Any]:
        prev = cum[ar, np.maximum(b - 1, 0)]
        return np.where(b > 0, prev, 0)

    def bucket_of(target: FloatArray) -> IntArray:
        # First bucket whose cumulative mass exceeds target.
        b = (cm <= target[:, None]).sum(axis=1)
        index: IntArray = np.minimum(b, nb - 1).astype(np.int64)
        return index

    nucleus = p < 1
    p_bucket = np.minimum((cm < (p * total)[:, None]).sum(axis=1), nb - 1)
    first = np.where(nucleus, p_bucket, bucket_of(u * total)).astype(np.int64)
    np.equal(bucket, (first + base)[:, None], out=mask)
    members = _extract(mask, x, m64, t)
    mass_before = before(cm, first).astype(np.float64)
    count_before = before(cc, first).astype(np.int64)
    c = mass_before[:, None] + np.cumsum(members.prob, axis=1)
    cols = np.arange(c.shape[1])[None, :]
    inside = cols < members.count[:, None]
    positive = (members.prob > 0).sum(axis=1)

    # Top-p: the cut lies in `first`; without top-p every token is a candidate.
    n_in = ((c < (p * total)[:, None]) & inside).sum(axis=1) + 1
    n_in = np.minimum(n_in, members.count)
    n = np.where(nucleus, count_before + n_in, vocab).astype(np.int64)
    c_n = np.where(nucleus, _take(c, np.maximum(n_in - 1, 0)), total)
    target = u * c_n
    u_bucket = np.where(nucleus, np.minimum(bucket_of(target), first), first)

    # The u crossing usually lies in the bucket already extracted.
    limit = np.where(nucleus, n_in, positive)
    j = np.maximum(np.minimum(_first_exceeding(c, target, limit), limit - 1), 0)
    token = _take(members.ids, j)
    prob = _take(members.prob, j)
    rank = count_before + j

    again = np.flatnonzero(u_bucket != first)
    if again.size:
        # Rows whose u crossing lies above the top-p bucket: extract that bucket.
        # Few rows: work on copies of those rows; many: one pass over everything.
        if 4 * again.size < rows:
            sel = np.equal(bucket[again], (u_bucket[again] + base[again])[:, None])
            sub = _extract(sel, x[again], m64[again], t[again])
        else:
            wanted = np.full(rows, -1, dtype=np.intp)
            wanted[again] = u_bucket[again] + base[again]
            np.equal(bucket, wanted[:, None], out=mask)
            sub = _extract(mask, x, m64, t)
            sub = _Members.rows_of(sub, again)
        c2 = before(cm, u_bucket)[again].astype(np.float64)[:, None] + np.cumsum(sub.prob, axis=1)
        pos2 = (sub.prob > 0).sum(axis=1)
        j2 = np.maximum(np.minimum(_first_exceeding(c2, target[again], sub.count), pos2 - 1), 0)
        token[again] = _take(sub.ids, j2)
        prob[again] = _take(sub.prob, j2)
        rank[again] = before(cc, u_bucket)[again] + j2
    return token, rank, prob / c_n, n


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
        rows_sel = np.flatnonzero(sel)
        whole = rows_sel.size == rows
        xs = x if whole else x[rows_sel]
        ms, us, ts, ps = (a if whole else a[rows_sel] for a in (m, u, t, p))
        if engine == "k":
            ks = k if whole else k[rows_sel]
            out = _select_top_k(xs, ms, us, ts, ks, ps)
        else:
            out = _select_full(xs, ms, us, ts, ps)
        token[rows_sel], rank[rows_sel], prob[rows_sel], n[rows_sel] = out
    return token, rank, prob, n
