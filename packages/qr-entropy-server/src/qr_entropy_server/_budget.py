"""``--max-buffered-bytes``: a bound on the bytes held for responses not yet sent.

A client that asks for 1 MiB and never reads its stream leaves the response in
the server: gRPC keeps the response's bytes object (it sends it without a
copy) until the client has taken the data, and gRPC's asyncio server reports a
message as sent long before that (once the transport has it queued). So each
request takes its ``bytes_needed`` from one budget before ``generate`` runs,
the response is handed over (:meth:`BufferBudget.hand_over`), and its bytes
come back only when gRPC has let go of that very object: the budget checks
the object's reference count (:meth:`BufferBudget.sweep`) before any request
that would not fit, after every :data:`SWEEP_BYTES` handed over (so that its
own list keeps little alive), and every :data:`SWEEP_S` seconds while any is
out. A
request that still does not fit is answered RESOURCE_EXHAUSTED at once.

Freed memory must also reach the operating system again. glibc serves
allocations of 128 KiB and more with ``mmap`` (returned on ``free``) but raises
that threshold after freeing such a block, and then serves 1 MiB responses from
its heaps, where they stay after the clients have gone. :func:`pin_mmap_threshold`
pins the threshold (``mallopt(M_MMAP_THRESHOLD)``), and when the budget has
emptied after holding more than :data:`TRIM_AFTER_BYTES`, ``malloc_trim(0)``
returns what the heaps still hold. Neither exists outside glibc; there they are
skipped.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
import sys

__all__ = [
    "DEFAULT_MAX_BUFFERED_BYTES",
    "SWEEP_BYTES",
    "SWEEP_S",
    "TRIM_AFTER_BYTES",
    "BufferBudget",
    "pin_mmap_threshold",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BUFFERED_BYTES = 256 << 20
"""``--max-buffered-bytes`` default: 256 MiB of payload held at once."""
TRIM_AFTER_BYTES = 16 << 20
"""Return freed heap memory to the system after the budget held more than this."""
SWEEP_S = 1.0
"""Seconds between checks of the handed-over responses while any is out."""
SWEEP_BYTES = 4 << 20
"""Check the handed-over responses after this many new bytes (and as the list doubles)."""
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
_MMAP_THRESHOLD = 128 << 10


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, or None where there is none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallopt"):
        return None
    return libc


def pin_mmap_threshold() -> bool:
    """Serve every allocation of 128 KiB or more with ``mmap``, returned on free (glibc).

    Returns:
        Whether the setting was applied.
    """
    libc = _libc()
    return libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1


def _trim() -> None:
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def _unshared_count() -> int:
    """What :meth:`BufferBudget.sweep` reads for an object that only its own list holds."""
    entry = (bytes(range(8)), 0)
    return sys.getrefcount(entry[0])


class BufferBudget:
    """The bytes held for unsent responses, against a limit. Event-loop thread only.

    Args:
        limit: ``--max-buffered-bytes``.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._high = 0
        self._out: list[tuple[bytes, int]] = []
        self._kept = 0  # responses still held at the last sweep
        self._unswept = 0  # bytes handed over since the last sweep
        self._alone = _unshared_count()
        self._timer: asyncio.TimerHandle | None = None

    def take(self, n: int) -> bool:
        """Hold ``n`` more bytes if they fit under the limit (after a sweep if needed)."""
        if self.held + n > self.limit:
            self.sweep()
            if self.held + n > self.limit:
                return False
        self.held += n
        self._high = max(self._high, self.held)
        return True

    def give(self, n: int) -> None:
        """Release ``n`` bytes taken for a request that ends without a response."""
        self.held -= n
        if self.held == 0 and self._high > TRIM_AFTER_BYTES:
            self._high = 0
            _trim()

    def hand_over(self, response: bytes, n: int) -> None:
        """``response`` goes to gRPC: its ``n`` bytes stay held until gRPC lets go of it.

        Call it right before the response leaves the handler (no ``await`` in
        between), inside the event loop.
        """
        if not self._out:
            self._schedule()
        self._out.append((response, n))
        # The list itself keeps a response alive until it is swept: sweep often
        # enough that it never holds much more than gRPC does.
        self._unswept += n
        if self._unswept > SWEEP_BYTES or len(self._out) > 2 * self._kept + 64:
            self.sweep()

    def sweep(self) -> None:
        """Give back the bytes of every handed-over response that gRPC has released."""
        kept = []
        freed = 0
        for entry in self._out:
            if sys.getrefcount(entry[0]) > self._alone:
                kept.append(entry)
            else:
                freed += entry[1]
        self._out = kept
        self._kept = len(kept)
        self._unswept = 0
        if freed:
            self.give(freed)

    def _schedule(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(SWEEP_S, self._tick)

    def _tick(self) -> None:
        self.sweep()
        if self._out:
            self._schedule()
        else:
            self._timer = None

    def close(self) -> None:
        """Stop the periodic sweep (the server is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
