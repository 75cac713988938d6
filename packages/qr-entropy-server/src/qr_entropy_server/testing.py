"""Stand-in devices for tests and benchmarks: a pseudo-terminal that streams like a USB QRNG.

No hardware needed: :class:`StandInDevice` opens a pseudo-terminal (or a FIFO,
a stand-in character device) and starts a writer process that feeds it the way
a streaming USB QRNG feeds its serial port: continuously, in 64-byte packets,
whether anyone reads or not, and dropping what does not fit (a UART overrun).
Point the server at ``device.path``::

    with StandInDevice() as device:
        ...  # qr-entropy-server --backend serial --device <device.path>

Modes of the writer:

- ``words`` (default): 8-byte words, each a marker and the CLOCK_MONOTONIC
  time in microseconds at which its packet was made (``time.monotonic_ns``
  on Linux), scrambled by an invertible 64-bit mix so that the stream looks
  random to the health tests. :func:`decode_words` finds them in served bytes
  and :func:`age_us` tells their age.
- ``cycle``: a fixed order of all 256 byte values (:data:`CYCLE`), repeated,
  without drops: each served byte must be followed by its successor.
- ``constant``: one byte value forever (a stuck device).

``python -m qr_entropy_server.testing --pty`` prints a pseudo-terminal's path
and streams words to it until interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import time
import tty
from types import TracebackType

__all__ = [
    "CYCLE",
    "PACKET",
    "WORD",
    "StandInDevice",
    "age_us",
    "decode_words",
    "encode_word",
]

WORD = 8
"""Bytes per timestamped word."""
PACKET = 64
"""Bytes per write (a USB full-speed bulk packet): at most one packet is in flight."""
CYCLE = bytes(random.Random(23).sample(range(256), 256))
"""The ``cycle`` mode's order of the 256 byte values."""
_MARKER = 0x51524E47  # "QRNG"
_MASK = (1 << 64) - 1
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_M1_INV, _M2_INV = pow(_M1, -1, 1 << 64), pow(_M2, -1, 1 << 64)
_READY = "stand-in device writing"


def _mix(z: int) -> int:
    z = ((z ^ (z >> 30)) * _M1) & _MASK
    z = ((z ^ (z >> 27)) * _M2) & _MASK
    return z ^ (z >> 31)


def _unshift(y: int, shift: int) -> int:
    x, part = y, y >> shift
    while part:
        x ^= part
        part >>= shift
    return x


def _unmix(z: int) -> int:
    z = (_unshift(z, 31) * _M2_INV) & _MASK
    z = (_unshift(z, 27) * _M1_INV) & _MASK
    return _unshift(z, 30)


def encode_word(t_us: int, index: int = 0) -> bytes:
    """Word ``index`` (0-7) of a packet made at CLOCK_MONOTONIC microsecond ``t_us`` (mod 2**32).

    The index picks one of eight markers, so the words of a packet differ.
    """
    return _mix(((_MARKER + index) << 32) | (t_us & 0xFFFFFFFF)).to_bytes(WORD, "little")


def decode_words(data: bytes) -> list[tuple[int, int]]:
    """Every ``(offset, t_us mod 2**32)`` of a whole word in ``data``, at any alignment.

    A random 8-byte string decodes as a word with probability 2**-29 (eight
    markers of 32 bits): about once in 26,000 blocks of 20,480 bytes.
    """
    found = []
    for offset in range(len(data) - WORD + 1):
        value = _unmix(int.from_bytes(data[offset : offset + WORD], "little"))
        if 0 <= (value >> 32) - _MARKER < PACKET // WORD:
            found.append((offset, value & 0xFFFFFFFF))
    return found


def age_us(then_us: int, now_us: int) -> int:
    """``now_us - then_us`` for microsecond stamps kept modulo 2**32 (negative: later)."""
    diff = (now_us - then_us) & 0xFFFFFFFF
    return diff - (1 << 32) if diff >= 1 << 31 else diff


def _packet(mode: str, t_us: int, position: int) -> bytes:
    """The next packet: 8 words stamped ``t_us``, the cycle from ``position``, or constant."""
    if mode == "words":
        return b"".join(encode_word(t_us, i) for i in range(PACKET // WORD))
    if mode == "cycle":
        start = position % 256
        return (CYCLE * 2)[start : start + PACKET]
    return b"\x5a" * PACKET


def _write(fd: int, mode: str, rate: float, seconds: float) -> None:
    """The writer loop: ``rate`` bytes per second in packets, until ``seconds`` have passed."""
    drain = os.isatty(fd)  # a pty's master also receives what the slave echoes
    started = time.monotonic()
    sent = 0
    position = 0
    out = select.poll()
    out.register(fd, select.POLLOUT)
    announced = False
    while time.monotonic() - started < seconds:
        due = rate * (time.monotonic() - started) - sent
        while due >= PACKET:
            data = _packet(mode, time.monotonic_ns() // 1000, position)
            try:
                written = os.write(fd, data)
            except BlockingIOError:
                if mode == "cycle":  # no drops: wait for room
                    out.poll(100)
                    continue
                written = 0  # overrun: the packet is lost, as on a UART
            if mode == "cycle" and written < PACKET:
                position += written
                continue
            position += PACKET
            sent += PACKET
            due -= PACKET
        if not announced:
            announced = True
            print(_READY, flush=True)
        if drain:
            with contextlib.suppress(OSError):  # EAGAIN: nothing echoed
                os.read(fd, 1 << 16)
        time.sleep(0.001)


class StandInDevice:
    """A pseudo-terminal (or FIFO) fed by a writer process; a context manager.

    Args:
        mode: ``words``, ``cycle`` or ``constant`` (see the module docstring).
        rate: Bytes per second the writer offers.
        fifo: A FIFO instead of a pseudo-terminal (a stand-in character device).
        seconds: The writer stops by itself after this long (a hang guard).
        raw: Put the pty in raw mode first, as ``stty raw -echo`` would (for a
            reader that does not configure the line itself).
    """

    def __init__(
        self,
        mode: str = "words",
        rate: float = 2e6,
        fifo: bool = False,
        seconds: float = 600,
        raw: bool = False,
    ) -> None:
        self.mode = mode
        self._dir: str | None = None
        if fifo:
            self._dir = tempfile.mkdtemp(prefix="qr-standin-")
            self.path = os.path.join(self._dir, "qrng")
            os.mkfifo(self.path)
            fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK)  # never ENXIO, holds both ends
            self._slave: int | None = None
        else:
            fd, self._slave = os.openpty()
            self.path = os.ttyname(self._slave)
            os.set_blocking(fd, False)
            if raw:
                tty.setraw(self._slave)
        self._writer = subprocess.Popen(
            [
                *(sys.executable, "-m", "qr_entropy_server.testing", "--fd", str(fd)),
                *("--mode", mode, "--rate", str(rate), "--seconds", str(seconds)),
            ],
            pass_fds=(fd,),
            stdout=subprocess.PIPE,
            text=True,
        )
        os.close(fd)  # the writer holds the only copy: stopping it unplugs the device
        assert self._writer.stdout is not None
        line = self._writer.stdout.readline()  # readiness: the first packets are written
        if line.strip() != _READY:
            self.unplug()
            raise RuntimeError(f"stand-in writer did not start (exit {self._writer.poll()})")

    def unplug(self) -> None:
        """Stop the writer: a pty's node disappears and its reader sees a hang-up."""
        if self._writer.poll() is None:
            self._writer.send_signal(signal.SIGTERM)
        self._writer.wait()
        if self._writer.stdout is not None:
            self._writer.stdout.close()
        if self._slave is not None:
            os.close(self._slave)
            self._slave = None

    def close(self) -> None:
        """Unplug and remove the FIFO's folder."""
        self.unplug()
        if self._dir is not None:
            for name in os.listdir(self._dir):
                os.unlink(os.path.join(self._dir, name))
            os.rmdir(self._dir)
            self._dir = None

    def __enter__(self) -> StandInDevice:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    """The writer process (``--fd``), or a pty for a person to try (``--pty``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--fd", type=int, default=None, help="write to this inherited descriptor")
    parser.add_argument("--pty", action="store_true", help="open a pty and print its path")
    parser.add_argument("--mode", choices=("words", "cycle", "constant"), default="words")
    parser.add_argument("--rate", type=float, default=2e6, help="bytes per second (2e6)")
    parser.add_argument("--seconds", type=float, default=3600.0, help="stop after (3600)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.fd is not None:
        # The parent stops the writer (SIGTERM); a ^C at a terminal is the parent's.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _write(args.fd, args.mode, args.rate, args.seconds)
        return 0
    if not args.pty:
        parser.error("give --pty (or --fd)")
    with StandInDevice(args.mode, args.rate, seconds=args.seconds) as device:
        print(device.path, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
