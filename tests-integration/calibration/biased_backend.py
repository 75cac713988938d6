"""A test entropy device for ``qr-entropy-server --backend biased_backend:BiasedBitsBackend``.

Every bit is 1 with probability 251/500 = 0.502 exactly, independently: a real
device's kind of defect, as a real server process serves it. Seeded from
``QR_TEST_BIASED_SEED`` so a test run is repeatable (the bias, not the
randomness, is what the tests are about); unset or 0 seeds from the OS.
"""

from __future__ import annotations

import os

import numpy as np

P_ONE = 0.502


class BiasedBitsBackend:
    """Bits that are 1 with probability 0.502."""

    thread_safe = False

    def __init__(self) -> None:
        seed = int(os.environ.get("QR_TEST_BIASED_SEED", "0")) or None
        self._rng = np.random.default_rng(seed)
        self.device_id = f"biased-bits-{P_ONE}"

    def generate(self, n: int) -> bytes:
        """``n`` fresh bytes of biased bits."""
        bits = self._rng.integers(0, 500, size=8 * n, dtype=np.uint16) < round(500 * P_ONE)
        return np.packbits(bits).tobytes()

    def close(self) -> None:
        """Nothing to release."""
