"""The stream idle watch on a real event loop: what it cancels, when, and what it leaves.

The server-level behaviour (an idle stream closed UNAVAILABLE with the reason)
is in test_concurrency.py; these pin the watch's own rules. Lower bounds on
elapsed time follow from the rules, so they hold under any load.
"""

from __future__ import annotations

import asyncio

import pytest

from qr_entropy_server._idle import IdleWatch

IDLE_S = 0.2


def test_a_wait_of_the_whole_period_is_cancelled_and_the_cancellation_withdrawn() -> None:
    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        watch = IdleWatch(IDLE_S)
        try:
            watch.waiting()
            since = loop.time()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.Event().wait()  # a client that never sends
            assert watch.expired()
            task = asyncio.current_task()
            assert task is not None
            assert task.cancelling() == 0
            return loop.time() - since
        finally:
            watch.close()

    assert asyncio.run(scenario()) >= IDLE_S


def test_time_spent_answering_does_not_count() -> None:
    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        watch = IdleWatch(IDLE_S)
        try:
            watch.answering()
            # A slow answer: three periods, during which the timer fires and re-arms.
            await asyncio.sleep(3 * IDLE_S)
            watch.waiting()
            since = loop.time()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.Event().wait()
            assert watch.expired()
            return loop.time() - since
        finally:
            watch.close()

    # Cancelled a full period after the wait began, not at the first timer.
    assert asyncio.run(scenario()) >= IDLE_S


def test_a_stream_that_keeps_sending_outlives_the_period() -> None:
    # A longer period here: a wait is cut short only if this process stalls for it.
    idle_s = 0.5

    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        watch = IdleWatch(idle_s)
        exchanges = 0
        try:
            end = loop.time() + 3 * idle_s
            while loop.time() < end:
                watch.waiting()
                await asyncio.sleep(0.01)  # the next request comes soon
                watch.answering()
                exchanges += 1
        finally:
            watch.close()
        assert not watch.expired()
        return exchanges

    assert asyncio.run(scenario()) > 0


def test_someone_elses_cancellation_is_not_taken_for_idleness() -> None:
    async def scenario() -> None:
        watch = IdleWatch(60.0)
        task = asyncio.current_task()
        assert task is not None
        try:
            watch.waiting()
            asyncio.get_running_loop().call_soon(task.cancel)  # e.g. server shutdown
            with pytest.raises(asyncio.CancelledError):
                await asyncio.Event().wait()
            assert not watch.expired()
            assert task.cancelling() == 1  # still pending for whoever asked
            task.uncancel()
        finally:
            watch.close()

    asyncio.run(scenario())


def test_a_closed_watch_cancels_nothing() -> None:
    async def scenario() -> None:
        watch = IdleWatch(IDLE_S)
        watch.waiting()
        watch.close()
        done = asyncio.Event()
        asyncio.get_running_loop().call_later(3 * IDLE_S, done.set)
        await done.wait()  # not cancelled although the wait outlasted the period
        assert not watch.expired()

    asyncio.run(scenario())
