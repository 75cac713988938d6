"""The reply to one request, the checks every transport makes, and a call's end as an error.

Shared by the three transports (:mod:`qr_entropy.grpc._transports`):

- :class:`Reply`: the bytes of one request, with the first response's provenance.
- :func:`read_response`, :func:`check_response` and :func:`check_length`: where
  the response layout has a ``sequence_id`` field, every response must echo the
  request's (0 = not echoed is accepted); the bytes must total exactly the
  number requested. A declared field of another wire type, or no data field at
  all, means the server does not speak the configured layout: a
  :class:`GrpcConfigurationError`.
- :func:`status_error` and :func:`map_rpc_error`: a call that ended with a status
  other than OK becomes a ``GrpcEntropyError`` naming the code; only
  :data:`RETRYABLE_CODES` are worth another attempt. The configuration-class
  ones (:func:`configuration_cause`) become a :class:`GrpcConfigurationError`.
- :func:`precheck`: a missing unix socket file fails at once, without a call.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from qr_entropy.grpc._channel import ChannelSettings, unix_socket_path
from qr_entropy.grpc._errors import (
    GrpcConfigurationError,
    GrpcEntropyError,
    LayoutConfigurationError,
    LayoutMismatchError,
    ProtocolMismatchError,
)
from qr_entropy.grpc._wire import WireResponse, decode_response

__all__ = [
    "CONFIGURATION_CODES",
    "RETRYABLE_CODES",
    "Reply",
    "check_length",
    "check_response",
    "configuration_cause",
    "layout_error",
    "map_rpc_error",
    "precheck",
    "read_response",
    "status_error",
]

# Status codes worth another attempt within the same fetch: the server (or the
# connection to it) is momentarily away, or a deadline ran out. Every other code
# (UNAUTHENTICATED, INVALID_ARGUMENT, INTERNAL, UNKNOWN, NOT_FOUND, ...) says the
# same request will be answered the same way, so the fetch fails at once.
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
CONFIGURATION_CODES = frozenset(
    {
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INVALID_ARGUMENT,
    }
)
"""Status codes that say the server refuses this client's configuration."""
# A TLS failure reaches grpcio's caller as UNAVAILABLE, told apart from a server
# that is down only by the details text. These markers are BoringSSL's reason
# names (library identifiers, not prose) and grpc's two wordings of its host
# name check: grpcio 1.62 "Peer name X is not in peer certificate", 1.85
# "Hostname Verification Check failed". A test runs each against a real TLS
# server on the oldest and the newest grpcio the client allows (hatch.toml).
_TLS_CAUSES = (
    (
        "CERTIFICATE_VERIFY_FAILED",
        "TLS certificate verification failed: the server's certificate is not signed by "
        "the CA in grpc_tls_ca_file (QR_GRPC_TLS_CA_FILE; the system roots when empty)",
    ),
    (
        "Hostname Verification Check failed",
        "TLS host name check failed: the server's certificate does not name the host "
        "(QR_GRPC_TLS_SERVER_NAME, else the address)",
    ),
    (
        "is not in peer certificate",
        "TLS host name check failed: the server's certificate does not name the host "
        "(QR_GRPC_TLS_SERVER_NAME, else the address)",
    ),
    (
        "WRONG_VERSION_NUMBER",
        "TLS handshake failed: the server does not speak TLS on this port (QR_GRPC_TLS=true "
        "against a plaintext server?)",
    ),
)


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to one request."""

    data: bytes
    """Exactly the bytes requested."""
    sequence_id: int
    """The request's ``sequence_id``."""
    generated_ns: int | None
    """The first response's generation time; ``None`` when the layout or server has none."""
    device_id: str
    """The first response's device id; "" when absent."""
    responses: int
    """Response messages the bytes came in."""
    read_started_ns: int | None = None
    """The first response's start of the server's fresh read; ``None`` when absent."""
    device_bytes_per_second: int | None = None
    """The first response's device rate as the server measures it; ``None`` when absent."""


def map_rpc_error(exc: grpc.RpcError, method: str, settings: ChannelSettings) -> GrpcEntropyError:
    """Turn a gRPC error into a ``GrpcEntropyError`` naming the status code."""
    return status_error(exc.code(), exc.details() or "", method, settings)


def configuration_cause(
    code: grpc.StatusCode, details: str, method: str, settings: ChannelSettings
) -> str | None:
    """The cause, in words, when status ``code`` is configuration-class; None when it is not.

    Configuration-class: the codes of :data:`CONFIGURATION_CODES`, and on a TLS
    channel an UNAVAILABLE whose details show a certificate that fails
    verification or names another host, or a plaintext server.
    """
    if code is grpc.StatusCode.UNAUTHENTICATED:
        if settings.authenticated:
            return (
                "the server rejected the API key sent in header "
                f"{settings.metadata[0][0]!r}; check grpc_api_key (QR_GRPC_API_KEY)"
            )
        return "the server requires an API key; set grpc_api_key (and grpc_api_key_header)"
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return f"the server refuses this client: {details}"
    if code is grpc.StatusCode.UNIMPLEMENTED:
        return (
            f"the server has no method {method} (QR_GRPC_METHOD_PATH, "
            f"QR_GRPC_STREAM_METHOD_PATH, QR_GRPC_MODE): {details}"
        )
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return f"the server refuses the request as invalid: {details}"
    if code is grpc.StatusCode.UNAVAILABLE and settings.tls:
        for marker, cause in _TLS_CAUSES:
            if marker in details:
                return cause
    return None


def status_error(
    code: grpc.StatusCode, details: str, method: str, settings: ChannelSettings
) -> GrpcEntropyError:
    """A ``GrpcEntropyError`` for a call that ended with status ``code``.

    A :class:`GrpcConfigurationError` when the status is configuration-class
    (:func:`configuration_cause`); never retried.
    """
    cause = configuration_cause(code, details, method, settings)
    if cause is not None:
        message = f"{code.name} from {settings.address} ({method}): {cause}"
        if code is not grpc.StatusCode.UNAUTHENTICATED and details and details not in cause:
            message += f" [{details}]"
        return GrpcConfigurationError(
            message, code=code.name, address=settings.address, cause=cause
        )
    message = f"{code.name} from {settings.address} ({method}): {details}"
    path = unix_socket_path(settings.address)
    if code is grpc.StatusCode.UNAVAILABLE and path is not None:
        message += f" (unix socket {path!r})"
    return GrpcEntropyError(
        message,
        code=code.name,
        timed_out=code is grpc.StatusCode.DEADLINE_EXCEEDED,
        retryable=code in RETRYABLE_CODES,
    )


def check_response(response: WireResponse, sequence_id: int, method: str) -> None:
    """Reject a response that echoes a different ``sequence_id``."""
    if response.sequence_id and response.sequence_id != sequence_id:
        raise ProtocolMismatchError(
            f"{method}: response sequence_id {response.sequence_id} does not match "
            f"request {sequence_id}; stream dropped"
        )


def read_response(
    payload: bytes, sequence_id: int, method: str, settings: ChannelSettings
) -> WireResponse:
    """Decode one response by the layout and check its ``sequence_id``.

    Raises:
        GrpcConfigurationError: a declared field of another wire type (the
            server does not speak the layout).
        WireFormatError: the response does not parse.
        ProtocolMismatchError: it echoes another ``sequence_id``.
    """
    try:
        response = decode_response(payload, settings.layout)
    except LayoutMismatchError as exc:
        raise layout_error(str(exc), method, settings) from None
    check_response(response, sequence_id, method)
    return response


def layout_error(cause: str, method: str, settings: ChannelSettings) -> LayoutConfigurationError:
    """The server does not speak the configured response layout."""
    return LayoutConfigurationError(
        f"response from {settings.address} ({method}) does not fit the response layout: {cause}",
        code=None,
        address=settings.address,
        cause=f"the server does not speak response layout {settings.layout.name!r}: {cause}",
    )


def check_length(got: int, n: int, method: str, settings: ChannelSettings) -> None:
    """Reject a reply whose byte count differs from the request's.

    Raises:
        GrpcConfigurationError: no bytes at all: the response has no field of
            the layout's data number.
        ProtocolMismatchError: another number of bytes.
    """
    if got != n:
        if not got:
            raise layout_error(
                f"no bytes in field {settings.layout.data} (data) of the response "
                "(QR_GRPC_RESPONSE_LAYOUT)",
                method,
                settings,
            )
        raise ProtocolMismatchError(f"{method}: server returned {got} bytes, requested {n}")


def precheck(settings: ChannelSettings) -> None:
    """Fail at once, without a call, when a unix socket file is missing."""
    path = unix_socket_path(settings.address)
    if path is not None:
        try:
            settings.check_reachable()
        except Exception as exc:
            raise GrpcEntropyError(str(exc), code="UNAVAILABLE", retryable=False) from exc
