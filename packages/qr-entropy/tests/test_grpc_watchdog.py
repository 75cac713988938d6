"""The watchdog that keeps the bidi transport's per-read deadlines (``grpc._watchdog``).

Each test waits for an event the watchdog's thread sets, never for a fixed time.
Alarms fire in deadline order, so an alarm due later firing proves that an
earlier, disarmed one was passed over.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from qr_entropy.grpc._watchdog import Watchdog, shared_watchdog

WAIT_S = 30.0  # how long a test waits for the watchdog's thread before failing


def test_an_alarm_left_armed_fires_and_cannot_be_disarmed_after() -> None:
    watchdog = Watchdog("test-watchdog")
    fired = threading.Event()
    alarm = watchdog.arm(0.01, fired.set)
    assert fired.wait(WAIT_S)
    assert alarm.fired
    assert watchdog.disarm(alarm) is False  # the caller learns its read was cancelled
    assert watchdog.fired == 1


def test_a_disarmed_alarm_never_fires() -> None:
    watchdog = Watchdog("test-watchdog")
    ran: list[str] = []
    early = watchdog.arm(0.02, lambda: ran.append("early"))
    assert watchdog.disarm(early) is True
    later = threading.Event()
    watchdog.arm(0.05, later.set)
    assert later.wait(WAIT_S)
    assert ran == []
    assert not early.fired
    assert watchdog.fired == 1


def test_an_earlier_alarm_wakes_a_watchdog_sleeping_until_a_later_one() -> None:
    watchdog = Watchdog("test-watchdog")
    late = watchdog.arm(3600.0, lambda: None)
    soon = threading.Event()
    watchdog.arm(0.01, soon.set)
    assert soon.wait(WAIT_S)
    assert watchdog.disarm(late) is True


def test_alarms_fire_in_deadline_order() -> None:
    now = [0.0]  # a clock the test moves: every deadline is exact
    watchdog = Watchdog("test-watchdog", clock=lambda: now[0])
    order: list[int] = []
    done = threading.Event()
    watchdog.arm(0.06, lambda: (order.append(3), done.set()))
    watchdog.arm(0.02, lambda: order.append(1))
    watchdog.arm(0.04, lambda: order.append(2))
    now[0] = 1.0  # all three are due now
    assert done.wait(WAIT_S)
    assert order == [1, 2, 3]


def test_a_failing_action_does_not_stop_later_alarms() -> None:
    watchdog = Watchdog("test-watchdog")

    def boom() -> None:
        raise RuntimeError("action failed")

    watchdog.arm(0.01, boom)
    after = threading.Event()
    watchdog.arm(0.03, after.set)
    assert after.wait(WAIT_S)
    assert watchdog.fired == 2


def test_one_watchdog_per_process() -> None:
    assert shared_watchdog() is shared_watchdog()


def test_a_deadline_beyond_what_a_wait_can_take_does_not_stop_the_thread() -> None:
    # 1e13 s is past threading.TIMEOUT_MAX: an uncapped wait raised OverflowError and the
    # thread died (issue 26); a later, near alarm must still fire.
    watchdog = Watchdog("test-watchdog")
    far = watchdog.arm(1e13, lambda: None)
    near = threading.Event()
    watchdog.arm(0.01, near.set)
    assert near.wait(WAIT_S)
    assert watchdog.failures == 0
    assert watchdog.disarm(far) is True


def test_a_failure_of_the_loop_itself_is_logged_and_the_thread_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures = [2]  # the watchdog's own clock fails twice, on its own thread only
    real = time.monotonic

    def clock() -> float:
        if failures[0] and threading.current_thread().name == "test-watchdog-failing":
            failures[0] -= 1
            raise RuntimeError("injected")
        return real()

    watchdog = Watchdog("test-watchdog-failing", clock=clock)
    fired = threading.Event()
    with caplog.at_level(logging.ERROR, logger="qr_entropy.grpc._watchdog"):
        watchdog.arm(0.05, fired.set)
        assert fired.wait(WAIT_S)
    assert failures == [0]
    assert watchdog.failures == 2
    assert watchdog._thread is not None
    assert watchdog._thread.is_alive()
    logged = [r for r in caplog.records if "its loop failed" in r.getMessage()]
    assert len(logged) == 1  # rate-limited: the second failure is counted, not logged
    assert logged[0].exc_info is not None
