"""Version of the qr-entropy-server distribution, declared once (hatch reads it)."""

__version__ = "0.1.0"
