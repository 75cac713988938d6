"""JSON Lines file sink: one writer's segment series, size rotation, periodic fsync,
and clean shutdown on ``close()``, interpreter exit and SIGTERM.

Two ways to hand records to the operating system (also in ``docs/records.md``):

* queued (default): ``write`` appends to a bounded queue and a background thread
  encodes, writes, flushes and fsyncs at most ``flush_interval_s`` (plus the time to
  encode 512 records) after it wrote a record. A process killed outright (SIGKILL,
  OOM killer) loses at most the records of the last ``flush_interval_s`` plus those
  still queued. When the queue is full, ``write`` blocks; waits are counted and logged.
* write-through (``write_through=True``): ``write`` encodes and writes the records
  to the OS before it returns, so a killed process loses none of them (the OS keeps
  written data across a process kill); the background thread only fsyncs, for the
  OS-crash bound.

Several processes share one base path by giving each its ``writer_id``: each then
writes and rotates only its own series ``<stem>.<writer-token><suffix>`` (+ ``.N``
segments) and never touches another writer's files.

Every record line is hash-chained to the one before it in the sink's series, and a
clean close writes the seal (``_chain.py``; checked by
:func:`~qr_core.records.verify_chain`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from qr_core.records._chain import SeriesChain
from qr_core.records._errors import RecordError
from qr_core.records._layout import writer_file
from qr_core.records._live_file import LiveFile
from qr_core.records._schema import TokenSamplingRecord
from qr_core.records._shutdown import register, unregister
from qr_core.records._validate import require_finite
from qr_core.records._writer import RecordQueue, run_queued, run_syncer

__all__ = ["JsonlFileSink"]

_logger = logging.getLogger(__name__)


class JsonlFileSink:
    """Appends records to one writer's JSON Lines segment series.

    Args:
        path: The live file, or with ``writer_id`` the base path of a record set
            that several processes share. Created with its parent directories if
            missing, appended to if present. Rotated segments are ``live.1``,
            ``live.2``, ... numbered upwards (oldest = lowest).
        writer_id: This process's writer id; the live file is then
            :func:`writer_file` ``(path, writer_id)``. ``None``: ``path`` itself.
            The live file is locked (``flock``): a second sink on the same series,
            in this or another process, is refused.
        write_through: Encode and write each ``write`` call's records to the OS
            before returning (a killed process loses none); the background thread
            then only fsyncs. ``False``: queue them for the background thread.
        max_bytes: Rotate before a line would make the live file larger than this.
        backup_count: Keep at most this many rotated segments, deleting the oldest
            (each deletion is logged at WARNING and counted). ``None`` (default)
            keeps every segment: research data is not deleted unless asked.
        queue_size: Records that may wait for the writer; beyond this ``write`` blocks.
        flush_interval_s: Longest time a written record stays in process memory
            before it is flushed to the OS (and fsynced when ``fsync`` is true).
        fsync: Call ``os.fsync`` at every flush, so the bound also holds against an
            OS crash or power loss.
        install_sigterm_handler: Install (once per process) a SIGTERM handler that
            closes every open sink and then chains to the previous handler. Only
            possible from the main thread; elsewhere it is skipped with a DEBUG log
            and the ``atexit`` hook remains.
        chain: Hash-chain the record lines and seal the series at a clean close
            (default). ``False`` writes plain lines, which
            :func:`~qr_core.records.verify_chain` reports as unchained: for files
            that are no research record, and to measure what the chain costs.

    Raises:
        RecordError: An argument is out of range or the file cannot be opened.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 100 * 2**20,
        backup_count: int | None = None,
        queue_size: int = 10_000,
        flush_interval_s: float = 1.0,
        fsync: bool = True,
        install_sigterm_handler: bool = True,
        writer_id: str | None = None,
        write_through: bool = False,
        chain: bool = True,
    ) -> None:
        if max_bytes <= 0:
            raise RecordError(f"max_bytes must be > 0, got {max_bytes!r}")
        if backup_count is not None and backup_count < 1:
            raise RecordError(f"backup_count must be None or >= 1, got {backup_count!r}")
        if queue_size <= 0:
            raise RecordError(f"queue_size must be > 0, got {queue_size!r}")
        if not flush_interval_s > 0:
            raise RecordError(f"flush_interval_s must be > 0, got {flush_interval_s!r}")
        self._path = Path(path) if writer_id is None else writer_file(path, writer_id)
        self._writer_id = writer_id
        self._write_through = write_through
        self._flush_interval_s = float(flush_interval_s)
        self._queue = RecordQueue(self._path, queue_size)
        try:
            self._live = LiveFile(
                self._path,
                max_bytes=max_bytes,
                backup_count=backup_count,
                write_through=write_through,
                fsync=fsync,
                lock=self._queue.cond,
                chain=SeriesChain(writer_id) if chain else None,
            )
        except OSError as exc:
            raise RecordError(f"cannot open record file {str(self._path)!r}: {exc}") from exc

        # The thread runs a bound method, so it holds the sink: an open sink stays
        # alive, and in the shutdown hooks' registry (weak references), until it is
        # closed, even where its owner dropped it.
        self._thread = threading.Thread(
            target=self._run_writer, name=f"qr-records-writer:{self._path.name}", daemon=True
        )
        self._thread.start()
        register(self, install_sigterm_handler)

    def _run_writer(self) -> None:
        if self._write_through:
            run_syncer(self._queue, self._live)
        else:
            run_queued(self._queue, self._live, self._flush_interval_s)

    @property
    def path(self) -> Path:
        """The live file."""
        return self._path

    @property
    def writer_id(self) -> str | None:
        """The writer id given, or ``None``."""
        return self._writer_id

    def write(self, records: Sequence[TokenSamplingRecord]) -> None:
        """Queue ``records`` for writing; blocks while the queue is full.

        With ``write_through`` the records are in the OS's hands when this returns.

        Raises:
            RecordError: A record holds a non-finite number (none of ``records`` is
                written; the message names the field), or the sink is closed or its
                writer failed (the message says how many of ``records`` were not queued).
        """
        if len(records) == 0:
            return
        for record in records:
            require_finite(record)
        if self._write_through:
            self._write_now(records)
        else:
            self._queue.put(records)

    def _write_now(self, records: Sequence[TokenSamplingRecord]) -> None:
        queue = self._queue
        with queue.cond:
            queue.raise_if_unusable(len(records), len(records))
            try:
                self._live.append(records)
            except BaseException as exc:
                # A line may be half written: nothing more goes into this file.
                _logger.exception("record writer for %s failed; records are being lost", self._path)
                queue.error = exc
                queue.cond.notify_all()
                raise RecordError(
                    f"record writer for {str(self._path)!r} failed ({exc!r}); "
                    f"up to {len(records)} records not written"
                ) from exc
            queue.enqueued += len(records)
            if queue.sync_due is None:
                queue.sync_due = time.monotonic() + self._flush_interval_s
                queue.cond.notify_all()

    def close(self) -> None:
        """Write every queued record, seal the series, flush, fsync and close the
        file. Idempotent.

        Raises:
            RecordError: The writer had failed earlier (records were lost).
        """
        with self._queue.cond:
            self._queue.closing = True
            self._queue.cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()
        unregister(self)
        if self._queue.error is not None:
            raise RecordError(
                f"record writer for {str(self._path)!r} failed: {self._queue.error!r}"
            )

    def __enter__(self) -> JsonlFileSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, int | float]:
        """Return counters: records ``enqueued``/``written``/``pending``, ``bytes_written``,
        ``flushes``, ``rotations``, ``segments_deleted``, ``queue_size``, and the
        back-pressure figures ``wait_count`` (write calls that blocked),
        ``wait_seconds_total`` and ``wait_seconds_max``."""
        queue, live = self._queue, self._live
        with queue.cond:
            return {
                "enqueued": queue.enqueued,
                "written": live.written,
                "pending": len(queue.pending),
                "bytes_written": live.bytes_written,
                "flushes": live.flushes,
                "rotations": live.rotations,
                "segments_deleted": live.segments_deleted,
                "queue_size": queue.capacity,
                "wait_count": queue.wait_count,
                "wait_seconds_total": queue.wait_ns / 1e9,
                "wait_seconds_max": queue.wait_max_ns / 1e9,
            }
