"""The server's options and their checks: limits, TLS material, who can reach the address."""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from qr_entropy_server._budget import DEFAULT_MAX_BUFFERED_BYTES
from qr_entropy_server._errors import ServerConfigError
from qr_entropy_server._health_tests import DEFAULT_MIN_ENTROPY
from qr_entropy_server._unix import socket_path

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_MAX_BYTES",
    "ServerOptions",
    "beyond_this_host",
    "server_credentials",
    "validate",
]

DEFAULT_MAX_BYTES = 1 << 20
DEFAULT_ADDRESS = "127.0.0.1:50051"


@dataclass(frozen=True)
class ServerOptions:
    """Everything the command line configures."""

    address: str = DEFAULT_ADDRESS
    """``host:port`` or ``unix:///path``; port 0 picks a free port."""
    max_workers: int = 16
    """Threads that run the backend's ``generate`` (one unless it is ``thread_safe``)."""
    max_bytes: int = DEFAULT_MAX_BYTES
    """Largest ``bytes_needed`` per request; above it RESOURCE_EXHAUSTED."""
    max_streams: int = 4096
    """Open ``StreamEntropy`` calls allowed at once; beyond it RESOURCE_EXHAUSTED."""
    stream_idle_timeout_s: float | None = None
    """Close a stream that sent no request for this long (None: never)."""
    backend_timeout_s: float = 10.0
    """A ``generate`` slower than this fails its call and turns health NOT_SERVING."""
    max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES
    """Payload bytes held at once for responses not yet sent; beyond: RESOURCE_EXHAUSTED."""
    min_entropy: float = DEFAULT_MIN_ENTROPY
    """Declared min-entropy per byte (bits) the continuous health tests check against."""
    socket_mode: int | None = None
    """Permission bits of a unix socket file, e.g. ``0o660`` (None: the umask decides)."""
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
    """How long shutdown waits for in-flight calls before cancelling them."""
    metrics_port: int | None = None
    """Serve Prometheus metrics on this TCP port (0 picks one; None: no endpoint)."""
    metrics_address: str = "127.0.0.1"
    """Interface of the metrics endpoint (``0.0.0.0`` or ``::``: every interface)."""


def validate(options: ServerOptions) -> None:
    checks = (
        (options.max_bytes > 0, "--max-bytes must be > 0", options.max_bytes),
        (options.max_workers > 0, "--max-workers must be > 0", options.max_workers),
        (options.max_streams > 0, "--max-streams must be > 0", options.max_streams),
        (options.backend_timeout_s > 0, "--backend-timeout must be > 0", options.backend_timeout_s),
        (
            options.max_buffered_bytes >= options.max_bytes,
            f"--max-buffered-bytes must be >= --max-bytes ({options.max_bytes})",
            options.max_buffered_bytes,
        ),
        (
            1 / 64 <= options.min_entropy <= 8,
            "--min-entropy must be between 1/64 and 8 bits per byte",
            options.min_entropy,
        ),
        (options.grace_s >= 0, "--grace must be >= 0", options.grace_s),
        (
            options.stream_idle_timeout_s is None or options.stream_idle_timeout_s > 0,
            "--stream-idle-timeout must be > 0 (leave it out for no limit)",
            options.stream_idle_timeout_s,
        ),
    )
    for ok, message, value in checks:
        if not ok:
            raise ServerConfigError(f"{message}, got {value}")
    if options.metrics_port is not None and not 0 <= options.metrics_port <= 65535:
        raise ServerConfigError(f"--metrics-port must be 0-65535, got {options.metrics_port}")
    if not options.metrics_address.strip():
        raise ServerConfigError("--metrics-address is empty; give an interface such as 127.0.0.1")
    _check_header(options.api_key_header.lower())
    if options.api_key is not None and not _printable(options.api_key):
        # Never echo the key: say what is wrong with it.
        raise ServerConfigError(
            "the API key (--api-key or QR_SERVER_API_KEY) holds a control character or a "
            "character outside printable ASCII (0x20-0x7e); gRPC metadata cannot carry it"
        )
    if options.socket_mode is not None:
        if socket_path(options.address) is None:
            raise ServerConfigError("--socket-mode applies to a unix:// --address only")
        if not 0 <= options.socket_mode <= 0o777:
            raise ServerConfigError(
                f"--socket-mode must be octal permission bits 000-777, got {options.socket_mode:o}"
            )


def _printable(text: str) -> bool:
    return all(" " <= ch <= "~" for ch in text)


def _check_header(header: str) -> None:
    """A gRPC metadata key: lower-case letters, digits, ``-``, ``_`` and ``.``."""
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")
    if not header or not set(header) <= allowed or header.endswith("-bin"):
        raise ServerConfigError(
            f"--api-key-header {header!r} is not a gRPC metadata key: use lower-case "
            "letters, digits, '-', '_' and '.', not ending in '-bin'"
        )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ServerConfigError(f"{what} {str(path)!r} cannot be read: {exc.strerror}") from exc


def _check_pair(cert: Path, key: Path) -> None:
    """Load the pair as OpenSSL would, so a mismatch is named instead of 'failed to bind'."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # An encrypted key would prompt on the terminal; gRPC cannot use one anyway.
        context.load_cert_chain(str(cert), str(key), password=lambda: b"")
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ServerConfigError(
                f"--tls-key {str(key)!r} does not match --tls-cert {str(cert)!r} "
                "(the private key belongs to another certificate)"
            ) from exc
        raise ServerConfigError(
            f"--tls-cert {str(cert)!r} / --tls-key {str(key)!r} cannot be used: "
            f"{exc.reason or exc} (PEM certificate chain and unencrypted PEM key expected)"
        ) from exc


def server_credentials(options: ServerOptions) -> grpc.ServerCredentials | None:
    if options.tls_cert is None and options.tls_key is None:
        if options.tls_client_ca is not None:
            raise ServerConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if options.tls_cert is None or options.tls_key is None:
        raise ServerConfigError("--tls-cert and --tls-key must be given together")
    key = _read(options.tls_key, "--tls-key")
    cert = _read(options.tls_cert, "--tls-cert")
    _check_pair(options.tls_cert, options.tls_key)
    client_ca = None
    if options.tls_client_ca is not None:
        client_ca = _read(options.tls_client_ca, "--tls-client-ca")
        try:
            ssl.create_default_context(cadata=client_ca.decode("ascii", "replace"))
        except ssl.SSLError as exc:
            raise ServerConfigError(
                f"--tls-client-ca {str(options.tls_client_ca)!r} holds no usable PEM "
                f"certificate: {exc.reason or exc}"
            ) from exc
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def beyond_this_host(address: str) -> bool:
    """True for a TCP address that other machines can reach."""
    if address.startswith(("unix:", "unix-abstract:")):
        return False
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True  # a host name: assume it resolves to a public interface
