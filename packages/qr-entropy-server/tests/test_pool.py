"""Where the backend runs: on the event loop for small requests to a backend that
never blocks, in the backend's pool otherwise."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from qr_entropy_server import UrandomBackend
from qr_entropy_server._pool import INLINE_MAX_BYTES, BackendPool


class _Recorder:
    """Returns zero bytes and remembers which thread called it."""

    def __init__(self, never_blocks: bool | None) -> None:
        if never_blocks is not None:
            self.never_blocks = never_blocks
        self.threads: list[str] = []

    def generate(self, n: int) -> bytes:
        self.threads.append(threading.current_thread().name)
        return bytes(n)

    def close(self) -> None:
        pass


def _run(backend: _Recorder, n: int) -> tuple[object, str]:
    pool = BackendPool(backend, 1)
    try:

        async def call() -> tuple[object, str]:
            data, _ = await pool.generate(n, 5.0)
            return data, threading.current_thread().name

        return asyncio.run(call())
    finally:
        pool.shutdown()


@pytest.mark.parametrize(
    ("never_blocks", "n", "where"),
    [
        (True, 20_480, "loop"),
        (True, INLINE_MAX_BYTES, "loop"),
        (True, INLINE_MAX_BYTES + 1, "pool"),
        (False, 20_480, "pool"),
        (None, 20_480, "pool"),
    ],
)
def test_the_backend_runs_inline_only_when_it_never_blocks_and_the_request_is_small(
    never_blocks: bool | None, n: int, where: str
) -> None:
    backend = _Recorder(never_blocks)
    data, loop_thread = _run(backend, n)
    assert data == bytes(n)
    assert len(backend.threads) == 1
    if where == "loop":
        assert backend.threads == [loop_thread]
    else:
        assert backend.threads[0].startswith("qr-backend-")


def test_urandom_declares_that_it_never_blocks() -> None:
    assert UrandomBackend.never_blocks is True


@pytest.mark.parametrize(
    ("never_blocks", "n", "answered"),
    [(True, INLINE_MAX_BYTES, True), (True, INLINE_MAX_BYTES + 1, False), (None, 1, False)],
)
def test_now_answers_here_exactly_when_generate_would_stay_on_the_loop(
    never_blocks: bool | None, n: int, answered: bool
) -> None:
    backend = _Recorder(never_blocks)
    pool = BackendPool(backend, 1)
    try:
        before = time.time_ns()
        done = pool.now(n)
    finally:
        pool.shutdown()
    if answered:
        assert done is not None
        data, stamped = done
        assert data == bytes(n)
        assert before <= stamped <= time.time_ns()
        assert backend.threads == [threading.current_thread().name]
    else:
        assert done is None
        assert backend.threads == []  # nothing ran, here or in the pool
