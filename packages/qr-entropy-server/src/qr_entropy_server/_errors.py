"""Exceptions of qr-entropy-server.

Hierarchy::

    EntropyServerError            root: every error this package raises
    ├── BackendError              a backend could not be loaded or misbehaved
    └── ServerConfigError         a command-line option or file is unusable
"""

from __future__ import annotations

__all__ = ["BackendError", "EntropyServerError", "ServerConfigError"]


class EntropyServerError(Exception):
    """Root of every error raised by qr-entropy-server."""


class BackendError(EntropyServerError):
    """A backend could not be loaded, or returned something other than asked."""


class ServerConfigError(EntropyServerError):
    """A server option (flag, certificate file, address) cannot be used."""
