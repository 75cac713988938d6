"""Unit tests of the adaptive circuit breaker (fake clock, no network)."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from qr_entropy import EntropyUnavailableError
from qr_entropy.grpc import BreakerState, CircuitBreaker, CircuitOpenError

N = 20480


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: FakeClock, **kwargs: float) -> CircuitBreaker:
    params: dict[str, float] = {
        "ceiling_ms": 1000.0,
        "window_size": 100,
        "min_timeout_ms": 5.0,
        "multiplier": 1.5,
        "recovery_window_s": 10.0,
        "max_consecutive_failures": 3,
    }
    params.update(kwargs)
    return CircuitBreaker(
        ceiling_ms=params["ceiling_ms"],
        window_size=int(params["window_size"]),
        min_timeout_ms=params["min_timeout_ms"],
        multiplier=params["multiplier"],
        recovery_window_s=params["recovery_window_s"],
        max_consecutive_failures=int(params["max_consecutive_failures"]),
        clock=clock,
    )


def ok(breaker: CircuitBreaker, latency_s: float, n: int = N) -> bool:
    """One admitted call that succeeded after ``latency_s``."""
    return breaker.record_success(breaker.acquire(n), latency_s)


def fail(breaker: CircuitBreaker, latency_s: float = 0.001, n: int = N) -> bool:
    """One admitted call that failed (not a timeout) after ``latency_s``."""
    return breaker.record_failure(breaker.acquire(n), latency_s)


def test_empty_window_uses_the_ceiling() -> None:
    breaker = make(FakeClock())
    assert breaker.acquire(20480).timeout_s == pytest.approx(1.0)
    assert breaker.snapshot().p99_ms is None


def test_timeout_is_p99_times_multiplier_within_floor_and_ceiling() -> None:
    breaker = make(FakeClock())
    # 99 calls of 2 ms and one of 40 ms: nearest-rank P99 of 100 samples is the 99th = 2 ms.
    for _ in range(99):
        ok(breaker, 0.002, 20480)
    ok(breaker, 0.040, 20480)
    assert breaker.snapshot().p99_ms == pytest.approx(2.0)
    ok(breaker, 0.002, 20480)  # the last call is fast again
    assert breaker.acquire(20480).timeout_s == pytest.approx(0.005)  # 3 ms < floor 5 ms
    ok(breaker, 0.040, 20480)  # two slow ones now: P99 = 40 ms
    ok(breaker, 0.002, 20480)
    assert breaker.acquire(20480).timeout_s == pytest.approx(0.060)
    for _ in range(100):
        ok(breaker, 2.0, 20480)
    assert breaker.acquire(20480).timeout_s == pytest.approx(1.0)  # capped at the ceiling


def test_window_is_rolling() -> None:
    breaker = make(FakeClock(), window_size=10)
    for _ in range(10):
        ok(breaker, 0.100, 100)
    for _ in range(10):
        ok(breaker, 0.010, 100)
    assert breaker.snapshot(100).p99_ms == pytest.approx(10.0)
    assert breaker.acquire(100).timeout_s == pytest.approx(0.015)
    assert breaker.snapshot(100).window_count == 10


def test_size_classes_have_separate_windows() -> None:
    breaker = make(FakeClock())
    for _ in range(20):
        ok(breaker, 0.002, 20480)
    assert breaker.acquire(20480).timeout_s == pytest.approx(0.005)
    # A 64x larger request has not been seen yet: it gets the full ceiling.
    assert breaker.acquire(64 * 20480).timeout_s == pytest.approx(1.0)


def test_timeouts_feed_the_window_so_a_slowing_server_is_followed_to_the_ceiling() -> None:
    """Known defect 8: the deadline must grow after timeouts, never lock a slow server out."""
    clock = FakeClock()
    breaker = make(clock)
    for _ in range(100):
        ok(breaker, 0.002, 20480)
    deadlines = []
    for _ in range(15):
        admission = breaker.acquire(20480)
        deadlines.append(admission.timeout_s)
        # The server now hangs; a timeout on a learnt deadline does not open the circuit.
        assert breaker.record_failure(admission, admission.timeout_s, timed_out=True) is False
    # Each timeout raises the next deadline by the multiplier, up to the ceiling.
    assert deadlines[:3] == pytest.approx([0.005, 0.0075, 0.01125])
    assert deadlines[-1] == pytest.approx(1.0)
    assert all(b >= a for a, b in itertools.pairwise(deadlines))
    # The server answers within the ceiling now, and succeeds.
    ok(breaker, 0.8, 20480)
    assert breaker.snapshot().total_timeouts == 15
    assert breaker.acquire(20480).timeout_s == pytest.approx(1.0)


def test_only_timeouts_at_the_ceiling_count_towards_opening() -> None:
    breaker = make(FakeClock())
    for _ in range(100):
        ok(breaker, 0.002)
    for _ in range(10):  # learnt deadline (5 ms) ran out: slower, not gone
        learnt = breaker.acquire(N)
        assert not learnt.full
        breaker.record_failure(learnt, learnt.timeout_s, timed_out=True)
        ok(breaker, 0.002)  # a fast call again, so the next deadline is short again
    assert breaker.snapshot().consecutive_failures == 0
    opened = []
    for _ in range(3):
        full = breaker.acquire(N, full=True)
        assert full.full
        assert full.timeout_s == pytest.approx(1.0)
        opened.append(breaker.record_failure(full, 1.0, timed_out=True))
    assert opened == [False, False, True]


def test_opens_after_consecutive_failures_and_rejects_immediately() -> None:
    clock = FakeClock()
    breaker = make(clock)
    for _ in range(2):
        assert fail(breaker) is False
    assert breaker.snapshot().state is BreakerState.CLOSED
    assert fail(breaker) is True  # this one opened it
    assert breaker.snapshot().state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError, match="circuit open after 3 consecutive failures"):
        breaker.acquire(N)
    assert issubclass(CircuitOpenError, EntropyUnavailableError)
    assert breaker.snapshot().total_rejected == 1


def test_success_resets_the_consecutive_count() -> None:
    breaker = make(FakeClock())
    for _ in range(5):
        fail(breaker)
        fail(breaker)
        ok(breaker, 0.001, N)
    assert breaker.snapshot().state is BreakerState.CLOSED
    assert breaker.snapshot().total_failures == 10


def open_it(breaker: CircuitBreaker) -> None:
    for _ in range(3):
        fail(breaker)
    assert breaker.snapshot().state is BreakerState.OPEN


def test_half_open_allows_one_probe_at_the_ceiling_then_closes_on_success() -> None:
    clock = FakeClock()
    breaker = make(clock)
    for _ in range(100):
        ok(breaker, 0.002)  # learnt deadline: 5 ms
    open_it(breaker)
    clock.now += 9.9
    with pytest.raises(CircuitOpenError):
        breaker.acquire(N)
    clock.now += 0.2
    assert breaker.snapshot().state is BreakerState.HALF_OPEN
    probe = breaker.acquire(N)
    # A fresh connection is not judged by a deadline learnt on a warm one.
    assert probe.probe
    assert probe.full
    assert probe.timeout_s == pytest.approx(1.0)
    with pytest.raises(CircuitOpenError, match="probe call is in flight"):
        breaker.acquire(N)
    assert breaker.record_success(probe, 0.001) is True  # the probe closed it
    assert breaker.snapshot().state is BreakerState.CLOSED
    assert ok(breaker, 0.001, N) is False


def test_failed_probe_reopens_for_another_recovery_window() -> None:
    clock = FakeClock()
    breaker = make(clock)
    open_it(breaker)
    clock.now += 10.0
    assert fail(breaker) is True  # the probe
    snap = breaker.snapshot()
    assert snap.state is BreakerState.OPEN
    assert snap.times_opened == 2
    clock.now += 5.0
    with pytest.raises(CircuitOpenError):
        breaker.acquire(N)
    clock.now += 5.0
    assert breaker.acquire(N).probe


def test_release_frees_an_abandoned_probe() -> None:
    clock = FakeClock()
    breaker = make(clock)
    open_it(breaker)
    clock.now += 10.0
    breaker.release(breaker.acquire(N))
    assert breaker.acquire(N).probe  # a new probe is allowed


def test_a_success_admitted_before_the_circuit_opened_cannot_close_it() -> None:
    """The issue's "opened" and "closed" in the same millisecond."""
    clock = FakeClock()
    breaker = make(clock)
    early = breaker.acquire(N)  # a slow call, admitted while the circuit was closed
    open_it(breaker)
    assert breaker.record_success(early, 0.5) is False
    snap = breaker.snapshot()
    assert snap.state is BreakerState.OPEN
    assert (snap.total_stale, snap.total_successes) == (1, 1)  # counted, latency kept


def test_a_failure_admitted_before_the_circuit_closed_cannot_count_towards_opening() -> None:
    clock = FakeClock()
    breaker = make(clock, max_consecutive_failures=1)
    early = breaker.acquire(N)
    fail(breaker)  # opens (one failure suffices here)
    clock.now += 10.0
    assert ok(breaker, 0.001) is True  # the probe closed it
    assert breaker.record_failure(early, 2.0) is False  # admitted two state changes ago
    assert breaker.snapshot().state is BreakerState.CLOSED
    assert fail(breaker) is True  # a current failure still opens it


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ceiling_ms", 0.0),
        ("min_timeout_ms", -1.0),
        ("recovery_window_s", 0.0),
        ("window_size", 0),
        ("multiplier", 0.5),
    ],
)
def test_invalid_parameters_are_named(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        make(FakeClock(), **{field: value})


def test_p99_is_the_nearest_rank_of_the_last_window_size_latencies() -> None:
    """The sorted copy the breaker keeps follows the rolling window exactly.

    Checked after every one of 1,000 recorded latencies (seed 12; repeats
    included, so eviction of equal values is exercised) against a P99 computed
    from scratch over the last ``window_size`` latencies.
    """
    rng = random.Random(12)
    breaker = make(FakeClock(), window_size=50)
    recorded: list[float] = []
    for _ in range(1000):
        latency_ms = float(rng.choice(range(1, 40)))
        breaker.record_success(breaker.acquire(N), latency_ms / 1000.0)
        recorded.append(latency_ms)
        last = sorted(recorded[-50:])
        assert breaker.snapshot(N).p99_ms == pytest.approx(last[math.ceil(0.99 * len(last)) - 1])
        assert breaker.snapshot(N).window_count == len(last)
