"""Warnings that cannot flood the log: one line per kind of failure per interval.

A client that sends garbage at full speed, or a backend that fails every call,
would otherwise write one line (or a whole traceback) per request. Each kind of
failure is logged once, then counted until the interval has passed; the next
line carries the count of the repeats it stood for. Tracebacks are attached
only at debug level (``-vv``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DEFAULT_INTERVAL_S", "GRPC_CORE_LOGGER", "RateLimitedLog", "quiet_unsent_responses"]

DEFAULT_INTERVAL_S = 60.0
GRPC_CORE_LOGGER = "grpc._cython.cygrpc"
"""Where grpcio logs, with a traceback each, a response it could not send."""


@dataclass
class _Kind:
    last_logged: float
    suppressed: int = 0


class RateLimitedLog:
    """A logger front end that rate-limits warnings by kind.

    Args:
        logger: Where the lines go.
        interval_s: At most one line per kind within this many seconds.
        clock: Monotonic clock (replaceable in tests).
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._kinds: dict[str, _Kind] = {}
        self._lock = threading.Lock()

    def warning(
        self, kind: str, message: str, *args: object, exc: BaseException | None = None
    ) -> None:
        """Log ``message % args`` unless ``kind`` was logged within the interval."""
        now = self._clock()
        with self._lock:
            state = self._kinds.get(kind)
            if state is not None and now - state.last_logged < self._interval_s:
                state.suppressed += 1
                return
            suppressed = state.suppressed if state is not None else 0
            self._kinds[kind] = _Kind(last_logged=now)
        suffix = f" [{suppressed} more since the last such line]" if suppressed else ""
        traceback = exc if exc is not None and self._logger.isEnabledFor(logging.DEBUG) else None
        self._logger.warning(message + "%s", *args, suffix, exc_info=traceback)

    def flush(self) -> None:
        """Report the repeats still counted (at shutdown, so none go unmentioned)."""
        with self._lock:
            pending = [(k, s.suppressed) for k, s in self._kinds.items() if s.suppressed]
            for kind, _ in pending:
                self._kinds[kind].suppressed = 0
        for kind, count in pending:
            self._logger.warning("%d more %s warnings were suppressed", count, kind)


class _UnsentFilter(logging.Filter):
    """Turns grpcio's traceback for a send to a departed client into a rate-limited line.

    A client that cancels, or goes away, while its response waits to be sent
    makes grpcio log ``ExecuteBatchError raised in core by servicer method``
    at ERROR with a traceback, once per call: hundreds of tracebacks when
    hundreds of clients that never read leave. Nothing failed in the server.
    """

    def __init__(self, warn: RateLimitedLog) -> None:
        super().__init__()
        self._warn = warn

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if type(exc).__name__ != "ExecuteBatchError":
            return True
        self._warn.warning(
            "client-gone",
            "a client went away before its response was sent (it cancelled, or never read)",
        )
        return False


def quiet_unsent_responses(warn: RateLimitedLog) -> None:
    """Install :class:`_UnsentFilter` on grpcio's logger (once per process)."""
    core = logging.getLogger(GRPC_CORE_LOGGER)
    if not any(isinstance(f, _UnsentFilter) for f in core.filters):
        core.addFilter(_UnsentFilter(warn))
