"""A device node read for fresh bytes: open, discard what waited, read n, reopen after a failure.

The ``serial`` and ``chardev`` backends share this. Each ``generate(n)``:

1. opens the node if it is not open (the first call, or the first after a
   failure): ``O_NOCTTY`` so that a terminal never becomes the server's
   controlling terminal, ``O_NONBLOCK`` so that no read can hang past the
   deadline, then the backend's own settings (:meth:`DeviceNode._configure`);
2. throws away what the kernel, the driver or the device buffered before this
   call (:meth:`DeviceNode._discard`: a serial port's input queue, a card's FIFO);
3. reads exactly ``n`` bytes, waiting with ``poll`` until ``--backend-timeout``.

A failure (the node is gone, EIO or ENXIO, end of file after a hang-up, a
stall past the deadline) closes the node and raises :class:`DeviceError` naming
it (:class:`DeviceStalledError` for the stall, which the server answers
UNAVAILABLE like ``--backend-timeout``); the next call opens the same path
again, which after a replug may be a udev symlink that now points at a new
node. ``reopens = True`` tells the server
to probe the backend while its health is NOT_SERVING, so that health returns
without a client call.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import stat
import time
from dataclasses import dataclass

from qr_entropy_server._errors import DeviceError, DeviceStalledError, ServerConfigError

__all__ = ["DEFAULT_DRAIN_LIMIT", "DeviceNode", "DeviceOptions"]

logger = logging.getLogger(__name__)

DEFAULT_DRAIN_LIMIT = 1 << 20
"""Most bytes the ``chardev`` backend discards before one read (``--drain-limit``)."""
_CHUNK = 1 << 16  # bytes per read while discarding
_SPIN_S = 0.0005  # pause when poll says readable but the read finds nothing


@dataclass(frozen=True)
class DeviceOptions:
    """How the built-in device backends open and read their node (the device flags)."""

    path: str
    """The node, e.g. ``/dev/serial/by-id/usb-...``, ``/dev/ttyACM0``, ``/dev/qrandom0``."""
    timeout_s: float = 10.0
    """Longest one ``generate`` may wait for bytes (``--backend-timeout``)."""
    baud: int = 115_200
    """serial: line speed (USB CDC-ACM devices ignore it)."""
    dtr: bool = True
    """serial: assert DTR after opening (TrueRNG streams only while DTR is set)."""
    rts: bool = True
    """serial: assert RTS after opening."""
    init: bytes = b""
    """serial: bytes written after each open, e.g. OneRNG's ``cmd0`` and ``cmdO``."""
    skip_after_flush: int = 0
    """serial: bytes read and dropped after the flush (what the device itself still held)."""
    drain_limit: int = DEFAULT_DRAIN_LIMIT
    """chardev: most bytes discarded before each read (0: no drain)."""
    fill_level: str | None = None
    """chardev: sysfs file holding the number of buffered units (e.g. ``ready_count``)."""
    fill_unit: int = 4
    """chardev: bytes per unit of ``fill_level`` (4 for 32-bit words)."""


class DeviceNode:
    """Base of the node backends: open, discard, read, reopen.

    Args:
        options: Path, deadline and the backend's settings.

    Raises:
        ServerConfigError: the path exists and is neither a character device
            nor a FIFO. A path that does not exist yet is accepted: the device
            may be plugged in later.
    """

    kind = "device"
    """Prefix of ``device_id`` and of every error message."""
    thread_safe = False
    reopens = True
    _access = os.O_RDONLY
    # What the system calls raise (termios raises its own error, not OSError).
    _os_errors: tuple[type[Exception], ...] = (OSError,)

    def __init__(self, options: DeviceOptions) -> None:
        try:
            mode = os.stat(options.path).st_mode
        except OSError:
            mode = None  # not there yet: plugged in later, opened then
        if mode is not None and not (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
            raise ServerConfigError(
                f"--device {options.path!r} is not a character device (a regular file "
                "or folder holds no fresh bytes)"
            )
        self.options = options
        self.path = options.path
        self.device_id = f"{self.kind}:{options.path}"
        self._fd: int | None = None
        self._poll = select.poll()
        self._failed = False

    def _configure(self, fd: int, deadline: float) -> None:
        """Settings applied after each open (the subclass's)."""

    def _discard(self, fd: int, deadline: float) -> None:
        """Throw away what was buffered before this call (the subclass's)."""

    def error(self, action: str, detail: str) -> DeviceError:
        """A :class:`DeviceError` that names the node, what was done and what happened."""
        return DeviceError(f"{self.kind} {self.path}: {action}: {detail}")

    def generate(self, n: int) -> bytes:
        """Discard what the node buffered, then read ``n`` bytes produced after that.

        Raises:
            DeviceError: the node cannot be opened or read, hung up, or gave
                fewer than ``n`` bytes before the deadline; it is closed and
                reopened by the next call.
        """
        deadline = time.monotonic() + self.options.timeout_s
        try:
            fd = self._fd if self._fd is not None else self._open(deadline)
            self._discard(fd, deadline)
            return self.read(fd, n, deadline)
        except DeviceError:
            self._drop()
            raise
        except self._os_errors as exc:
            self._drop()
            raise self.error("failed", _describe(exc)) from exc

    def _open(self, deadline: float) -> int:
        flags = self._access | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags)
        except OSError as exc:
            raise self.error("cannot open", _describe(exc)) from exc
        try:
            self._configure(fd, deadline)
        except BaseException:
            os.close(fd)
            raise
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._fd = fd
        if self._failed:
            self._failed = False
            logger.warning("%s: reopened", self.device_id)
        return fd

    def _drop(self) -> None:
        self._failed = True
        self.close()

    def wait(self, deadline: float, have: int, n: int, spun: bool) -> None:
        """Wait until the node is readable, or raise at the deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeviceStalledError(
                f"{self.kind} {self.path}: stalled: {have} of {n} bytes within "
                f"{self.options.timeout_s:g} s"
            )
        if spun:  # a driver without poll support: readable always, data not yet
            time.sleep(min(_SPIN_S, remaining))
        self._poll.poll(max(1, int(remaining * 1000)))

    def read(self, fd: int, n: int, deadline: float) -> bytes:
        """Exactly ``n`` bytes from ``fd``, waiting with poll until ``deadline``."""
        buffer = bytearray(n)
        view = memoryview(buffer)
        have = 0
        spun = False
        while have < n:
            try:
                got = os.readv(fd, [view[have:]])
            except BlockingIOError:
                self.wait(deadline, have, n, spun)
                spun = True
                continue
            if got == 0:
                raise self.error("end of file", "the device hung up or was unplugged")
            have += got
            spun = False
        return bytes(buffer)

    def drain(self, fd: int, limit: int) -> tuple[int, bool]:
        """Read and drop up to ``limit`` bytes without waiting.

        Returns:
            The bytes dropped, and whether the node reported empty (EAGAIN).
        """
        dropped = 0
        while dropped < limit:
            try:
                chunk = os.read(fd, min(_CHUNK, limit - dropped))
            except BlockingIOError:
                return dropped, True
            if not chunk:
                raise self.error("end of file", "the device hung up or was unplugged")
            dropped += len(chunk)
        return dropped, False

    def close(self) -> None:
        """Close the node (a later ``generate`` opens it again)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError as exc:
                logger.debug("%s: close: %s", self.device_id, exc)


def _describe(exc: BaseException) -> str:
    """``EIO (Input/output error)`` for the messages."""
    if isinstance(exc, OSError):
        code, text = exc.errno, exc.strerror
    else:
        code, text = (*exc.args, 0, "")[:2]
    if not isinstance(code, int) or not code:
        return str(exc)
    return f"{errno.errorcode.get(code, code)} ({text})"
