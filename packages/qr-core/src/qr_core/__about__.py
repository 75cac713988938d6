"""Version of the qr-core distribution, declared once (hatch reads it)."""

__version__ = "0.1.0"
