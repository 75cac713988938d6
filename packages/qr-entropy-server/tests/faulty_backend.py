"""Backends that misbehave on purpose, loaded by server processes under test.

``QR_TEST_FAULT`` picks the fault:

- ``hang:K``: the first K calls of ``generate`` never return; later ones answer.
- ``raise``: ``generate`` raises OSError.
- ``close-raises``: ``generate`` answers, ``close`` raises OSError.
"""

from __future__ import annotations

import os
import threading


class FaultyBackend:
    thread_safe = True

    def __init__(self) -> None:
        self.device_id = "faulty-test-backend"
        self._fault = os.environ.get("QR_TEST_FAULT", "")
        self._calls = 0
        self._lock = threading.Lock()
        self._never = threading.Event()

    def generate(self, n: int) -> bytes:
        with self._lock:
            self._calls += 1
            call = self._calls
        if self._fault.startswith("hang:") and call <= int(self._fault[len("hang:") :]):
            self._never.wait()  # a driver stuck in a read that never completes
        if self._fault == "raise":
            raise OSError("device unplugged")
        return os.urandom(n)

    def close(self) -> None:
        if self._fault == "close-raises":
            raise OSError("device already gone")
