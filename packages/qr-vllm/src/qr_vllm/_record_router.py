"""Routes each step's records to the sinks each request asked for.

* the JSON Lines file (``QR_RECORD_PATH``) receives every record, whatever the
  request's log level: it is the research record;
* the log receives a request's records at its ``qr_log_level``: ``none``
  nothing, ``summary`` one line per finished request (:mod:`qr_vllm._summary`),
  ``full`` one JSON line per token;
* the bounded in-memory buffer receives the records of requests with
  ``qr_diagnostic_mode`` on.

:meth:`RecordRouter.wants` tells the step whether any of these would receive
a step's records, so that a step nobody records (no file, no diagnostic mode, and log level ``none``
or a host logging configuration that keeps the record logger below INFO)
builds none.

Several engine processes (data-parallel ranks, replicas) share one
``QR_RECORD_PATH``: each writes its own segment series, named by its writer id
(:func:`writer_id_for`), which every record carries. Records reach the
operating system before the step that sampled them returns (write-through), so
a worker killed right after SIGTERM (vLLM's default ``--shutdown-timeout 0``)
loses none of them, except the held rows of :mod:`qr_vllm._emitted`.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from qr_core.records import (
    LOG_SINK_LOGGER,
    JsonlFileSink,
    LogSink,
    RecordError,
    RingBufferSink,
    TokenSamplingRecord,
)
from qr_vllm._emitted import EmittedTokens
from qr_vllm._settings import RecordSettings
from qr_vllm._summary import RequestSummaries
from qr_vllm.step import Slot

if TYPE_CHECKING:
    from vllm.config import VllmConfig

__all__ = [
    "RecordCounts",
    "RecordRouter",
    "data_parallel_index",
    "show_records",
    "warn_if_records_can_be_lost",
    "writer_id_for",
]

logger = logging.getLogger(__name__)

# LogSink's own logger (documented in the README); passed explicitly so that
# wants() asks the very logger the sinks write to.
_RECORD_LOGGER = logging.getLogger(LOG_SINK_LOGGER)


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


def data_parallel_index(vllm_config: VllmConfig) -> int:
    """vLLM's data-parallel index of the engine (``data_parallel_index``, which is also
    its engine index and, unlike ``data_parallel_rank``, not reset for dense models);
    0 without data parallelism."""
    parallel = getattr(vllm_config, "parallel_config", None)
    index = getattr(parallel, "data_parallel_index", None)
    if index is None:
        index = getattr(parallel, "data_parallel_rank", None)
    return 0 if index is None else int(index)


def writer_id_for(vllm_config: VllmConfig) -> str:
    """Return this engine process's writer id: ``<host>-p<pid>-dp<index>``.

    ``index`` is :func:`data_parallel_index`. Stable for the life of the process; a
    restarted process gets a new pid, hence a new series.
    """
    return f"{socket.gethostname()}-p{os.getpid()}-dp{data_parallel_index(vllm_config)}"


def warn_if_records_can_be_lost(vllm_config: VllmConfig, runner: str) -> None:
    """Log a WARNING when a SIGTERM of the engine can lose records.

    With ``--shutdown-timeout 0`` (vLLM's default) the process manager SIGKILLs
    the engine right after its SIGTERM. Every record is in the file by then
    except the held ones (:mod:`qr_vllm._emitted`, V1 runner only): the rows of
    requests that were still in their prefill in the engine's last step.
    """
    if runner != "v1" or getattr(vllm_config, "shutdown_timeout", 0) > 0:
        return
    logger.warning(
        "qr records: with --shutdown-timeout 0 a SIGTERM kills this engine at once; the "
        "records of its last step's rows that were still in prefill (at most one per "
        "request that started or resumed in that step) can be lost. Start vLLM with "
        "--shutdown-timeout N (N > 0) to let it finish the step and lose none."
    )


class RecordCounts(Protocol):
    """Counts what the record file accepted and refused (the engine's metrics)."""

    def records_written(self, count: int) -> None: ...

    def records_failed(self, count: int) -> None: ...


class RecordRouter:
    """Owns the record sinks of one processor."""

    def __init__(
        self,
        settings: RecordSettings,
        writer_id: str | None = None,
        counts: RecordCounts | None = None,
    ) -> None:
        """Open the sinks the settings ask for.

        Args:
            settings: Record settings (file path, buffer size...).
            writer_id: This process's writer id (:func:`writer_id_for`); the file
                is then this writer's own series under ``QR_RECORD_PATH``.
            counts: Told how many records the file accepted or refused.
        """
        self._counts = counts
        self._diagnostic = RingBufferSink(settings.diagnostic_buffer_size)
        self._file: JsonlFileSink | None = None
        self._emitted = EmittedTokens()
        if settings.record_path:
            self._file = JsonlFileSink(
                settings.record_path,
                max_bytes=settings.record_max_bytes,
                queue_size=settings.record_queue_size,
                flush_interval_s=settings.record_flush_interval_s,
                writer_id=writer_id,
                write_through=True,
                # Write-through leaves nothing to save at SIGTERM, and a handler
                # closing the file would fail the steps of vLLM's drain
                # (--shutdown-timeout > 0); the processor closes it at exit.
                install_sigterm_handler=False,
            )
            logger.info("qr records are written to %s", self._file.path)
        show_records(_RECORD_LOGGER)
        self._full = LogSink("full", _RECORD_LOGGER)
        self._summaries = RequestSummaries(_RECORD_LOGGER)

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
        """Deliver one step's records; ``slots[i]`` produced ``records[i]``.

        Records of rows whose token vLLM may still drop are held until :meth:`settle`.
        """
        self.settle()
        records, slots = self._emitted.hold_uncertain(records, slots)
        if records:
            self._deliver(records, slots)

    def settle(self) -> None:
        """Deliver the held records, each marked by whether vLLM kept its token.

        Call it once vLLM has finished the step that sampled them: at the start
        of the next step, or while the engine is idle.
        """
        records, slots = self._emitted.settle()
        if records:
            self._deliver(records, slots)

    @property
    def held(self) -> int:
        """Records waiting for :meth:`settle`."""
        return len(self._emitted)

    def _deliver(self, records: Sequence[TokenSamplingRecord], slots: Sequence[Slot]) -> None:
        if self._file is not None:
            try:
                self._file.write(records)
            except RecordError:
                if self._counts is not None:
                    self._counts.records_failed(len(records))
                raise
            if self._counts is not None:
                self._counts.records_written(len(records))
        first = slots[0].plan.settings
        if all(s.plan.settings is first for s in slots):
            # Common case: one configuration for the whole step.
            if first.log_level != "none":
                self._log(first.log_level, records)
            if first.diagnostic_mode:
                self._diagnostic.write(records)
            return
        for level in ("summary", "full"):
            chosen = [
                r for r, s in zip(records, slots, strict=True) if s.plan.settings.log_level == level
            ]
            if chosen:
                self._log(level, chosen)
        kept = [r for r, s in zip(records, slots, strict=True) if s.plan.settings.diagnostic_mode]
        if kept:
            self._diagnostic.write(kept)

    def _log(self, level: str, records: Sequence[TokenSamplingRecord]) -> None:
        if level == "full":
            self._full.write(records)
        else:
            self._summaries.add(records)

    def finish(self, request_ids: Iterable[str]) -> None:
        """Requests that left the batch: log the ``summary`` line of each."""
        self._summaries.finish(request_ids)

    def close(self) -> None:
        """Log open summaries, flush and close the file sink; the diagnostic buffer
        stays readable."""
        self.settle()
        self._summaries.finish_all()
        if self._file is not None:
            self._file.close()
