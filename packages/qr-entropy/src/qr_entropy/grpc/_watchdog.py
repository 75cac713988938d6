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

The thread cannot die: every source of the process depends on it for its
deadlines. A failure inside its own loop (not only in an action) is logged
(at most once per :data:`LOG_INTERVAL_S`, with the count) and counted in
:attr:`Watchdog.failures`, and the loop goes on after :data:`RETRY_S`. A wait
is capped at ``threading.TIMEOUT_MAX``, so a deadline however far away cannot
overflow it.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable

__all__ = ["LOG_INTERVAL_S", "RETRY_S", "Alarm", "Watchdog", "shared_watchdog"]

logger = logging.getLogger(__name__)

RETRY_S = 0.01
"""After a failure of its own loop, the thread looks at the alarms again after this long."""
LOG_INTERVAL_S = 60.0
"""Failures of the loop are logged at most once per this many seconds."""


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
        self.failures = 0
        """Failures of the thread's own loop it survived (for tests and health)."""
        self._logged_at = -math.inf
        self._unlogged = 0

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
                try:
                    self._step()
                except Exception:
                    # Held again here: Condition.wait and _step's finally re-acquire it.
                    self._survived()
                    self._wake_at = -math.inf  # arm() need not notify: the retry is soon
                    self._cond.wait(RETRY_S)

    def _step(self) -> None:
        """Run what is due, or wait until the next deadline (called with the lock held)."""
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
            return
        if not self._heap:
            self._cond.wait()
            return
        self._cond.wait(min(self._wake_at - self._clock(), threading.TIMEOUT_MAX))

    def _survived(self) -> None:
        """Count and log (rate-limited) a failure of the loop itself."""
        self.failures += 1
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_INTERVAL_S:
            logger.exception(
                "watchdog %s: its loop failed (%d time(s) since the last report); it goes on, "
                "the deadlines of every source depend on it",
                self._name,
                self._unlogged,
            )
            self._logged_at = now
            self._unlogged = 0


_shared: Watchdog | None = None
_shared_lock = threading.Lock()


def shared_watchdog() -> Watchdog:
    """Return the process-wide watchdog (its thread starts on the first alarm)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Watchdog("qr-entropy-grpc-watchdog")
        return _shared
