"""The device step's two copies between host and device, and its waits.

One wait: for the logits, just before the fetch (:func:`wait_for_logits`).
One copy up: u, top-k, top-p, the power-law parameters and the row indices,
packed into one reused ``(8, B)`` float64 host buffer (pinned for a GPU, so
that the copy is asynchronous). One copy down: the per-row values the records
need and the deferred checks' codes, ``(7, B)`` float64, into a second pinned
buffer with an event; :class:`Readback` waits for it only when they are read.
float64 holds every top-k, row index and check code exactly (far below 2**53).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from qr_core import BatchSelectionResult

__all__ = [
    "INVALID",
    "LAW",
    "ROW",
    "TOP_K",
    "TOP_P",
    "HostBuffers",
    "Readback",
    "U",
    "sync_allowed",
    "upload_rows",
    "wait_for_logits",
]

# Rows of the packed (8, B) float64 upload: u, top-k, top-p, the four power-law
# parameters (base, exponent, min, max) and the row index of each qr row.
# float64 holds every top-k and row index exactly (both far below 2**53).
U, TOP_K, TOP_P, LAW, ROW = 0, 1, 2, slice(3, 7), 7
_PACKED = 8
# Rows of the (7, B) float64 readback: temperature, entropy, token, rank,
# probability, candidates, invalid codes.
_READBACK = 7
INVALID = 6


def sync_allowed() -> AbstractContextManager[object]:
    """vLLM's permission for a deliberate host wait, where vLLM is installed."""
    try:
        from vllm.utils.gpu_sync_debug import gpu_sync_allowed
    except ImportError:  # the step runs without vLLM too (benchmarks, tests)
        return nullcontext()
    allowed: AbstractContextManager[object] = gpu_sync_allowed()
    return allowed


def wait_for_logits(device: torch.device) -> None:
    """Wait until the kernels producing the logits on ``device`` have run (CUDA only).

    The just-in-time guarantee: entropy is asked for only once the logits exist.
    The one wait of a device step; vLLM's sync check (``VLLM_GPU_SYNC_CHECK``) is
    told it is deliberate. Other devices (CPU tensors) need no wait.
    """
    if device.type == "cuda":
        with sync_allowed():
            torch.cuda.current_stream(device).synchronize()


def upload_rows(rows: list[int] | tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The row indices on ``device`` without a host wait.

    A plain ``torch.as_tensor(rows, device=cuda)`` copies from pageable memory,
    which waits for the device's queue to drain. Staged through pinned memory
    the copy is asynchronous, and torch's caching host allocator does not hand
    the pinned block out again before the copy has run.
    """
    host = torch.tensor(rows, dtype=torch.int64)
    if device.type == "cpu":
        return host
    return host.pin_memory().to(device, non_blocking=True)


class HostBuffers:
    """The host side of the step's two copies, pinned for a GPU, reused every step.

    Their numpy views are made once here: filling and reading them is plain
    host memory access, never a read of the device. A buffer is rewritten only
    after the wait for the next step's logits, by which time the copies of the
    step before have completed.
    """

    @classmethod
    def fit(cls, current: HostBuffers | None, n: int, device: torch.device) -> HostBuffers:
        """``current`` when it holds ``n`` rows for ``device``, else new buffers."""
        pinned = device.type == "cuda"
        if current is None or current.capacity < n or current.pinned != pinned:
            return cls(max(n, 256), pinned)
        return current

    def __init__(self, capacity: int, pinned: bool) -> None:
        self.capacity = capacity
        self.pinned = pinned
        self._pack = torch.empty(_PACKED * capacity, dtype=torch.float64, pin_memory=pinned)
        self._back = torch.empty(_READBACK * capacity, dtype=torch.float64, pin_memory=pinned)
        self._pack_np = self._pack.numpy()
        self._back_np = self._back.numpy()

    def pack(self, n: int) -> np.ndarray:
        """The ``(8, n)`` upload, to fill on the host."""
        return self._pack_np[: _PACKED * n].reshape(_PACKED, n)

    def pack_tensor(self, n: int) -> torch.Tensor:
        """The same memory as :meth:`pack`, as a contiguous tensor to copy."""
        return self._pack[: _PACKED * n].view(_PACKED, n)

    def back(self, n: int) -> tuple[torch.Tensor, np.ndarray]:
        """The ``(7, n)`` readback: the tensor to copy into and its numpy view."""
        size = _READBACK * n
        return self._back[:size].view(_READBACK, n), self._back_np[:size].reshape(_READBACK, n)


class Readback:
    """The per-row values of a device step on their way to the host.

    Started after selection (an asynchronous copy and an event); read after
    forcing, when the records are built, or checked at the next step.
    """

    def __init__(
        self, per_row: torch.Tensor, buffers: HostBuffers, sel: BatchSelectionResult
    ) -> None:
        target, self._host = buffers.back(per_row.shape[1])
        target.copy_(per_row, non_blocking=True)
        self._event: torch.cuda.Event | None = None
        if per_row.device.type == "cuda":
            self._event = torch.cuda.Event()  # type: ignore[no-untyped-call]
            self._event.record()
        self._sel = sel
        self._checked = False

    def values(self) -> np.ndarray:
        """The ``(7, B)`` values on the host, after the deferred checks passed.

        Raises:
            qr_core.QRCoreError: An invalid value of the step.
        """
        if self._event is not None:
            with sync_allowed():
                self._event.synchronize()
        if not self._checked:
            self._checked = True
            # The codes rode in the float64 readback (exact: they are < 64).
            self._sel.raise_if_invalid(self._host[INVALID].astype(np.int32))
        return self._host

    def check(self) -> None:
        """Raise what the step deferred, if anything (see :meth:`values`)."""
        self.values()
