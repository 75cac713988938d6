"""From ``EntropyConfig`` to a gRPC channel: address, TLS, metadata, options."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from qr_entropy._config import EntropyConfig
from qr_entropy._exceptions import ConfigError, EntropyUnavailableError
from qr_entropy._response_layout import ResponseLayout, parse_layout

__all__ = ["ChannelSettings", "unix_socket_path"]

# gRPC's default receive limit; raised when a single request may ask for more.
_DEFAULT_RECEIVE_LIMIT = 4 * 1024 * 1024
_RESPONSE_OVERHEAD = 64 * 1024


def unix_socket_path(address: str) -> str | None:
    """Return the socket path of a ``unix:`` address, else None."""
    if address.startswith("unix://"):
        return address[len("unix://") :]
    if address.startswith("unix:"):
        return address[len("unix:") :]
    return None


def _check_method_path(field: str, path: str) -> str:
    service, _, method = path[1:].partition("/")
    if not path.startswith("/") or not service or not method or "/" in method:
        raise ConfigError(f"{field}={path!r}: expected '/package.Service/Method'")
    return path


def _read_pem(field: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{field}={path!r} cannot be read: {exc.strerror}") from exc


@dataclass(frozen=True)
class ChannelSettings:
    """Validated transport settings taken from an ``EntropyConfig``.

    ``metadata`` carries the API key: this object's ``repr`` omits it.
    """

    address: str
    method_path: str
    stream_method_path: str
    """Empty: streaming disabled."""
    metadata: tuple[tuple[str, str], ...]
    root_certificates: bytes | None
    client_key: bytes | None
    client_cert: bytes | None
    server_name: str
    tls: bool
    max_request_bytes: int
    layout: ResponseLayout
    """Which response field holds what (``QR_GRPC_RESPONSE_LAYOUT``)."""

    def __repr__(self) -> str:
        return (
            f"ChannelSettings(address={self.address!r}, tls={self.tls}, "
            f"authenticated={self.authenticated})"
        )

    @property
    def authenticated(self) -> bool:
        """Whether an API key is sent."""
        return bool(self.metadata)

    @classmethod
    def from_config(cls, config: EntropyConfig) -> ChannelSettings:
        """Validate and read everything the channel needs.

        Raises:
            ConfigError: bad method path, unreadable TLS file, a client
                certificate without its key, or TLS files without ``grpc_tls``.
        """
        stream_path = config.grpc_stream_method_path
        if stream_path:
            _check_method_path("grpc_stream_method_path", stream_path)
        header = config.grpc_api_key_header  # its characters are checked when it loads
        key = config.grpc_api_key.get_secret_value()
        tls_files = (config.grpc_tls_ca_file, config.grpc_tls_cert_file, config.grpc_tls_key_file)
        if not config.grpc_tls and any(tls_files):
            raise ConfigError(
                "grpc_tls_ca_file/grpc_tls_cert_file/grpc_tls_key_file are set but "
                "grpc_tls is false; set grpc_tls=true or clear them"
            )
        if bool(config.grpc_tls_cert_file) != bool(config.grpc_tls_key_file):
            raise ConfigError("grpc_tls_cert_file and grpc_tls_key_file must be set together")
        return cls(
            address=config.grpc_server_address,
            method_path=_check_method_path("grpc_method_path", config.grpc_method_path),
            stream_method_path=stream_path,
            metadata=((header, key),) if key else (),
            root_certificates=(
                _read_pem("grpc_tls_ca_file", config.grpc_tls_ca_file)
                if config.grpc_tls_ca_file
                else None
            ),
            client_key=(
                _read_pem("grpc_tls_key_file", config.grpc_tls_key_file)
                if config.grpc_tls_key_file
                else None
            ),
            client_cert=(
                _read_pem("grpc_tls_cert_file", config.grpc_tls_cert_file)
                if config.grpc_tls_cert_file
                else None
            ),
            server_name=config.grpc_tls_server_name,
            tls=config.grpc_tls,
            max_request_bytes=config.grpc_max_request_bytes,
            layout=parse_layout(config.grpc_response_layout),
        )

    def options(self) -> list[tuple[str, int | str]]:
        """Channel arguments: message limits, no gRPC-level retries (ours count)."""
        receive = max(_DEFAULT_RECEIVE_LIMIT, self.max_request_bytes + _RESPONSE_OVERHEAD)
        options: list[tuple[str, int | str]] = [
            ("grpc.max_receive_message_length", receive),
            ("grpc.enable_retries", 0),
            # grpc shares subchannels between channels to the same target by default, so a
            # replacement channel would inherit the failed one's reconnect backoff.
            ("grpc.use_local_subchannel_pool", 1),
            # Reconnect quickly when a restarted server comes back.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        if self.tls and self.server_name:
            options.append(("grpc.ssl_target_name_override", self.server_name))
        return options

    def check_reachable(self) -> None:
        """Fail fast with a clear message when a unix socket file is missing.

        Raises:
            EntropyUnavailableError: the socket path does not exist.
        """
        path = unix_socket_path(self.address)
        if path is not None and not os.path.exists(path):
            raise EntropyUnavailableError(f"unix socket {path!r} does not exist (no server?)")

    def _credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.client_key,
            certificate_chain=self.client_cert,
        )

    def open_sync_channel(self) -> grpc.Channel:
        """Create a channel on grpcio's synchronous API (same options and credentials)."""
        if not self.tls:
            return grpc.insecure_channel(self.address, options=self.options())
        return grpc.secure_channel(self.address, self._credentials(), options=self.options())
