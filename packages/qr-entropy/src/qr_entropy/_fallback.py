"""``FallbackEntropySource``: a primary source with a recorded, logged fallback."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from qr_entropy._exceptions import EntropyUnavailableError, SourceConfigurationError
from qr_entropy._fetch import EntropyFetch
from qr_entropy._probe import ProbeResult
from qr_entropy._source import EntropySource, check_byte_count

__all__ = ["CONFIGURATION_REASON", "ERROR_INTERVAL_S", "FallbackEntropySource"]

logger = logging.getLogger(__name__)

CONFIGURATION_REASON = "configuration"
"""``EntropyFetch.fallback_reason`` of a fetch that fell back because the primary's
server refuses this configuration (:class:`~qr_entropy.SourceConfigurationError`)."""
ERROR_INTERVAL_S = 60.0
"""While a configuration-class failure lasts, an ERROR is logged at least this often."""


class FallbackEntropySource(EntropySource):
    """Serve bytes from ``primary``; when it is unavailable, from ``fallback``.

    Only :class:`EntropyUnavailableError` triggers the fallback; every other
    error propagates. Each fetch says which source produced the bytes
    (``EntropyFetch.source``) and, when the fallback did, why
    (``fallback=True``, ``fallback_reason``). An outage is logged once as a
    warning when it starts and once at info level when the primary recovers,
    not once per fetch.

    A configuration-class failure (:class:`~qr_entropy.SourceConfigurationError`:
    a wrong key or CA, a method or layout the server does not speak) falls back
    the same way where the mode allows, with ``fallback_reason="configuration"``
    (:data:`CONFIGURATION_REASON`), and is logged as an ERROR when it starts and
    again every :data:`ERROR_INTERVAL_S` seconds while fetches still meet it,
    in mode ``error`` too.

    Args:
        primary: The configured source.
        fallback: The source used while ``primary`` is unavailable, or
            ``None`` to re-raise (``QR_FALLBACK_MODE=error``).
        clock: Monotonic clock in seconds that spaces the ERROR lines (tests
            pass one they move).
    """

    def __init__(
        self,
        primary: EntropySource,
        fallback: EntropySource | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._lock = threading.Lock()
        self._in_outage = False
        self._outage_fetches = 0
        self._fallback_fetches = 0
        self._last_source_used = primary.name
        self._clock = clock
        self._error_logged_at: float | None = None  # last ERROR of a configuration failure

    @property
    def name(self) -> str:
        """The primary's name: this wrapper stands for the configured source."""
        return self._primary.name

    @property
    def primary(self) -> EntropySource:
        """The configured source."""
        return self._primary

    @property
    def fallback(self) -> EntropySource | None:
        """The fallback source, or ``None`` in ``error`` mode."""
        return self._fallback

    @property
    def is_available(self) -> bool:
        """Whether the primary or the fallback can deliver."""
        if self._primary.is_available:
            return True
        return self._fallback is not None and self._fallback.is_available

    @property
    def device_id(self) -> str:
        """The primary's device id."""
        return self._primary.device_id

    @property
    def last_source_used(self) -> str:
        """Name of the source that produced the most recent bytes."""
        return self._last_source_used

    def get_random_bytes(self, n: int) -> bytes:
        """Return ``n`` bytes from the primary, or from the fallback if it is unavailable."""
        return self.fetch(n).data

    def fetch(self, n: int) -> EntropyFetch:
        """Fetch ``n`` bytes, falling back when the primary is unavailable.

        Args:
            n: Number of bytes, ``n >= 1``.

        Returns:
            The primary's fetch, or the fallback's with ``fallback=True``,
            ``fallback_reason`` set and ``requested_ns`` the time this fetch was
            requested (before the primary was tried).

        Raises:
            ByteCountError: ``n`` is not a positive integer.
            EntropyUnavailableError: The primary failed and there is no
                fallback, or the fallback failed too.
        """
        check_byte_count(n)
        # The fetch was requested now, however long the primary takes to fail.
        requested_ns = time.time_ns()
        try:
            result = self._primary.fetch(n)
        except EntropyUnavailableError as exc:
            reason = f"{self._primary.name}: {type(exc).__name__}: {exc}"
            if isinstance(exc, SourceConfigurationError):
                self._configuration_error(reason)
                reason = CONFIGURATION_REASON
            self._enter_outage(reason)
            if self._fallback is None:
                raise
            result = dataclasses.replace(
                self._fallback.fetch(n),
                requested_ns=requested_ns,
                fallback=True,
                fallback_reason=reason,
            )
            with self._lock:
                self._fallback_fetches += 1
        else:
            self._leave_outage()
        self._last_source_used = result.source
        return result

    def _configuration_error(self, detail: str) -> None:
        """Log an ERROR when a configuration failure starts, then at most once a minute."""
        now = self._clock()
        with self._lock:
            last = self._error_logged_at
            if last is not None and now - last < ERROR_INTERVAL_S:
                return
            self._error_logged_at = now
        target = self._fallback.name if self._fallback is not None else "nothing (mode 'error')"
        logger.error(
            "Entropy source %r refuses this configuration; a retry cannot fix it (falling "
            "back to %s, fallback_reason %r): %s",
            self._primary.name,
            target,
            CONFIGURATION_REASON,
            detail,
        )

    def probe(self) -> ProbeResult:
        """The primary's start-up probe (:meth:`EntropySource.probe`); never the fallback.

        Raises:
            SourceConfigurationError: the primary's server refuses this configuration.
        """
        return self._primary.probe()

    def _enter_outage(self, reason: str) -> None:
        with self._lock:
            self._outage_fetches += 1
            if self._in_outage:
                return
            self._in_outage = True
        target = self._fallback.name if self._fallback is not None else "nothing (mode 'error')"
        logger.warning(
            "Entropy source %r unavailable, falling back to %s: %s",
            self._primary.name,
            target,
            reason,
        )

    def _leave_outage(self) -> None:
        with self._lock:
            if not self._in_outage:
                return
            self._in_outage = False
            self._error_logged_at = None
            failed = self._outage_fetches
            self._outage_fetches = 0
        logger.info(
            "Entropy source %r recovered after %d failed fetches", self._primary.name, failed
        )

    def health_check(self) -> dict[str, object]:
        """Report the primary's and the fallback's health and the outage state."""
        with self._lock:
            in_outage = self._in_outage
            fallback_fetches = self._fallback_fetches
        return {
            "source": self.name,
            "healthy": self.is_available,
            "primary": self._primary.health_check(),
            "fallback": None if self._fallback is None else self._fallback.health_check(),
            "in_outage": in_outage,
            "fallback_fetches": fallback_fetches,
            "last_source_used": self._last_source_used,
        }

    def close(self) -> None:
        """Close the primary and the fallback."""
        try:
            self._primary.close()
        finally:
            if self._fallback is not None:
                self._fallback.close()
