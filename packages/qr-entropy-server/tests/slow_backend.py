"""A backend for the shutdown test: takes ``QR_TEST_DELAY_S`` seconds per call.

Loaded by a server subprocess as ``slow_backend:SlowBackend`` (the test puts
this folder on PYTHONPATH).
"""

from __future__ import annotations

import os
import time


class SlowBackend:
    thread_safe = True

    def __init__(self) -> None:
        self.device_id = "slow-test-backend"
        self._delay = float(os.environ.get("QR_TEST_DELAY_S", "1.0"))

    def generate(self, n: int) -> bytes:
        time.sleep(self._delay)
        return os.urandom(n)

    def close(self) -> None:
        pass
