"""The sink protocol and the two in-process sinks (ring buffer, log)."""

from __future__ import annotations

import collections
import json
import logging
import threading
from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

from qr_core.records._errors import RecordError
from qr_core.records._schema import TokenSamplingRecord
from qr_core.records._validate import require_finite

__all__ = ["LOG_SINK_LOGGER", "LogSink", "RecordSink", "RingBufferSink"]

LOG_SINK_LOGGER = __name__
"""Name of the logger a :class:`LogSink` writes to unless given another."""

_logger = logging.getLogger(LOG_SINK_LOGGER)


@runtime_checkable
class RecordSink(Protocol):
    """Where :class:`TokenSamplingRecord` objects go.

    ``write`` is called on the sampling path with the records of one engine step.
    """

    def write(self, records: Sequence[TokenSamplingRecord]) -> None:
        """Accept ``records``; never drops one silently."""

    def close(self) -> None:
        """Release resources; idempotent."""

    def stats(self) -> dict[str, int | float]:
        """Counters describing what the sink has done."""


class RingBufferSink:
    """Keeps the most recent ``capacity`` records in memory (``QR_DIAGNOSTIC_MODE``).

    Bounded by design: once full, each new record evicts the oldest one, and the
    evictions are counted in :meth:`stats` (``evicted``). Thread-safe.

    Args:
        capacity: Maximum number of records held (> 0).

    Raises:
        RecordError: ``capacity`` is not a positive int.
    """

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity <= 0:
            raise RecordError(f"capacity must be a positive int, got {capacity!r}")
        self._buffer: collections.deque[TokenSamplingRecord] = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._written = 0
        self._evicted = 0

    @property
    def capacity(self) -> int:
        """Maximum number of records held."""
        maxlen = self._buffer.maxlen
        assert maxlen is not None
        return maxlen

    def write(self, records: Sequence[TokenSamplingRecord]) -> None:
        """Append ``records``, evicting the oldest ones beyond ``capacity``."""
        with self._lock:
            self._evicted += max(0, len(self._buffer) + len(records) - self.capacity)
            self._buffer.extend(records)
            self._written += len(records)

    def records(self) -> list[TokenSamplingRecord]:
        """Return the held records, oldest first."""
        with self._lock:
            return list(self._buffer)

    def clear(self) -> None:
        """Forget the held records (the ``written`` and ``evicted`` counts are kept)."""
        with self._lock:
            self._buffer.clear()

    def close(self) -> None:
        """Nothing to release; the held records stay readable."""

    def stats(self) -> dict[str, int | float]:
        """Return the ``capacity``, ``held``, ``written`` and ``evicted`` counts."""
        with self._lock:
            return {
                "capacity": self.capacity,
                "held": len(self._buffer),
                "written": self._written,
                "evicted": self._evicted,
            }


LogLevel = Literal["summary", "full"]
_LOG_LEVELS: tuple[LogLevel, ...] = ("summary", "full")


class LogSink:
    """Logs records at INFO (``QR_LOG_LEVEL``).

    ``"summary"`` logs one compact line per token; ``"full"`` logs every field of
    the record as one JSON object per line. Formatting happens only when the logger
    is enabled for INFO.

    Args:
        level: ``"summary"`` or ``"full"`` (``"none"`` means: create no sink).
        logger: Logger to use; defaults to the one named :data:`LOG_SINK_LOGGER`.

    Raises:
        RecordError: ``level`` is not one of the allowed values.
    """

    def __init__(self, level: LogLevel, logger: logging.Logger | None = None) -> None:
        if level not in _LOG_LEVELS:
            raise RecordError(f"level must be one of {list(_LOG_LEVELS)}, got {level!r}")
        self._level: LogLevel = level
        self._logger = logger if logger is not None else _logger
        self._lock = threading.Lock()
        self._logged = 0

    @property
    def level(self) -> LogLevel:
        """The configured detail level."""
        return self._level

    def write(self, records: Sequence[TokenSamplingRecord]) -> None:
        """Log one line per record.

        Raises:
            RecordError: At ``"full"``, a record holds a non-finite number.
        """
        log = self._logger
        if not records or not log.isEnabledFor(logging.INFO):
            return
        if self._level == "full":
            for r in records:
                # Refused, like the file sink: a NaN in a log line reads back as a record.
                require_finite(r)
                log.info(
                    "qr record %s",
                    json.dumps(r.to_json_dict(), separators=(",", ":"), allow_nan=False),
                )
        else:
            for r in records:
                log.info(
                    "qr token req=%s tag=%s i=%d tok=%d rank=%d p=%.4f n=%d T=%.3f H=%.3f "
                    "z=%+.4f u=%.6f src=%s%s",
                    r.request_id,
                    r.request_tag,
                    r.token_index,
                    r.token_id,
                    r.token_rank,
                    r.token_prob,
                    r.num_candidates,
                    r.temperature,
                    r.shannon_entropy,
                    r.z_score,
                    r.u,
                    r.entropy_source,
                    f" FALLBACK({r.fallback_reason})" if r.fallback else "",
                )
        with self._lock:
            self._logged += len(records)

    def close(self) -> None:
        """Nothing to release."""

    def stats(self) -> dict[str, int | float]:
        """Return the ``logged`` count."""
        with self._lock:
            return {"logged": self._logged}
