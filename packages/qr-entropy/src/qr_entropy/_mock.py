"""``mock_uniform``: a seeded pseudo-random source with an exact mean shift, for tests."""

from __future__ import annotations

import threading

import numpy as np

from qr_entropy._config import EntropyConfig
from qr_entropy._registry import register_entropy_source
from qr_entropy._source import EntropySource, check_byte_count

__all__ = ["MockUniformSource"]

_MAX_BIAS = 127.5


@register_entropy_source("mock_uniform")
class MockUniformSource(EntropySource):
    """Deterministic bytes from NumPy's PCG64, optionally with a known bias.

    With ``bias == 0`` the bytes are uniform on 0..255. With ``bias != 0``
    each byte is, with probability ``|bias| / 127.5``, replaced by 255 (bias
    > 0) or 0 (bias < 0), which shifts the expected byte value to exactly
    ``127.5 + bias`` while every byte stays in 0..255.

    The same seed and the same sequence of request sizes give the same bytes; the
    generator state carries over from call to call. Bytes are drawn from the
    generator at call time.

    Args:
        seed: Seed of the generator; ``None`` seeds from the OS.
        bias: Per-byte mean shift in ``[-127.5, 127.5]``.
    """

    def __init__(self, seed: int | None = None, bias: float = 0.0) -> None:
        if not -_MAX_BIAS <= bias <= _MAX_BIAS:
            raise ValueError(f"bias must be in [-127.5, 127.5], got {bias!r}")
        self._seed = seed
        self._bias = float(bias)
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: EntropyConfig) -> MockUniformSource:
        """Build from ``QR_MOCK_UNIFORM_SEED`` and ``QR_MOCK_UNIFORM_BIAS``."""
        return cls(seed=config.mock_uniform_seed, bias=config.mock_uniform_bias)

    @property
    def name(self) -> str:
        """``"mock_uniform"``."""
        return "mock_uniform"

    @property
    def is_available(self) -> bool:
        """Always ``True``."""
        return True

    @property
    def device_id(self) -> str:
        """Generator, seed and bias, e.g. ``"pcg64(seed=7,bias=0.0)"``."""
        seed = "os" if self._seed is None else str(self._seed)
        return f"pcg64(seed={seed},bias={self._bias})"

    @property
    def bias(self) -> float:
        """The configured per-byte mean shift."""
        return self._bias

    def get_random_bytes(self, n: int) -> bytes:
        """Return the next ``n`` bytes of the seeded stream."""
        check_byte_count(n)
        with self._lock:
            data = self._rng.integers(0, 256, size=n, dtype=np.uint8)
            if self._bias != 0.0:
                replace = self._rng.random(n) < abs(self._bias) / _MAX_BIAS
                data[replace] = 255 if self._bias > 0 else 0
        return data.tobytes()

    def health_check(self) -> dict[str, object]:
        """Name, health, seed (or ``None``) and bias."""
        return {**super().health_check(), "seed": self._seed, "bias": self._bias}

    def close(self) -> None:
        """Nothing to release."""
