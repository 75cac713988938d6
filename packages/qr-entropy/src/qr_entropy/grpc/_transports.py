"""The three transport modes, exactly as they behave on the wire.

- ``unary``: one ``GetEntropy``-style call per request, one response.
- ``server_streaming``: one call per request on the stream method, used as
  unary-request / stream-response: one request message, half-close, then read
  responses (the bytes may come in several chunks) until the server ends the call.
- ``bidi_streaming``: one long-lived bidirectional call; each request writes one
  message and reads exactly one response. On a timeout, a mismatched reply or
  any error the call is cancelled and never read again; the next request opens
  a new call.

``unary`` and ``bidi_streaming`` run on grpcio's synchronous API in the
caller's thread (:mod:`qr_entropy.grpc._sync`); ``server_streaming`` runs here,
on ``grpc.aio``. The checks and the error mapping here are shared by all.

Where the response layout has a ``sequence_id`` field, every response must
echo the request's (0 = not echoed is accepted); the bytes must total exactly
the number requested.
The server-streaming coroutines run on the client's private event loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import grpc
from grpc import aio

from qr_entropy.grpc._channel import ChannelSettings, unix_socket_path
from qr_entropy.grpc._errors import GrpcEntropyError, ProtocolMismatchError
from qr_entropy.grpc._wire import WireResponse, decode_response, encode_request

__all__ = [
    "RETRYABLE_CODES",
    "TRANSPORTS",
    "Reply",
    "ServerStreamingTransport",
    "Transport",
    "check_length",
    "check_response",
    "map_rpc_error",
    "precheck",
    "status_error",
]

# Status codes worth another attempt within the same fetch: the server (or the
# connection to it) is momentarily away, or a deadline ran out. Every other code
# (UNAUTHENTICATED, INVALID_ARGUMENT, INTERNAL, UNKNOWN, NOT_FOUND, ...) says the
# same request will be answered the same way, so the fetch fails at once.
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to one request."""

    data: bytes
    """Exactly the bytes requested."""
    sequence_id: int
    """The request's ``sequence_id``."""
    generated_ns: int | None
    """The first response's generation time; ``None`` when the layout or server has none."""
    device_id: str
    """The first response's device id; "" when absent."""
    responses: int
    """Response messages the bytes came in."""


def map_rpc_error(exc: grpc.RpcError, method: str, settings: ChannelSettings) -> GrpcEntropyError:
    """Turn a gRPC error into a ``GrpcEntropyError`` naming the status code."""
    return status_error(exc.code(), exc.details() or "", method, settings)


def status_error(
    code: grpc.StatusCode, details: str, method: str, settings: ChannelSettings
) -> GrpcEntropyError:
    """A ``GrpcEntropyError`` for a call that ended with status ``code``."""
    if code is grpc.StatusCode.UNAUTHENTICATED:
        hint = (
            "the server rejected the API key sent in header "
            f"{settings.metadata[0][0]!r}; check grpc_api_key"
            if settings.authenticated
            else "the server requires an API key; set grpc_api_key (and grpc_api_key_header)"
        )
        message = f"UNAUTHENTICATED from {settings.address} ({method}): {hint}"
    else:
        message = f"{code.name} from {settings.address} ({method}): {details}"
        path = unix_socket_path(settings.address)
        if code is grpc.StatusCode.UNAVAILABLE and path is not None:
            message += f" (unix socket {path!r})"
    return GrpcEntropyError(
        message,
        code=code.name,
        timed_out=code is grpc.StatusCode.DEADLINE_EXCEEDED,
        retryable=code in RETRYABLE_CODES,
    )


def check_response(response: WireResponse, sequence_id: int, method: str) -> None:
    """Reject a response that echoes a different ``sequence_id``."""
    if response.sequence_id and response.sequence_id != sequence_id:
        raise ProtocolMismatchError(
            f"{method}: response sequence_id {response.sequence_id} does not match "
            f"request {sequence_id}; stream dropped"
        )


def check_length(got: int, n: int, method: str) -> None:
    """Reject a reply whose byte count differs from the request's."""
    if got != n:
        raise ProtocolMismatchError(f"{method}: server returned {got} bytes, requested {n}")


def precheck(settings: ChannelSettings) -> None:
    """Fail at once, without a call, when a unix socket file is missing."""
    path = unix_socket_path(settings.address)
    if path is not None:
        try:
            settings.check_reachable()
        except Exception as exc:
            raise GrpcEntropyError(str(exc), code="UNAVAILABLE", retryable=False) from exc


class Transport(ABC):
    """One mode of asking the server for bytes."""

    mode: str

    def __init__(self, channel: aio.Channel, settings: ChannelSettings) -> None:
        self._channel = channel
        self._settings = settings
        self._method = settings.method_path if self.mode == "unary" else settings.stream_method_path

    async def request(self, n: int, sequence_id: int, timeout_s: float) -> Reply:
        """Ask for ``n`` bytes under ``sequence_id`` within ``timeout_s``.

        Raises:
            GrpcEntropyError: the call failed, timed out or was answered wrongly.
        """
        try:
            return await self._request(n, sequence_id, timeout_s)
        except aio.UsageError as exc:
            # The channel was closed under this call (close() or a replaced channel).
            raise GrpcEntropyError(
                f"channel to {self._settings.address} closed during the call: {exc}",
                code="CANCELLED",
                # Our own channel was replaced under the call: the next attempt gets a new one.
                retryable=True,
            ) from None

    @abstractmethod
    async def _request(self, n: int, sequence_id: int, timeout_s: float) -> Reply:
        """One attempt in this mode (see :meth:`request`)."""

    async def aclose(self) -> None:
        """Cancel what is in flight and close the channel."""
        await self._channel.close(grace=None)

    def _precheck(self) -> None:
        precheck(self._settings)


class ServerStreamingTransport(Transport):
    """One unary-request / stream-response call per request."""

    mode = "server_streaming"

    def __init__(self, channel: aio.Channel, settings: ChannelSettings) -> None:
        super().__init__(channel, settings)
        self._call = channel.unary_stream(
            settings.stream_method_path, request_serializer=None, response_deserializer=None
        )

    async def _request(self, n: int, sequence_id: int, timeout_s: float) -> Reply:
        """Send one request, half-close, read chunks until the server ends the call."""
        self._precheck()
        call = self._call(
            encode_request(n, sequence_id),
            timeout=timeout_s,
            metadata=self._settings.metadata or None,
        )
        chunks: list[bytes] = []
        total = 0
        first: WireResponse | None = None
        try:
            async for payload in call:
                response = decode_response(payload, self._settings.layout)
                check_response(response, sequence_id, self._method)
                first = first or response
                chunks.append(response.data)
                total += len(response.data)
                if total > n:
                    check_length(total, n, self._method)
        except aio.AioRpcError as exc:
            raise map_rpc_error(exc, self._method, self._settings) from None
        except BaseException:
            call.cancel()
            raise
        check_length(total, n, self._method)
        assert first is not None  # total == n > 0 means at least one chunk
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return Reply(data, sequence_id, first.generated_ns, first.device_id, len(chunks))


TRANSPORTS: dict[str, type[Transport]] = {
    "server_streaming": ServerStreamingTransport,
}
"""The modes that run on the client's event loop (``unary`` and ``bidi_streaming``
run in the caller's thread: :mod:`qr_entropy.grpc._sync`)."""
