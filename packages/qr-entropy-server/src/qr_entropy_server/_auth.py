"""API-key check: a server interceptor that rejects calls without the key."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

__all__ = ["ApiKeyInterceptor"]

# Load balancers and orchestrators probe health without credentials.
_OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
_MESSAGE = "missing or wrong API key"
_METHODS = {"GetEntropy": 0, "StreamEntropy": 1}


async def _reject(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, _MESSAGE)


async def _reject_stream(request_iterator: Any, context: aio.ServicerContext[Any, Any]) -> Any:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, _MESSAGE)


if TYPE_CHECKING:
    _Interceptor = aio.ServerInterceptor[Any, Any]
else:  # grpc's runtime class is not generic; only the stubs are.
    _Interceptor = aio.ServerInterceptor


class ApiKeyInterceptor(_Interceptor):
    """Ends every call whose metadata lacks ``header: key`` with UNAUTHENTICATED.

    The health service stays open. The key is compared in constant time and
    never logged.

    Args:
        key: The expected API key.
        header: Metadata header name (lower case, as gRPC transmits it).
        on_reject: Called with the method index (0 ``GetEntropy``, 1
            ``StreamEntropy``) and the status of each call refused (the metrics
            count it); calls to other methods are not reported.
    """

    def __init__(
        self,
        key: str,
        header: str,
        on_reject: Callable[[int, grpc.StatusCode], None] | None = None,
    ) -> None:
        self._key = key.encode()
        self._header = header.lower()
        self._on_reject = on_reject

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """Pass the call on when the key matches, otherwise answer UNAUTHENTICATED."""
        method: str = handler_call_details.method
        if method.startswith(_OPEN_PREFIXES):
            return await continuation(handler_call_details)
        for name, value in handler_call_details.invocation_metadata or ():
            if name == self._header:
                given = value.encode() if isinstance(value, str) else value
                if hmac.compare_digest(given, self._key):
                    return await continuation(handler_call_details)
                break
        handler = await continuation(handler_call_details)
        index = _METHODS.get(method.rpartition("/")[2])
        if self._on_reject is not None and handler is not None and index is not None:
            self._on_reject(index, grpc.StatusCode.UNAUTHENTICATED)
        if handler is not None and handler.request_streaming:
            return grpc.stream_stream_rpc_method_handler(_reject_stream)
        return grpc.unary_unary_rpc_method_handler(_reject)
