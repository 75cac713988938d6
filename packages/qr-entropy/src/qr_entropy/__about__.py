"""Version of the qr-entropy distribution, declared once (hatch reads it)."""

__version__ = "0.1.0"
