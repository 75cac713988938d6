"""Calls driven on grpcio's core layer from the fetching thread (bidi and server streaming).

grpcio's public synchronous stream API writes each request on a thread of its
own (the consumer of the request iterator) and hands each reply to the reader
through its channel thread and a condition variable: two thread hand-offs per
exchange. Here the fetching thread writes the request and waits for its reply
in one batch on the call's own completion queue, with no other thread in
between. A bare exchange this way took 0.76 to 0.82 x the time of a bare
exchange on the public API (same server, taking turns; ``docs/grpc.md``).
A server-streaming call (:class:`CoreResponseStream`) sends its one request
and half-closes in the batch that opens it, then reads one response per batch
in the same thread, under a gRPC deadline for the whole call.

The layer is ``grpc._cython.cygrpc``, the one grpcio's own blocking unary calls
use (a "segregated" call: its events come only to the thread that asks for
them). It is not public API, so :func:`core_layer_problem` checks its shape
before a transport opens its first call, and the transport falls back to the
public API where it is missing or changed (``qr_entropy.grpc._transports``).
The shape checked: the operations and constants used here, and a channel whose
``segregated_call`` takes the registered-call handle as its ninth argument,
which grpcio added in 1.63 together with ``get_registered_call_handle`` (on
grpcio 1.62 the call would raise ``TypeError: segregated_call() takes at most
8 positional arguments (9 given)``).

Rules the layer imposes, kept here:
- ``next_event()`` may only be called while some batch of the call is still
  due; grpcio frees the call's queue once the last one completes. The due
  batches are tracked in :attr:`CoreCall._due`.
- ``operate()`` returns False once the call has ended (nothing is due): no
  event will come for that batch.
- ``cancel()`` is safe from any thread (the watchdog's, ``close()``'s); every
  other method is for the one thread that owns the call at the time.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Iterator
from typing import Any

import grpc

__all__ = [
    "CallEndedError",
    "CoreCall",
    "CoreResponseStream",
    "core_layer_problem",
    "open_core_calls",
    "public_api_only",
]

_cygrpc: Any
try:  # grpcio's internal layer: see the module docstring.
    _cygrpc = importlib.import_module("grpc._cython.cygrpc")
except ImportError:  # pragma: no cover - every grpcio release so far has it
    _cygrpc = None

# Batch tags (compared by identity): opening the call, its final status, one exchange.
_OPEN, _STATUS, _EXCHANGE = "open", "status", "exchange"

_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _cygrpc_shape_ok() -> bool:
    names = (
        "SendInitialMetadataOperation",
        "ReceiveInitialMetadataOperation",
        "ReceiveStatusOnClientOperation",
        "SendMessageOperation",
        "SendCloseFromClientOperation",
        "ReceiveMessageOperation",
        "PropagationConstants",
        "StatusCode",
        "build_census_context",
    )
    return _cygrpc is not None and all(hasattr(_cygrpc, name) for name in names)


_SHAPE_OK = _cygrpc_shape_ok()

# The channel methods a call here needs: segregated_call with the registered-call
# handle as its ninth argument, which came with get_registered_call_handle (1.63).
_CHANNEL_METHODS = ("segregated_call", "get_registered_call_handle")

# public_api_only() blocks in force (test tooling: qr_entropy.grpc.testing).
_public_only = 0


def core_layer_problem(channel: grpc.Channel) -> str | None:
    """Why ``channel`` cannot carry a :class:`CoreCall`; None where grpcio's core layer
    is as expected."""
    if _public_only:
        return "the core layer is switched off (qr_entropy.grpc.testing.public_api_only)"
    if not _SHAPE_OK:
        return "its internal call layer (grpc._cython.cygrpc) is not as expected"
    inner = getattr(channel, "_channel", None)
    missing = [name for name in _CHANNEL_METHODS if not hasattr(inner, name)]
    if missing:
        return (
            f"its channel lacks {', '.join(missing)} (segregated_call with a "
            "registered-call handle came with grpcio 1.63)"
        )
    return None


@contextlib.contextmanager
def public_api_only() -> Iterator[None]:
    """Streaming transports built inside the block use grpcio's public API."""
    global _public_only
    _public_only += 1
    try:
        yield
    finally:
        _public_only -= 1


class CallEndedError(Exception):
    """The call ended (cancelled, failed, or closed by the server) before the reply came.

    Internal: the transports turn it into a ``GrpcEntropyError`` naming the status.

    Attributes:
        code: The call's final status.
        details: The status details.
    """

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class _CoreCallBase:
    """A call on grpcio's core layer: its due batches, its final status, cancel and discard."""

    __slots__ = ("_call", "_due", "_status")

    def __init__(
        self,
        channel: grpc.Channel,
        method: str,
        metadata: tuple[tuple[str, str], ...],
        deadline: float | None,
        first: tuple[Any, ...],
    ) -> None:
        core = _cygrpc
        sent = metadata or None
        self._call: Any = channel._channel.segregated_call(  # type: ignore[attr-defined]
            core.PropagationConstants.GRPC_PROPAGATE_DEFAULTS,
            method.encode(),
            None,  # host: the channel's
            deadline,  # seconds since the epoch, as grpcio's own calls pass it; None: none
            sent,
            None,  # no call credentials: the API key travels in the metadata
            (
                ((core.SendInitialMetadataOperation(sent, 0), *first), _OPEN),
                ((core.ReceiveStatusOnClientOperation(0),), _STATUS),
            ),
            core.build_census_context(),
            None,  # an unregistered method, as grpcio's own multicallables without one
        )
        self._due = {_OPEN, _STATUS}
        self._status: tuple[grpc.StatusCode, str] | None = None
        _open_calls.add(self)

    def _next(self) -> str:
        """Wait for the next batch of the call to complete; return its tag."""
        try:
            event = self._call.next_event()
        except BaseException:
            # grpcio released the call when the wait was interrupted (a signal).
            self._due.clear()
            _open_calls.discard(self)
            raise
        tag: str = event.tag
        self._due.discard(tag)
        if tag is _STATUS:
            status = event.batch_operations[0]
            self._status = (
                _STATUS_CODES.get(status.code(), grpc.StatusCode.UNKNOWN),
                status.details() or "",
            )
        if not self._due:
            _open_calls.discard(self)
        return tag

    def _receive(self, operations: tuple[Any, ...], receive: Any) -> bytes | None:
        """Start ``operations`` (ending with ``receive``) as one batch and wait for it.

        Returns the message received, or None when the call has ended.
        """
        if not self._call.operate(operations, _EXCHANGE):
            return None
        self._due.add(_EXCHANGE)
        while self._next() is not _EXCHANGE:
            pass
        # grpcio fills the operation in place when the batch completes.
        message: bytes | None = receive.message()
        return message

    def _ended(self) -> CallEndedError:
        """The call's final status, waiting for it where it is still due."""
        while self._status is None and _STATUS in self._due:
            self._next()
        code, details = self._status or (grpc.StatusCode.UNKNOWN, "call ended without a status")
        return CallEndedError(code, details)

    def cancel(self, details: str = "cancelled by the client") -> None:
        """End the call; a thread waiting on it raises at once. Any thread."""
        self._call.cancel(_cygrpc.StatusCode.cancelled, details)

    def discard(self, details: str = "call dropped") -> None:
        """Cancel the call if it is still open, and wait for its last batches, so that
        grpcio frees it. Owner thread."""
        if self._status is None and self._due:
            self.cancel(details)
        while self._due:
            self._next()


# The core calls that grpcio has not released yet (a batch still due), for a leak
# check; set.add and set.discard are atomic, so no lock.
_open_calls: set[_CoreCallBase] = set()


def open_core_calls() -> int:
    """Core calls of this process with a batch still due (open, or not yet discarded)."""
    return len(_open_calls)


class CoreCall(_CoreCallBase):
    """One open bidirectional call: write one request, read its one reply.

    Args:
        channel: An open synchronous channel (see :func:`core_layer_problem`).
        method: The full method path, ``/package.Service/Method``.
        metadata: Initial metadata sent when the call opens (the API key).

    Raises:
        ValueError: The channel is closed.
    """

    __slots__ = ()

    def __init__(
        self, channel: grpc.Channel, method: str, metadata: tuple[tuple[str, str], ...]
    ) -> None:
        # No deadline for the call: each read has the watchdog's.
        super().__init__(
            channel, method, metadata, None, (_cygrpc.ReceiveInitialMetadataOperation(0),)
        )

    def exchange(self, request: bytes) -> bytes:
        """Write ``request`` and wait for the one reply.

        Raises:
            CallEndedError: The call ended first; the call is not usable again.
        """
        core = _cygrpc
        receive = core.ReceiveMessageOperation(0)
        reply = self._receive((core.SendMessageOperation(request, 0), receive), receive)
        if reply is None:
            raise self._ended()
        return reply


class CoreResponseStream(_CoreCallBase):
    """One request, then the server's responses until it ends the call (server streaming).

    The request is written and the call half-closed when it opens.

    Args:
        channel: An open synchronous channel (see :func:`core_layer_problem`).
        method: The full method path, ``/package.Service/Method``.
        metadata: Initial metadata (the API key).
        request: The one request message.
        timeout_s: The whole call's gRPC deadline.

    Raises:
        ValueError: The channel is closed.
    """

    __slots__ = ()

    def __init__(
        self,
        channel: grpc.Channel,
        method: str,
        metadata: tuple[tuple[str, str], ...],
        request: bytes,
        timeout_s: float,
    ) -> None:
        core = _cygrpc
        first = (
            core.SendMessageOperation(request, 0),
            core.SendCloseFromClientOperation(0),
            core.ReceiveInitialMetadataOperation(0),
        )
        super().__init__(channel, method, metadata, time.time() + timeout_s, first)

    def read(self) -> bytes | None:
        """The next response, or None once the server ended the call with OK.

        Raises:
            CallEndedError: The call ended with another status (DEADLINE_EXCEEDED,
                CANCELLED, an error of the server).
        """
        receive = _cygrpc.ReceiveMessageOperation(0)
        message = self._receive((receive,), receive)
        if message is not None:
            return message
        ended = self._ended()
        if ended.code is grpc.StatusCode.OK:
            return None
        raise ended
