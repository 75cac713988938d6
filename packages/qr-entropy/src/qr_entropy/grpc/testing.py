"""Tooling for tests and benchmarks of the gRPC client: public on purpose, not for production.

As httpx ships its ``MockTransport``, this module offers what a test or a
benchmark of :class:`~qr_entropy.grpc.QuantumGrpcSource` needs to steer or see
inside the client, so that no test, benchmark or example outside qr-entropy
imports its private modules.

Steering:

- :class:`ManualClock`: a clock moved by hand. Pass it as
  ``QuantumGrpcSource(config, clock=clock)`` to step over the circuit's
  recovery window instead of sleeping through it.
- :func:`public_api_only`: streaming transports built inside the block run on
  grpcio's public API, as on a grpcio whose core layer is missing or changed
  (the fallback).
- :func:`failing_watchdog`: the process-wide watchdog's own loop fails inside
  the block (a fault injected to show that the thread survives it).

Looking:

- :func:`core_layer_usable`: whether the streaming modes run on grpcio's core
  layer with the grpcio installed (else always on its public API).
- :func:`transport_state`: the mode, call layer and counters of a source's transport.
- :func:`open_core_calls`: calls on grpcio's core layer not released yet (a leak check).
- :func:`watchdog_alarms_fired`: bidi reads the process-wide watchdog ended.
- :func:`watchdog_failures`: failures of the watchdog's own loop it survived.

The parts a fetch is made of, to time them alone (``benchmarks/bench_grpc.py``):
:class:`CoreCall` (one bidirectional call on grpcio's core layer, as the client
drives it) and :class:`CallEndedError`, :class:`Watchdog`, :func:`encode_request`
and :func:`decode_response` (the wire codec), and :func:`transport_request` (one
exchange on a source's transport, without breaker and provenance).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc

from qr_entropy.grpc._core_call import (
    CallEndedError,
    CoreCall,
    core_layer_problem,
    open_core_calls,
    public_api_only,
)
from qr_entropy.grpc._source import QuantumGrpcSource
from qr_entropy.grpc._transports import BidiTransport
from qr_entropy.grpc._transports.base import StreamingTransport
from qr_entropy.grpc._watchdog import Watchdog, shared_watchdog
from qr_entropy.grpc._wire import WireResponse, decode_response, encode_request

__all__ = [
    "CallEndedError",
    "CoreCall",
    "ManualClock",
    "TransportState",
    "Watchdog",
    "WireResponse",
    "core_layer_usable",
    "decode_response",
    "encode_request",
    "failing_watchdog",
    "open_core_calls",
    "public_api_only",
    "transport_request",
    "transport_state",
    "watchdog_alarms_fired",
    "watchdog_failures",
]


class ManualClock:
    """A monotonic clock in seconds that moves only when :meth:`advance` is called.

    Args:
        start: The reading before the first :meth:`advance`.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        """The current reading."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (>= 0).

        Raises:
            ValueError: ``seconds`` is negative: a monotonic clock never goes back.
        """
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        with self._lock:
            self._now += seconds


@dataclass(frozen=True, slots=True)
class TransportState:
    """A source's transport at one moment (see :func:`transport_state`)."""

    mode: str
    """``unary``, ``server_streaming`` or ``bidi_streaming``."""
    on_core: bool | None
    """Streaming modes: calls are driven on grpcio's core layer (False: on its
    public API, the fallback). None for ``unary`` (grpcio's own blocking call)."""
    streams_opened: int | None
    """``bidi_streaming``: calls opened so far on this transport (a dropped call
    is never read again); None for the other modes."""
    channels_opened: int
    """Transports (each with its own channel) the source has opened so far; a
    connection failure replaces the channel."""


def core_layer_usable() -> bool:
    """Whether streaming transports built now run on grpcio's core layer.

    False where the installed grpcio's core layer is missing or not as expected
    (grpcio < 1.63), and inside :func:`public_api_only`.
    """
    # Never connected: only the channel's shape is looked at.
    with grpc.insecure_channel("127.0.0.1:9") as channel:
        return core_layer_problem(channel) is None


def transport_state(source: QuantumGrpcSource) -> TransportState | None:
    """The source's current transport, or None before its first fetch and after a close."""
    transport = source._transport
    if transport is None:
        return None
    return TransportState(
        mode=transport.mode,
        on_core=transport.on_core if isinstance(transport, StreamingTransport) else None,
        streams_opened=(transport.streams_opened if isinstance(transport, BidiTransport) else None),
        channels_opened=source._channels_opened,
    )


def transport_request(
    source: QuantumGrpcSource, n: int, sequence_id: int, timeout_s: float
) -> bytes:
    """One exchange on the source's transport, without its breaker and provenance.

    Opens the transport where the source has none yet.

    Raises:
        GrpcEntropyError: The call failed, timed out or was answered wrongly.
        EntropyUnavailableError: The source is closed.
    """
    return source._started().request(n, sequence_id, timeout_s).data


def watchdog_alarms_fired() -> int:
    """Bidi reads that the process-wide watchdog ended at their deadline, so far."""
    return shared_watchdog().fired


def watchdog_failures() -> int:
    """Failures of the process-wide watchdog's own loop that it survived, so far."""
    return shared_watchdog().failures


@contextlib.contextmanager
def failing_watchdog(times: int = 1) -> Iterator[Callable[[], int]]:
    """Make the process-wide watchdog's own loop fail ``times`` times inside the block.

    Its clock raises ``RuntimeError`` when the watchdog's thread reads it (the
    callers that arm alarms read the real clock), as an overflow in its wait once
    killed the thread. Yields a function returning how many failures were injected.
    """
    watchdog = shared_watchdog()
    real = watchdog._clock
    left = [times]
    name = watchdog._name

    def clock() -> float:
        if left[0] > 0 and threading.current_thread().name == name:
            left[0] -= 1
            raise RuntimeError("injected failure of the watchdog's loop (test)")
        return real()

    watchdog._clock = clock
    try:
        yield lambda: times - left[0]
    finally:
        watchdog._clock = real
