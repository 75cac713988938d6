"""``sham``: system bytes after a simulated device latency (blinded control arm)."""

from __future__ import annotations

import os
import time

from qr_entropy._config import EntropyConfig
from qr_entropy._registry import register_entropy_source
from qr_entropy._source import EntropySource, check_byte_count

__all__ = ["ShamEntropySource"]


@register_entropy_source("sham")
class ShamEntropySource(EntropySource):
    """``os.urandom`` bytes delivered after a fixed delay.

    For control arms of blinded experiments: the sampler's timing looks like
    that of a remote device while the bytes are pseudo-random. The delay comes
    first and the bytes are generated after it, so they are as fresh as any
    source's. Records still name the source ``sham``.

    Args:
        latency_ms: Delay before each generation, in milliseconds (``>= 0``).
    """

    def __init__(self, latency_ms: float = 0.0) -> None:
        if not latency_ms >= 0:
            raise ValueError(f"latency_ms must be >= 0, got {latency_ms!r}")
        self._latency_s = latency_ms / 1000.0

    @classmethod
    def from_config(cls, config: EntropyConfig) -> ShamEntropySource:
        """Build from ``QR_SHAM_LATENCY_MS``."""
        return cls(latency_ms=config.sham_latency_ms)

    @property
    def name(self) -> str:
        """``"sham"``."""
        return "sham"

    @property
    def is_available(self) -> bool:
        """Always ``True``."""
        return True

    @property
    def device_id(self) -> str:
        """``"os.urandom+delay"``."""
        return "os.urandom+delay"

    @property
    def latency_ms(self) -> float:
        """The simulated latency in milliseconds."""
        return self._latency_s * 1000.0

    def get_random_bytes(self, n: int) -> bytes:
        """Wait the configured latency, then return ``n`` fresh bytes from ``os.urandom``."""
        check_byte_count(n)
        if self._latency_s > 0:
            time.sleep(self._latency_s)
        return os.urandom(n)

    def health_check(self) -> dict[str, object]:
        """Name, health and the configured latency."""
        return {**super().health_check(), "latency_ms": self.latency_ms}

    def close(self) -> None:
        """Nothing to release."""
