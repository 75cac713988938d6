"""qr-vllm (skeleton; filled by its issue)."""

from qr_vllm.__about__ import __version__

__all__ = ["__version__"]
