"""Server assembly and lifecycle: ports, TLS, health, reflection, shutdown."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from qr_entropy_server._auth import ApiKeyInterceptor
from qr_entropy_server._backends import EntropyBackend
from qr_entropy_server._errors import ServerConfigError
from qr_entropy_server._service import EntropyServicer
from qr_entropy_server.proto import entropy_service_pb2 as pb2
from qr_entropy_server.proto import entropy_service_pb2_grpc as pb2_grpc

__all__ = ["DEFAULT_MAX_BYTES", "EntropyServer", "ServerOptions"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 1 << 20
SERVICE_NAME: str = pb2.DESCRIPTOR.services_by_name["EntropyService"].full_name
# Room for the response's other fields and framing on top of the payload.
_MESSAGE_OVERHEAD = 4096


@dataclass(frozen=True)
class ServerOptions:
    """Everything the command line configures."""

    address: str = "[::]:50051"
    """``host:port`` or ``unix:///path``; port 0 picks a free port."""
    max_workers: int = 16
    """Worker threads; each open stream holds one for its lifetime."""
    max_bytes: int = DEFAULT_MAX_BYTES
    """Largest ``bytes_needed`` per request; above it RESOURCE_EXHAUSTED."""
    api_key: str | None = None
    """Required value of the ``api_key_header`` metadata; None: no check."""
    api_key_header: str = "api-key"
    """Metadata header that carries the API key."""
    tls_cert: Path | None = None
    """PEM certificate chain; with ``tls_key`` the port serves TLS only."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert``."""
    tls_client_ca: Path | None = None
    """PEM CA bundle; when set, clients must present a certificate it signed (mTLS)."""
    reflection: bool = False
    """Serve gRPC server reflection (needs the ``reflection`` extra)."""
    grace_s: float = 5.0
    """How long shutdown waits for in-flight calls to finish."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ServerConfigError(f"{what} {str(path)!r} cannot be read: {exc.strerror}") from exc


def _credentials(options: ServerOptions) -> grpc.ServerCredentials | None:
    if options.tls_cert is None and options.tls_key is None:
        if options.tls_client_ca is not None:
            raise ServerConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if options.tls_cert is None or options.tls_key is None:
        raise ServerConfigError("--tls-cert and --tls-key must be given together")
    key = _read(options.tls_key, "--tls-key")
    cert = _read(options.tls_cert, "--tls-cert")
    client_ca = None
    if options.tls_client_ca is not None:
        client_ca = _read(options.tls_client_ca, "--tls-client-ca")
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


class EntropyServer:
    """A running entropy server: ``start()``, then ``wait()`` or ``stop()``.

    Args:
        backend: Generator of the bytes; closed by ``stop()``.
        options: Listening address, limits, credentials.

    Raises:
        ServerConfigError: unreadable TLS files, the address cannot be bound,
            or reflection requested without the extra installed.
    """

    def __init__(self, backend: EntropyBackend, options: ServerOptions) -> None:
        if options.max_bytes <= 0:
            raise ServerConfigError(f"--max-bytes must be > 0, got {options.max_bytes}")
        self.options = options
        self._backend = backend
        interceptors: list[ApiKeyInterceptor] = []
        if options.api_key:
            interceptors.append(ApiKeyInterceptor(options.api_key, options.api_key_header))
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=options.max_workers),
            interceptors=cast("list[grpc.ServerInterceptor[Any, Any]]", interceptors),
            options=[
                # A second server on the same port must fail, not share it.
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", 64 * 1024),
                ("grpc.max_send_message_length", options.max_bytes + _MESSAGE_OVERHEAD),
            ],
        )
        pb2_grpc.add_EntropyServiceServicer_to_server(
            EntropyServicer(backend, options.max_bytes), self._server
        )
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        if options.reflection:
            self._add_reflection()
        credentials = _credentials(options)
        try:
            if credentials is None:
                port = self._server.add_insecure_port(options.address)
            else:
                port = self._server.add_secure_port(options.address, credentials)
        except RuntimeError as exc:
            raise ServerConfigError(f"cannot listen on {options.address!r}: {exc}") from exc
        if options.address.startswith("unix:"):
            self.address = options.address
        else:
            host = options.address.rsplit(":", 1)[0]
            self.address = f"{host}:{port}"
        self.tls = credentials is not None
        self._stopped = threading.Event()

    def _add_reflection(self) -> None:
        try:
            from grpc_reflection.v1alpha import reflection
        except ImportError as exc:
            raise ServerConfigError(
                "--reflection needs the optional 'reflection' extra: "
                "pip install 'qr-entropy-server[reflection]'"
            ) from exc
        names = (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
        reflection.enable_server_reflection((*names, reflection.SERVICE_NAME), self._server)

    def start(self) -> None:
        """Start serving and mark the services SERVING."""
        self._server.start()
        for name in ("", SERVICE_NAME):
            self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        logger.info("serving %s on %s (tls=%s)", SERVICE_NAME, self.address, self.tls)

    def stop(self, grace_s: float | None = None) -> None:
        """Refuse new calls, drain in-flight calls within the grace period, close the backend."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._health.enter_graceful_shutdown()
        grace = self.options.grace_s if grace_s is None else grace_s
        self._server.stop(grace).wait()
        self._backend.close()
        logger.info("stopped")

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
