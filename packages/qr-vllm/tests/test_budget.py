"""The entropy budget: an arm's demand over the last minute against its device's rate.

A clock moved by hand stands in for time; the warning is read from the log.
"""

from __future__ import annotations

import logging

import pytest

from qr_vllm._budget import MIN_SPAN_S, WARN_INTERVAL_S, WINDOW_S, EntropyBudget
from qr_vllm._metrics import EngineMetrics

LOGGER = "qr_vllm._budget"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def _run(budget: EntropyBudget, clock: Clock, arm: str, rate: float, device: int, s: float) -> None:
    """Fetch ``rate`` bytes per second from ``arm`` for ``s`` seconds, one fetch per 0.1 s."""
    for _ in range(round(s * 10)):
        clock.now += 0.1
        budget.add(arm, round(rate * 0.1), 0.05, device)


def test_demand_above_80_percent_warns_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    budget = EntropyBudget(clock)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        # Over the minimum span of 10 s, 90% of the rate passes 80% after about 9 s.
        _run(budget, clock, "qrng", 900_000, 1_000_000, 30)
        (first,) = _warnings(caplog)
        assert "arm 'qrng' asks for" in first
        assert "of its device's measured rate of 1000000 B/s (above 80%)" in first
        _run(budget, clock, "qrng", 900_000, 1_000_000, WARN_INTERVAL_S - 30)
        assert len(_warnings(caplog)) == 1, "rate-limited"
        _run(budget, clock, "qrng", 900_000, 1_000_000, 10)
        assert len(_warnings(caplog)) == 2
    (state,) = budget.snapshot().values()
    assert state.ratio == pytest.approx(0.9, rel=0.01)


def test_demand_below_the_threshold_and_an_unknown_rate_do_not_warn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    budget = EntropyBudget(clock)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        _run(budget, clock, "a", 700_000, 1_000_000, 70)
        assert budget.snapshot()["a"].ratio == pytest.approx(0.7, rel=0.01)
        _run(budget, clock, "b", 5_000_000, 0, 70)  # no device rate reported (a local source)
    assert _warnings(caplog) == []
    b = budget.snapshot()["b"]
    assert b.ratio is None
    assert b.demand_bytes_per_second == pytest.approx(5_000_000, rel=0.01)


def test_first_fetches_are_averaged_over_at_least_the_minimum_span() -> None:
    clock = Clock()
    budget = EntropyBudget(clock)
    # One fetch as fast as the device: its own rate is the device's, not a demand.
    clock.now += 0.02
    budget.add("qrng", 20_480, 0.02, 1_000_000)
    state = budget.snapshot()["qrng"]
    assert state.demand_bytes_per_second == pytest.approx(20_480 / MIN_SPAN_S)
    assert state.ratio is not None
    assert state.ratio < 0.01


def test_a_quiet_arm_decays_to_zero_after_the_window() -> None:
    clock = Clock()
    budget = EntropyBudget(clock)
    _run(budget, clock, "qrng", 900_000, 1_000_000, 20)
    clock.now += WINDOW_S + 1
    (state,) = budget.snapshot().values()
    assert state.demand_bytes_per_second == 0.0
    assert state.device_bytes_per_second == 1_000_000  # the last rate the server reported


def test_the_gauges_show_demand_device_rate_and_ratio() -> None:
    clock = Clock()
    metrics = EngineMetrics(None, EntropyBudget(clock))
    _run(metrics.budget, clock, "qrng", 850_000, 1_000_000, 20)
    get = metrics.registry.get_sample_value
    assert get("qr_entropy_device_bytes_per_second", {"arm": "qrng"}) == 1_000_000
    assert get("qr_entropy_demand_bytes_per_second", {"arm": "qrng"}) == pytest.approx(
        850_000, rel=0.01
    )
    ratio = get("qr_entropy_budget_ratio", {"arm": "qrng"})
    assert ratio is not None
    assert ratio > 0.8
