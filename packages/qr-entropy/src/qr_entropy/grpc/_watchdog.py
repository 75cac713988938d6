"""Deadlines for blocking reads that take no timeout: one process-wide watchdog thread.

grpcio's synchronous stream API reads with ``next(call)``, which waits without
a timeout. The bidi transport arms an :class:`Alarm` before each read; if the
read has not returned by the deadline, the watchdog thread runs the alarm's
action (``call.cancel()``), which makes the blocked ``next()`` raise at once.

Arming costs a lock and a heap push; the thread is woken only when an alarm
is due earlier than the moment it already sleeps until. A disarmed alarm stays
in the heap until its deadline, so during a run of fetches (each arming a
deadline later than the last) the thread sleeps until the oldest one, wakes
about once per deadline period, drops what is due, and is never notified: the
read itself never waits for this thread.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable

__all__ = ["Alarm", "Watchdog", "shared_watchdog"]

logger = logging.getLogger(__name__)


class Alarm:
    """One armed deadline (see :meth:`Watchdog.arm`)."""

    __slots__ = ("action", "deadline", "done", "fired")

    def __init__(self, deadline: float, action: Callable[[], object]) -> None:
        self.deadline = deadline
        self.action = action
        self.done = False
        """Fired or disarmed; set under the watchdog's lock."""
        self.fired = False
        """The deadline passed before :meth:`Watchdog.disarm`: the action runs."""


class Watchdog:
    """Runs an action when its deadline passes, unless it was disarmed first.

    Args:
        name: The thread's name (started on the first :meth:`arm`).
        clock: Monotonic clock in seconds.
    """

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._name = name
        self._clock = clock
        # arm/disarm take the bare lock (cheaper than the Condition's Python-level
        # context manager); the thread waits on the Condition built over it.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, Alarm]] = []
        self._order = itertools.count()
        # When the thread next looks at the heap; inf while it waits for a notify.
        self._wake_at = math.inf
        self._thread: threading.Thread | None = None
        self.fired = 0
        """Alarms whose action ran (for tests and health)."""

    def arm(self, timeout_s: float, action: Callable[[], object]) -> Alarm:
        """Run ``action`` on the watchdog thread in ``timeout_s`` unless disarmed before."""
        alarm = Alarm(self._clock() + timeout_s, action)
        with self._lock:
            heapq.heappush(self._heap, (alarm.deadline, next(self._order), alarm))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            elif alarm.deadline < self._wake_at:
                self._cond.notify()
        return alarm

    def disarm(self, alarm: Alarm) -> bool:
        """Cancel ``alarm``; False when it had already fired (its action runs or ran)."""
        with self._lock:
            if alarm.done:
                return not alarm.fired
            alarm.done = True
            return True

    def _due(self) -> list[Alarm]:
        """Pop what is due (disarmed or not); set the next wake time."""
        now = self._clock()
        due: list[Alarm] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            alarm = heapq.heappop(heap)[2]
            if not alarm.done:
                alarm.done = alarm.fired = True
                due.append(alarm)
        self._wake_at = heap[0][0] if heap else math.inf
        return due

    def _run(self) -> None:
        with self._cond:
            while True:
                due = self._due()
                if due:
                    self.fired += len(due)
                    # Outside the lock: an action (a gRPC cancel) takes grpc's own locks.
                    self._cond.release()
                    try:
                        for alarm in due:
                            try:
                                alarm.action()
                            except Exception:
                                # The thread must outlive one bad action: later alarms depend on it.
                                logger.exception("watchdog action failed")
                    finally:
                        self._cond.acquire()
                    continue
                self._cond.wait(None if not self._heap else self._wake_at - self._clock())


_shared: Watchdog | None = None
_shared_lock = threading.Lock()


def shared_watchdog() -> Watchdog:
    """Return the process-wide watchdog (its thread starts on the first alarm)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Watchdog("qr-entropy-grpc-watchdog")
        return _shared
