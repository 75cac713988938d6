"""``bidi_streaming``: one long-lived bidirectional call per source, one exchange at a time.

The fetching thread writes a request and waits for its one response on the
call itself (on the public API, the fallback, grpc's own thread writes the
request). The wait has no timeout, so each one arms a
:class:`~qr_entropy.grpc._watchdog.Alarm` with the breaker's deadline; when it
fires, the watchdog cancels the call and the blocked read raises. On a timeout,
a mismatched or malformed reply, or any error the call is cancelled and never
read again (a late reply would belong to an earlier request); the next request
opens a new call. Fetches from several threads take turns on the one call (a
lock). The call is a :class:`~qr_entropy.grpc._core_call.CoreCall` on grpcio's
core layer where that layer is as expected, otherwise a :class:`_Stream` on
grpcio's public API (the fallback).
"""

from __future__ import annotations

import queue
import threading

import grpc

from qr_entropy.grpc._channel import ChannelSettings
from qr_entropy.grpc._core_call import CallEndedError, CoreCall
from qr_entropy.grpc._errors import GrpcEntropyError
from qr_entropy.grpc._replies import Reply, check_length, read_response, status_error
from qr_entropy.grpc._transports.base import StreamingTransport
from qr_entropy.grpc._watchdog import Watchdog, shared_watchdog
from qr_entropy.grpc._wire import encode_request

__all__ = ["BidiTransport"]


class _Stream:
    """One call on grpcio's public API: its request queue, the call, its responses.

    The same interface as :class:`~qr_entropy.grpc._core_call.CoreCall`, which is used where
    grpcio's internal layer is as expected; this is the fallback.
    """

    __slots__ = ("call", "requests", "responses")

    def __init__(
        self,
        multicallable: grpc.StreamStreamMultiCallable[bytes, bytes],
        metadata: tuple[tuple[str, str], ...],
    ) -> None:
        self.requests: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        # grpc's request thread takes requests until the None sentinel.
        self.call = multicallable(iter(self.requests.get, None), metadata=metadata or None)
        self.responses = iter(self.call)

    def exchange(self, request: bytes) -> bytes:
        """Write ``request``, wait for the one reply (``CallEndedError``: the call ended first)."""
        self.requests.put(request)
        try:
            return next(self.responses)
        except grpc.RpcError as exc:
            raise CallEndedError(exc.code(), exc.details() or "") from None
        except StopIteration:
            raise CallEndedError(self.call.code(), self.call.details() or "") from None

    def cancel(self) -> None:
        """End the call; a thread waiting in :meth:`exchange` raises at once. Any thread."""
        self.call.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves it untyped

    def discard(self) -> None:
        """End the call and let grpc's request thread finish."""
        self.cancel()
        self.requests.put(None)


class BidiTransport(StreamingTransport):
    """One long-lived bidirectional call, one request and one response at a time.

    The call is a :class:`~qr_entropy.grpc._core_call.CoreCall` where grpcio's internal layer
    is as expected (:attr:`on_core`), otherwise one on the public API.

    Args:
        settings: The channel settings (address, TLS, metadata, layout).
        watchdog: Enforces the per-read deadlines (default: the process-wide one).
    """

    mode = "bidi_streaming"

    def __init__(self, settings: ChannelSettings, watchdog: Watchdog | None = None) -> None:
        super().__init__(settings)
        self._multicallable: grpc.StreamStreamMultiCallable[bytes, bytes] = (
            self._channel.stream_stream(
                self._method, request_serializer=None, response_deserializer=None
            )
        )
        self._watchdog = watchdog or shared_watchdog()
        self._stream: CoreCall | _Stream | None = None
        # Requests from several threads must not interleave on the one stream.
        self._lock = threading.Lock()
        self.streams_opened = 0
        """Calls opened so far (a dropped call is never read again)."""

    def _drop_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.discard()

    def _open_stream(self) -> CoreCall | _Stream:
        metadata = self._settings.metadata
        stream = self._open_call(
            lambda: CoreCall(self._channel, self._method, metadata),
            lambda: _Stream(self._multicallable, metadata),
        )
        self._stream = stream
        self.streams_opened += 1
        return stream

    def request(self, n: int, sequence_id: int, timeout_s: float) -> Reply:
        """Write one request on the stream and read its one response within ``timeout_s``.

        Raises:
            GrpcEntropyError: the call failed, timed out or was answered wrongly.
        """
        with self._lock:
            stream = self._stream or self._open_stream()
            alarm = self._watchdog.arm(timeout_s, stream.cancel)
            try:
                payload = stream.exchange(encode_request(n, sequence_id))
            except CallEndedError as ended:
                fired = not self._watchdog.disarm(alarm)
                self._drop_stream()
                if fired:
                    raise GrpcEntropyError(
                        f"DEADLINE_EXCEEDED from {self._settings.address} ({self._method}): "
                        f"no response within {timeout_s * 1000:.1f} ms; stream dropped",
                        code="DEADLINE_EXCEEDED",
                        timed_out=True,
                    ) from None
                if ended.code is grpc.StatusCode.OK:
                    raise GrpcEntropyError(
                        f"OK from {self._settings.address} ({self._method}): "
                        f"stream ended: {ended.details}",
                        code="OK",
                        retryable=False,
                    ) from None
                raise status_error(
                    ended.code, ended.details, self._method, self._settings
                ) from None
            except BaseException:
                self._watchdog.disarm(alarm)
                self._drop_stream()
                raise
            if not self._watchdog.disarm(alarm):
                # The reply made it, but the watchdog is cancelling the call: open a new one.
                self._drop_stream()
            try:
                response = read_response(payload, sequence_id, self._method, self._settings)
                check_length(len(response.data), n, self._method, self._settings)
            except BaseException:
                # Never read this stream again: its next reply would not be this request's.
                self._drop_stream()
                raise
        return Reply(
            response.data,
            sequence_id,
            response.generated_ns,
            response.device_id,
            1,
            response.read_started_ns,
            response.device_bytes_per_second,
        )

    def close(self) -> None:
        """Cancel the stream (a blocked read raises at once), then close the channel.

        Safe from any thread, also while another thread waits in :meth:`request`.
        """
        self._closed = True
        stream = self._stream
        if stream is not None:
            stream.cancel()
        # Cancels every call on the channel, so a read in progress ends promptly ...
        self._channel.close()
        # ... and then releases the lock; a stream it opened meanwhile is ended here.
        with self._lock:
            self._drop_stream()
