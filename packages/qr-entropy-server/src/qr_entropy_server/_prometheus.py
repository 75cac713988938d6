"""``--metrics-port``: the server's Prometheus endpoint (the ``metrics`` extra).

Imported only when the flag is given, so that the server runs without
prometheus-client. Nothing here runs per request: the servicer counts in plain
integers (:class:`~qr_entropy_server._stats.ServerStats`) and the collector
reads them when Prometheus scrapes, on the endpoint's own thread. Each server
has its own registry (two servers in one process do not mix), with the
process's CPU, memory and file descriptors beside its own metrics:

- ``qr_entropy_server_requests_total{method,code}``: requests answered (``OK``)
  and calls ended with another status, by method;
- ``qr_entropy_server_bytes_total``: payload bytes served;
- ``qr_entropy_server_generate_seconds``: histogram of device reads (the reads
  that served requests and those of the self-test; not the health probes);
- ``qr_entropy_server_healthy``: 1 while health is SERVING;
- ``qr_entropy_server_streams``: open ``StreamEntropy`` calls;
- ``qr_entropy_server_device_bytes_per_second``: the device's measured rate (0: not yet);
- ``qr_entropy_server_health_test_failures_total{test}``: blocks refused by a health test;
- ``qr_entropy_server_buffered_bytes``: bytes held for responses not yet sent;
- ``qr_entropy_server_info{device_id,version}``: always 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import accumulate

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from qr_entropy_server.__about__ import __version__
from qr_entropy_server._errors import ServerConfigError
from qr_entropy_server._stats import READ_BUCKETS_S, ServerView

__all__ = ["MetricsEndpoint"]


class _ServerCollector(Collector):
    def __init__(self, view: ServerView) -> None:
        self._view = view

    def collect(self) -> Iterator[Metric]:
        view = self._view
        stats = view.stats
        requests = CounterMetricFamily(
            "qr_entropy_server_requests",
            "Requests answered (code OK) and calls ended with another status, by method.",
            labels=["method", "code"],
        )
        for (method, code), count in dict(stats.requests).items():
            if count or code == "OK":
                requests.add_metric([method, code], count)
        yield requests
        yield CounterMetricFamily(
            "qr_entropy_server_bytes", "Payload bytes served.", value=stats.bytes_served
        )
        counts = list(stats.read_counts)
        cumulative = list(accumulate(counts))
        buckets = [(f"{b:g}", c) for b, c in zip(READ_BUCKETS_S, cumulative, strict=False)]
        yield HistogramMetricFamily(
            "qr_entropy_server_generate_seconds",
            "Duration of each device read (backend generate).",
            buckets=[*buckets, ("+Inf", cumulative[-1])],
            sum_value=stats.read_ns / 1e9,
        )
        yield GaugeMetricFamily(
            "qr_entropy_server_healthy", "1 while health is SERVING.", value=int(view.healthy())
        )
        yield GaugeMetricFamily(
            "qr_entropy_server_streams", "Open StreamEntropy calls.", value=view.streams()
        )
        yield GaugeMetricFamily(
            "qr_entropy_server_device_bytes_per_second",
            "The device's measured sustained rate (self-test, then served reads); 0: not yet.",
            value=stats.bytes_per_second,
        )
        failures = CounterMetricFamily(
            "qr_entropy_server_health_test_failures",
            "Blocks refused by a continuous health test, by test.",
            labels=["test"],
        )
        for test, count in dict(stats.health_test_failures).items():
            failures.add_metric([test], count)
        yield failures
        yield GaugeMetricFamily(
            "qr_entropy_server_buffered_bytes",
            "Payload bytes held for responses not yet sent (--max-buffered-bytes).",
            value=view.buffered(),
        )
        info = GaugeMetricFamily(
            "qr_entropy_server_info",
            "The server's device and version (always 1).",
            labels=["device_id", "version"],
        )
        info.add_metric([view.device_id, __version__], 1)
        yield info


class MetricsEndpoint:
    """An HTTP endpoint serving ``/metrics`` from its own daemon thread.

    Args:
        address: Interface to bind (``--metrics-address``).
        port: TCP port (``--metrics-port``; 0 picks a free one).
        view: The server state to report.

    Raises:
        ServerConfigError: the address and port cannot be bound.
    """

    def __init__(self, address: str, port: int, view: ServerView) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_ServerCollector(view))
        ProcessCollector(registry=registry)
        try:
            self._httpd, self._thread = start_http_server(port, address, registry)
        except OSError as exc:
            raise ServerConfigError(
                f"--metrics-address {address} --metrics-port {port} cannot be bound: "
                f"{exc.strerror or exc}"
            ) from exc
        self.port: int = self._httpd.server_port
        host = f"[{address}]" if ":" in address else address
        self.url = f"http://{host}:{self.port}/metrics"
        """Where Prometheus scrapes."""

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5.0)
