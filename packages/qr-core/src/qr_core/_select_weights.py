"""The numpy engine's token weights and the sorted candidate sets built from them.

Weights are those of :func:`qr_core._select_generic.token_weights`, computed in
place in one reused buffer, in blocks of rows of about 2**20 logits so that each
pass over a block runs in cache. :class:`Members` holds a few candidates per row,
sorted in the selection order (weight descending, then token id ascending).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import array_api_compat.numpy as xnp
import numpy as np
import numpy.typing as npt

from qr_core._select_generic import weight_divisor, weight_dtype
from qr_core._workspace import Workspace

__all__ = ["HeadRule", "Members", "first_exceeding", "flat_true", "take", "weights"]

# numpy's stubs cannot follow dtypes through bincount, take_along_axis and the
# like, so internal arrays are typed loosely; the public layer states the dtypes.
IntArray = npt.NDArray[Any]
FloatArray = npt.NDArray[Any]
AnyFloat = npt.NDArray[Any]
# (weights of a block of rows, those rows) -> (rows, 1) head thresholds
HeadRule = Callable[[AnyFloat, slice], AnyFloat]

# Logits per block of rows in the weight passes (4 MiB of float32).
_BLOCK = 1 << 20

_WORKSPACE = Workspace()


def weights(
    x: AnyFloat, m: AnyFloat, t: FloatArray, head: HeadRule | None = None
) -> tuple[AnyFloat, IntArray]:
    """``token_weights`` of the sort engine, in place in a reused buffer.

    With ``head`` (a rule giving each row of a block its head threshold) also
    the sorted flat indices of every token at or above its row's threshold.
    Rows are processed in blocks of about 2**20 logits so that every pass over
    a block runs while it is in cache, instead of streaming the whole batch
    through memory once per pass.
    """
    rows, vocab = x.shape
    wd = weight_dtype(np, x.dtype)
    w = _WORKSPACE.get("w", x.shape, wd)
    m_w = m.astype(wd)[:, None]
    div = weight_divisor(xnp, t, wd)[:, None]
    heads: list[IntArray] = []
    mask = _WORKSPACE.get("mask", x.shape, np.bool_)
    step = max(1, _BLOCK // vocab)
    for a in range(0, rows, step):
        b = min(a + step, rows)
        wb = w[a:b]
        np.subtract(x[a:b], m_w[a:b], out=wb, dtype=wd)
        np.divide(wb, div[a:b], out=wb)
        np.exp(wb, out=wb)
        if head is not None:
            np.greater_equal(wb, head(wb, slice(a, b)), out=mask[a:b])
            heads.append(flat_true(mask[a:b].reshape(-1)) + a * vocab)
    flat = np.concatenate(heads) if heads else np.zeros(0, dtype=np.intp)
    return w, flat


def flat_true(mask: npt.NDArray[np.bool_]) -> IntArray:
    """``np.flatnonzero`` of a contiguous 1-D mask, fast when it is mostly False.

    Heads are a few hundred tokens of a 151,936-token row, so most 8-byte words
    of the mask are 0: finding the nonzero words first reads an eighth of the
    elements, and only their 8 bytes each are inspected. Denser masks take the
    plain scan.
    """
    n8 = mask.size - mask.size % 8
    words = np.flatnonzero(mask[:n8].view(np.uint64))
    # Gathering 8 bytes per nonzero word costs about as much as scanning 500
    # bytes: above 1 word in 500 (e.g. a top-k cover of 1% of a 32,000-token
    # row) the plain scan is cheaper.
    if 500 * words.size > n8:
        return np.flatnonzero(mask)
    cand = (words[:, None] * 8 + np.arange(8)).reshape(-1)
    return np.concatenate([cand[mask[cand]], np.flatnonzero(mask[n8:]) + n8])


class Members:
    """Tokens of one selected range per row, sorted in the order, padded to 2-D."""

    def __init__(self, r: IntArray, ids: IntArray, w: AnyFloat, rows: int, limit: Any = None):
        """Sort flat ``(row, id, weight)`` triples; keep the first ``limit[r]`` per row."""
        order = np.lexsort((ids, -w, r))
        r, ids, w = r[order], ids[order], w[order]
        counts = np.bincount(r, minlength=rows)
        starts = np.cumsum(counts) - counts
        j = np.arange(r.size) - starts[r]
        if limit is not None:
            keep = j < limit[r]
            r, ids, w, j = r[keep], ids[keep], w[keep], j[keep]
            counts = np.minimum(counts, limit)
        width = max(int(counts.max(initial=0)), 1)
        self.count: IntArray = counts.astype(np.int64)
        self.prob: FloatArray = np.zeros((rows, width), dtype=np.float64)
        self.ids: IntArray = np.zeros((rows, width), dtype=np.int64)
        self.prob[r, j] = w
        self.ids[r, j] = ids


def first_exceeding(c: FloatArray, target: FloatArray, valid: IntArray) -> IntArray:
    """Index of the first column with ``c > target`` among the first ``valid``."""
    cols = np.arange(c.shape[1])[None, :]
    hits = (c <= target[:, None]) & (cols < valid[:, None])
    index: IntArray = hits.sum(axis=1).astype(np.int64)
    return index


def take(a: npt.NDArray[Any], j: IntArray) -> npt.NDArray[Any]:
    return np.take_along_axis(a, j[:, None], axis=1)[:, 0]
