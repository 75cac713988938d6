"""The JSON Lines sink's writer thread and the bounded queue that feeds it.

Queued mode: sampling threads :meth:`RecordQueue.put` records; the writer thread
(:func:`run_queued`) takes them in chunks, writes them to the :class:`LiveFile` and
flushes at most ``flush_interval_s`` after it wrote a record. Write-through mode: the
sampling thread writes itself and the writer thread (:func:`run_syncer`) only fsyncs,
at most ``flush_interval_s`` later. Either way a writer failure is kept in the queue,
so every later ``put`` raises instead of losing records quietly, and a clean close
seals the series (:meth:`LiveFile.seal`) before the last flush; a failed writer never
seals.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from qr_core.records._errors import RecordError
from qr_core.records._live_file import LiveFile
from qr_core.records._schema import TokenSamplingRecord

__all__ = ["RecordQueue", "run_queued", "run_syncer"]

_logger = logging.getLogger(__name__)

_WAIT_LOG_INTERVAL_S: Final = 10.0
_DRAIN_CHUNK: Final = 512


class RecordQueue:
    """What sampling threads and the writer thread share, guarded by :attr:`cond`.

    Args:
        path: The live file (named in messages).
        capacity: Records that may wait; beyond this :meth:`put` blocks.
    """

    def __init__(self, path: Path, capacity: int) -> None:
        self.path = path
        self.capacity = capacity
        # RLock: a SIGTERM handler may close the sink while the main thread is in write().
        self.cond = threading.Condition(threading.RLock())
        self.pending: collections.deque[TokenSamplingRecord] = collections.deque()
        self.closing = False
        self.error: BaseException | None = None
        self.sync_due: float | None = None
        """write-through: when the writer thread must fsync what was written."""
        self.enqueued = 0
        self.wait_count = 0
        self.wait_ns = 0
        self.wait_max_ns = 0
        self._last_wait_log = 0.0

    def put(self, records: Sequence[TokenSamplingRecord]) -> None:
        """Queue ``records``, waiting while the queue is full (waits are counted and logged).

        Raises:
            RecordError: The sink is closed or its writer failed.
        """
        total = len(records)
        waited_ns = 0
        with self.cond:
            done = 0
            while done < total:
                self.raise_if_unusable(total - done, total)
                space = self.capacity - len(self.pending)
                if space <= 0:
                    t0 = time.monotonic_ns()
                    self.cond.wait()
                    waited_ns += time.monotonic_ns() - t0
                    continue
                chunk = records[done : done + space]
                self.pending.extend(chunk)
                done += len(chunk)
                self.cond.notify_all()
            self.enqueued += total
            if waited_ns:
                self.wait_count += 1
                self.wait_ns += waited_ns
                self.wait_max_ns = max(self.wait_max_ns, waited_ns)
        if waited_ns:
            self._log_wait()

    def raise_if_unusable(self, left: int, total: int) -> None:
        """Raise if the writer failed or the sink is closing (call holding :attr:`cond`).

        Raises:
            RecordError: Saying how many of ``total`` records were not written.
        """
        if self.error is not None:
            raise RecordError(
                f"record writer for {str(self.path)!r} failed ({self.error!r}); "
                f"{left} of {total} records not written"
            )
        if self.closing:
            raise RecordError(
                f"record sink {str(self.path)!r} is closed; {left} of {total} records not written"
            )

    def fail(self, exc: BaseException) -> None:
        """Log (with the traceback being handled) and make ``put`` raise from now on."""
        _logger.exception("record writer for %s failed; records are being lost", self.path)
        with self.cond:
            self.error = exc
            self.cond.notify_all()

    def _log_wait(self) -> None:
        now = time.monotonic()
        with self.cond:
            if self.wait_count > 1 and now - self._last_wait_log < _WAIT_LOG_INTERVAL_S:
                return
            self._last_wait_log = now
            count, wait_s = self.wait_count, self.wait_ns / 1e9
        _logger.warning(
            "record writer for %s fell behind: sampling waited %d times, %.3f s in total "
            "(queue_size=%d)",
            self.path,
            count,
            wait_s,
            self.capacity,
        )


def run_queued(queue: RecordQueue, live: LiveFile, flush_interval_s: float) -> None:
    """Queued mode: write queued records until the queue is closed and drained."""
    cond = queue.cond
    flush_due: float | None = None
    try:
        while True:
            with cond:
                while not queue.pending and not queue.closing:
                    if flush_due is None:
                        cond.wait()
                    else:
                        remaining = flush_due - time.monotonic()
                        if remaining <= 0:
                            break
                        cond.wait(remaining)
                # Small chunks keep the flush deadline honest while a full queue drains.
                take = min(len(queue.pending), _DRAIN_CHUNK)
                batch = [queue.pending.popleft() for _ in range(take)]
                drained = queue.closing and not queue.pending
                if batch:
                    cond.notify_all()
            if batch:
                if flush_due is None:
                    flush_due = time.monotonic() + flush_interval_s
                live.append(batch)
            if drained:
                live.seal()
                live.flush()
                break
            if flush_due is not None and time.monotonic() >= flush_due:
                live.flush()
                flush_due = None
    except BaseException as exc:
        queue.fail(exc)
    finally:
        live.close()


def run_syncer(queue: RecordQueue, live: LiveFile) -> None:
    """Write-through mode: fsync what ``write`` wrote when :attr:`RecordQueue.sync_due`
    comes, and once more at close."""
    cond = queue.cond
    try:
        while True:
            with cond:
                while not queue.closing:
                    if queue.sync_due is not None:
                        remaining = queue.sync_due - time.monotonic()
                        if remaining <= 0:
                            break
                        cond.wait(remaining)
                    else:
                        cond.wait()
                if queue.closing:
                    break
                queue.sync_due = None
                # fsync a duplicate outside the lock, so a step never waits for the disk.
                fds = live.sync_fds()
                retired, live.retired = live.retired, []
                dir_due, live.dir_sync_due = live.dir_sync_due, False
            live.sync(fds, retired, dir_due)
        with cond:
            if queue.error is None:
                live.seal()
            retired, live.retired = live.retired, []
            fds = live.sync_fds()
            live.sync(fds, retired, live.dir_sync_due)
    except BaseException as exc:
        queue.fail(exc)
    finally:
        live.close()
