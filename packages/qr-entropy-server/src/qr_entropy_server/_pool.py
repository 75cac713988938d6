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

Each call becomes a :class:`Block`, checked where it was made (in the pool
thread, or on the loop for an inline call): the reply must be ``bytes`` of the
asked length, and when the pool has continuous health tests the block must
pass them. Two wall-clock stamps frame the call: ``started_ns`` right before
``generate`` (the built-in device backends discard what the device buffered
first thing inside it) and ``ended_ns`` right after it returned.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from concurrent.futures import Future
from typing import NamedTuple

from qr_entropy_server._backends import EntropyBackend
from qr_entropy_server._errors import BackendReplyError
from qr_entropy_server._health_tests import ContinuousTests

__all__ = ["INLINE_MAX_BYTES", "BackendPool", "Block"]

INLINE_MAX_BYTES = 65_536
"""Largest request a ``never_blocks`` backend answers on the event loop."""
_BYTES_TYPES = (bytes, bytearray)


class Block(NamedTuple):
    """One checked answer of the backend (a tuple: built once per request, cheaply)."""

    data: bytes
    """Exactly the bytes asked for; passed the health tests when there are any."""
    started_ns: int
    """Wall-clock epoch ns taken right before ``generate`` was called."""
    ended_ns: int
    """Wall-clock epoch ns taken right after ``generate`` returned."""


_Job = tuple["Future[Block]", int]


class BackendPool:
    """``workers`` daemon threads that call ``backend.generate``.

    Args:
        backend: The generator; called from the pool's threads only.
        workers: Number of threads; 1 serialises every call.
        tests: Continuous health tests every block must pass (None: none).
    """

    def __init__(
        self, backend: EntropyBackend, workers: int, tests: ContinuousTests | None = None
    ) -> None:
        self._backend = backend
        self._tests = tests
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
            self._run(*job)
            # Nothing of the job stays referenced while the thread waits for the next.
            del job

    def _run(self, future: Future[Block], n: int) -> None:
        if not future.set_running_or_notify_cancel():
            return  # the caller timed out or went away while this waited
        try:
            block = self._call(n)
        except BaseException as exc:  # reported to the caller
            future.set_exception(exc)
        else:
            future.set_result(block)

    def _call(self, n: int) -> Block:
        """``generate(n)`` framed by the two stamps, then checked.

        Raises:
            BackendReplyError: not bytes, or not ``n`` of them.
            HealthTestError: the block failed a continuous health test.
            Exception: whatever the backend raised.
        """
        started = time.time_ns()
        data: object = self._backend.generate(n)
        # Stamped right after the device answered: the freshness proof.
        ended = time.time_ns()
        if not isinstance(data, _BYTES_TYPES):
            kind = type(data).__name__
            raise BackendReplyError("backend-type", f"backend returned {kind}, not bytes")
        if len(data) != n:
            raise BackendReplyError(
                "backend-length", f"backend returned {len(data)} bytes, {n} were requested"
            )
        block = bytes(data)
        if self._tests is not None:
            self._tests.check(block)
        return Block(block, started, ended)

    def now(self, n: int) -> Block | None:
        """``generate(n)``, called and checked here, when the backend never blocks.

        Returns:
            None when the call must go to a pool thread instead (the backend
            may block, or ``n`` is above :data:`INLINE_MAX_BYTES`): then await
            :meth:`generate`. The caller skips a coroutine per request otherwise.

        Raises:
            Exception: as :meth:`_call`.
        """
        if self._inline and n <= INLINE_MAX_BYTES:
            return self._call(n)
        return None

    async def generate(self, n: int, timeout_s: float) -> Block:
        """Run ``generate(n)`` in the pool; return the checked block.

        Raises:
            TimeoutError: no result within ``timeout_s`` (the thread may still be
                stuck in the backend; the call's result is discarded).
            Exception: as :meth:`_call`.
        """
        done = self.now(n)
        if done is not None:
            return done
        future: Future[Block] = Future()
        self._jobs.put((future, n))
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s)

    def shutdown(self) -> None:
        """Let idle threads end; a thread stuck in the backend is left behind."""
        for _ in self._threads:
            self._jobs.put(None)
