"""Unit tests of the adaptive circuit breaker (fake clock, no network)."""

from __future__ import annotations

import itertools

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


def test_empty_window_uses_the_ceiling() -> None:
    breaker = make(FakeClock())
    assert breaker.acquire(20480) == pytest.approx(1.0)
    assert breaker.snapshot().p99_ms is None


def test_timeout_is_p99_times_multiplier_within_floor_and_ceiling() -> None:
    breaker = make(FakeClock())
    # 99 calls of 2 ms and one of 40 ms: nearest-rank P99 of 100 samples is the 99th = 2 ms.
    for _ in range(99):
        breaker.record_success(0.002, 20480)
    breaker.record_success(0.040, 20480)
    assert breaker.snapshot().p99_ms == pytest.approx(2.0)
    breaker.record_success(0.002, 20480)  # the last call is fast again
    assert breaker.acquire(20480) == pytest.approx(0.005)  # 3 ms < floor 5 ms
    breaker.record_success(0.040, 20480)  # two slow ones now: P99 = 40 ms
    breaker.record_success(0.002, 20480)
    assert breaker.acquire(20480) == pytest.approx(0.060)
    for _ in range(100):
        breaker.record_success(2.0, 20480)
    assert breaker.acquire(20480) == pytest.approx(1.0)  # capped at the ceiling


def test_window_is_rolling() -> None:
    breaker = make(FakeClock(), window_size=10)
    for _ in range(10):
        breaker.record_success(0.100, 100)
    for _ in range(10):
        breaker.record_success(0.010, 100)
    assert breaker.snapshot(100).p99_ms == pytest.approx(10.0)
    assert breaker.acquire(100) == pytest.approx(0.015)
    assert breaker.snapshot(100).window_count == 10


def test_size_classes_have_separate_windows() -> None:
    breaker = make(FakeClock())
    for _ in range(20):
        breaker.record_success(0.002, 20480)
    assert breaker.acquire(20480) == pytest.approx(0.005)
    # A 64x larger request has not been seen yet: it gets the full ceiling.
    assert breaker.acquire(64 * 20480) == pytest.approx(1.0)


def test_timeouts_feed_the_window_so_a_slowing_server_is_followed_to_the_ceiling() -> None:
    """Known defect 8: the deadline must grow after timeouts, never lock a slow server out."""
    clock = FakeClock()
    breaker = make(clock, max_consecutive_failures=1000)
    for _ in range(100):
        breaker.record_success(0.002, 20480)
    deadlines = []
    for _ in range(15):
        timeout = breaker.acquire(20480)
        deadlines.append(timeout)
        breaker.record_failure(timeout, 20480, timeout_s=timeout)  # the server now hangs
    # Each timeout raises the next deadline by the multiplier, up to the ceiling.
    assert deadlines[:3] == pytest.approx([0.005, 0.0075, 0.01125])
    assert deadlines[-1] == pytest.approx(1.0)
    assert all(b >= a for a, b in itertools.pairwise(deadlines))
    # The server answers within the ceiling now, and succeeds.
    breaker.record_success(0.8, 20480)
    assert breaker.snapshot().total_timeouts == 15
    assert breaker.acquire(20480) == pytest.approx(1.0)


def test_opens_after_consecutive_failures_and_rejects_immediately() -> None:
    clock = FakeClock()
    breaker = make(clock)
    for _ in range(2):
        breaker.acquire(N)
        assert breaker.record_failure(0.001, N) is False
    assert breaker.snapshot().state is BreakerState.CLOSED
    breaker.acquire(N)
    assert breaker.record_failure(0.001, N) is True  # this one opened it
    assert breaker.snapshot().state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError, match="circuit open after 3 consecutive failures"):
        breaker.acquire(N)
    assert issubclass(CircuitOpenError, EntropyUnavailableError)
    assert breaker.snapshot().total_rejected == 1


def test_success_resets_the_consecutive_count() -> None:
    breaker = make(FakeClock())
    for _ in range(5):
        breaker.record_failure(0.001, N)
        breaker.record_failure(0.001, N)
        breaker.record_success(0.001, N)
    assert breaker.snapshot().state is BreakerState.CLOSED
    assert breaker.snapshot().total_failures == 10


def test_half_open_allows_one_probe_then_closes_on_success() -> None:
    clock = FakeClock()
    breaker = make(clock)
    for _ in range(3):
        breaker.record_failure(0.001, N)
    clock.now += 9.9
    with pytest.raises(CircuitOpenError):
        breaker.acquire(N)
    clock.now += 0.2
    assert breaker.snapshot().state is BreakerState.HALF_OPEN
    breaker.acquire(N)  # the probe
    with pytest.raises(CircuitOpenError, match="probe call is in flight"):
        breaker.acquire(N)
    assert breaker.record_success(0.001, N) is True  # the probe closed it
    assert breaker.snapshot().state is BreakerState.CLOSED
    breaker.acquire(N)
    assert breaker.record_success(0.001, N) is False


def test_failed_probe_reopens_for_another_recovery_window() -> None:
    clock = FakeClock()
    breaker = make(clock)
    for _ in range(3):
        breaker.record_failure(0.001, N)
    clock.now += 10.0
    breaker.acquire(N)
    breaker.record_failure(0.001, N)
    snap = breaker.snapshot()
    assert snap.state is BreakerState.OPEN
    assert snap.times_opened == 2
    clock.now += 5.0
    with pytest.raises(CircuitOpenError):
        breaker.acquire(N)
    clock.now += 5.0
    breaker.acquire(N)


def test_release_frees_an_abandoned_probe() -> None:
    clock = FakeClock()
    breaker = make(clock)
    for _ in range(3):
        breaker.record_failure(0.001, N)
    clock.now += 10.0
    breaker.acquire(N)
    breaker.release()
    breaker.acquire(N)  # a new probe is allowed


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
