"""``--backend chardev``: a QRNG behind a character device (Quantis PCIe, Dragonfly, /dev/hwrng).

A PCIe card fills an on-board FIFO whether anyone reads or not, so the bytes
waiting in it were measured before the request. Before each read the backend
drains the node:

- with ``fill_level`` (a sysfs file such as a card's ``ready_count``): it reads
  the number of buffered units, multiplies by ``fill_unit`` and discards that
  many bytes (at most ``drain_limit``);
- without: it reads without waiting until the node reports empty (EAGAIN), or
  until ``drain_limit`` bytes are gone.

A node that still has bytes after ``drain_limit`` (a source that refills faster
than the server drains, or one that generates on demand and never reports
empty) is read anyway, with a rate-limited warning: size the limit to the
device's FIFO, or give its fill level. ``drain_limit = 0`` skips the drain, for
a device that generates on demand only.

Only nodes that cannot hold old data forever are accepted: character devices,
FIFOs (the stand-in of the tests) and sockets. A regular file is refused: it
is a pool of bytes measured long ago.
"""

from __future__ import annotations

import logging
import os
import stat

from qr_entropy_server._errors import ServerConfigError
from qr_entropy_server._node import DeviceNode, DeviceOptions
from qr_entropy_server._ratelog import RateLimitedLog

__all__ = ["CharDeviceBackend"]

logger = logging.getLogger(__name__)


class CharDeviceBackend(DeviceNode):
    """A character device drained before every read.

    Args:
        options: ``path``, ``drain_limit``, ``fill_level``, ``fill_unit`` and the deadline.

    Raises:
        ServerConfigError: a negative ``drain_limit`` or a ``fill_unit`` below 1.
    """

    kind = "chardev"

    def __init__(self, options: DeviceOptions) -> None:
        if options.drain_limit < 0:
            raise ServerConfigError(f"--drain-limit must be >= 0, got {options.drain_limit}")
        if options.fill_unit < 1:
            raise ServerConfigError(f"--fill-unit must be >= 1, got {options.fill_unit}")
        super().__init__(options)
        self._warn = RateLimitedLog(logger)

    def _configure(self, fd: int, deadline: float) -> None:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            raise self.error(
                "not a character device",
                "a regular file holds bytes measured long ago; give the device node",
            )

    def _buffered(self) -> int | None:
        """Bytes the fill-level file says are waiting, or None without one."""
        path = self.options.fill_level
        if path is None:
            return None
        try:
            with open(path, "rb") as file:
                text = file.read(64)
            return int(text.strip() or b"0") * self.options.fill_unit
        except (OSError, ValueError) as exc:
            raise self.error(f"cannot read --fill-level {path}", str(exc)) from exc

    def _discard(self, fd: int, deadline: float) -> None:
        limit = self.options.drain_limit
        if limit == 0:
            return
        waiting = self._buffered()
        budget = limit if waiting is None else min(waiting, limit)
        dropped, empty = self.drain(fd, budget)
        if empty or (waiting is not None and waiting <= limit):
            return
        self._warn.warning(
            "drain-limit",
            "%s: still not empty after discarding --drain-limit=%d bytes; the bytes read "
            "next may have been produced before the request (raise the limit to the "
            "device's FIFO size, or give --fill-level)",
            self.device_id,
            dropped,
        )
