"""The engine's metrics endpoint: ``http://QR_METRICS_ADDRESS:(QR_METRICS_PORT + rank)/metrics``.

vLLM's own ``/metrics`` cannot carry these reliably: it is served by the API
server process from prometheus-client's global registry (or, with
``--api-server-count`` above 1, from the files of prometheus' multiprocess mode,
which only the API servers write), while the processor runs in the engine-core
or worker process of each data-parallel rank, whose metrics vLLM passes to its
front end only as its own fixed statistics. So each rank's sampling process
serves its own registry on a port of its own: rank ``r`` on ``QR_METRICS_PORT + r``.

One endpoint per address and port per process, shared by the processors of that
process (tests build several): it serves the registry of the newest processor
still open, and stops when the last one closes. A port another process holds is
a WARNING, and the engine runs without the endpoint.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.registry import Collector

from qr_vllm._errors import QRParamsError

__all__ = ["MetricsEndpoint", "serve_metrics", "serve_rank"]

logger = logging.getLogger(__name__)

_MAX_PORT = 65535

_lock = threading.Lock()
_served: dict[tuple[str, int], _Server] = {}


class _Newest(Collector):
    """Collects from the newest registry attached to one endpoint."""

    def __init__(self) -> None:
        self.registries: list[CollectorRegistry] = []

    def collect(self) -> Iterator[Any]:
        with _lock:
            registry = self.registries[-1] if self.registries else None
        if registry is None:
            return iter(())
        return iter(list(registry.collect()))


class _Server:
    """One running HTTP endpoint and the registries it serves."""

    def __init__(self, address: str, port: int) -> None:
        self.newest = _Newest()
        root = CollectorRegistry(auto_describe=False)
        root.register(self.newest)
        self.httpd, self.thread = start_http_server(port, addr=address, registry=root)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class MetricsEndpoint:
    """One processor's hold on its process's endpoint; :meth:`close` lets go of it."""

    def __init__(self, key: tuple[str, int], registry: CollectorRegistry) -> None:
        self._key = key
        self._registry = registry
        self._closed = False

    @property
    def url(self) -> str:
        """``http://ADDRESS:PORT/metrics`` (an IPv6 address in brackets)."""
        address, port = self._key
        host = f"[{address}]" if ":" in address else address
        return f"http://{host}:{port}/metrics"

    def close(self) -> None:
        """Stop serving this registry; the endpoint stops with its last one. Idempotent."""
        with _lock:
            if self._closed:
                return
            self._closed = True
            server = _served.get(self._key)
            if server is None:
                return
            server.newest.registries.remove(self._registry)
            if server.newest.registries:
                return
            del _served[self._key]
        server.stop()


def serve_metrics(registry: CollectorRegistry, address: str, port: int) -> MetricsEndpoint | None:
    """Serve ``registry`` at ``http://address:port/metrics`` from a daemon thread.

    Args:
        registry: What to serve.
        address: The interface (``QR_METRICS_ADDRESS``).
        port: The port (``QR_METRICS_PORT`` plus the data-parallel rank), ``> 0``.

    Returns:
        The hold on the endpoint, or ``None`` when the port cannot be bound
        (another process holds it, or the address is not this host's): logged
        as a WARNING; the engine runs without the endpoint.
    """
    key = (address, port)
    with _lock:
        server = _served.get(key)
        if server is None:
            try:
                server = _Server(address, port)
            except OSError as exc:
                logger.warning(
                    "qr metrics: cannot serve http://%s:%d/metrics (%s); this engine runs "
                    "without its metrics endpoint. Give QR_METRICS_PORT a free port (rank r "
                    "uses QR_METRICS_PORT + r), or 0 for no endpoint",
                    address,
                    port,
                    exc.strerror or exc,
                )
                return None
            _served[key] = server
        server.newest.registries.append(registry)
    endpoint = MetricsEndpoint(key, registry)
    logger.info("qr metrics are served at %s", endpoint.url)
    return endpoint


def serve_rank(
    registry: CollectorRegistry, address: str, base_port: int, rank: int
) -> MetricsEndpoint | None:
    """Serve data-parallel rank ``rank``'s registry on ``base_port + rank``.

    Args:
        registry: The rank's metrics.
        address: ``QR_METRICS_ADDRESS``.
        base_port: ``QR_METRICS_PORT``; 0: no endpoint.
        rank: The data-parallel rank (0 without data parallelism).

    Raises:
        QRParamsError: ``base_port + rank`` is above 65535 (names ``QR_METRICS_PORT``).
    """
    if base_port == 0:
        return None
    port = base_port + rank
    if port > _MAX_PORT:
        raise QRParamsError(
            f"QR_METRICS_PORT={base_port}: data-parallel rank {rank} would serve its metrics "
            f"on port {port}, above {_MAX_PORT}; allowed: a port such that QR_METRICS_PORT + "
            "the highest rank <= 65535, or 0 for no endpoint"
        )
    return serve_metrics(registry, address, port)
