"""qr-core (skeleton; filled by its issue)."""

from qr_core.__about__ import __version__

__all__ = ["__version__"]
