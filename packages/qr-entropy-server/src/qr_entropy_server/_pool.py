"""The backend's own bounded thread pool, whose threads never block process exit.

``generate`` is blocking driver code, so it runs off the event loop. A
``concurrent.futures.ThreadPoolExecutor`` would do, except that the interpreter
joins its threads at exit: one hung ``generate`` would then hold SIGTERM
hostage for as long as the hardware hangs. These threads are daemons, and a
request whose caller gave up before a thread picked it up is skipped, so a
hung device does not leave a queue of stale work behind it.

A backend that declares ``never_blocks = True`` (``os.urandom``) is called on the
event loop itself for requests up to :data:`INLINE_MAX_BYTES`: the hop to a pool
thread and back costs about 300 us per request, several times what
``os.urandom`` takes for one token's 20,480 bytes (about 80 us). Larger requests
still go to the pool, so that one big request does not hold every stream up.
``--backend-timeout`` cannot interrupt an inline call, which is why only a
backend that cannot wait may declare it.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from concurrent.futures import Future

from qr_entropy_server._backends import EntropyBackend

__all__ = ["INLINE_MAX_BYTES", "BackendPool"]

INLINE_MAX_BYTES = 65_536
"""Largest request a ``never_blocks`` backend answers on the event loop."""

_Job = tuple["Future[tuple[object, int]]", int]


class BackendPool:
    """``workers`` daemon threads that call ``backend.generate``.

    Args:
        backend: The generator; called from the pool's threads only.
        workers: Number of threads; 1 serialises every call.
    """

    def __init__(self, backend: EntropyBackend, workers: int) -> None:
        self._backend = backend
        self._inline = getattr(backend, "never_blocks", False) is True
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"qr-backend-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, n = job
            if not future.set_running_or_notify_cancel():
                continue  # the caller timed out or went away while this waited
            try:
                data: object = self._backend.generate(n)
                # Stamped right after the device answered: the freshness proof.
                stamped = time.time_ns()
            except BaseException as exc:  # reported to the caller
                future.set_exception(exc)
            else:
                future.set_result((data, stamped))

    def now(self, n: int) -> tuple[object, int] | None:
        """``generate(n)`` and its stamp, called here, when the backend never blocks.

        Returns:
            None when the call must go to a pool thread instead (the backend
            may block, or ``n`` is above :data:`INLINE_MAX_BYTES`): then await
            :meth:`generate`. The caller skips a coroutine per request otherwise.

        Raises:
            Exception: whatever the backend raised.
        """
        if self._inline and n <= INLINE_MAX_BYTES:
            data: object = self._backend.generate(n)
            return data, time.time_ns()
        return None

    async def generate(self, n: int, timeout_s: float) -> tuple[object, int]:
        """Run ``generate(n)`` in the pool; return its result and wall-clock stamp.

        Raises:
            TimeoutError: no result within ``timeout_s`` (the thread may still be
                stuck in the backend; the call's result is discarded).
            Exception: whatever the backend raised.
        """
        done = self.now(n)
        if done is not None:
            return done
        future: Future[tuple[object, int]] = Future()
        self._jobs.put((future, n))
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)

    def shutdown(self) -> None:
        """Let idle threads end; a thread stuck in the backend is left behind."""
        for _ in self._threads:
            self._jobs.put(None)
