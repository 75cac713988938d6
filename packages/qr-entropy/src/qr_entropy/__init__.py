"""qr-entropy (skeleton; filled by its issue)."""

from qr_entropy.__about__ import __version__

__all__ = ["__version__"]
