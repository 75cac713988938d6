"""The exception root of qr-core.

Hierarchy::

    ValueError
    └── QRCoreError      every bad argument, configuration or registry name

One class is enough: every error is a caller mistake (a value outside its allowed
range, an unknown registry name, a plugin that fails to load), and each message
names the argument and what it allows, so callers never need to parse it.
"""

from __future__ import annotations

__all__ = ["QRCoreError"]


class QRCoreError(ValueError):
    """A bad argument, configuration value or registry name in qr-core.

    It is a ``ValueError`` so that hosts which translate ``ValueError`` into a
    client error (vLLM answers HTTP 400) do so without knowing qr-core.
    """
