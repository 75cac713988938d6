"""Where the backend runs: on the event loop for small requests to a backend that
never blocks, in the backend's pool otherwise."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from qr_entropy_server import UrandomBackend
from qr_entropy_server._errors import BackendReplyError, HealthTestError
from qr_entropy_server._health_tests import DEFAULT_MIN_ENTROPY, ContinuousTests, cutoffs
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
            block = await pool.generate(n, 5.0)
            return block.data, threading.current_thread().name

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
        assert done.data == bytes(n)
        assert before <= done.started_ns <= done.ended_ns <= time.time_ns()
        assert backend.threads == [threading.current_thread().name]
    else:
        assert done is None
        assert backend.threads == []  # nothing ran, here or in the pool


def test_a_block_is_checked_where_it_was_made_and_a_failing_one_never_leaves() -> None:
    """Wrong type, wrong length and a failed health test raise; nothing is returned."""
    tests = ContinuousTests(cutoffs(DEFAULT_MIN_ENTROPY, 1 << 20))
    replies: list[object] = ["x" * 8, os.urandom(7), bytes(64), os.urandom(8)]

    class Scripted:
        never_blocks = True

        def generate(self, n: int) -> object:
            return replies.pop(0)

        def close(self) -> None:
            pass

    pool = BackendPool(Scripted(), 1, tests)  # type: ignore[arg-type]
    try:
        with pytest.raises(BackendReplyError, match="backend returned str, not bytes"):
            pool.now(8)
        with pytest.raises(BackendReplyError, match="returned 7 bytes, 8 were requested"):
            pool.now(8)
        with pytest.raises(HealthTestError, match="repetition count: byte 0x00 64 times"):
            pool.now(64)
        block = pool.now(8)
    finally:
        pool.shutdown()
    assert block is not None
    assert len(block.data) == 8
