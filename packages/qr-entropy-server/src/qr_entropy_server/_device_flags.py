"""The command-line flags of the device backends (``--backend serial|chardev --device PATH``)."""

from __future__ import annotations

import argparse
import re

from qr_entropy_server._errors import ServerConfigError
from qr_entropy_server._node import DEFAULT_DRAIN_LIMIT, DeviceOptions

__all__ = ["add_device_flags", "device_options", "parse_escapes"]

_DEFAULTS = DeviceOptions(path="")
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|[nrt0\\])")
_SIMPLE = {"n": b"\n", "r": b"\r", "t": b"\t", "0": b"\x00", "\\": b"\\"}
# DeviceOptions field (the flag's name with _) -> the backend it belongs to
_OWNED = {
    "baud": "serial",
    "dtr": "serial",
    "rts": "serial",
    "serial_init": "serial",
    "skip_after_flush": "serial",
    "drain_limit": "chardev",
    "fill_level": "chardev",
    "fill_unit": "chardev",
}


def parse_escapes(text: str) -> bytes:
    """``cmd0\\ncmdO\\n`` to bytes: ``\\n \\r \\t \\0 \\\\ \\xHH``; other characters as Latin-1.

    Raises:
        ServerConfigError: a backslash that starts none of those, or a character above U+00FF.
    """
    out = bytearray()
    pos = 0
    for match in _ESCAPE.finditer(text):
        out += _latin1(text[pos : match.start()])
        code = match.group(1)
        out += bytes([int(code[1:], 16)]) if code[0] == "x" else _SIMPLE[code]
        pos = match.end()
    out += _latin1(text[pos:])
    return bytes(out)


def _latin1(text: str) -> bytes:
    if "\\" in text:
        raise ServerConfigError(
            f"--serial-init: unknown escape in {text!r}; use \\n \\r \\t \\0 \\\\ or \\xHH"
        )
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ServerConfigError(
            f"--serial-init: {text!r} has a character above \\xff; write bytes as \\xHH"
        ) from exc


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"{text!r} is not on or off")
    return text == "on"


def add_device_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--device`` and the serial and chardev flags (defaults in the help)."""
    group = parser.add_argument_group(
        "device backends",
        "--backend serial: a serial port (USB CDC-ACM) in raw mode 8N1, flushed before "
        "every read; --backend chardev: a character device drained before every read",
    )
    group.add_argument("--device", default=None, help="the device node (udev symlinks welcome)")
    group.add_argument(
        "--baud", type=int, default=None, help=f"serial: line speed ({_DEFAULTS.baud})"
    )
    for line in ("dtr", "rts"):
        group.add_argument(
            f"--{line}",
            type=_on_off,
            default=None,
            metavar="{on,off}",
            help=f"serial: set or clear {line.upper()} after opening (on)",
        )
    group.add_argument(
        "--serial-init",
        default=None,
        metavar="TEXT",
        help="serial: bytes written after each open, with escapes \\n \\r \\t \\0 \\\\ \\xHH "
        "(OneRNG: 'cmd0\\ncmdO\\n')",
    )
    group.add_argument(
        "--skip-after-flush",
        type=int,
        default=None,
        metavar="BYTES",
        help="serial: bytes read and dropped after each flush, for a device that buffers "
        "data itself (0)",
    )
    group.add_argument(
        "--drain-limit",
        type=int,
        default=None,
        metavar="BYTES",
        help="chardev: most bytes discarded before each read; 0: no drain, for a device "
        f"that generates on demand only ({DEFAULT_DRAIN_LIMIT})",
    )
    group.add_argument(
        "--fill-level",
        default=None,
        metavar="PATH",
        help="chardev: sysfs file with the number of buffered units (a card's ready_count); "
        "drain exactly that many",
    )
    group.add_argument(
        "--fill-unit",
        type=int,
        default=None,
        metavar="BYTES",
        help=f"chardev: bytes per --fill-level unit ({_DEFAULTS.fill_unit}: 32-bit words)",
    )


def device_options(args: argparse.Namespace, timeout_s: float) -> DeviceOptions | None:
    """The :class:`DeviceOptions` the flags give, or None without ``--device``.

    Raises:
        ServerConfigError: a flag of one device backend given with another
            backend, or an unusable value.
    """
    given = {name: getattr(args, name) for name in _OWNED if getattr(args, name) is not None}
    for name in given:
        if args.backend != _OWNED[name]:
            flag = "--" + name.replace("_", "-")
            raise ServerConfigError(f"{flag} applies to --backend {_OWNED[name]} only")
    if args.device is None:
        return None
    if not args.device.strip():
        raise ServerConfigError("--device is empty; give the device node's path")
    for name in ("skip_after_flush", "drain_limit"):
        if given.get(name, 0) < 0:
            raise ServerConfigError(f"--{name.replace('_', '-')} must be >= 0, got {given[name]}")
    init = parse_escapes(given.pop("serial_init")) if "serial_init" in given else b""
    return DeviceOptions(path=args.device, timeout_s=timeout_s, init=init, **given)
