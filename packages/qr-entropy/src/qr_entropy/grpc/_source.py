"""``QuantumGrpcSource``: entropy from a gRPC server, registered as ``quantum_grpc``."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
import time
from collections.abc import Callable

from qr_entropy._config import EntropyConfig
from qr_entropy._exceptions import EntropyUnavailableError, SourceConfigurationError
from qr_entropy._fetch import EntropyFetch
from qr_entropy._probe import ProbeResult
from qr_entropy._registry import register_entropy_source
from qr_entropy._source import EntropySource, check_byte_count
from qr_entropy.grpc._breaker import (
    BreakerSnapshot,
    BreakerState,
    CircuitBreaker,
    CircuitOpenError,
)
from qr_entropy.grpc._channel import ChannelSettings
from qr_entropy.grpc._errors import GrpcConfigurationError, GrpcEntropyError
from qr_entropy.grpc._replies import Reply
from qr_entropy.grpc._transports import TRANSPORTS, SyncTransport

__all__ = ["QuantumGrpcSource"]

logger = logging.getLogger(__name__)


@register_entropy_source("quantum_grpc")
class QuantumGrpcSource(EntropySource):
    """Random bytes from a remote (quantum) RNG server over gRPC.

    Reads the ``grpc_*`` and ``cb_*`` fields of :class:`EntropyConfig`. Each
    request carries a fresh ``sequence_id``; replies that do not match it, or
    that have the wrong length, are rejected and their stream is dropped, so
    no fetch ever receives bytes generated for an earlier request. Fetches
    larger than ``grpc_max_request_bytes`` are split into consecutive requests.
    A call that outlives its learnt deadline is asked again on the same server
    at the configured timeout (``grpc_timeout_ms``) without spending a retry;
    failures with a retryable status are retried ``grpc_retry_count`` times
    within one fetch and then raise :class:`EntropyUnavailableError` (the
    fallback's cue); an adaptive circuit breaker sets each call's deadline and
    stops calling a failing server. A configuration-class failure (wrong key,
    CA, host name, method, layout) raises a :class:`GrpcConfigurationError`
    at once, and so does the open circuit it caused. :meth:`probe` checks the
    server at start-up. Safe to use from several threads.

    Args:
        config: Settings; the environment (``QR_*``) when omitted.
        clock: Monotonic clock in seconds that times the circuit's recovery
            window (``cb_recovery_window_s``); tests move theirs by hand
            (:class:`qr_entropy.grpc.testing.ManualClock`).

    Raises:
        ConfigError: Bad method path, API-key header or TLS files.
    """

    def __init__(
        self,
        config: EntropyConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        config = config if config is not None else EntropyConfig()
        self._settings = ChannelSettings.from_config(config)
        self._configured_mode = config.grpc_mode
        self._mode = config.grpc_mode
        if self._mode != "unary" and not self._settings.stream_method_path:
            logger.warning(
                "grpc_mode=%r but grpc_stream_method_path is empty: streaming disabled, "
                "using unary",
                self._mode,
            )
            self._mode = "unary"
        self._retries = config.grpc_retry_count
        self._timeout_s = config.grpc_timeout_ms / 1000.0
        self._recovery_s = config.cb_recovery_window_s
        self._breaker = CircuitBreaker(
            ceiling_ms=config.grpc_timeout_ms,
            window_size=config.cb_window_size,
            min_timeout_ms=config.cb_min_timeout_ms,
            multiplier=config.cb_timeout_multiplier,
            recovery_window_s=config.cb_recovery_window_s,
            max_consecutive_failures=config.cb_max_consecutive_failures,
            clock=clock,
        )
        self._sequence = itertools.count(1)
        self._lock = threading.Lock()
        self._transport: SyncTransport | None = None
        self._channels_opened = 0
        self._closed = False
        self._device_id = ""
        self._last_error: str | None = None
        # The configuration-class failure of the latest call; None after any other outcome.
        self._misconfigured: GrpcConfigurationError | None = None

    @classmethod
    def from_config(cls, config: EntropyConfig) -> QuantumGrpcSource:
        """Build the source from ``config``."""
        return cls(config)

    @property
    def mode(self) -> str:
        """The transport mode in use (``unary`` when streaming is disabled)."""
        return self._mode

    @property
    def is_available(self) -> bool:
        """False once closed or while the circuit is open."""
        return not self._closed and self._breaker.snapshot().state is not BreakerState.OPEN

    @property
    def device_id(self) -> str:
        """The ``device_id`` of the most recent response ("" before the first)."""
        return self._device_id

    @property
    def breaker(self) -> BreakerSnapshot:
        """The circuit breaker's current state and counters."""
        return self._breaker.snapshot()

    def _started(self) -> SyncTransport:
        transport = self._transport
        if transport is not None and not self._closed:
            return transport  # no lock once started: one read on the critical path
        with self._lock:
            if self._closed:
                raise EntropyUnavailableError("quantum_grpc source is closed")
            if self._transport is None:
                # The caller's thread makes each call itself (see _transports).
                self._transport = TRANSPORTS[self._mode](self._settings)
                self._channels_opened += 1
            return self._transport

    def _discard(self, transport: SyncTransport) -> None:
        """Replace the channel after a connection failure.

        A fresh channel connects at once, while the failed one would wait out
        its reconnect backoff (up to a second) after the server came back.
        """
        with self._lock:
            if self._transport is not transport:
                return
            self._transport = None
        transport.close()

    def get_random_bytes(self, n: int) -> bytes:
        """Return ``n`` fresh bytes from the server (see :meth:`fetch`)."""
        return self.fetch(n).data

    def fetch(self, n: int) -> EntropyFetch:
        """Fetch ``n`` bytes generated after this call began, with provenance.

        ``sequence_id`` and ``device_id`` are the first request's; ``generated_ns``
        is the earliest server timestamp (``None`` when the response layout or
        the server has none: never invented);
        ``response_count`` counts all response messages.

        Raises:
            ByteCountError: ``n`` is not a positive integer.
            EntropyUnavailableError: the server failed after all retries, or the
                circuit is open, or the source is closed.
        """
        check_byte_count(n)
        requested_ns = time.time_ns()
        size = self._settings.max_request_bytes
        if n <= size:  # one request: the per-token case, on the step's critical path
            reply = self._request(n)
            return EntropyFetch(
                data=reply.data,
                source=self.name,
                device_id=reply.device_id,
                sequence_id=reply.sequence_id,
                requested_ns=requested_ns,
                generated_ns=reply.generated_ns,
                received_ns=time.time_ns(),
                response_count=reply.responses,
                read_started_ns=reply.read_started_ns,
                device_bytes_per_second=reply.device_bytes_per_second,
            )
        replies = [self._request(min(size, n - start)) for start in range(0, n, size)]
        received_ns = time.time_ns()
        first = replies[0]
        stamps = [r.generated_ns for r in replies if r.generated_ns is not None]
        starts = [r.read_started_ns for r in replies if r.read_started_ns is not None]
        rates = [r.device_bytes_per_second for r in replies if r.device_bytes_per_second]
        return EntropyFetch(
            data=first.data if len(replies) == 1 else b"".join(r.data for r in replies),
            source=self.name,
            device_id=first.device_id,
            sequence_id=first.sequence_id,
            requested_ns=requested_ns,
            generated_ns=min(stamps) if stamps else None,
            received_ns=received_ns,
            response_count=sum(r.responses for r in replies),
            read_started_ns=min(starts) if starts else None,
            device_bytes_per_second=rates[-1] if rates else None,
        )

    def _request(self, n: int) -> Reply:
        error: GrpcEntropyError | None = None
        attempts = self._retries + 1
        full = False
        while attempts > 0:
            try:
                admission = self._breaker.acquire(n, full=full)
            except CircuitOpenError as exc:
                if error is not None:
                    raise error from None  # the circuit opened on this fetch's own failures
                cause = self._misconfigured
                if cause is not None:  # the circuit opened on a configuration-class failure
                    raise GrpcConfigurationError(
                        f"{exc}; after: {cause}",
                        code=cause.code,
                        address=cause.address,
                        cause=cause.cause,
                    ) from None
                raise
            try:
                transport = self._started()
            except BaseException:
                self._breaker.release(admission)
                raise
            sequence_id = next(self._sequence)
            start = time.perf_counter()
            try:
                reply = transport.request(n, sequence_id, admission.timeout_s)
            except GrpcEntropyError as exc:
                if self._closed:
                    # close() cancelled the call: not the server's failure.
                    self._breaker.release(admission)
                    raise EntropyUnavailableError(
                        "quantum_grpc source closed during the call"
                    ) from exc
                elapsed = time.perf_counter() - start
                opened = self._breaker.record_failure(admission, elapsed, timed_out=exc.timed_out)
                self._last_error = str(exc)
                self._misconfigured = exc if isinstance(exc, GrpcConfigurationError) else None
                error = exc
                # A deadline learnt from recent calls ran out: the server is slower than
                # it was, not gone. Ask it again at the configured timeout, without
                # spending a retry, before anything counts as a failure.
                escalate = exc.timed_out and not admission.full
                if not escalate:
                    attempts -= 1
                full = full or escalate
                # One line per attempt would flood the log during an outage at token rate;
                # the fallback logs the outage once, the circuit its transitions.
                logger.debug("attempt on %s failed (%d left): %s", self._mode, attempts, exc)
                if opened:
                    logger.warning(
                        "circuit opened for %s (%s): %s; calls fail fast for %.1f s",
                        self._settings.address,
                        self._mode,
                        exc,
                        self._recovery_s,
                    )
                if exc.code == "UNAVAILABLE":
                    self._discard(transport)
                if not exc.retryable:
                    break
                continue
            except BaseException as exc:
                self._breaker.release(admission)
                if self._closed and isinstance(exc, Exception):
                    raise EntropyUnavailableError(
                        "quantum_grpc source closed during the call"
                    ) from exc
                raise
            self._misconfigured = None
            if self._breaker.record_success(admission, time.perf_counter() - start):
                logger.info(
                    "circuit closed for %s: the server answers again", self._settings.address
                )
            if reply.device_id:
                self._device_id = reply.device_id
            return reply
        assert error is not None
        raise error

    def probe(self) -> ProbeResult:
        """At start-up: one call for one byte (discarded) at ``grpc_timeout_ms``, in the
        configured mode, outside the circuit breaker, no retry.

        Returns:
            ``reachable=True`` with the device id and rate the server reports,
            or ``reachable=False`` with the fault for a transient one (the
            server is down, a deadline, another status).

        Raises:
            GrpcConfigurationError: a configuration-class failure (also a
                :class:`~qr_entropy.SourceConfigurationError`): the message names
                the address and the cause.
            EntropyUnavailableError: the source is closed.
        """
        transport = self._started()
        start = time.perf_counter()
        try:
            reply = transport.request(1, next(self._sequence), self._timeout_s)
        except GrpcEntropyError as exc:
            if isinstance(exc, SourceConfigurationError):
                raise
            if exc.code == "UNAVAILABLE":
                self._discard(transport)
            return ProbeResult(self.name, False, self._settings.address, detail=str(exc))
        if reply.device_id:
            self._device_id = reply.device_id
        return ProbeResult(
            self.name,
            True,
            self._settings.address,
            device_id=reply.device_id,
            device_bytes_per_second=reply.device_bytes_per_second,
            latency_s=time.perf_counter() - start,
        )

    def health_check(self) -> dict[str, object]:
        """Report transport, breaker state, latency and counts; never the API key."""
        breaker = dataclasses.asdict(self._breaker.snapshot())
        misconfigured = self._misconfigured
        return {
            "source": self.name,
            "healthy": self.is_available,
            "address": self._settings.address,
            "mode": self._mode,
            "configured_mode": self._configured_mode,
            "streaming_enabled": bool(self._settings.stream_method_path),
            "tls": self._settings.tls,
            "authenticated": self._settings.authenticated,
            "device_id": self._device_id,
            "circuit_state": breaker.pop("state").value,
            **breaker,  # p99_ms, timeout_ms, window_count, the counts
            "last_error": self._last_error,
            "configuration_error": None if misconfigured is None else str(misconfigured),
        }

    def close(self) -> None:
        """Cancel in-flight calls and close the channel; later fetches raise."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
