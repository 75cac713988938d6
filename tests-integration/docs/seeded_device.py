"""A seeded stand-in device for the doc test's ``{server}``: the same bytes on every run.

The documented ``qr-entropy check`` runs three tests at level 0.001 each, so on
truly random bytes (``urandom``) it fails about 3 times in 1,000 runs: the doc
test would fail by chance. What the block shows is that the command works, not
whether the bytes pass, so the server serves a seeded stream instead. One block
uses the server, and its fetches come one after another, so the bytes it gets,
and its verdict, are the same on every run (the test asserts the exit status).
"""

from __future__ import annotations

import os

import numpy as np

SEED_ENV = "DOCTEST_DEVICE_SEED"


class SeededDevice:
    """Bytes of ``numpy.random.default_rng(seed)``, in order."""

    thread_safe = False

    def __init__(self) -> None:
        seed = int(os.environ[SEED_ENV])
        self._rng = np.random.default_rng(seed)
        self.device_id = f"seeded-doctest-{seed}"

    def generate(self, n: int) -> bytes:
        """The next ``n`` bytes of the seeded stream."""
        return self._rng.bytes(n)

    def close(self) -> None:
        """Nothing to release."""
