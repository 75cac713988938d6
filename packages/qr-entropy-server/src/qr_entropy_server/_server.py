"""Server assembly and lifecycle: ports, TLS, health, reflection, shutdown.

The gRPC server is a ``grpc.aio`` server on one event loop that runs in a
daemon thread shared by every server of the process; the caller's thread
(the main thread of the command) only starts, waits and stops.

While health is NOT_SERVING, a backend that declares ``reopens = True`` (the
built-in device backends) is probed every :data:`REPROBE_S` seconds, so that a
replugged device returns to SERVING without a client call.

Once health is first SERVING the server measures its device's rate with a short
self-test (:meth:`EntropyServicer.self_test`); served reads keep it up to date.
With ``--metrics-port`` it serves Prometheus metrics
(:mod:`qr_entropy_server._prometheus`, the ``metrics`` extra) from its own thread.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from types import FrameType
from typing import TYPE_CHECKING

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from qr_entropy_server._auth import ApiKeyInterceptor
from qr_entropy_server._backends import EntropyBackend, close_backend, device_id_of
from qr_entropy_server._budget import pin_mmap_threshold
from qr_entropy_server._errors import ServerConfigError
from qr_entropy_server._extras import add_reflection, metrics_endpoint_class
from qr_entropy_server._health_tests import ContinuousTests, cutoffs
from qr_entropy_server._loop import run_on_loop as _run
from qr_entropy_server._options import (
    DEFAULT_ADDRESS,
    DEFAULT_MAX_BYTES,
    ServerOptions,
    beyond_this_host,
    server_credentials,
    validate,
)
from qr_entropy_server._pool import BackendPool
from qr_entropy_server._ratelog import RateLimitedLog, quiet_unsent_responses
from qr_entropy_server._service import SERVICE_NAME, EntropyServicer, ServiceLimits
from qr_entropy_server._stats import ServerView
from qr_entropy_server._unix import UnixListener, socket_path

if TYPE_CHECKING:
    from qr_entropy_server._prometheus import MetricsEndpoint

__all__ = ["DEFAULT_ADDRESS", "DEFAULT_MAX_BYTES", "REPROBE_S", "EntropyServer", "ServerOptions"]

logger = logging.getLogger(__name__)

# Room for the response's other fields and framing on top of the payload.
_MESSAGE_OVERHEAD = 4096
# close() gets what is left of the grace period, but never less than this.
_MIN_CLOSE_S = 0.5
REPROBE_S = 0.5
"""Seconds between probes of a ``reopens`` backend while health is NOT_SERVING."""


class EntropyServer:
    """A running entropy server: ``start()``, then ``serve_until_signal()`` or ``stop()``.

    Args:
        backend: Generator of the bytes; closed by ``stop()``.
        options: Listening address, limits, credentials.

    Raises:
        ServerConfigError: invalid limits, unusable TLS files, the address
            cannot be bound, a live server on the unix socket, or reflection
            or metrics requested without their extra installed.
    """

    def __init__(self, backend: EntropyBackend, options: ServerOptions) -> None:
        validate(options)
        self.options = options
        self._backend = backend
        credentials = server_credentials(options)
        self.tls = credentials is not None
        path = socket_path(options.address)
        self._unix = None if path is None else UnixListener(path, options.socket_mode)
        if self._unix is not None:
            self._unix.check_free()
        self._warn = RateLimitedLog(logger)
        quiet_unsent_responses(self._warn)
        workers = options.max_workers if getattr(backend, "thread_safe", False) else 1
        # A backend whose output is a DRBG's (urandom) declares continuous_tests = False.
        tests = None
        if getattr(backend, "continuous_tests", True) is not False:
            tests = ContinuousTests(cutoffs(options.min_entropy, options.max_bytes))
            logger.info(
                "health tests at min-entropy %g bits/byte: repetition count cutoff %d, "
                "adaptive proportion cutoff %d/511; false alarm <= 2^%.1f per block",
                float(tests.limits.min_entropy),
                tests.limits.repetition,
                tests.limits.proportion,
                tests.limits.false_alarm_log2,
            )
        self._reopens = getattr(backend, "reopens", False) is True
        self._reprobe: asyncio.Task[None] | None = None
        pin_mmap_threshold()
        self._pool = BackendPool(backend, workers, tests)
        limits = ServiceLimits(
            max_bytes=options.max_bytes,
            max_streams=options.max_streams,
            stream_idle_timeout_s=options.stream_idle_timeout_s,
            backend_timeout_s=options.backend_timeout_s,
            max_buffered_bytes=options.max_buffered_bytes,
        )
        self._servicer = EntropyServicer(
            self._pool, device_id_of(backend), limits, self._warn, self._on_backend_health
        )
        self._healthy: bool | None = None
        self._health_tasks: set[asyncio.Task[None]] = set()
        self._stopped = threading.Event()
        self.metrics: MetricsEndpoint | None = None
        """The Prometheus endpoint while serving with ``--metrics-port``, else None."""
        if options.metrics_port is not None:
            metrics_endpoint_class()  # the extra is missing: refuse before anything starts
        try:
            port = _run(self._build(credentials))
        except BaseException:
            self._pool.shutdown()
            raise
        if self._unix is not None:
            self.address = options.address
        else:
            host = options.address.rsplit(":", 1)[0]
            self.address = f"{host}:{port}"

    async def _build(self, credentials: grpc.ServerCredentials | None) -> int:
        options = self.options
        interceptors = []
        if options.api_key is not None:
            interceptors.append(
                ApiKeyInterceptor(
                    options.api_key, options.api_key_header, self._servicer.stats.refused
                )
            )
        self._server = aio.server(
            interceptors=interceptors,
            options=[
                # A second server on the same port must fail, not share it.
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", 64 * 1024),
                ("grpc.max_send_message_length", options.max_bytes + _MESSAGE_OVERHEAD),
            ],
        )
        self._server.add_generic_rpc_handlers((self._servicer.handler(),))
        self._health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        if options.reflection:
            add_reflection(self._server, SERVICE_NAME)
        bind = options.address if self._unix is None else f"unix://{self._unix.private}"
        try:
            if credentials is None:
                return self._server.add_insecure_port(bind)
            return self._server.add_secure_port(bind, credentials)
        except RuntimeError as exc:
            raise ServerConfigError(f"cannot listen on {options.address!r}: {exc}") from exc

    def _on_backend_health(self, ok: bool) -> None:
        """Called on the loop after each ``generate``: flip health when the outcome changes."""
        if ok == self._healthy:
            return
        if ok and self._healthy is False:
            logger.warning("backend answers again: health SERVING")
        elif not ok:
            logger.warning("backend failing: health NOT_SERVING until a generate succeeds")
        self._healthy = ok
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._publish_health())
        self._health_tasks.add(task)
        task.add_done_callback(self._health_tasks.discard)
        if not ok and self._reopens and (self._reprobe is None or self._reprobe.done()):
            self._reprobe = loop.create_task(self._probe_until_serving())

    async def _probe_until_serving(self) -> None:
        """Probe a ``reopens`` backend until health is SERVING again (or the server stops)."""
        while self._healthy is False and not self._stopped.is_set():
            await asyncio.sleep(REPROBE_S)
            if not self._stopped.is_set() and await self._servicer.probe():
                await self._measure()

    async def _measure(self) -> None:
        """Run the self-test once, the first time the backend answers."""
        if self._servicer.stats.bytes_per_second:
            return
        rate = await self._servicer.self_test(
            self.options.backend_timeout_s, self.options.max_bytes
        )
        logger.info("device rate at start: %.0f bytes/s (self-test)", rate)

    async def _publish_health(self) -> None:
        # Reads the latest outcome when it runs, so out-of-order tasks still end right.
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self._healthy
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_NAME):
            await self._health.set(name, status)

    async def _start(self) -> None:
        await self._server.start()
        if self._unix is not None:
            try:
                self._unix.publish()
            except BaseException:
                await self._server.stop(0)
                raise
        # Health starts NOT_SERVING and turns SERVING once the backend has answered.
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if await self._servicer.probe():
            await self._measure()
        # Published before readiness is reported, so the first health check sees it.
        await asyncio.gather(*self._health_tasks)

    def start(self) -> None:
        """Start serving; health turns SERVING once a first ``generate(1)`` has succeeded.

        Raises:
            ServerConfigError: another server took the unix socket path meanwhile.
        """
        options = self.options
        try:
            if options.metrics_port is not None:
                self.metrics = metrics_endpoint_class()(
                    options.metrics_address, options.metrics_port, self._view()
                )
            _run(self._start())
        except BaseException:
            self._close_metrics()
            self._pool.shutdown()
            raise
        logger.info("serving %s on %s (tls=%s)", SERVICE_NAME, self.address, self.tls)
        if self.metrics is not None:
            logger.info("metrics on %s", self.metrics.url)
        if beyond_this_host(self.address) and self.options.api_key is None and not self.tls:
            logger.warning(
                "listening on %s, reachable beyond this host, with neither an API key nor "
                "TLS: anyone who reaches the port gets entropy; set QR_SERVER_API_KEY "
                "or --tls-cert/--tls-key, or bind 127.0.0.1",
                self.address,
            )

    async def _stop(self, grace_s: float) -> None:
        if self._reprobe is not None:
            self._reprobe.cancel()
        self._servicer.budget.close()
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace_s)

    def stop(self, grace_s: float | None = None) -> None:
        """Refuse new calls, let in-flight calls finish within the grace period, close the backend.

        Calls still running after the grace period (a hung backend) are
        cancelled; ``close()`` then gets what is left of the grace period
        (at least 0.5 s). Neither can keep the process from exiting.
        """
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.options.grace_s if grace_s is None else grace_s
        deadline = time.monotonic() + grace
        try:
            _run(self._stop(grace), grace + 5.0)
        except FutureTimeout:
            logger.warning("gRPC server did not stop within %.1f s", grace)
        if self._unix is not None:
            self._unix.remove()
        self._close_metrics()
        self._pool.shutdown()
        close_backend(self._backend, max(deadline - time.monotonic(), _MIN_CLOSE_S))
        self._warn.flush()
        logger.info("stopped")

    def _view(self) -> ServerView:
        servicer = self._servicer
        return ServerView(
            stats=servicer.stats,
            healthy=lambda: self._healthy is True and not self._stopped.is_set(),
            streams=lambda: servicer.open_streams,
            buffered=lambda: servicer.budget.held,
            device_id=device_id_of(self._backend),
        )

    def _close_metrics(self) -> None:
        metrics, self.metrics = self.metrics, None
        if metrics is not None:
            metrics.close()

    def serve_until_signal(self, ready: Callable[[str], None] | None = None) -> None:
        """Start, report readiness, block until SIGTERM or SIGINT, then stop gracefully.

        Signal handlers are installed before the server starts, so a signal
        that arrives right after readiness is reported still drains calls.
        Main thread only.

        Args:
            ready: Called with the bound address once serving.
        """
        received = threading.Event()

        def _handler(signum: int, frame: FrameType | None) -> None:
            logger.info("signal %d: draining in-flight calls", signum)
            received.set()

        previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            if ready is not None:
                ready(self.address)
            while not received.wait(0.5):
                pass
        finally:
            self.stop()
            for sig, old in previous.items():
                signal.signal(sig, old)
