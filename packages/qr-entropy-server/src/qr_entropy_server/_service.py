"""The ``qr_entropy.EntropyService`` implementation on asyncio.

An open stream is a coroutine waiting for its next request, not a thread, so
idle streams cost memory only. Every ``generate`` runs in the backend's own
bounded pool (:mod:`qr_entropy_server._pool`) under ``--backend-timeout``.
Requests arrive as raw bytes and are parsed here, so that a malformed body or
an out-of-range ``bytes_needed`` is answered INVALID_ARGUMENT with one
rate-limited warning instead of gRPC's per-call traceback. Responses leave as
bytes encoded by hand (:mod:`qr_entropy_server._wire`), which gRPC sends as
they are: no message object, one copy of the payload.

Every request takes its byte count from the ``--max-buffered-bytes`` budget
(:mod:`qr_entropy_server._budget`) until gRPC has let go of its response. Health
follows each ``generate``: a failure turns it NOT_SERVING and the next success
SERVING again, except after a failed health test, when
:data:`~qr_entropy_server._health_tests.RECOVERY_BLOCKS` blocks in a row must
pass first.
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

from qr_entropy_server._budget import DEFAULT_MAX_BUFFERED_BYTES, BufferBudget
from qr_entropy_server._errors import (
    BackendReplyError,
    DeviceError,
    DeviceStalledError,
    EntropyServerError,
    HealthTestError,
)
from qr_entropy_server._health_tests import RECOVERY_BLOCKS, WINDOW
from qr_entropy_server._idle import IdleWatch
from qr_entropy_server._pool import BackendPool, Block
from qr_entropy_server._ratelog import RateLimitedLog
from qr_entropy_server._wire import (
    INT32_MAX,
    INT32_MIN,
    ResponseEncoder,
    out_of_range_bytes_needed,
    parse_request,
)
from qr_entropy_server.proto import entropy_service_pb2 as pb2

__all__ = ["PROBE_BYTES", "SERVICE_NAME", "EntropyServicer", "ServiceLimits"]

logger = logging.getLogger(__name__)

SERVICE_NAME: str = pb2.DESCRIPTOR.services_by_name["EntropyService"].full_name

_Context = aio.ServicerContext[bytes, bytes]
PROBE_BYTES = WINDOW
"""Bytes of a health probe (discarded): one adaptive proportion window."""


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
    max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES
    """Payload bytes held at once for responses not yet sent; beyond: RESOURCE_EXHAUSTED."""


class EntropyServicer:
    """Answers every request by calling the backend at that moment.

    Args:
        pool: The backend's thread pool.
        device_id: Reported in every response.
        limits: Per-call limits.
        warn: Rate-limited warnings.
        backend_health: Called with the health of the backend (True: the last
            ``generate`` succeeded and no health test failed within the last
            :data:`RECOVERY_BLOCKS` blocks; False otherwise) when it differs from
            the previous one, and for the first.
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
        self._owed = 0  # blocks that must still pass after a failed health test
        self._encoder = ResponseEncoder(device_id)
        self.budget = BufferBudget(limits.max_buffered_bytes)
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
        if ok and self._owed:
            self._owed -= 1
            ok = not self._owed
        if ok is not self._healthy:
            self._healthy = ok
            self._backend_health(ok)

    def _refuse(self, kind: str, message: str, n: int, exc: BaseException) -> _RefusedError:
        """Log (rate-limited) and build the INTERNAL refusal of a failed ``generate``."""
        self._health(False)
        self._warn.warning(
            kind,
            "backend %s failed to generate %d bytes: %s",
            self._device_id,
            n,
            message,
            exc=exc,
        )
        return _RefusedError(grpc.StatusCode.INTERNAL, message)

    async def _generate(self, n: int) -> Block:
        """Call the backend; any misbehaviour becomes a refusal (no bytes leave)."""
        try:
            block = self._pool.now(n)
            if block is None:
                block = await self._pool.generate(n, self._limits.backend_timeout_s)
        except (TimeoutError, DeviceStalledError) as exc:
            # The pool's wait and the device's own deadline end together; either may come first.
            self._health(False)
            limit = self._limits.backend_timeout_s
            self._warn.warning(
                "backend-timeout",
                "backend %s did not return %d bytes within --backend-timeout=%g s%s",
                self._device_id,
                n,
                limit,
                f" ({exc})" if str(exc) else "",
            )
            raise _RefusedError(
                grpc.StatusCode.UNAVAILABLE,
                f"backend did not answer within --backend-timeout={limit:g} s",
            ) from None
        except HealthTestError as exc:
            self._owed = RECOVERY_BLOCKS
            raise self._refuse("health-test", f"health test failed: {exc}", n, exc) from exc
        except BackendReplyError as exc:
            raise self._refuse(exc.kind, str(exc), n, exc) from exc
        except DeviceError as exc:
            raise self._refuse("device-error", f"backend failed: {exc}", n, exc) from exc
        except Exception as exc:
            name = type(exc).__name__
            message = f"backend failed: {name}"
            self._health(False)
            self._warn.warning(
                f"backend-error:{name}",
                "backend %s failed to generate %d bytes: %s: %s",
                self._device_id,
                n,
                name,
                exc,
                exc=exc,
            )
            raise _RefusedError(grpc.StatusCode.INTERNAL, message) from exc
        self._health(True)
        return block

    def _request(self, payload: bytes) -> tuple[int, int]:
        """``(bytes_needed, sequence_id)`` of a request the limits allow."""
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
        budget = self.budget
        if not budget.take(n):
            raise _RefusedError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this server holds {budget.held} bytes for responses not yet sent; "
                f"bytes_needed={n} more would pass its --max-buffered-bytes={budget.limit} "
                "(read your streams, or retry later)",
            )
        return n, sequence_id

    async def _respond(self, n: int, sequence_id: int) -> bytes:
        block = await self._generate(n)
        logger.debug("seq=%d: %d bytes from %s", sequence_id, n, self._device_id)
        return self._encoder.encode(block.data, sequence_id, block.ended_ns, block.started_ns)

    async def probe(self) -> bool:
        """One ``generate`` of :data:`PROBE_BYTES` (discarded): does the backend answer?"""
        try:
            await self._generate(PROBE_BYTES)
        except _RefusedError:
            return False
        return True

    async def get_entropy(self, payload: bytes, context: _Context) -> bytes:
        """``GetEntropy``: one request, one response."""
        try:
            n, sequence_id = self._request(payload)
        except _RefusedError as refusal:
            await context.abort(refusal.code, refusal.details)
        try:
            response = await self._respond(n, sequence_id)
        except _RefusedError as refusal:
            self.budget.give(n)
            await context.abort(refusal.code, refusal.details)
        self.budget.hand_over(response, n)
        return response

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
                    n, sequence_id = self._request(payload)
                except _RefusedError as refusal:
                    await context.abort(refusal.code, refusal.details)
                try:
                    response = await self._respond(n, sequence_id)
                except _RefusedError as refusal:
                    self.budget.give(n)
                    await context.abort(refusal.code, refusal.details)
                self.budget.hand_over(response, n)
                yield response
                # The frame must not keep the payload alive until the next request:
                # the budget counts it held for as long as anything references it.
                del response
        finally:
            self.open_streams -= 1
            if watch is not None:
                watch.close()
