"""What every transport shares: the channel, ``close()``, and the streaming modes' choice of layer.

A :class:`SyncTransport` runs ``request`` in the caller's thread on grpcio's
synchronous channel. A :class:`StreamingTransport` opens its calls on grpcio's
core layer (:mod:`qr_entropy.grpc._core_call`) where that layer is as expected
(:attr:`StreamingTransport.on_core`), otherwise on grpcio's public API; the
switch is logged once per process, with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import grpc

from qr_entropy.grpc._channel import ChannelSettings
from qr_entropy.grpc._core_call import core_layer_problem
from qr_entropy.grpc._errors import GrpcEntropyError
from qr_entropy.grpc._replies import Reply, precheck

__all__ = ["StreamingTransport", "SyncTransport", "closed_channel_error"]

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


class StreamingTransport(SyncTransport):
    """A streaming mode: its calls on grpcio's core layer where that layer is as
    expected (:attr:`on_core`), otherwise on grpcio's public API."""

    def __init__(self, settings: ChannelSettings) -> None:
        super().__init__(settings)
        self._method = settings.stream_method_path
        problem = core_layer_problem(self._channel)
        self.on_core = problem is None
        """Calls are driven on grpcio's core layer (else on its public API)."""
        if problem is not None:
            _log_core_fallback(problem)

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
