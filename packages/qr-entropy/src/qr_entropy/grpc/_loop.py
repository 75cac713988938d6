"""One process-wide asyncio event loop on a daemon thread, driven from synchronous callers.

The ``server_streaming`` mode runs on gRPC's asyncio API (``unary`` and
``bidi_streaming`` run in the caller's thread: ``_sync``). grpcio 1.85 binds
every event loop that uses ``grpc.aio`` to one global poller and keeps
dispatching to loops that were closed, so the client never closes a loop: all
sources share this one, started on first use (like grpc's own
``grpc-aio-poller`` thread). Each source cancels its own calls and coroutines
on ``close()``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from qr_entropy._exceptions import EntropyUnavailableError

__all__ = ["LoopThread", "shared_loop"]

_T = TypeVar("_T")


class LoopThread:
    """Runs coroutines on a dedicated event-loop thread.

    Args:
        name: Thread name (shown in thread dumps).
    """

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(
        self, coro: Coroutine[Any, Any, _T], pending: set[asyncio.Task[Any]] | None = None
    ) -> _T:
        """Run ``coro`` on the loop and wait for its result.

        Args:
            coro: The coroutine.
            pending: The caller's set of in-flight calls: the task is in it while
                it runs, so that :meth:`cancel` can end it.

        Raises:
            EntropyUnavailableError: the call was cancelled (the source closed).
        """

        async def tracked() -> _T:
            task = asyncio.current_task()
            assert task is not None
            pending.add(task)  # type: ignore[union-attr]
            try:
                return await coro
            finally:
                pending.discard(task)  # type: ignore[union-attr]

        future = asyncio.run_coroutine_threadsafe(
            coro if pending is None else tracked(), self._loop
        )
        try:
            return future.result()
        except (concurrent.futures.CancelledError, asyncio.CancelledError) as exc:
            raise EntropyUnavailableError("gRPC source closed during the call") from exc

    def cancel(self, pending: set[asyncio.Task[Any]]) -> None:
        """Cancel the tasks in ``pending`` and wait until they have ended."""

        async def _cancel() -> None:
            tasks = list(pending)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(_cancel())

    def task_count(self) -> int:
        """Number of coroutines alive on the loop (for leak checks)."""

        async def _count() -> int:
            return len(asyncio.all_tasks()) - 1

        return self.run(_count())


_shared: LoopThread | None = None
_shared_lock = threading.Lock()


def shared_loop() -> LoopThread:
    """Return the process-wide loop, starting it on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = LoopThread("qr-entropy-grpc")
        return _shared
