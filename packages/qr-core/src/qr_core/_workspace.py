"""Per-thread scratch buffers that the numpy hot paths reuse across calls."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Workspace"]


class Workspace(threading.local):
    """Per-thread scratch buffers reused across calls.

    Fresh multi-megabyte arrays are returned to the OS on free and page-faulted
    back in on every call, which costs as much as the arithmetic; reusing them
    keeps the steady state to the arithmetic alone. The price is that the largest
    batch seen stays allocated (about 5 bytes per logit, 9 for float64 logits).
    """

    def __init__(self) -> None:
        self.buffers: dict[str, npt.NDArray[np.generic]] = {}

    def get(self, name: str, shape: tuple[int, int], dtype: Any) -> npt.NDArray[Any]:
        size = shape[0] * shape[1]
        buf = self.buffers.get(name)
        if buf is None or buf.dtype != dtype or buf.size < size:
            buf = np.empty(size, dtype=dtype)
            self.buffers[name] = buf
        return buf[:size].reshape(shape)
