"""The ``qr_entropy.EntropyService`` implementation on asyncio.

An open stream is a coroutine waiting for its next request, not a thread, so
idle streams cost memory only. Every ``generate`` runs in the backend's own
bounded pool (:mod:`qr_entropy_server._pool`) under ``--backend-timeout``.
Requests arrive as raw bytes and are read here (:mod:`qr_entropy_server._requests`),
so that a malformed body or an out-of-range ``bytes_needed`` is answered
INVALID_ARGUMENT with one rate-limited warning instead of gRPC's per-call
traceback. Responses leave as bytes encoded by hand (:mod:`qr_entropy_server._wire`),
which gRPC sends as they are: no message object, one copy of the payload.

Every request takes its byte count from the ``--max-buffered-bytes`` budget
(:mod:`qr_entropy_server._budget`) until gRPC has let go of its response. Health
follows each ``generate``: a failure turns it NOT_SERVING and the next success
SERVING again, except after a failed health test, when
:data:`~qr_entropy_server._health_tests.RECOVERY_BLOCKS` blocks in a row must
pass first.

Every answered request, refusal and device read is counted in
:class:`~qr_entropy_server._stats.ServerStats` (a few additions per request),
which also measures the device's rate; each response carries that rate
(field 6) once it is known.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn

import grpc
from grpc import aio

from qr_entropy_server._budget import BufferBudget
from qr_entropy_server._errors import (
    BackendReplyError,
    DeviceError,
    DeviceStalledError,
    HealthTestError,
)
from qr_entropy_server._health_tests import RECOVERY_BLOCKS, WINDOW
from qr_entropy_server._idle import IdleWatch
from qr_entropy_server._pool import BackendPool, Block
from qr_entropy_server._ratelog import RateLimitedLog
from qr_entropy_server._requests import RefusedError, ServiceLimits, read_request
from qr_entropy_server._stats import SELF_TEST_BYTES, SELF_TEST_READ_S, ServerStats, self_test_sizes
from qr_entropy_server._wire import ResponseEncoder
from qr_entropy_server.proto import entropy_service_pb2 as pb2

__all__ = ["PROBE_BYTES", "SERVICE_NAME", "EntropyServicer", "ServiceLimits"]

logger = logging.getLogger(__name__)

SERVICE_NAME: str = pb2.DESCRIPTOR.services_by_name["EntropyService"].full_name

_Context = aio.ServicerContext[bytes, bytes]
PROBE_BYTES = WINDOW
"""Bytes of a health probe (discarded): one adaptive proportion window."""


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
        self._rate = 0  # the rate responses carry now (field 6)
        self.budget = BufferBudget(limits.max_buffered_bytes)
        self.stats = ServerStats()
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

    def _health(self, ok: bool) -> None:
        if ok and self._owed:
            self._owed -= 1
            ok = not self._owed
        if ok is not self._healthy:
            self._healthy = ok
            self._backend_health(ok)

    def _refuse(self, kind: str, message: str, n: int, exc: BaseException) -> RefusedError:
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
        return RefusedError(grpc.StatusCode.INTERNAL, message)

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
            raise RefusedError(
                grpc.StatusCode.UNAVAILABLE,
                f"backend did not answer within --backend-timeout={limit:g} s",
            ) from None
        except HealthTestError as exc:
            self._owed = RECOVERY_BLOCKS
            self.stats.health_test_failed(exc.test)
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
            raise RefusedError(grpc.StatusCode.INTERNAL, message) from exc
        self._health(True)
        return block

    def _request(self, payload: bytes) -> tuple[int, int]:
        """``(bytes_needed, sequence_id)`` of a request the limits allow."""
        n, sequence_id = read_request(payload, self._warn)
        if n <= 0:
            raise RefusedError(
                grpc.StatusCode.INVALID_ARGUMENT, f"bytes_needed must be > 0, got {n}"
            )
        if n > self._limits.max_bytes:
            raise RefusedError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"bytes_needed={n} exceeds this server's --max-bytes={self._limits.max_bytes}",
            )
        budget = self.budget
        if not budget.take(n):
            raise RefusedError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this server holds {budget.held} bytes for responses not yet sent; "
                f"bytes_needed={n} more would pass its --max-buffered-bytes={budget.limit} "
                "(read your streams, or retry later)",
            )
        return n, sequence_id

    async def _respond(self, n: int, sequence_id: int, method: int) -> bytes:
        block = await self._generate(n)
        stats = self.stats
        stats.answered(method, n, block.started_ns, block.ended_ns)
        if stats.rate != self._rate:
            self._rate = stats.rate
            self._encoder.set_rate(self._rate)
        logger.debug("seq=%d: %d bytes from %s", sequence_id, n, self._device_id)
        return self._encoder.encode(block.data, sequence_id, block.ended_ns, block.started_ns)

    async def _abort(self, context: _Context, method: int, refusal: RefusedError) -> NoReturn:
        """End the call with the refusal's status, counted."""
        self.stats.refused(method, refusal.code)
        await context.abort(refusal.code, refusal.details)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    async def probe(self) -> bool:
        """One ``generate`` of :data:`PROBE_BYTES` (discarded): does the backend answer?"""
        try:
            await self._generate(PROBE_BYTES)
        except RefusedError:
            return False
        return True

    async def self_test(self, backend_timeout_s: float, max_bytes: int) -> float:
        """Measure the device's rate with a few reads (discarded); return it (0.0: none).

        Reads grow to one token's block (:func:`~qr_entropy_server._stats.self_test_sizes`)
        and stop after :data:`~qr_entropy_server._stats.SELF_TEST_READ_S` seconds of
        reading, :data:`~qr_entropy_server._stats.SELF_TEST_BYTES` bytes, a failed read,
        or before a read that would take a quarter of ``--backend-timeout``.
        """
        spent_ns = total = 0
        for n in self_test_sizes(max_bytes):
            if spent_ns and n * spent_ns / total > backend_timeout_s * 1e9 / 4:
                break
            try:
                block = await self._generate(n)
            except RefusedError:
                break
            self.stats.read(n, block.started_ns, block.ended_ns)
            spent_ns += max(1, block.ended_ns - block.started_ns)
            total += n
            if spent_ns >= SELF_TEST_READ_S * 1e9 or total >= SELF_TEST_BYTES:
                break
        if total:
            self.stats.fold(block.ended_ns)
            self._rate = self.stats.rate
            self._encoder.set_rate(self._rate)
        return self.stats.bytes_per_second

    async def get_entropy(self, payload: bytes, context: _Context) -> bytes:
        """``GetEntropy``: one request, one response."""
        try:
            n, sequence_id = self._request(payload)
        except RefusedError as refusal:
            await self._abort(context, 0, refusal)
        try:
            response = await self._respond(n, sequence_id, 0)
        except RefusedError as refusal:
            self.budget.give(n)
            await self._abort(context, 0, refusal)
        self.budget.hand_over(response, n)
        return response

    async def stream_entropy(
        self, request_iterator: AsyncIterator[bytes], context: _Context
    ) -> AsyncIterator[bytes]:
        """``StreamEntropy``: answer each request as it arrives, until the client half-closes."""
        limit = self._limits.max_streams
        if self.open_streams >= limit:
            await self._abort(
                context,
                1,
                RefusedError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"this server already has {self.open_streams} open streams, its "
                    f"--max-streams limit; close one, or use GetEntropy",
                ),
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
                    await self._abort(
                        context,
                        1,
                        RefusedError(
                            grpc.StatusCode.UNAVAILABLE,
                            f"stream closed: no request for {idle_s:g} s "
                            "(--stream-idle-timeout); open a new stream",
                        ),
                    )
                if watch is not None:
                    watch.answering()
                try:
                    n, sequence_id = self._request(payload)
                except RefusedError as refusal:
                    await self._abort(context, 1, refusal)
                try:
                    response = await self._respond(n, sequence_id, 1)
                except RefusedError as refusal:
                    self.budget.give(n)
                    await self._abort(context, 1, refusal)
                self.budget.hand_over(response, n)
                yield response
                # The frame must not keep the payload alive until the next request:
                # the budget counts it held for as long as anything references it.
                del response
        finally:
            self.open_streams -= 1
            if watch is not None:
                watch.close()
