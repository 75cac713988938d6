"""Errors of the gRPC client; all are ``EntropyUnavailableError``, so fallback applies.

Hierarchy (below ``qr_entropy.EntropyUnavailableError``)::

    GrpcEntropyError            a call failed: status code, timeout, transport
    └── ProtocolMismatchError   a reply that is not the answer to this request
        └── WireFormatError     a reply that is not valid protobuf
    CircuitOpenError            (in _breaker) no call made: the circuit is open
"""

from __future__ import annotations

from qr_entropy._exceptions import EntropyUnavailableError

__all__ = ["GrpcEntropyError", "ProtocolMismatchError", "WireFormatError"]


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
