"""Adaptive circuit breaker: a deadline that follows the server, and a circuit.

Deadline: ``min(ceiling, max(floor, P99 * multiplier, last * multiplier))``
where P99 is taken over a rolling window of the last ``window_size`` call
latencies and ``last`` is the latency of the most recent call (the ceiling
alone while the window is empty). Unlike the original, timeouts and failures
feed the window too: a timed-out call counts as a latency of at least the
deadline it was given. With the ``last`` term, each timeout raises the next
deadline by the multiplier at once (a P99 over 100 mostly fast calls would
move only after several), so a server that slows down is followed up to the
ceiling instead of being locked out for good.

Latency grows with the payload (a 1.3 MB batch takes far longer than 20 KB),
so the window is kept per size class: requests whose byte counts have the same
bit length (powers of two) share a window, and a size class seen for the first
time gets the ceiling. Failures in a row are counted across all sizes.

Circuit: CLOSED until ``max_consecutive_failures`` failures in a row, then
OPEN (calls refused at once) for ``recovery_window_s``, then HALF_OPEN: one
probe call is let through, with the ceiling as its deadline (a fresh
connection must not be judged by a deadline learnt on a warm one); its success
closes the circuit, its failure opens it again for another recovery window.

Two rules keep a healthy server from being locked out:

- A call that times out on a *learnt* deadline (shorter than the ceiling) says
  the server is slower than it was, not that it is down: it feeds the window
  (so the next deadline grows) but does not count towards opening the circuit.
  The caller retries it at the ceiling (see ``Admission.full``).
- Every state change starts a new generation, and only a call admitted in the
  current generation can change the state: a success of a call admitted before
  the circuit opened cannot close it, a failure of a call admitted before it
  closed cannot count towards opening it again. Their latencies still count.
"""

from __future__ import annotations

import bisect
import enum
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from qr_entropy._exceptions import EntropyUnavailableError

__all__ = ["Admission", "BreakerSnapshot", "BreakerState", "CircuitBreaker", "CircuitOpenError"]


class BreakerState(enum.Enum):
    """Circuit states."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# Module-level names: an Enum member looked up on its class costs a descriptor
# call, and acquire/record_success run twice per fetch on its critical path.
_CLOSED, _OPEN, _HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class CircuitOpenError(EntropyUnavailableError):
    """The circuit is open (or its one probe is in flight); no call was made."""


@dataclass(frozen=True, slots=True)
class Admission:
    """One call let through by :meth:`CircuitBreaker.acquire`."""

    n_bytes: int
    """The byte count the call asks for (its size class)."""
    timeout_s: float
    """The call's deadline."""
    full: bool
    """The deadline is the ceiling (a first call of its size class, a probe, or a
    call asked for with ``full=True``); a timeout then counts as a failure."""
    generation: int
    """The circuit's generation when the call was admitted."""
    probe: bool = False
    """The call is the half-open circuit's one probe."""


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """The breaker's state at one moment (reported by ``health_check``)."""

    state: BreakerState
    p99_ms: float | None
    """P99 of the size class's latency window; None while it is empty."""
    timeout_ms: float
    """Deadline the next call gets."""
    window_count: int
    """Latencies in that window."""
    consecutive_failures: int
    """Failures in a row that count towards opening the circuit."""
    total_successes: int
    """Calls that returned valid bytes."""
    total_failures: int
    """Calls that failed, timeouts included."""
    total_timeouts: int
    """Calls that hit their deadline."""
    total_rejected: int
    """Calls refused because the circuit was open."""
    times_opened: int
    """How often the circuit opened."""
    total_stale: int
    """Results of calls admitted before the circuit's last state change (not
    allowed to change the state)."""


class CircuitBreaker:
    """Thread-safe adaptive deadline and circuit.

    Use: ``admission = breaker.acquire(n)`` before a call (raises
    :class:`CircuitOpenError` when the call must not be made), then exactly one
    of ``record_success``/``record_failure``/``release`` with that admission.

    Args:
        ceiling_ms: Largest deadline (the configured gRPC timeout).
        window_size: Latencies kept for the P99.
        min_timeout_ms: Smallest deadline (the floor).
        multiplier: Deadline = P99 x multiplier, within floor and ceiling.
        recovery_window_s: Time the circuit stays open before one probe.
        max_consecutive_failures: Failures in a row that open the circuit.
        clock: Monotonic clock in seconds (tests pass a fake one).
    """

    def __init__(
        self,
        *,
        ceiling_ms: float,
        window_size: int = 100,
        min_timeout_ms: float = 5.0,
        multiplier: float = 1.5,
        recovery_window_s: float = 10.0,
        max_consecutive_failures: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (
            ("ceiling_ms", ceiling_ms),
            ("min_timeout_ms", min_timeout_ms),
            ("recovery_window_s", recovery_window_s),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if window_size < 1 or max_consecutive_failures < 1:
            raise ValueError(
                "window_size and max_consecutive_failures must be >= 1, got "
                f"{window_size} and {max_consecutive_failures}"
            )
        if multiplier < 1:
            raise ValueError(f"multiplier must be >= 1, got {multiplier}")
        self._ceiling_ms = ceiling_ms
        self._floor_ms = min(min_timeout_ms, ceiling_ms)
        self._multiplier = multiplier
        self._recovery_s = recovery_window_s
        self._max_failures = max_consecutive_failures
        self._clock = clock
        self._window_size = window_size
        self._windows: dict[int, deque[float]] = {}
        # The same latencies kept sorted, so that a P99 is one index (every call
        # asks for one; sorting the window each time was the breaker's main cost).
        self._sorted: dict[int, list[float]] = {}
        self._last_ms: dict[int, float] = {}
        self._last_class = 0
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._consecutive = 0
        self._generation = 0
        self._successes = self._failures = self._timeouts = self._rejected = self._opened = 0
        self._stale = 0

    @staticmethod
    def size_class(n_bytes: int) -> int:
        """The window a request of ``n_bytes`` belongs to (its bit length)."""
        return max(n_bytes, 1).bit_length()

    def _p99_ms(self, size_class: int) -> float | None:
        ordered = self._sorted.get(size_class)
        if not ordered:
            return None
        # Nearest-rank percentile: the smallest value with >= 99 % of samples at or below it.
        return ordered[math.ceil(0.99 * len(ordered)) - 1]

    def _timeout_ms(self, size_class: int) -> float:
        p99 = self._p99_ms(size_class)
        if p99 is None:
            return self._ceiling_ms
        recent = max(p99, self._last_ms.get(size_class, 0.0))
        return min(self._ceiling_ms, max(self._floor_ms, recent * self._multiplier))

    def acquire(self, n_bytes: int, *, full: bool = False) -> Admission:
        """Admit one call for ``n_bytes`` and return its deadline and generation.

        Args:
            n_bytes: The byte count the call asks for.
            full: Give the ceiling as deadline (a retry after a learnt deadline
                ran out).

        Raises:
            CircuitOpenError: the circuit is open, or half-open with its probe
                already in flight.
        """
        with self._lock:
            state = self._state
            if state is _CLOSED and not full:  # the common case, on the fetch's critical path
                timeout_ms = self._timeout_ms(self.size_class(n_bytes))
                return Admission(
                    n_bytes, timeout_ms / 1000.0, timeout_ms >= self._ceiling_ms, self._generation
                )
            if state is _OPEN:
                waited = self._clock() - self._opened_at
                if waited < self._recovery_s:
                    self._rejected += 1
                    raise CircuitOpenError(
                        f"circuit open after {self._consecutive} consecutive failures; "
                        f"next probe in {self._recovery_s - waited:.1f} s"
                    )
                self._set_state(_HALF_OPEN)
                self._probe_in_flight = False
            probe = self._state is _HALF_OPEN
            if probe:
                if self._probe_in_flight:
                    self._rejected += 1
                    raise CircuitOpenError("circuit half-open: a probe call is in flight")
                self._probe_in_flight = True
            timeout_ms = (
                self._ceiling_ms if full or probe else self._timeout_ms(self.size_class(n_bytes))
            )
            return Admission(
                n_bytes=n_bytes,
                timeout_s=timeout_ms / 1000.0,
                full=timeout_ms >= self._ceiling_ms,
                generation=self._generation,
                probe=probe,
            )

    def _set_state(self, state: BreakerState) -> None:
        self._state = state
        self._generation += 1

    def _record_latency(self, n_bytes: int, latency_ms: float) -> None:
        size_class = self._last_class = self.size_class(n_bytes)
        window = self._windows.get(size_class)
        if window is None:
            window = self._windows[size_class] = deque(maxlen=self._window_size)
            self._sorted[size_class] = []
        ordered = self._sorted[size_class]
        if len(window) == self._window_size:
            del ordered[bisect.bisect_left(ordered, window[0])]  # the latency the deque drops
        window.append(latency_ms)
        bisect.insort(ordered, latency_ms)
        self._last_ms[size_class] = latency_ms

    def record_success(self, admission: Admission, latency_s: float) -> bool:
        """Record a call that returned valid bytes; a current one closes a half-open circuit.

        Returns:
            True when this success closed the circuit.
        """
        with self._lock:
            self._record_latency(admission.n_bytes, latency_s * 1000.0)
            self._successes += 1
            if admission.probe:
                self._probe_in_flight = False
            if admission.generation != self._generation:
                self._stale += 1
                return False
            self._consecutive = 0
            if self._state is _CLOSED:
                return False
            self._set_state(_CLOSED)
            return True

    def record_failure(
        self, admission: Admission, latency_s: float, *, timed_out: bool = False
    ) -> bool:
        """Record a failed call.

        Args:
            admission: What :meth:`acquire` returned for the call.
            latency_s: How long the call took before it failed.
            timed_out: The call hit its deadline; the window then records at
                least the deadline, so the next deadline grows. A timeout on a
                learnt deadline does not count towards opening the circuit.

        Returns:
            True when this failure opened the circuit.
        """
        with self._lock:
            latency_ms = latency_s * 1000.0
            if timed_out:
                self._timeouts += 1
                latency_ms = max(latency_ms, admission.timeout_s * 1000.0)
            self._record_latency(admission.n_bytes, latency_ms)
            self._failures += 1
            if admission.probe:
                self._probe_in_flight = False
            if admission.generation != self._generation:
                self._stale += 1
                return False
            if timed_out and not admission.full:
                return False
            self._consecutive += 1
            if self._state is BreakerState.HALF_OPEN or (
                self._state is BreakerState.CLOSED and self._consecutive >= self._max_failures
            ):
                self._set_state(BreakerState.OPEN)
                self._opened_at = self._clock()
                self._opened += 1
                return True
            return False

    def release(self, admission: Admission) -> None:
        """Forget an admitted call that was abandoned before reaching the server."""
        with self._lock:
            if admission.probe:
                self._probe_in_flight = False

    def snapshot(self, n_bytes: int | None = None) -> BreakerSnapshot:
        """Return the current state and counters.

        Args:
            n_bytes: Report P99 and deadline for this request size; default:
                the size of the most recent call.
        """
        with self._lock:
            size_class = self._last_class if n_bytes is None else self.size_class(n_bytes)
            state = self._state
            if state is BreakerState.OPEN and self._clock() - self._opened_at >= self._recovery_s:
                state = BreakerState.HALF_OPEN
            return BreakerSnapshot(
                state=state,
                p99_ms=self._p99_ms(size_class),
                timeout_ms=self._timeout_ms(size_class),
                window_count=len(self._windows.get(size_class, ())),
                consecutive_failures=self._consecutive,
                total_successes=self._successes,
                total_failures=self._failures,
                total_timeouts=self._timeouts,
                total_rejected=self._rejected,
                times_opened=self._opened,
                total_stale=self._stale,
            )
