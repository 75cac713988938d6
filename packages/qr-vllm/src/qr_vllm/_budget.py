"""The entropy budget: each arm's demand over the last minute against its device's rate.

A device makes entropy at a finite rate (the server measures it and reports it in
every response: ``EntropyFetch.device_bytes_per_second``). An engine that asks an arm
for more than that rate waits for the device on every step; one that asks for most
of it has no head-room left. :class:`EntropyBudget` keeps, per arm, the bytes
fetched in the last :data:`WINDOW_S` seconds (one entry per step, summed as they
come and go) and the device's latest rate; their ratio above :data:`WARN_RATIO`
logs a WARNING, at most once per :data:`WARN_INTERVAL_S` per arm.

The demand is the bytes of the window over its span: the last minute, or, in the
arm's first minute, the time since its first fetch began, but never less than
:data:`MIN_SPAN_S` (so that the first fetches, each as fast as the device, do not
read as a demand equal to the device's rate). The figures are this engine's (this
data-parallel rank's); engines that share one device add up:
``sum by (arm)(qr_entropy_demand_bytes_per_second)``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["MIN_SPAN_S", "WARN_INTERVAL_S", "WARN_RATIO", "WINDOW_S", "ArmBudget", "EntropyBudget"]

logger = logging.getLogger(__name__)

WINDOW_S = 60.0
"""The demand is measured over this many seconds."""
MIN_SPAN_S = 10.0
"""The shortest span a demand is averaged over (an arm's first seconds)."""
WARN_RATIO = 0.8
"""Demand above this share of the device's rate logs a WARNING and sets the gauge."""
WARN_INTERVAL_S = 60.0
"""While an arm stays above :data:`WARN_RATIO`, its WARNING repeats at most this often."""


@dataclass(frozen=True, slots=True)
class ArmBudget:
    """One arm's budget at one moment."""

    demand_bytes_per_second: float
    """Bytes per second this engine fetched for the arm (see the module docstring)."""
    device_bytes_per_second: int | None
    """The arm's device rate as its server last reported it; ``None`` until reported."""

    @property
    def ratio(self) -> float | None:
        """Demand over the device's rate; ``None`` while the rate is unknown."""
        if not self.device_bytes_per_second:
            return None
        return self.demand_bytes_per_second / self.device_bytes_per_second


class _Window:
    """One arm's fetches of the last :data:`WINDOW_S` seconds: (monotonic end, bytes)."""

    __slots__ = ("device", "entries", "last_warned", "started", "total")

    def __init__(self) -> None:
        self.entries: collections.deque[tuple[float, int]] = collections.deque()
        self.total = 0
        self.started = 0.0
        self.device: int | None = None
        self.last_warned: float | None = None

    def add(self, now: float, nbytes: int, fetch_s: float) -> None:
        if not self.entries:
            self.started = now - fetch_s  # the window opens when this fetch began
        self.entries.append((now, nbytes))
        self.total += nbytes

    def demand(self, now: float) -> float:
        entries = self.entries
        cut = now - WINDOW_S
        while entries and entries[0][0] < cut:
            self.total -= entries.popleft()[1]
        if not entries:
            return 0.0
        span = max(MIN_SPAN_S, min(WINDOW_S, now - self.started))
        return self.total / span


class EntropyBudget:
    """Each arm's demand against its device's rate; warns above :data:`WARN_RATIO`.

    Thread-safe: the step adds, a scrape reads.

    Args:
        clock: Monotonic clock in seconds (tests pass one they move).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._arms: dict[str, _Window] = {}

    def add(self, arm: str, nbytes: int, fetch_s: float, device_rate: int | None) -> None:
        """Count one fetch of ``arm``, and warn when its demand is over budget.

        Args:
            arm: The arm's label (``"default"`` for the default source).
            nbytes: The bytes fetched.
            fetch_s: How long the fetch took.
            device_rate: The device rate the fetch reported (``None``: keep the last).
        """
        now = self._clock()
        with self._lock:
            window = self._arms.get(arm)
            if window is None:
                window = self._arms[arm] = _Window()
            window.add(now, nbytes, fetch_s)
            if device_rate:
                window.device = device_rate
            device = window.device
            if not device:
                return
            demand = window.demand(now)
            if demand <= WARN_RATIO * device:
                return
            last = window.last_warned
            if last is not None and now - last < WARN_INTERVAL_S:
                return
            window.last_warned = now
        logger.warning(
            "qr entropy budget: arm %r asks for %.0f B/s, %.0f%% of its device's measured "
            "rate of %d B/s (above %.0f%%): its steps wait for the device. Give the arm a "
            "faster or a second device, lower QR_SAMPLE_COUNT, or send it fewer requests "
            "(metric qr_entropy_budget_ratio)",
            arm,
            demand,
            100.0 * demand / device,
            device,
            100.0 * WARN_RATIO,
        )

    def snapshot(self) -> dict[str, ArmBudget]:
        """Every arm seen so far and its budget now (a quiet arm's demand decays to 0)."""
        now = self._clock()
        with self._lock:
            return {
                arm: ArmBudget(window.demand(now), window.device)
                for arm, window in self._arms.items()
            }
