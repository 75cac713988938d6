"""The engine's Prometheus metrics: what each step sampled, from where, and at what cost.

:class:`EngineMetrics` owns a registry of its own (never prometheus-client's global
one, which vLLM's front end serves on its ``/metrics``) with:

========================================  =========  ==================================
``qr_tokens_sampled_total{arm,source}``   counter    tokens sampled, by the source that
                                                     delivered their bytes
``qr_fallback_tokens_total{arm,reason}``  counter    of those, tokens from a fallback;
                                                     reason ``configuration`` or
                                                     ``unavailable``
``qr_entropy_fetch_seconds{arm}``         histogram  duration of each fetch (request to
                                                     bytes in hand, fallback included)
``qr_z_sum{arm}``                         gauge      sum of z over the same tokens as
                                                     ``qr_tokens_sampled_total``
``qr_records_written_total``              counter    records the file sink accepted
``qr_records_failed_total``               counter    records it refused (writer failed)
``qr_breaker_open{arm}``                  gauge      1 while the arm's circuit is open
``qr_entropy_demand_bytes_per_second``    gauge      the arm's demand, last minute
``qr_entropy_device_bytes_per_second``    gauge      its device's rate (server-reported)
``qr_entropy_budget_ratio{arm}``          gauge      demand / device rate
========================================  =========  ==================================

``arm`` is the arm's name, or ``default`` for requests that name none. A running
Stouffer Z per arm is ``sum by (arm)(qr_z_sum) / sqrt(sum by (arm)(qr_tokens_sampled_total))``.

Nothing is done per step for the endpoint: the step hands :meth:`EngineMetrics.observe`
one tally per arm (numpy sums made by the step), which adds them to plain numbers
under one lock; a collector turns them into metric families when Prometheus
scrapes, and reads the breaker state and the budget then.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from qr_entropy import CONFIGURATION_REASON, ArmSources
from qr_vllm._budget import EntropyBudget
from qr_vllm.step import ArmTally

__all__ = ["DEFAULT_ARM", "FETCH_BUCKETS", "UNAVAILABLE_REASON", "EngineMetrics", "arm_label"]

logger = logging.getLogger(__name__)

DEFAULT_ARM = "default"
"""The ``arm`` label of requests that name no arm (the default source)."""
UNAVAILABLE_REASON = "unavailable"
"""The ``reason`` label of a fallback for any reason but a refused configuration."""
FETCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5, 10)
"""Upper bounds of ``qr_entropy_fetch_seconds`` (500 us to 10 s; then ``+Inf``)."""
_BOUNDS = (*(str(float(b)) for b in FETCH_BUCKETS), "+Inf")  # the le labels


def arm_label(arm: str | None) -> str:
    """The ``arm`` label of an arm (``None``: :data:`DEFAULT_ARM`)."""
    return DEFAULT_ARM if arm is None else arm


class _Arm:
    """One arm's running totals."""

    __slots__ = ("buckets", "fallback", "fetch_sum", "tokens", "z_sum")

    def __init__(self) -> None:
        self.tokens: dict[str, int] = {}  # by source
        self.fallback: dict[str, int] = {}  # by reason
        self.z_sum = 0.0
        self.buckets = [0] * (len(FETCH_BUCKETS) + 1)  # per bucket, the last is +Inf
        self.fetch_sum = 0.0


class EngineMetrics:
    """The metrics of one engine process (the data-parallel rank's source rank).

    Args:
        sources: The engine's sources, read at scrape time for the breaker gauge;
            ``None``: no breaker gauge.
        budget: The entropy budget the step feeds (a new one when ``None``).
    """

    def __init__(self, sources: ArmSources | None, budget: EntropyBudget | None = None) -> None:
        self.budget = budget or EntropyBudget()
        self._sources = sources
        self._lock = threading.Lock()
        self._arms: dict[str, _Arm] = {}
        self._written = 0
        self._failed = 0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    def observe(self, tallies: Sequence[ArmTally]) -> None:
        """Count one step: per arm, its tokens, z sum, fetch duration and demand."""
        with self._lock:
            for t in tallies:
                fetch = t.fetch
                arm = DEFAULT_ARM if t.arm is None else t.arm
                totals = self._arms.get(arm)
                if totals is None:
                    totals = self._arms[arm] = _Arm()
                tokens = totals.tokens
                tokens[fetch.source] = tokens.get(fetch.source, 0) + t.tokens
                totals.z_sum += t.z_sum
                if fetch.fallback:
                    reason = (
                        CONFIGURATION_REASON
                        if fetch.fallback_reason == CONFIGURATION_REASON
                        else UNAVAILABLE_REASON
                    )
                    totals.fallback[reason] = totals.fallback.get(reason, 0) + t.tokens
                fetch_s = max(0.0, (fetch.received_ns - fetch.requested_ns) / 1e9)
                totals.buckets[bisect.bisect_left(FETCH_BUCKETS, fetch_s)] += 1
                totals.fetch_sum += fetch_s
        for t in tallies:
            fetch = t.fetch
            # A fallback's rate is not the arm's device: keep the device's last one.
            rate = None if fetch.fallback else fetch.device_bytes_per_second
            self.budget.add(
                arm_label(t.arm),
                len(fetch.data),
                max(0.0, (fetch.received_ns - fetch.requested_ns) / 1e9),
                rate,
            )

    def records_written(self, count: int) -> None:
        """The record file accepted ``count`` records."""
        with self._lock:
            self._written += count

    def records_failed(self, count: int) -> None:
        """The record file refused ``count`` records."""
        with self._lock:
            self._failed += count

    def families(self) -> list[Any]:
        """Every metric family as it stands now (what a scrape returns)."""
        tokens = CounterMetricFamily(
            "qr_tokens_sampled",
            "Tokens sampled with external entropy, by arm and the source that delivered "
            "their bytes.",
            labels=["arm", "source"],
        )
        fallback = CounterMetricFamily(
            "qr_fallback_tokens",
            "Tokens whose bytes came from the fallback source, by arm and reason "
            "(configuration: the server refuses this configuration; unavailable: any "
            "other failure).",
            labels=["arm", "reason"],
        )
        fetch = HistogramMetricFamily(
            "qr_entropy_fetch_seconds",
            "Duration of each entropy fetch, from the request to the bytes in hand "
            "(a fallback's includes the failed primary).",
            labels=["arm"],
        )
        z = GaugeMetricFamily(
            "qr_z_sum",
            "Sum of the z-scores of the tokens counted in qr_tokens_sampled_total; "
            "sum by (arm)(qr_z_sum) / sqrt(sum by (arm)(qr_tokens_sampled_total)) is "
            "the running Stouffer Z per arm.",
            labels=["arm"],
        )
        with self._lock:
            for arm, totals in sorted(self._arms.items()):
                for source, count in sorted(totals.tokens.items()):
                    tokens.add_metric([arm, source], count)
                for reason, count in sorted(totals.fallback.items()):
                    fallback.add_metric([arm, reason], count)
                z.add_metric([arm], totals.z_sum)
                cumulative, buckets = 0, []
                for bound, count in zip(_BOUNDS, totals.buckets, strict=True):
                    cumulative += count
                    buckets.append((bound, cumulative))
                fetch.add_metric([arm], buckets, totals.fetch_sum)
            written, failed = self._written, self._failed
        records = [
            CounterMetricFamily(
                "qr_records_written", "Records the record file accepted.", value=written
            ),
            CounterMetricFamily(
                "qr_records_failed",
                "Records the record file refused (its writer failed).",
                value=failed,
            ),
        ]
        return [tokens, fallback, fetch, z, *records, *self._gauges()]

    def _gauges(self) -> list[GaugeMetricFamily]:
        """The breaker state and the budget, read now."""
        breaker = GaugeMetricFamily(
            "qr_breaker_open",
            "1 while the arm's circuit breaker is open (its primary source is skipped).",
            labels=["arm"],
        )
        demand = GaugeMetricFamily(
            "qr_entropy_demand_bytes_per_second",
            "Entropy bytes per second this engine fetched for the arm over the last "
            "minute (at least 10 s).",
            labels=["arm"],
        )
        device = GaugeMetricFamily(
            "qr_entropy_device_bytes_per_second",
            "The arm's device rate, as its entropy server last reported it.",
            labels=["arm"],
        )
        ratio = GaugeMetricFamily(
            "qr_entropy_budget_ratio",
            "Demand over the device rate; above 0.8 the engine logs a WARNING.",
            labels=["arm"],
        )
        if self._sources is not None:
            for arm in (None, *self._sources.names):
                breaker.add_metric([arm_label(arm)], 1.0 if self._open(arm) else 0.0)
        for arm, budget in sorted(self.budget.snapshot().items()):
            demand.add_metric([arm], budget.demand_bytes_per_second)
            if budget.device_bytes_per_second is not None:
                device.add_metric([arm], float(budget.device_bytes_per_second))
            if budget.ratio is not None:
                ratio.add_metric([arm], budget.ratio)
        return [breaker, demand, device, ratio]

    def _open(self, arm: str | None) -> bool:
        """Whether the arm's primary source reports an open circuit (health_check)."""
        assert self._sources is not None
        try:
            health = self._sources.source(arm).health_check()
        except Exception:  # a scrape never fails for one source's report
            logger.debug("health_check of arm %r failed", arm, exc_info=True)
            return False
        primary = health.get("primary")
        report = primary if isinstance(primary, dict) else health
        return report.get("circuit_state") == "open"


class _Collector(Collector):
    """Hands a scrape the metric families of one :class:`EngineMetrics`."""

    def __init__(self, metrics: EngineMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        return iter(self._metrics.families())
