"""Errors of the gRPC client; all are ``EntropyUnavailableError``, so fallback applies.

Hierarchy (below ``qr_entropy.EntropyUnavailableError``)::

    GrpcEntropyError            a call failed: status code, timeout, transport
    ├── ProtocolMismatchError   a reply that is not the answer to this request
    │   └── WireFormatError     a reply that is not valid protobuf
    │       └── LayoutMismatchError  a declared field of another wire type
    │                                (internal: becomes a GrpcConfigurationError)
    └── GrpcConfigurationError  the server refuses this configuration; also a
        │                       qr_entropy.SourceConfigurationError
        └── LayoutConfigurationError  the server does not speak the response
                                layout (also a WireFormatError)
    CircuitOpenError            (in _breaker) no call made: the circuit is open
"""

from __future__ import annotations

from qr_entropy._exceptions import EntropyUnavailableError, SourceConfigurationError

__all__ = [
    "GrpcConfigurationError",
    "GrpcEntropyError",
    "LayoutConfigurationError",
    "LayoutMismatchError",
    "ProtocolMismatchError",
    "WireFormatError",
]


class GrpcEntropyError(EntropyUnavailableError):
    """A gRPC call for entropy failed.

    Attributes:
        code: gRPC status code name (``"UNAVAILABLE"``, ``"DEADLINE_EXCEEDED"``,
            ...), or ``None`` for a failure the client detected itself.
        timed_out: The call hit its deadline.
        retryable: Another attempt within the same fetch may succeed.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        timed_out: bool = False,
        retryable: bool = True,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.timed_out = timed_out
        self.retryable = retryable


class ProtocolMismatchError(GrpcEntropyError):
    """The reply's ``sequence_id`` or length does not match the request; the stream is dropped."""


class WireFormatError(ProtocolMismatchError):
    """A reply is not valid protobuf, or a known field has the wrong wire type."""


class LayoutMismatchError(WireFormatError):
    """A field the response layout declares arrived with another wire type.

    Raised by the decoder, which does not know the address; the transports
    turn it into a :class:`GrpcConfigurationError`.
    """


class GrpcConfigurationError(GrpcEntropyError, SourceConfigurationError):
    """A configuration-class failure of a gRPC call; never retried.

    Both a :class:`GrpcEntropyError` (``code``: the status, or ``None`` for a
    response layout the server does not speak) and a
    :class:`qr_entropy.SourceConfigurationError` (``address``, ``cause``).
    """

    def __init__(self, message: str, *, code: str | None, address: str, cause: str) -> None:
        GrpcEntropyError.__init__(self, message, code=code, retryable=False)
        self.address = address
        self.cause = cause


class LayoutConfigurationError(GrpcConfigurationError, WireFormatError):
    """The server's responses do not fit ``QR_GRPC_RESPONSE_LAYOUT``: configuration-class,
    and a :class:`WireFormatError` as before (``code`` is ``None``)."""
