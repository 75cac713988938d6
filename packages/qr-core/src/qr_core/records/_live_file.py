"""The live file of one writer's JSON Lines segment series, and its rotation.

The live file is opened for appending under an exclusive ``flock``, so a second
writer on the same series (in this or another process) is refused. A partial last
line left by a killed writer is moved, with its file, into a rotated segment before
appending. A line that would make the live file larger than ``max_bytes`` starts a
new one: the live file becomes the next numbered segment (``live.1``, ``live.2``, ...;
higher is newer), and with ``backup_count`` the oldest segments beyond it are deleted.
With a :class:`~qr_core.records._chain.SeriesChain` every record line is hash-chained
to the one before (across rotations), and :meth:`LiveFile.seal` ends the series.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Final

from qr_core.records._chain import SeriesChain
from qr_core.records._errors import RecordError
from qr_core.records._layout import rotated_segments
from qr_core.records._line import record_json
from qr_core.records._schema import TokenSamplingRecord

__all__ = ["LiveFile"]

_logger = logging.getLogger(__name__)

_FILE_BUFFER_BYTES: Final = 256 * 1024


class LiveFile:
    """One writer series on disk: its locked live file, rotation and retention.

    Not thread-safe by itself: the sink calls it from one thread at a time (the
    writer thread, or a sampling thread holding ``lock`` in write-through mode).
    Its counters are changed under ``lock``, where :meth:`JsonlFileSink.stats` reads them.

    Args:
        path: The live file.
        max_bytes: Rotate before a line would make the live file larger than this.
        backup_count: Keep at most this many rotated segments (``None``: all).
        write_through: Unbuffered file; a rotated segment is handed to the writer
            thread (:attr:`retired`) to fsync and close, off the sampling step.
        fsync: Whether flushes reach the disk (``os.fsync``), not just the OS.
        lock: The sink's lock, held while a counter changes.
        chain: Chain every record line into this series (``None``: plain lines).

    Raises:
        OSError: The file cannot be opened.
        RecordError: Another sink holds the live file.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        backup_count: int | None,
        write_through: bool,
        fsync: bool,
        lock: threading.Condition,
        chain: SeriesChain | None = None,
    ) -> None:
        self.path = path
        self._max_bytes = max_bytes
        self._backup_count = backup_count
        self._write_through = write_through
        self._fsync = fsync
        self._lock = lock
        self._chain = chain
        self.retired: list[BinaryIO] = []
        """write-through: rotated segments the writer thread still has to fsync and close."""
        self.dir_sync_due = False
        """write-through: a rename the writer thread still has to make durable."""
        self.written = 0
        self.bytes_written = 0
        self.flushes = 0
        self.rotations = 0
        self.segments_deleted = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        segments = rotated_segments(path)
        self._next_segment = int(segments[-1].name.rsplit(".", 1)[1]) + 1 if segments else 1
        self._file = self._open_live()
        if chain is not None:
            chain.new_file(self._next_segment)

    def append(self, batch: Sequence[TokenSamplingRecord]) -> None:
        """Encode ``batch`` and write it, rotating before a line would pass ``max_bytes``."""
        lines: list[bytes] = []
        size = self._file_size
        chain = self._chain
        for record in batch:
            body = record_json(record)
            if chain is None:
                line = (body + "}\n").encode("ascii")
            else:
                line = (body + chain.envelope() + "}\n").encode("ascii")
            if size > 0 and size + len(line) > self._max_bytes:
                self.write(b"".join(lines))
                lines = []
                self._rotate()
                size = 0
                if chain is not None:  # again, with the new file's segment number
                    line = (body + chain.envelope() + "}\n").encode("ascii")
            if chain is not None:
                chain.commit(line)
            lines.append(line)
            size += len(line)
        self.write(b"".join(lines))
        with self._lock:
            self.written += len(batch)

    def write(self, data: bytes) -> None:
        """Write ``data`` to the live file (replaceable in tests to slow the writer)."""
        if data:
            view = memoryview(data)
            while view:  # an unbuffered (write-through) file may take less than all
                view = view[self._file.write(view) :]
            self._file_size += len(data)
            with self._lock:
                self.bytes_written += len(data)

    def flush(self) -> None:
        """Hand buffered lines to the OS, and to the disk with ``fsync``."""
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())
        with self._lock:
            self.flushes += 1

    def sync_fds(self) -> list[int]:
        """A duplicate of the live file's descriptor to fsync outside the lock (none
        without ``fsync``); :meth:`sync` closes it."""
        return [os.dup(self._file.fileno())] if self._fsync else []

    def sync(self, fds: list[int], retired: list[BinaryIO], dir_due: bool) -> None:
        """fsync and close the ``retired`` segments and the ``fds``; fsync the directory
        when a rename is ``dir_due``."""
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
            _fsync_dir(self.path.parent)
        with self._lock:
            self.flushes += 1

    def seal(self) -> None:
        """End the chained series with its seal line (nothing when no record was
        chained, or the lines are not chained); the caller flushes afterwards."""
        chain = self._chain
        if chain is None or chain.count == 0 or chain.final_sha256 is not None:
            return
        line = chain.seal_line()
        if self._file_size > 0 and self._file_size + len(line) > self._max_bytes:
            self._rotate()  # the seal obeys max_bytes too (it may then stand alone)
        self.write(line)
        _logger.info(
            "sealed record series %s of %s: %d records, final SHA-256 %s",
            chain.series,
            self.path,
            chain.count,
            chain.final_sha256,
        )

    def close(self) -> None:
        """Close the live file (logged, not raised, when that fails)."""
        try:
            self._file.close()
        except OSError:
            _logger.exception("closing record file %s failed", self.path)

    def _open_live(self) -> BinaryIO:
        f = self._open_locked()
        size = f.seek(0, os.SEEK_END)
        if size > 0 and _last_byte(self.path, size) != b"\n":
            # A killed writer left a partial line; keep it at the end of its own
            # segment, where readers expect and skip it, instead of appending to it.
            _logger.warning(
                "record file %s ends with a partial line; moving it to a segment", self.path
            )
            f.close()
            self._move_live_to_segment(sync_dir=True)
            f = self._open_locked()
        self._file_size = f.seek(0, os.SEEK_END)
        return f

    def _open_locked(self) -> BinaryIO:
        """Open the live file for appending, holding an exclusive ``flock`` on it."""
        f = self.path.open("ab", buffering=0 if self._write_through else _FILE_BUFFER_BYTES)
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise RecordError(
                f"record file {str(self.path)!r} is being written by another sink; give "
                "each process its own writer_id (several processes never share a series)"
            ) from None
        return f

    def _rotate(self) -> None:
        if self._write_through:
            # The caller is a sampling step: the writer thread fsyncs and closes the
            # old segment, and makes the rename durable, off the step.
            self.retired.append(self._file)
            self._move_live_to_segment(sync_dir=False)
            self.dir_sync_due = True
        else:
            self.flush()
            self._file.close()
            self._move_live_to_segment(sync_dir=True)
        self._file = self._open_locked()
        self._file_size = 0
        if self._chain is not None:
            self._chain.new_file(self._next_segment)
        with self._lock:
            self.rotations += 1

    def _move_live_to_segment(self, *, sync_dir: bool) -> None:
        target = self.path.with_name(f"{self.path.name}.{self._next_segment}")
        self._next_segment += 1
        os.replace(self.path, target)
        if sync_dir:
            _fsync_dir(self.path.parent)
        if self._backup_count is not None:
            segments = rotated_segments(self.path)
            for old in segments[: max(0, len(segments) - self._backup_count)]:
                old.unlink()
                with self._lock:
                    self.segments_deleted += 1
                _logger.warning("deleted old record segment %s (backup_count reached)", old)


def _last_byte(path: Path, size: int) -> bytes:
    with path.open("rb") as existing:
        existing.seek(size - 1)
        return existing.read(1)


def _fsync_dir(directory: Path) -> None:
    """fsync ``directory``, making a rename in it durable (skipped where a directory
    cannot be opened)."""
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
