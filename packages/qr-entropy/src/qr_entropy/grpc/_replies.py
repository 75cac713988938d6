"""The reply to one request, the checks every transport makes, and a call's end as an error.

Shared by the three transports (:mod:`qr_entropy.grpc._transports`):

- :class:`Reply`: the bytes of one request, with the first response's provenance.
- :func:`check_response` and :func:`check_length`: where the response layout has
  a ``sequence_id`` field, every response must echo the request's (0 = not
  echoed is accepted); the bytes must total exactly the number requested.
- :func:`status_error` and :func:`map_rpc_error`: a call that ended with a status
  other than OK becomes a ``GrpcEntropyError`` naming the code; only
  :data:`RETRYABLE_CODES` are worth another attempt.
- :func:`precheck`: a missing unix socket file fails at once, without a call.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from qr_entropy.grpc._channel import ChannelSettings, unix_socket_path
from qr_entropy.grpc._errors import GrpcEntropyError, ProtocolMismatchError
from qr_entropy.grpc._wire import WireResponse

__all__ = [
    "RETRYABLE_CODES",
    "Reply",
    "check_length",
    "check_response",
    "map_rpc_error",
    "precheck",
    "status_error",
]

# Status codes worth another attempt within the same fetch: the server (or the
# connection to it) is momentarily away, or a deadline ran out. Every other code
# (UNAUTHENTICATED, INVALID_ARGUMENT, INTERNAL, UNKNOWN, NOT_FOUND, ...) says the
# same request will be answered the same way, so the fetch fails at once.
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


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


def map_rpc_error(exc: grpc.RpcError, method: str, settings: ChannelSettings) -> GrpcEntropyError:
    """Turn a gRPC error into a ``GrpcEntropyError`` naming the status code."""
    return status_error(exc.code(), exc.details() or "", method, settings)


def status_error(
    code: grpc.StatusCode, details: str, method: str, settings: ChannelSettings
) -> GrpcEntropyError:
    """A ``GrpcEntropyError`` for a call that ended with status ``code``."""
    if code is grpc.StatusCode.UNAUTHENTICATED:
        hint = (
            "the server rejected the API key sent in header "
            f"{settings.metadata[0][0]!r}; check grpc_api_key"
            if settings.authenticated
            else "the server requires an API key; set grpc_api_key (and grpc_api_key_header)"
        )
        message = f"UNAUTHENTICATED from {settings.address} ({method}): {hint}"
    else:
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


def check_length(got: int, n: int, method: str) -> None:
    """Reject a reply whose byte count differs from the request's."""
    if got != n:
        raise ProtocolMismatchError(f"{method}: server returned {got} bytes, requested {n}")


def precheck(settings: ChannelSettings) -> None:
    """Fail at once, without a call, when a unix socket file is missing."""
    path = unix_socket_path(settings.address)
    if path is not None:
        try:
            settings.check_reachable()
        except Exception as exc:
            raise GrpcEntropyError(str(exc), code="UNAVAILABLE", retryable=False) from exc
