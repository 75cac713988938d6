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

The step hands :meth:`EngineMetrics.observe` one tally per arm (numpy sums made by
the step); this module adds a few numbers per arm per step, through label children
it keeps, so the hot path pays no label lookup. The breaker and budget gauges are
read when Prometheus scrapes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
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
FETCH_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds of ``qr_entropy_fetch_seconds`` (500 us to 10 s)."""


def arm_label(arm: str | None) -> str:
    """The ``arm`` label of an arm (``None``: :data:`DEFAULT_ARM`)."""
    return DEFAULT_ARM if arm is None else arm


class EngineMetrics:
    """The metrics of one engine process (the data-parallel rank's source rank).

    Args:
        sources: The engine's sources, read at scrape time for the breaker gauge;
            ``None``: no breaker gauge.
        budget: The entropy budget the step feeds (a new one when ``None``).
    """

    def __init__(self, sources: ArmSources | None, budget: EntropyBudget | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.budget = budget or EntropyBudget()
        registry = self.registry
        self._tokens = Counter(
            "qr_tokens_sampled",
            "Tokens sampled with external entropy, by arm and the source that delivered "
            "their bytes.",
            ["arm", "source"],
            registry=registry,
        )
        self._fallback = Counter(
            "qr_fallback_tokens",
            "Tokens whose bytes came from the fallback source, by arm and reason "
            "(configuration: the server refuses this configuration; unavailable: any "
            "other failure).",
            ["arm", "reason"],
            registry=registry,
        )
        self._fetch = Histogram(
            "qr_entropy_fetch_seconds",
            "Duration of each entropy fetch, from the request to the bytes in hand "
            "(a fallback's includes the failed primary).",
            ["arm"],
            buckets=FETCH_BUCKETS,
            registry=registry,
        )
        self._z = Gauge(
            "qr_z_sum",
            "Sum of the z-scores of the tokens counted in qr_tokens_sampled_total; "
            "sum by (arm)(qr_z_sum) / sqrt(sum by (arm)(qr_tokens_sampled_total)) is "
            "the running Stouffer Z per arm.",
            ["arm"],
            registry=registry,
        )
        self._written = Counter(
            "qr_records_written", "Records the record file accepted.", registry=registry
        )
        self._failed = Counter(
            "qr_records_failed",
            "Records the record file refused (its writer failed).",
            registry=registry,
        )
        registry.register(_ScrapeTime(sources, self.budget))
        # Label children by key: the step pays no label lookup after the first time.
        self._children: dict[tuple[str, str | None, str], Any] = {}

    def observe(self, tallies: Sequence[ArmTally]) -> None:
        """Count one step: per arm, its tokens, z sum, fetch duration and demand."""
        child = self._child
        for t in tallies:
            fetch = t.fetch
            arm = arm_label(t.arm)
            child("tokens", arm, fetch.source).inc(t.tokens)
            child("z", arm, None).inc(t.z_sum)
            if fetch.fallback:
                reason = (
                    CONFIGURATION_REASON
                    if fetch.fallback_reason == CONFIGURATION_REASON
                    else UNAVAILABLE_REASON
                )
                child("fallback", arm, reason).inc(t.tokens)
            fetch_s = max(0.0, (fetch.received_ns - fetch.requested_ns) / 1e9)
            child("fetch", arm, None).observe(fetch_s)
            # A fallback's rate is not the arm's device: keep the device's last one.
            rate = None if fetch.fallback else fetch.device_bytes_per_second
            self.budget.add(arm, len(fetch.data), fetch_s, rate)

    def records_written(self, count: int) -> None:
        """The record file accepted ``count`` records."""
        self._written.inc(count)

    def records_failed(self, count: int) -> None:
        """The record file refused ``count`` records."""
        self._failed.inc(count)

    def _child(self, kind: str, arm: str, extra: str | None) -> Any:
        key = (kind, extra, arm)
        found = self._children.get(key)
        if found is None:
            metric: Any = {
                "tokens": self._tokens,
                "z": self._z,
                "fallback": self._fallback,
                "fetch": self._fetch,
            }[kind]
            found = metric.labels(arm) if extra is None else metric.labels(arm, extra)
            self._children[key] = found
        return found


class _ScrapeTime(Collector):
    """The gauges read when Prometheus scrapes: breaker state and the budget."""

    def __init__(self, sources: ArmSources | None, budget: EntropyBudget) -> None:
        self._sources = sources
        self._budget = budget

    def describe(self) -> Iterator[Any]:
        return iter(self._families())

    def collect(self) -> Iterator[Any]:
        families = self._families()
        if self._sources is not None:
            breaker = families[0]
            for arm in (None, *self._sources.names):
                breaker.add_metric([arm_label(arm)], 1.0 if self._open(arm) else 0.0)
        demand, device, ratio = families[1:]
        for arm, budget in sorted(self._budget.snapshot().items()):
            demand.add_metric([arm], budget.demand_bytes_per_second)
            if budget.device_bytes_per_second is not None:
                device.add_metric([arm], float(budget.device_bytes_per_second))
            if budget.ratio is not None:
                ratio.add_metric([arm], budget.ratio)
        return iter(families)

    @staticmethod
    def _families() -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                "qr_breaker_open",
                "1 while the arm's circuit breaker is open (its primary source is skipped).",
                labels=["arm"],
            ),
            GaugeMetricFamily(
                "qr_entropy_demand_bytes_per_second",
                "Entropy bytes per second this engine fetched for the arm over the last "
                "minute (at least 10 s).",
                labels=["arm"],
            ),
            GaugeMetricFamily(
                "qr_entropy_device_bytes_per_second",
                "The arm's device rate, as its entropy server last reported it.",
                labels=["arm"],
            ),
            GaugeMetricFamily(
                "qr_entropy_budget_ratio",
                "Demand over the device rate; above 0.8 the engine logs a WARNING.",
                labels=["arm"],
            ),
        ]

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
