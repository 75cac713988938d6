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
"""

from __future__ import annotations

import collections
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Final

from qr_core.records._errors import RecordError
from qr_core.records._layout import rotated_segments, writer_file
from qr_core.records._schema import TokenSamplingRecord
from qr_core.records._shutdown import register, unregister
from qr_core.records._validate import require_finite

__all__ = ["JsonlFileSink"]

_logger = logging.getLogger(__name__)

_WAIT_LOG_INTERVAL_S: Final = 10.0
_FILE_BUFFER_BYTES: Final = 256 * 1024
_DRAIN_CHUNK: Final = 512


def _json_default(value: object) -> object:
    # numpy scalars slip in easily from array code; store them as plain numbers.
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# allow_nan=False: JSON has no NaN or infinity; write() refuses them first with the
# field's name, this is the backstop.
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), default=_json_default, allow_nan=False)


def _encode(record: TokenSamplingRecord) -> bytes:
    return _ENCODER.encode(record.to_json_dict()).encode("ascii") + b"\n"


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
        # write-through: rotated segments the writer thread still has to fsync and close.
        self._retired: list[BinaryIO] = []
        self._sync_due: float | None = None
        self._dir_sync_due = False
        self._max_bytes = max_bytes
        self._backup_count = backup_count
        self._queue_size = queue_size
        self._flush_interval_s = float(flush_interval_s)
        self._fsync = fsync

        # RLock: a SIGTERM handler may close the sink while the main thread is in write().
        self._cond = threading.Condition(threading.RLock())
        self._pending: collections.deque[TokenSamplingRecord] = collections.deque()
        self._closing = False
        self._error: BaseException | None = None

        self._enqueued = 0
        self._written = 0
        self._bytes_written = 0
        self._flushes = 0
        self._rotations = 0
        self._segments_deleted = 0
        self._wait_count = 0
        self._wait_ns = 0
        self._wait_max_ns = 0
        self._last_wait_log = 0.0

        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            segments = rotated_segments(self._path)
            self._next_segment = int(segments[-1].name.rsplit(".", 1)[1]) + 1 if segments else 1
            self._file = self._open_live()
        except OSError as exc:
            raise RecordError(f"cannot open record file {str(self._path)!r}: {exc}") from exc

        self._thread = threading.Thread(
            target=self._run_syncer if write_through else self._run,
            name=f"qr-records-writer:{self._path.name}",
            daemon=True,
        )
        self._thread.start()
        register(self, install_sigterm_handler)

    @property
    def path(self) -> Path:
        """The live file."""
        return self._path

    @property
    def writer_id(self) -> str | None:
        """The writer id given, or ``None``."""
        return self._writer_id

    # ----------------------------------------------------------------- producer side

    def write(self, records: Sequence[TokenSamplingRecord]) -> None:
        """Queue ``records`` for writing; blocks while the queue is full.

        With ``write_through`` the records are in the OS's hands when this returns.

        Raises:
            RecordError: A record holds a non-finite number (none of ``records`` is
                written; the message names the field), or the sink is closed or its
                writer failed (the message says how many of ``records`` were not queued).
        """
        total = len(records)
        if total == 0:
            return
        for record in records:
            require_finite(record)
        if self._write_through:
            self._write_now(records)
            return
        waited_ns = 0
        with self._cond:
            done = 0
            while done < total:
                self._raise_if_unusable(total - done, total)
                space = self._queue_size - len(self._pending)
                if space <= 0:
                    t0 = time.monotonic_ns()
                    self._cond.wait()
                    waited_ns += time.monotonic_ns() - t0
                    continue
                chunk = records[done : done + space]
                self._pending.extend(chunk)
                done += len(chunk)
                self._cond.notify_all()
            self._enqueued += total
            if waited_ns:
                self._wait_count += 1
                self._wait_ns += waited_ns
                self._wait_max_ns = max(self._wait_max_ns, waited_ns)
        if waited_ns:
            self._log_wait()

    def _write_now(self, records: Sequence[TokenSamplingRecord]) -> None:
        with self._cond:
            self._raise_if_unusable(len(records), len(records))
            try:
                self._write_batch(records)
            except BaseException as exc:
                # A line may be half written: nothing more goes into this file.
                _logger.exception("record writer for %s failed; records are being lost", self._path)
                self._error = exc
                self._cond.notify_all()
                raise RecordError(
                    f"record writer for {str(self._path)!r} failed ({exc!r}); "
                    f"up to {len(records)} records not written"
                ) from exc
            self._enqueued += len(records)
            if self._sync_due is None:
                self._sync_due = time.monotonic() + self._flush_interval_s
                self._cond.notify_all()

    def _raise_if_unusable(self, left: int, total: int) -> None:
        if self._error is not None:
            raise RecordError(
                f"record writer for {str(self._path)!r} failed ({self._error!r}); "
                f"{left} of {total} records not written"
            )
        if self._closing:
            raise RecordError(
                f"record sink {str(self._path)!r} is closed; {left} of {total} records not written"
            )

    def _log_wait(self) -> None:
        now = time.monotonic()
        with self._cond:
            if self._wait_count > 1 and now - self._last_wait_log < _WAIT_LOG_INTERVAL_S:
                return
            self._last_wait_log = now
            count, wait_s = self._wait_count, self._wait_ns / 1e9
        _logger.warning(
            "record writer for %s fell behind: sampling waited %d times, %.3f s in total "
            "(queue_size=%d)",
            self._path,
            count,
            wait_s,
            self._queue_size,
        )

    # ------------------------------------------------------------------- writer side

    def _run(self) -> None:
        flush_due: float | None = None
        try:
            while True:
                with self._cond:
                    while not self._pending and not self._closing:
                        if flush_due is None:
                            self._cond.wait()
                        else:
                            remaining = flush_due - time.monotonic()
                            if remaining <= 0:
                                break
                            self._cond.wait(remaining)
                    # Small chunks keep the flush deadline honest while a full queue drains.
                    take = min(len(self._pending), _DRAIN_CHUNK)
                    batch = [self._pending.popleft() for _ in range(take)]
                    drained = self._closing and not self._pending
                    if batch:
                        self._cond.notify_all()
                if batch:
                    if flush_due is None:
                        flush_due = time.monotonic() + self._flush_interval_s
                    self._write_batch(batch)
                if flush_due is not None and (drained or time.monotonic() >= flush_due):
                    self._flush()
                    flush_due = None
                if drained:
                    break
        except BaseException as exc:
            self._thread_failed(exc)
        finally:
            self._close_file()

    def _run_syncer(self) -> None:
        """write-through: fsync what ``write`` wrote, at most ``flush_interval_s`` later."""
        try:
            while True:
                with self._cond:
                    while not self._closing:
                        if self._sync_due is not None:
                            remaining = self._sync_due - time.monotonic()
                            if remaining <= 0:
                                break
                            self._cond.wait(remaining)
                        else:
                            self._cond.wait()
                    if self._closing:
                        break
                    self._sync_due = None
                    # fsync a duplicate outside the lock, so a step never waits for the disk.
                    fds = [os.dup(self._file.fileno())] if self._fsync else []
                    retired, self._retired = self._retired, []
                    dir_due, self._dir_sync_due = self._dir_sync_due, False
                self._sync(fds, retired, dir_due)
            with self._cond:
                retired, self._retired = self._retired, []
                fds = [os.dup(self._file.fileno())] if self._fsync else []
                self._sync(fds, retired, self._dir_sync_due)
        except BaseException as exc:
            self._thread_failed(exc)
        finally:
            self._close_file()

    def _thread_failed(self, exc: BaseException) -> None:
        """Log (with the traceback being handled) and make ``write`` raise from now on."""
        _logger.exception("record writer for %s failed; records are being lost", self._path)
        with self._cond:
            self._error = exc
            self._cond.notify_all()

    def _close_file(self) -> None:
        try:
            self._file.close()
        except OSError:
            _logger.exception("closing record file %s failed", self._path)

    def _sync(self, fds: list[int], retired: list[BinaryIO], dir_due: bool) -> None:
        for f in retired:
            if self._fsync:
                os.fsync(f.fileno())
            f.close()
        for fd in fds:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if dir_due and self._fsync:
            _fsync_dir(self._path.parent)
        with self._cond:
            self._flushes += 1

    def _write_batch(self, batch: Sequence[TokenSamplingRecord]) -> None:
        lines: list[bytes] = []
        size = self._file_size
        for record in batch:
            line = _encode(record)
            if size > 0 and size + len(line) > self._max_bytes:
                self._emit(b"".join(lines))
                lines = []
                self._rotate()
                size = 0
            lines.append(line)
            size += len(line)
        self._emit(b"".join(lines))
        with self._cond:
            self._written += len(batch)

    def _emit(self, data: bytes) -> None:
        """Write ``data`` to the live file (overridable in tests to slow the writer)."""
        if data:
            view = memoryview(data)
            while view:  # an unbuffered (write-through) file may take less than all
                view = view[self._file.write(view) :]
            self._file_size += len(data)
            with self._cond:
                self._bytes_written += len(data)

    def _flush(self) -> None:
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())
        with self._cond:
            self._flushes += 1

    def _open_live(self) -> BinaryIO:
        f = self._open_locked()
        size = f.seek(0, os.SEEK_END)
        if size > 0 and _last_byte(self._path, size) != b"\n":
            # A killed writer left a partial line; keep it at the end of its own
            # segment, where readers expect and skip it, instead of appending to it.
            _logger.warning(
                "record file %s ends with a partial line; moving it to a segment", self._path
            )
            f.close()
            self._move_live_to_segment(sync_dir=True)
            f = self._open_locked()
        self._file_size = f.seek(0, os.SEEK_END)
        return f

    def _open_locked(self) -> BinaryIO:
        """Open the live file for appending, holding an exclusive ``flock`` on it."""
        f = self._path.open("ab", buffering=0 if self._write_through else _FILE_BUFFER_BYTES)
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise RecordError(
                f"record file {str(self._path)!r} is being written by another sink; give "
                "each process its own writer_id (several processes never share a series)"
            ) from None
        return f

    def _rotate(self) -> None:
        if self._write_through:
            # The caller is a sampling step: the writer thread fsyncs and closes the
            # old segment, and makes the rename durable, off the step.
            self._retired.append(self._file)
            self._move_live_to_segment(sync_dir=False)
            self._dir_sync_due = True
        else:
            self._flush()
            self._file.close()
            self._move_live_to_segment(sync_dir=True)
        self._file = self._open_locked()
        self._file_size = 0
        with self._cond:
            self._rotations += 1

    def _move_live_to_segment(self, *, sync_dir: bool) -> None:
        target = self._path.with_name(f"{self._path.name}.{self._next_segment}")
        self._next_segment += 1
        os.replace(self._path, target)
        if sync_dir:
            _fsync_dir(self._path.parent)
        if self._backup_count is not None:
            segments = rotated_segments(self._path)
            for old in segments[: max(0, len(segments) - self._backup_count)]:
                old.unlink()
                with self._cond:
                    self._segments_deleted += 1
                _logger.warning("deleted old record segment %s (backup_count reached)", old)

    # --------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        """Write every queued record, flush, fsync and close the file. Idempotent.

        Raises:
            RecordError: The writer had failed earlier (records were lost).
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()
        unregister(self)
        if self._error is not None:
            raise RecordError(f"record writer for {str(self._path)!r} failed: {self._error!r}")

    def __enter__(self) -> JsonlFileSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, int | float]:
        """Return counters: records ``enqueued``/``written``/``pending``, ``bytes_written``,
        ``flushes``, ``rotations``, ``segments_deleted``, ``queue_size``, and the
        back-pressure figures ``wait_count`` (write calls that blocked),
        ``wait_seconds_total`` and ``wait_seconds_max``."""
        with self._cond:
            return {
                "enqueued": self._enqueued,
                "written": self._written,
                "pending": len(self._pending),
                "bytes_written": self._bytes_written,
                "flushes": self._flushes,
                "rotations": self._rotations,
                "segments_deleted": self._segments_deleted,
                "queue_size": self._queue_size,
                "wait_count": self._wait_count,
                "wait_seconds_total": self._wait_ns / 1e9,
                "wait_seconds_max": self._wait_max_ns / 1e9,
            }


def _last_byte(path: Path, size: int) -> bytes:
    with path.open("rb") as existing:
        existing.seek(size - 1)
        return existing.read(1)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
