"""A backend capped at ``QR_TEST_RATE`` bytes per second (default 1 MB/s), for the budget test.

Each ``generate(n)`` sleeps ``n / rate`` seconds before returning ``os.urandom(n)``,
so no read can be faster than the cap (a busy machine only makes it slower).
Loaded by a server subprocess as ``throttled_backend:ThrottledBackend``.
"""

from __future__ import annotations

import os
import time


class ThrottledBackend:
    def __init__(self) -> None:
        self.device_id = "throttled-test-backend"
        self.rate = float(os.environ.get("QR_TEST_RATE", "1000000"))

    def generate(self, n: int) -> bytes:
        time.sleep(n / self.rate)
        return os.urandom(n)

    def close(self) -> None:
        pass
