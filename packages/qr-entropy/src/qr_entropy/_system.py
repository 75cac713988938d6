"""``system``: the operating system's cryptographic RNG."""

from __future__ import annotations

import os

from qr_entropy._registry import register_entropy_source
from qr_entropy._source import EntropySource, check_byte_count

__all__ = ["SystemEntropySource"]


@register_entropy_source("system")
class SystemEntropySource(EntropySource):
    """Bytes from ``os.urandom``: the OS CSPRNG, read at call time.

    A baseline and the default fallback; not a physical source.
    """

    @property
    def name(self) -> str:
        """``"system"``."""
        return "system"

    @property
    def is_available(self) -> bool:
        """Always ``True``."""
        return True

    @property
    def device_id(self) -> str:
        """``"os.urandom"``."""
        return "os.urandom"

    def get_random_bytes(self, n: int) -> bytes:
        """Return ``n`` bytes from ``os.urandom``."""
        return os.urandom(check_byte_count(n))

    def close(self) -> None:
        """Nothing to release."""
