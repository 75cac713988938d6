"""The ``qr_entropy.EntropyService`` implementation on the generated stubs."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext

import grpc

from qr_entropy_server._backends import EntropyBackend, device_id_of
from qr_entropy_server.proto import entropy_service_pb2 as pb2
from qr_entropy_server.proto import entropy_service_pb2_grpc as pb2_grpc

__all__ = ["EntropyServicer"]

logger = logging.getLogger(__name__)


class EntropyServicer(pb2_grpc.EntropyServiceServicer):
    """Answers every request by calling the backend at that moment.

    Args:
        backend: The generator of random bytes.
        max_bytes: Largest ``bytes_needed`` one request may ask for; above it
            the call ends with RESOURCE_EXHAUSTED.
    """

    def __init__(self, backend: EntropyBackend, max_bytes: int) -> None:
        self._backend = backend
        self._max_bytes = max_bytes
        self._device_id = device_id_of(backend)
        # Hardware drivers are rarely re-entrant; serialise unless told otherwise.
        self._lock: AbstractContextManager[object] = (
            nullcontext() if getattr(backend, "thread_safe", False) else threading.Lock()
        )

    def _answer(
        self, request: pb2.EntropyRequest, context: grpc.ServicerContext
    ) -> pb2.EntropyResponse:
        n = request.bytes_needed
        if n <= 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bytes_needed must be > 0, got {n}")
        if n > self._max_bytes:
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"bytes_needed={n} exceeds this server's --max-bytes={self._max_bytes}",
            )
        try:
            with self._lock:
                data = self._backend.generate(n)
                generated_ns = time.time_ns()
        except Exception as exc:
            logger.exception("backend %s failed to generate %d bytes", self._device_id, n)
            context.abort(grpc.StatusCode.INTERNAL, f"backend failed: {type(exc).__name__}")
        if len(data) != n:
            context.abort(
                grpc.StatusCode.INTERNAL,
                f"backend returned {len(data)} bytes, {n} were requested",
            )
        logger.debug("seq=%d: %d bytes from %s", request.sequence_id, n, self._device_id)
        return pb2.EntropyResponse(
            data=data,
            sequence_id=request.sequence_id,
            generation_timestamp_ns=generated_ns,
            device_id=self._device_id,
        )

    def GetEntropy(  # noqa: N802 - name fixed by the proto
        self, request: pb2.EntropyRequest, context: grpc.ServicerContext
    ) -> pb2.EntropyResponse:
        """Answer one request with one response."""
        return self._answer(request, context)

    def StreamEntropy(  # noqa: N802 - name fixed by the proto
        self, request_iterator: Iterator[pb2.EntropyRequest], context: grpc.ServicerContext
    ) -> Iterator[pb2.EntropyResponse]:
        """Answer each request as it arrives; the call ends when the client half-closes."""
        for request in request_iterator:
            yield self._answer(request, context)
