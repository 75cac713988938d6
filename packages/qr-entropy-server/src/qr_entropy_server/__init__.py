"""qr-entropy-server (skeleton; filled by its issue)."""

from qr_entropy_server.__about__ import __version__

__all__ = ["__version__"]
