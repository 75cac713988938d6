"""Shared helpers for qr-core tests: an independent reference sampler and engine access."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from qr_core._arrays import check_logits, device_of, row_max, to_row_param
from qr_core._select_generic import select_sorted


class Reference:
    """The selection rule written out plainly, row by row, with a full sort.

    Independent of both engines: it shares no code with them. Weights follow the
    documented rule: ``exp((x - max) / T)`` computed in float32 by numpy (float64
    for float64 logits), ordered by weight descending, then id ascending; sums in
    float64.
    """

    def __init__(self, row: npt.ArrayLike, temperature: float, top_k: int, top_p: float) -> None:
        x = np.asarray(row)
        v = x.shape[0]
        ids = np.arange(v)
        if temperature <= 0:
            self.order = np.lexsort((ids, -x.astype(np.float64)))
            self.candidates = self.order[:1]
            self.probs = np.ones(1)
            return
        wd = np.float64 if x.dtype == np.float64 else np.float32
        xw = x.astype(wd)
        w_all = np.exp((xw - xw.max()) / wd(temperature))
        self.order = np.lexsort((ids, -w_all))
        w = w_all[self.order].astype(np.float64)
        kept = v if top_k <= 0 or top_k >= v else top_k
        w = w[:kept]
        if top_p < 1:
            c = np.cumsum(w)
            n = int(np.argmax(c >= top_p * c[-1])) + 1
            w = w[:n]
        self.candidates = self.order[: w.size]
        self.probs = w / w.sum()
        self.cdf = np.cumsum(w) / np.sum(w)

    def pick(self, u: float, tol: float = 1e-9) -> int | None:
        """The token for u, or None if u lies within ``tol`` of a CDF boundary."""
        if self.candidates.size == 1:
            return int(self.candidates[0])
        if np.min(np.abs(self.cdf - u)) < tol:
            return None
        return int(self.candidates[int(np.sum(self.cdf <= u))])


def sorted_engine(logits: Any, u: Any, temperature: Any, top_k: Any, top_p: Any) -> tuple[Any, ...]:
    """Run the sort engine directly (the public entry sends host memory to buckets)."""
    xp, x = check_logits(logits, 2)
    rows, dev = x.shape[0], device_of(x)
    return select_sorted(
        xp,
        x,
        row_max(xp, x),
        to_row_param(xp, u, "u", rows, dev),
        to_row_param(xp, temperature, "temperature", rows, dev),
        to_row_param(xp, top_k, "top_k", rows, dev, integer=True),
        to_row_param(xp, top_p, "top_p", rows, dev),
    )


@pytest.fixture
def reference() -> type[Reference]:
    """The plain full-sort reference sampler (class)."""
    return Reference


@pytest.fixture
def sort_engine() -> Any:
    """Function running the array-API sort engine directly."""
    return sorted_engine
