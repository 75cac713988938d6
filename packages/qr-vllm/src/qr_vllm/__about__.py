"""Version of the qr-vllm distribution, declared once (hatch reads it)."""

__version__ = "0.1.0"
