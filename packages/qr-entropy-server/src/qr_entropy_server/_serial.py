"""``--backend serial``: a QRNG on a serial port (USB CDC-ACM: TrueRNG, OneRNG, NeuG).

Written on the standard library's ``termios`` rather than pyserial: the server
stays installable with its three dependencies, and every step the freshness
promise rests on is one visible system call here (``O_NOCTTY``, raw mode,
``tcflush``), not a library default.

The line is put in raw mode, 8N1: no echo, no translation of ``\\r`` or
``\\n``, no erase or kill characters, no signals from ^C, ^Z or ^\\, no XON/XOFF
or RTS/CTS flow control, no waiting for a newline; every byte value arrives
unchanged. Opened with ``O_NOCTTY``, the port never becomes the controlling
terminal of the server, even when it is a session leader as under systemd.

Before each read the input queue is flushed (``tcflush(TCIFLUSH)``): what the
kernel and the driver held is discarded. Bytes still inside the device or on
the bus at that moment (a USB packet or the device's own buffer) arrive after
the flush; ``skip_after_flush`` drops that many more bytes for a device known
to buffer.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import struct
import termios
import time

from qr_entropy_server._errors import DeviceStalledError, ServerConfigError
from qr_entropy_server._node import DeviceNode, DeviceOptions

__all__ = ["SerialBackend", "baud_rates"]

logger = logging.getLogger(__name__)

_NO_MODEM_LINES = {errno.ENOTTY, errno.EINVAL}  # a pseudo-terminal has no DTR or RTS


def baud_rates() -> dict[int, int]:
    """The line speeds this platform's termios knows, by bits per second."""
    rates = {}
    for name in dir(termios):
        if name.startswith("B") and name[1:].isdigit():
            rates[int(name[1:])] = getattr(termios, name)
    return rates


class SerialBackend(DeviceNode):
    """A serial port in raw mode, flushed before every read.

    Args:
        options: ``path``, ``baud``, ``dtr``, ``rts``, ``init``,
            ``skip_after_flush`` and the deadline.

    Raises:
        ServerConfigError: ``baud`` is not a speed termios knows.
    """

    kind = "serial"
    _access = os.O_RDWR
    _os_errors = (OSError, termios.error)

    def __init__(self, options: DeviceOptions) -> None:
        rates = baud_rates()
        if options.baud not in rates:
            raise ServerConfigError(
                f"--baud {options.baud} is not a line speed of this system; "
                f"one of {sorted(rates)[1:]}"
            )
        super().__init__(options)
        self._speed = rates[options.baud]
        self._said_no_lines = False

    def _configure(self, fd: int, deadline: float) -> None:
        if not os.isatty(fd):
            raise self.error("not a terminal", "use --backend chardev for a character device")
        try:
            # One reader only: a second process on the port would take half the bytes.
            fcntl.ioctl(fd, termios.TIOCEXCL)
            self._raw(fd)
        except self._os_errors as exc:
            raise self.error("cannot configure the line", str(exc)) from exc
        self._modem_lines(fd)
        if self.options.init:
            self._write(fd, self.options.init, deadline)

    def _raw(self, fd: int) -> None:
        iflag, oflag, cflag, lflag, _, _, cc = termios.tcgetattr(fd)
        iflag &= ~(
            termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP | termios.INLCR
            | termios.IGNCR | termios.ICRNL | termios.IXON | termios.IXOFF | termios.IXANY
            | termios.INPCK | termios.IMAXBEL
        )  # fmt: skip
        oflag &= ~termios.OPOST
        lflag &= ~(
            termios.ECHO | termios.ECHOE | termios.ECHOK | termios.ECHONL | termios.ICANON
            | termios.ISIG | termios.IEXTEN | termios.NOFLSH | termios.TOSTOP
        )  # fmt: skip
        cflag &= ~(termios.CSIZE | termios.PARENB | termios.CSTOPB | termios.CRTSCTS)
        cflag |= termios.CS8 | termios.CREAD | termios.CLOCAL
        # VMIN 1, VTIME 0: a read returns what is there; with O_NONBLOCK an empty
        # queue is EAGAIN, never a 0 that would look like a hang-up.
        cc[termios.VMIN] = 1
        cc[termios.VTIME] = 0
        attrs = [iflag, oflag, cflag, lflag, self._speed, self._speed, cc]
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        got = termios.tcgetattr(fd)
        if got[3] & (termios.ICANON | termios.ECHO | termios.ISIG) or got[0] & termios.ICRNL:
            raise self.error("cannot configure the line", "the driver did not accept raw mode")

    def _modem_lines(self, fd: int) -> None:
        for wanted, line, name in (
            (self.options.dtr, termios.TIOCM_DTR, "DTR"),
            (self.options.rts, termios.TIOCM_RTS, "RTS"),
        ):
            request = termios.TIOCMBIS if wanted else termios.TIOCMBIC
            try:
                fcntl.ioctl(fd, request, struct.pack("I", line))
            except OSError as exc:
                if exc.errno not in _NO_MODEM_LINES:
                    raise self.error(f"cannot set {name}", f"{exc.strerror}") from exc
                if not self._said_no_lines:
                    self._said_no_lines = True
                    logger.info("%s has no modem control lines (a pseudo-terminal?)", self.path)

    def _write(self, fd: int, data: bytes, deadline: float) -> None:
        out = select.poll()
        out.register(fd, select.POLLOUT)
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeviceStalledError(
                        f"serial {self.path}: stalled: the {len(data)} --serial-init bytes "
                        "were not taken"
                    ) from None
                out.poll(max(1, int(remaining * 1000)))

    def _discard(self, fd: int, deadline: float) -> None:
        termios.tcflush(fd, termios.TCIFLUSH)
        if self.options.skip_after_flush:
            self.read(fd, self.options.skip_after_flush, deadline)
