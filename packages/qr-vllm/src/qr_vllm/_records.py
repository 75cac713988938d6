"""Routes each step's records to the sinks each request asked for.

* the JSON Lines file (``QR_RECORD_PATH``) receives every record, whatever the
  request's log level: it is the research record;
* the log receives a request's records at its ``qr_log_level`` (``none``,
  ``summary`` or ``full``);
* the bounded in-memory buffer receives the records of requests with
  ``qr_diagnostic_mode`` on.

:meth:`RecordRouter.wants` tells the step whether any of these would receive
a step's records, so that a step nobody records (no file, no diagnostic mode, and log level ``none``
or a host logging configuration that keeps the record logger below INFO)
builds none.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from qr_core.records import JsonlFileSink, LogSink, RingBufferSink, TokenSamplingRecord
from qr_vllm._batch import Slot
from qr_vllm._settings import RecordSettings

__all__ = ["RecordRouter", "show_records"]

logger = logging.getLogger(__name__)

# LogSink's own logger (documented in the README); passed explicitly so that
# wants() asks the very logger the sinks write to.
_RECORD_LOGGER = logging.getLogger("qr_core.records._sinks")


def show_records(log: logging.Logger) -> None:
    """Make ``QR_LOG_LEVEL`` records visible where nothing else would print them.

    vLLM configures only its own ``vllm`` logger, so without this the record
    logger has no handler and sits below INFO: ``summary`` and ``full`` would be
    accepted and then do nothing. When no handler would see the logger's
    records (its own or an ancestor's), it gets a stderr handler at INFO; a
    logging configuration of the host (a root handler, ``logging.config``) is
    left alone.
    """
    if log.hasHandlers():
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s qr-sampler: %(message)s"))
    log.addHandler(handler)
    if not log.isEnabledFor(logging.INFO):
        log.setLevel(logging.INFO)


class RecordRouter:
    """Owns the record sinks of one processor."""

    def __init__(self, settings: RecordSettings) -> None:
        """Open the sinks the settings ask for.

        Args:
            settings: Record settings (file path, buffer size...).
        """
        self._diagnostic = RingBufferSink(settings.diagnostic_buffer_size)
        self._file: JsonlFileSink | None = None
        if settings.record_path:
            self._file = JsonlFileSink(
                settings.record_path,
                max_bytes=settings.record_max_bytes,
                queue_size=settings.record_queue_size,
                flush_interval_s=settings.record_flush_interval_s,
            )
            logger.info("qr records are written to %s", settings.record_path)
        show_records(_RECORD_LOGGER)
        self._logs = {
            "summary": LogSink("summary", _RECORD_LOGGER),
            "full": LogSink("full", _RECORD_LOGGER),
        }

    @property
    def diagnostic(self) -> RingBufferSink:
        """The in-memory buffer of ``diagnostic_mode`` records."""
        return self._diagnostic

    @property
    def file(self) -> JsonlFileSink | None:
        """The JSON Lines sink, when ``QR_RECORD_PATH`` is set."""
        return self._file

    def wants(self, slots: Sequence[Slot]) -> bool:
        """Whether any sink would receive a record of a step with these slots.

        Asked every step, so a change of the logger's level takes effect at once.
        """
        if self._file is not None:
            return True
        logging_on = _RECORD_LOGGER.isEnabledFor(logging.INFO)
        first = slots[0].plan.settings
        if all(s.plan.settings is first for s in slots):
            return first.diagnostic_mode or (logging_on and first.log_level != "none")
        return any(
            s.plan.settings.diagnostic_mode or (logging_on and s.plan.settings.log_level != "none")
            for s in slots
        )

    def emit(self, records: Sequence[TokenSamplingRecord], slots: Sequence[Slot]) -> None:
        """Deliver one step's records; ``slots[i]`` produced ``records[i]``."""
        if self._file is not None:
            self._file.write(records)
        first = slots[0].plan.settings
        if all(s.plan.settings is first for s in slots):
            # Common case: one configuration for the whole step.
            if first.log_level != "none":
                self._logs[first.log_level].write(records)
            if first.diagnostic_mode:
                self._diagnostic.write(records)
            return
        for level, sink in self._logs.items():
            chosen = [
                r for r, s in zip(records, slots, strict=True) if s.plan.settings.log_level == level
            ]
            if chosen:
                sink.write(chosen)
        kept = [r for r, s in zip(records, slots, strict=True) if s.plan.settings.diagnostic_mode]
        if kept:
            self._diagnostic.write(kept)

    def close(self) -> None:
        """Flush and close the file sink; the diagnostic buffer stays readable."""
        if self._file is not None:
            self._file.close()
