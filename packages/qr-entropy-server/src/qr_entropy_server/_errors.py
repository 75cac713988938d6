"""Exceptions of qr-entropy-server.

Hierarchy::

    EntropyServerError            root: every error this package raises
    ├── BackendError              a backend could not be loaded or misbehaved
    │   ├── BackendReplyError     generate returned something other than n bytes
    │   ├── DeviceError           a device node failed: gone, unplugged, I/O error
    │   │   └── DeviceStalledError  no bytes before --backend-timeout (answered UNAVAILABLE)
    │   └── HealthTestError       a block failed a continuous health test (never served)
    └── ServerConfigError         a command-line option or file is unusable
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendReplyError",
    "DeviceError",
    "DeviceStalledError",
    "EntropyServerError",
    "HealthTestError",
    "ServerConfigError",
]


class EntropyServerError(Exception):
    """Root of every error raised by qr-entropy-server."""


class BackendError(EntropyServerError):
    """A backend could not be loaded, or returned something other than asked."""


class BackendReplyError(BackendError):
    """``generate`` returned something that is not ``bytes``, or another byte count.

    Args:
        kind: Which rule it broke (``backend-type`` or ``backend-length``), for the log.
        message: What it returned, against what was asked.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class DeviceError(BackendError):
    """A device node could not be opened, read or configured; the message names it."""


class DeviceStalledError(DeviceError):
    """The device gave too few bytes before ``--backend-timeout``: the call is UNAVAILABLE."""


class HealthTestError(BackendError):
    """A block failed the repetition count or adaptive proportion test.

    Args:
        message: Which test, the byte value, the count and the cutoff.
        test: ``repetition_count`` or ``adaptive_proportion`` (the metrics count by it).
    """

    def __init__(self, message: str, test: str = "") -> None:
        super().__init__(message)
        self.test = test


class ServerConfigError(EntropyServerError):
    """A server option (flag, certificate file, address) cannot be used."""
