"""An incoming request: its limits, how it is read, and the refusal that ends a call.

:func:`read_request` reads the usual request by hand
(:func:`~qr_entropy_server._wire.parse_request`) and leaves anything else to the
generated parser, after naming a varint longer than 10 bytes
(:func:`~qr_entropy_server._wire.overlong_varint`) and before refusing a
``bytes_needed`` outside int32 (:func:`~qr_entropy_server._wire.out_of_range_bytes_needed`).
Each refusal is logged once per kind and interval, never per request.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError

from qr_entropy_server._budget import DEFAULT_MAX_BUFFERED_BYTES
from qr_entropy_server._errors import EntropyServerError
from qr_entropy_server._ratelog import RateLimitedLog
from qr_entropy_server._wire import (
    INT32_MAX,
    INT32_MIN,
    out_of_range_bytes_needed,
    overlong_varint,
    parse_request,
)
from qr_entropy_server.proto import entropy_service_pb2 as pb2

__all__ = ["RefusedError", "ServiceLimits", "read_request"]


class RefusedError(EntropyServerError):
    """A call ends with this status; raised inside the servicer only."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


@dataclass(frozen=True)
class ServiceLimits:
    """The per-call limits the servicer enforces (taken from the server options)."""

    max_bytes: int
    """Largest ``bytes_needed``; above it RESOURCE_EXHAUSTED."""
    max_streams: int
    """``StreamEntropy`` calls open at once; one more gets RESOURCE_EXHAUSTED."""
    stream_idle_timeout_s: float | None
    """A stream without a request for this long is closed (None: never)."""
    backend_timeout_s: float
    """Longest a ``generate`` may take before the call fails UNAVAILABLE."""
    max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES
    """Payload bytes held at once for responses not yet sent; beyond: RESOURCE_EXHAUSTED."""


def _malformed(warn: RateLimitedLog, why: str, exc: BaseException | None = None) -> RefusedError:
    warn.warning(
        "malformed-request", "malformed EntropyRequest answered INVALID_ARGUMENT: %s", why, exc=exc
    )
    return RefusedError(grpc.StatusCode.INVALID_ARGUMENT, f"malformed EntropyRequest: {why}")


def read_request(payload: bytes, warn: RateLimitedLog) -> tuple[int, int]:
    """``(bytes_needed, sequence_id)``; the generated parser for what the fast path leaves.

    Raises:
        RefusedError: INVALID_ARGUMENT for a body that cannot be parsed (an
            over-long varint is named: its field and byte offset) or a
            ``bytes_needed`` outside int32.
    """
    fast = parse_request(payload)
    if fast is not None:
        return fast
    overlong = overlong_varint(payload)
    if overlong is not None:
        raise _malformed(warn, overlong)
    try:
        request = pb2.EntropyRequest.FromString(payload)
    except DecodeError as exc:
        raise _malformed(warn, "cannot be parsed", exc) from exc
    wide = out_of_range_bytes_needed(payload)
    if wide is not None:
        warn.warning(
            "bytes-needed-range",
            "EntropyRequest with bytes_needed=%d outside int32 answered INVALID_ARGUMENT",
            wide,
        )
        raise RefusedError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"bytes_needed={wide} is outside int32 [{INT32_MIN}, {INT32_MAX}]",
        )
    return request.bytes_needed, request.sequence_id
