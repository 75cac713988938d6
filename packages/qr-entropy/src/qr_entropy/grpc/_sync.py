"""The three modes on grpcio's synchronous channel, each in the caller's own thread.

No hand-off to an event loop or to grpc's own threads where grpcio's core layer
is as expected (:mod:`~._core_call`; see ``docs/grpc.md``, "Where a bidi fetch
spends its time"). ``close()`` closes the channel, which cancels every call on
it: a caller blocked in a call raises at once.

``unary``: one blocking call per request, with the breaker's deadline as the
call's gRPC deadline (grpcio's own blocking call: already one call on the core
layer, in the caller's thread).

``server_streaming``: one call per request: the request is written and the call
half-closed as it opens, then the caller reads the responses until the server
ends the call, all under one gRPC deadline. Calls from several threads run side
by side.

``bidi_streaming``: one long-lived bidirectional call per source. The fetching
thread writes a request and waits for its one response on the call itself
(on the public API, the fallback, grpc's own thread writes the request). The
wait has no timeout, so each one arms a :class:`~._watchdog.Alarm` with the
breaker's deadline; when it fires, the watchdog cancels the call and the
blocked read raises. On a timeout, a mismatched or malformed reply, or any
error the call is cancelled and never read again (a late reply would belong to
an earlier request); the next request opens a new call. Fetches from several
threads take turns on the one call (a lock).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import TypeVar

import grpc

from qr_entropy.grpc._channel import ChannelSettings
from qr_entropy.grpc._core_call import (
    CallEndedError,
    CoreCall,
    CoreResponseStream,
    core_available,
)
from qr_entropy.grpc._errors import GrpcEntropyError
from qr_entropy.grpc._transports import (
    Reply,
    check_length,
    check_response,
    map_rpc_error,
    precheck,
    status_error,
)
from qr_entropy.grpc._watchdog import Watchdog, shared_watchdog
from qr_entropy.grpc._wire import WireResponse, decode_response, encode_request

__all__ = ["BidiTransport", "ServerStreamingTransport", "SyncTransport", "UnaryTransport"]

logger = logging.getLogger(__name__)

_CoreT = TypeVar("_CoreT")
_PublicT = TypeVar("_PublicT")


def closed_channel_error(settings: ChannelSettings, exc: Exception) -> GrpcEntropyError:
    """grpc refuses a call on a closed channel: ``close()``, or a replaced channel."""
    return GrpcEntropyError(
        f"channel to {settings.address} closed during the call: {exc}",
        code="CANCELLED",
        # Our own channel was replaced under the call: the next attempt gets a new one.
        retryable=True,
    )


class SyncTransport:
    """A mode on the synchronous API: ``request`` runs in the caller's thread.

    Args:
        settings: The channel settings (address, TLS, metadata, layout).
    """

    mode: str

    def __init__(self, settings: ChannelSettings) -> None:
        self._settings = settings
        self._channel = settings.open_sync_channel()
        self._closed = False

    def request(self, n: int, sequence_id: int, timeout_s: float) -> Reply:
        """Ask for ``n`` bytes under ``sequence_id`` within ``timeout_s``.

        Raises:
            GrpcEntropyError: the call failed, timed out or was answered wrongly.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Cancel every call on the channel and close it; safe from any thread."""
        self._closed = True
        self._channel.close()


class UnaryTransport(SyncTransport):
    """One blocking unary call per request."""

    mode = "unary"

    def __init__(self, settings: ChannelSettings) -> None:
        super().__init__(settings)
        self._method = settings.method_path
        self._call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(
            self._method, request_serializer=None, response_deserializer=None
        )

    def request(self, n: int, sequence_id: int, timeout_s: float) -> Reply:
        """Send one request and wait for its one response, under a gRPC deadline."""
        precheck(self._settings)
        try:
            if self._closed:
                raise ValueError("transport closed")
            payload: bytes = self._call(
                encode_request(n, sequence_id),
                timeout=timeout_s,
                metadata=self._settings.metadata or None,
            )
        except grpc.RpcError as exc:
            raise map_rpc_error(exc, self._method, self._settings) from None
        except ValueError as exc:
            raise closed_channel_error(self._settings, exc) from None
        response = decode_response(payload, self._settings.layout)
        check_response(response, sequence_id, self._method)
        check_length(len(response.data), n, self._method)
        return Reply(response.data, sequence_id, response.generated_ns, response.device_id, 1)


class _Stream:
    """One call on grpcio's public API: its request queue, the call, its responses.

    The same interface as :class:`~._core_call.CoreCall`, which is used where
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


_core_fallback_logged = False


def _log_core_fallback(reason: str) -> None:
    global _core_fallback_logged
    if not _core_fallback_logged:
        _core_fallback_logged = True
        logger.warning(
            "the streaming modes use grpcio's public stream API (grpcio %s: %s); "
            "each bidi exchange takes about 20%% longer than on grpcio's core layer",
            grpc.__version__,
            reason,
        )


class _StreamingTransport(SyncTransport):
    """A streaming mode: its calls on grpcio's core layer where that layer is as
    expected (:attr:`on_core`), otherwise on grpcio's public API."""

    def __init__(self, settings: ChannelSettings) -> None:
        super().__init__(settings)
        self._method = settings.stream_method_path
        self.on_core = core_available(self._channel)
        """Calls are driven on grpcio's core layer (else on its public API)."""
        if not self.on_core:
            _log_core_fallback("its internal call layer is not as expected")

    def _open_call(
        self, on_core: Callable[[], _CoreT], on_public: Callable[[], _PublicT]
    ) -> _CoreT | _PublicT:
        """Open a call with ``on_core`` (or ``on_public`` where the core layer is
        missing or, found now, changed); a closed channel is reported as such."""
        # A missing socket file is reported before a call; an open call reports its own end.
        precheck(self._settings)
        try:
            if self._closed:
                raise ValueError("transport closed")
            if self.on_core:
                try:
                    return on_core()
                except (AttributeError, TypeError) as exc:
                    # The internal layer changed its signature: the public API from now on.
                    _log_core_fallback(f"{type(exc).__name__}: {exc}")
                    self.on_core = False
            return on_public()
        except ValueError as exc:
            raise closed_channel_error(self._settings, exc) from None


class BidiTransport(_StreamingTransport):
    """One long-lived bidirectional call, one request and one response at a time.

    The call is a :class:`~._core_call.CoreCall` where grpcio's internal layer
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
                response = decode_response(payload, self._settings.layout)
                check_response(response, sequence_id, self._method)
                check_length(len(response.data), n, self._method)
            except BaseException:
                # Never read this stream again: its next reply would not be this request's.
                self._drop_stream()
                raise
        return Reply(response.data, sequence_id, response.generated_ns, response.device_id, 1)

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


class _PublicResponseStream:
    """A server-streaming call on grpcio's public API; the interface of ``CoreResponseStream``."""

    __slots__ = ("call", "responses")

    def __init__(
        self,
        multicallable: grpc.UnaryStreamMultiCallable[bytes, bytes],
        metadata: tuple[tuple[str, str], ...],
        request: bytes,
        timeout_s: float,
    ) -> None:
        self.call = multicallable(request, timeout=timeout_s, metadata=metadata or None)
        self.responses = iter(self.call)

    def read(self) -> bytes | None:
        """The next response, or None once the server ended the call with OK."""
        try:
            return next(self.responses)
        except StopIteration:
            return None
        except grpc.RpcError as exc:
            raise CallEndedError(exc.code(), exc.details() or "") from None

    def discard(self) -> None:
        """End the call if it is still open."""
        self.call.cancel()  # type: ignore[no-untyped-call]  # grpc-stubs leaves it untyped


class ServerStreamingTransport(_StreamingTransport):
    """One unary-request / stream-response call per request, read in the caller's thread.

    The call is a :class:`~._core_call.CoreResponseStream` where grpcio's
    internal layer is as expected (:attr:`on_core`), otherwise one on the
    public API. Calls from several threads run side by side (one call each).
    """

    mode = "server_streaming"

    def __init__(self, settings: ChannelSettings) -> None:
        super().__init__(settings)
        self._multicallable: grpc.UnaryStreamMultiCallable[bytes, bytes] = (
            self._channel.unary_stream(
                self._method, request_serializer=None, response_deserializer=None
            )
        )

    def request(self, n: int, sequence_id: int, timeout_s: float) -> Reply:
        """Send one request, half-close, read chunks until the server ends the call.

        Raises:
            GrpcEntropyError: the call failed, timed out or was answered wrongly.
        """
        request = encode_request(n, sequence_id)
        metadata = self._settings.metadata
        stream = self._open_call(
            lambda: CoreResponseStream(self._channel, self._method, metadata, request, timeout_s),
            lambda: _PublicResponseStream(self._multicallable, metadata, request, timeout_s),
        )
        chunks: list[bytes] = []
        total = 0
        first: WireResponse | None = None
        try:
            while (payload := stream.read()) is not None:
                response = decode_response(payload, self._settings.layout)
                check_response(response, sequence_id, self._method)
                first = first or response
                chunks.append(response.data)
                total += len(response.data)
                if total > n:
                    check_length(total, n, self._method)
        except CallEndedError as ended:
            stream.discard()
            raise status_error(ended.code, ended.details, self._method, self._settings) from None
        except BaseException:
            stream.discard()
            raise
        stream.discard()
        check_length(total, n, self._method)
        assert first is not None  # total == n > 0 means at least one chunk
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return Reply(data, sequence_id, first.generated_ns, first.device_id, len(chunks))
