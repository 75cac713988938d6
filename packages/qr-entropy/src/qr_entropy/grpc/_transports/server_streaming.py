"""``server_streaming``: one call per request, read in the caller's thread until the server ends it.

The request is written and the call half-closed as it opens, then the caller
reads the responses (the bytes may come in several chunks) until the server
ends the call, all under one gRPC deadline. Calls from several threads run
side by side. The call is a :class:`~qr_entropy.grpc._core_call.CoreResponseStream`
on grpcio's core layer where that layer is as expected, otherwise a
:class:`_PublicResponseStream` on grpcio's public API (the fallback).
"""

from __future__ import annotations

import grpc

from qr_entropy.grpc._channel import ChannelSettings
from qr_entropy.grpc._core_call import CallEndedError, CoreResponseStream
from qr_entropy.grpc._errors import ProtocolMismatchError
from qr_entropy.grpc._replies import Reply, check_length, read_response, status_error
from qr_entropy.grpc._transports.base import StreamingTransport
from qr_entropy.grpc._wire import WireResponse, encode_request

__all__ = ["ServerStreamingTransport"]


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


class ServerStreamingTransport(StreamingTransport):
    """One unary-request / stream-response call per request, read in the caller's thread.

    The call is a :class:`~qr_entropy.grpc._core_call.CoreResponseStream` where grpcio's
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
                response = read_response(payload, sequence_id, self._method, self._settings)
                first = first or response
                chunks.append(response.data)
                total += len(response.data)
                if total > n:
                    check_length(total, n, self._method, self._settings)
        except CallEndedError as ended:
            stream.discard()
            raise status_error(ended.code, ended.details, self._method, self._settings) from None
        except BaseException:
            stream.discard()
            raise
        stream.discard()
        if first is None:
            raise ProtocolMismatchError(
                f"{self._method}: the server ended the call without a response, requested {n}"
            )
        check_length(total, n, self._method, self._settings)
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return Reply(
            data,
            sequence_id,
            first.generated_ns,
            first.device_id,
            len(chunks),
            first.read_started_ns,
            first.device_bytes_per_second,
        )
