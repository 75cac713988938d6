"""Test tooling: count torch operations and host syncs of a block of code, on any device.

Public API for tests and benchmarks of any package (as httpx ships its
``MockTransport``): :func:`count_ops` runs a function once and returns its
:class:`OpCount` with its result; :meth:`OpCounter.active` counts a ``with`` block.

A GPU path must not wait for the GPU in the middle of a step: every read of
device memory by the host (``.item()``, ``bool(tensor)``, ``.tolist()``,
``.numpy()``, ``.cpu()``, a device-to-host copy), every blocking copy into
the device and every operation whose output size depends on values
(``nonzero``, boolean-mask indexing) makes the host wait. :class:`OpCounter`
counts them, and every aten operation, while code runs on torch tensors, so
the check needs no GPU: on CPU tensors the same calls are made and counted.

Two torch hooks see them: a ``TorchFunctionMode`` catches the Python-level
reads (``tolist``, ``numpy``, DLPack export and the like never reach the
dispatcher for CPU tensors), a ``TorchDispatchMode`` counts aten operations,
scalar reads (``aten._local_scalar_dense``) and copies between devices. A
scalar read inside a Python-level read it belongs to counts once.

Explicit waits (``torch.cuda.synchronize``, ``Event.synchronize``) are no
tensor operations and are not counted: the code that calls them counts them.
Needs torch; qr-core itself never imports this module (``import qr_core.testing``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["OpCount", "OpCounter", "count_ops"]

# Python-level calls that read tensor values on the host.
_HOST_READS = frozenset(
    {
        "tolist",
        "numpy",
        "item",
        "cpu",
        "__bool__",
        "__int__",
        "__float__",
        "__index__",
        "__array__",
        "__dlpack__",
    }
)
# Factories that copy host data into a tensor: on a GPU, a blocking upload.
_UPLOADS = frozenset({"asarray", "as_tensor", "tensor", "from_numpy"})
# aten operations whose output size depends on the values (a sync on a GPU).
_VALUE_SHAPED = frozenset(
    {
        "aten.nonzero.default",
        "aten.masked_select.default",
        "aten._unique2.default",
        "aten.unique_consecutive.default",
        "aten.unique_dim.default",
        "aten.repeat_interleave.Tensor",
    }
)


@dataclass(frozen=True)
class OpCount:
    """What one block of code asked of torch."""

    ops: int
    """aten operations dispatched (views included: every one is host work)."""
    syncs: int
    """Host reads, device-to-host copies and value-shaped operations: each
    makes the host wait for a GPU."""
    uploads: int
    """Host data copied into tensors (``asarray`` of host data, host-to-device copies)."""
    by_op: Mapping[str, int] = field(repr=False)
    """aten operation name -> count."""
    sync_sites: tuple[str, ...] = ()
    """Name of each sync, in order (``Tensor.item``, ``aten.nonzero.default``, ...)."""


class _Reads(TorchFunctionMode):
    def __init__(self, counter: OpCounter) -> None:
        super().__init__()
        self._counter = counter

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        name = getattr(func, "__name__", "")
        counter = self._counter
        if name in _HOST_READS:
            counter.note_sync(f"Tensor.{name}")
        elif name in _UPLOADS and args and not isinstance(args[0], torch.Tensor):
            counter.uploads += 1
        else:
            return func(*args, **(kwargs or {}))
        counter.inside_read += 1
        try:
            return func(*args, **(kwargs or {}))
        finally:
            counter.inside_read -= 1


# torch leaves TorchDispatchMode's __init__ and __init_subclass__ unannotated.
class _Ops(TorchDispatchMode):  # type: ignore[no-untyped-call]
    def __init__(self, counter: OpCounter) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._counter = counter

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self._counter.note_op(str(func), args, kwargs, out)
        return out


class OpCounter:
    """Counts while active; use :func:`count_ops` for a one-shot count."""

    def __init__(self) -> None:
        self.ops: Counter[str] = Counter()
        self.sync_sites: list[str] = []
        self.uploads = 0
        self.inside_read = 0

    def note_sync(self, site: str) -> None:
        """Record one host wait (unless inside a read already counted)."""
        if not self.inside_read:
            self.sync_sites.append(site)

    def note_op(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        """Record one aten operation and what it costs the host.

        A non-blocking copy to the host is no sync (the host waits later, on
        an event, where it reads the copy).
        """
        self.ops[name] += 1
        if name == "aten._local_scalar_dense.default" or name in _VALUE_SHAPED:
            self.note_sync(name)
        elif name.startswith(("aten.index.", "aten.index_put")) and _bool_index(args):
            self.note_sync(f"{name} (boolean mask)")
        elif name in ("aten._to_copy.default", "aten.copy_.default"):
            src = args[1] if name == "aten.copy_.default" else args[0]
            dst = args[0] if name == "aten.copy_.default" else out
            blocking = not (kwargs.get("non_blocking") or (len(args) > 2 and args[2] is True))
            if isinstance(src, torch.Tensor) and isinstance(dst, torch.Tensor):
                if src.device != dst.device and dst.device.type == "cpu":
                    if blocking:
                        self.note_sync(f"{name} to cpu")
                elif src.device != dst.device:
                    self.uploads += 1

    def result(self) -> OpCount:
        """The counts so far."""
        return OpCount(
            ops=sum(self.ops.values()),
            syncs=len(self.sync_sites),
            uploads=self.uploads,
            by_op=dict(self.ops),
            sync_sites=tuple(self.sync_sites),
        )

    @contextmanager
    def active(self) -> Iterator[OpCounter]:
        """Count everything torch is asked inside the ``with`` block."""
        with _Reads(self), _Ops(self):
            yield self


def _bool_index(args: tuple[Any, ...]) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ())


def count_ops(fn: Callable[[], object]) -> tuple[OpCount, object]:
    """Run ``fn()`` once under an :class:`OpCounter`; return the counts and its result."""
    counter = OpCounter()
    with counter.active():
        out = fn()
    return counter.result(), out
