"""The ``qr_entropy.EntropyService`` implementation on asyncio.

An open stream is a coroutine waiting for its next request, not a thread, so
idle streams cost memory only. Every ``generate`` runs in the backend's own
bounded pool (:mod:`qr_entropy_server._pool`) under ``--backend-timeout``.
Requests arrive as raw bytes and are parsed here, so that a malformed body or
an out-of-range ``bytes_needed`` is answered INVALID_ARGUMENT with one
rate-limited warning instead of gRPC's per-call traceback. Responses leave as
bytes encoded by hand (:mod:`qr_entropy_server._wire`), which gRPC sends as
they are: no message object, one copy of the payload.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

from qr_entropy_server._errors import EntropyServerError
from qr_entropy_server._idle import IdleWatch
from qr_entropy_server._pool import BackendPool
from qr_entropy_server._ratelog import RateLimitedLog
from qr_entropy_server._wire import (
    INT32_MAX,
    INT32_MIN,
    ResponseEncoder,
    out_of_range_bytes_needed,
    parse_request,
)
from qr_entropy_server.proto import entropy_service_pb2 as pb2

__all__ = ["SERVICE_NAME", "EntropyServicer", "ServiceLimits"]

logger = logging.getLogger(__name__)

SERVICE_NAME: str = pb2.DESCRIPTOR.services_by_name["EntropyService"].full_name

_Context = aio.ServicerContext[bytes, bytes]
_BYTES_TYPES = (bytes, bytearray)  # a tuple, not ``bytes | bytearray`` built per call


class _RefusedError(EntropyServerError):
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


class EntropyServicer:
    """Answers every request by calling the backend at that moment.

    Args:
        pool: The backend's thread pool.
        device_id: Reported in every response.
        limits: Per-call limits.
        warn: Rate-limited warnings.
        backend_health: Called with the outcome of a ``generate`` (True: it
            succeeded; False: it failed or timed out) when it differs from the
            previous one, and for the first.
    """

    def __init__(
        self,
        pool: BackendPool,
        device_id: str,
        limits: ServiceLimits,
        warn: RateLimitedLog,
        backend_health: Callable[[bool], None],
    ) -> None:
        self._pool = pool
        self._device_id = device_id
        self._limits = limits
        self._warn = warn
        self._backend_health = backend_health
        self._healthy: bool | None = None
        self._encoder = ResponseEncoder(device_id)
        self.open_streams = 0

    def handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        """The generic handler that serves both methods (bytes in, bytes out)."""
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "GetEntropy": grpc.unary_unary_rpc_method_handler(self.get_entropy),
                "StreamEntropy": grpc.stream_stream_rpc_method_handler(self.stream_entropy),
            },
        )

    def _parse(self, payload: bytes) -> tuple[int, int]:
        """``(bytes_needed, sequence_id)``; the generated parser for what the fast path leaves."""
        fast = parse_request(payload)
        if fast is not None:
            return fast
        try:
            request = pb2.EntropyRequest.FromString(payload)
        except DecodeError as exc:
            self._warn.warning(
                "malformed-request",
                "malformed EntropyRequest (%d bytes) answered INVALID_ARGUMENT: %s",
                len(payload),
                exc,
                exc=exc,
            )
            raise _RefusedError(
                grpc.StatusCode.INVALID_ARGUMENT, "malformed EntropyRequest: cannot be parsed"
            ) from exc
        wide = out_of_range_bytes_needed(payload)
        if wide is not None:
            self._warn.warning(
                "bytes-needed-range",
                "EntropyRequest with bytes_needed=%d outside int32 answered INVALID_ARGUMENT",
                wide,
            )
            raise _RefusedError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"bytes_needed={wide} is outside int32 [{INT32_MIN}, {INT32_MAX}]",
            )
        return request.bytes_needed, request.sequence_id

    def _health(self, ok: bool) -> None:
        if ok is not self._healthy:
            self._healthy = ok
            self._backend_health(ok)

    async def _generate(self, n: int) -> tuple[bytes, int]:
        """Call the backend; any misbehaviour becomes a refusal (no bytes leave)."""
        try:
            done = self._pool.now(n)
            if done is None:
                done = await self._pool.generate(n, self._limits.backend_timeout_s)
            data, stamped = done
        except TimeoutError:
            self._health(False)
            limit = self._limits.backend_timeout_s
            self._warn.warning(
                "backend-timeout",
                "backend %s did not return %d bytes within --backend-timeout=%g s",
                self._device_id,
                n,
                limit,
            )
            raise _RefusedError(
                grpc.StatusCode.UNAVAILABLE,
                f"backend did not answer within --backend-timeout={limit:g} s",
            ) from None
        except Exception as exc:
            self._health(False)
            name = type(exc).__name__
            self._warn.warning(
                f"backend-error:{name}",
                "backend %s failed to generate %d bytes: %s: %s",
                self._device_id,
                n,
                name,
                exc,
                exc=exc,
            )
            raise _RefusedError(grpc.StatusCode.INTERNAL, f"backend failed: {name}") from exc
        if not isinstance(data, _BYTES_TYPES):
            self._health(False)
            kind = type(data).__name__
            self._warn.warning(
                "backend-type", "backend %s returned %s, not bytes", self._device_id, kind
            )
            raise _RefusedError(grpc.StatusCode.INTERNAL, f"backend returned {kind}, not bytes")
        if len(data) != n:
            self._health(False)
            self._warn.warning(
                "backend-length",
                "backend %s returned %d bytes, %d were requested",
                self._device_id,
                len(data),
                n,
            )
            raise _RefusedError(
                grpc.StatusCode.INTERNAL,
                f"backend returned {len(data)} bytes, {n} were requested",
            )
        self._health(True)
        return bytes(data), stamped

    async def _answer(self, payload: bytes) -> bytes:
        n, sequence_id = self._parse(payload)
        if n <= 0:
            raise _RefusedError(
                grpc.StatusCode.INVALID_ARGUMENT, f"bytes_needed must be > 0, got {n}"
            )
        if n > self._limits.max_bytes:
            raise _RefusedError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"bytes_needed={n} exceeds this server's --max-bytes={self._limits.max_bytes}",
            )
        data, stamped = await self._generate(n)
        logger.debug("seq=%d: %d bytes from %s", sequence_id, n, self._device_id)
        return self._encoder.encode(data, sequence_id, stamped)

    async def probe(self) -> bool:
        """One ``generate(1)`` (bytes discarded) to learn whether the backend answers."""
        try:
            await self._generate(1)
        except _RefusedError:
            return False
        return True

    async def get_entropy(self, payload: bytes, context: _Context) -> bytes:
        """``GetEntropy``: one request, one response."""
        try:
            return await self._answer(payload)
        except _RefusedError as refusal:
            await context.abort(refusal.code, refusal.details)

    async def stream_entropy(
        self, request_iterator: AsyncIterator[bytes], context: _Context
    ) -> AsyncIterator[bytes]:
        """``StreamEntropy``: answer each request as it arrives, until the client half-closes."""
        limit = self._limits.max_streams
        if self.open_streams >= limit:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this server already has {self.open_streams} open streams, its "
                f"--max-streams limit; close one, or use GetEntropy",
            )
        self.open_streams += 1
        idle_s = self._limits.stream_idle_timeout_s
        watch = None if idle_s is None else IdleWatch(idle_s)
        requests = aiter(request_iterator)
        try:
            while True:
                if watch is not None:
                    watch.waiting()
                try:
                    payload = await anext(requests)
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if watch is None or not watch.expired():
                        raise
                    await context.abort(
                        grpc.StatusCode.UNAVAILABLE,
                        f"stream closed: no request for {idle_s:g} s "
                        "(--stream-idle-timeout); open a new stream",
                    )
                if watch is not None:
                    watch.answering()
                try:
                    response = await self._answer(payload)
                except _RefusedError as refusal:
                    await context.abort(refusal.code, refusal.details)
                yield response
        finally:
            self.open_streams -= 1
            if watch is not None:
                watch.close()
