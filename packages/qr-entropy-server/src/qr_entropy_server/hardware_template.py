"""Template for connecting your own QRNG hardware (the 5-minute walkthrough).

Copy this file into your own package, implement the three methods of
:class:`QRNGHardware`, and run::

    qr-entropy-server --backend my_package.my_qrng:QRNGHardware --port 50051

The server handles everything else: unary and streaming RPCs, the
``grpc.health.v1`` health service, API keys, TLS, graceful shutdown. It calls
``generate`` once per request and stamps ``generation_timestamp_ns`` right
after it returns, which is the client's proof that the bytes are fresh.

As shipped, the class reads a character device given by the environment
variable ``QR_HARDWARE_DEVICE`` (default ``/dev/qrng0``), so
``QR_HARDWARE_DEVICE=/dev/urandom`` makes it runnable anywhere.
"""

from __future__ import annotations

import os
from typing import BinaryIO

__all__ = ["QRNGHardware"]


class QRNGHardware:
    """One QRNG device. The server creates it once with no arguments.

    Set ``thread_safe = True`` only if ``generate`` may run in several threads
    at once; otherwise the server serialises calls with a lock.
    """

    thread_safe = False

    def __init__(self, device_path: str | None = None) -> None:
        """Open the hardware connection."""
        self.device_path = device_path or os.environ.get("QR_HARDWARE_DEVICE", "/dev/qrng0")
        # Shown in every response's device_id: name the device, e.g. its serial number.
        self.device_id = f"qrng:{self.device_path}"
        # Unbuffered, so every read reaches the device: nothing is read ahead.
        self._device: BinaryIO = open(self.device_path, "rb", buffering=0)  # noqa: SIM115

    def generate(self, n_bytes: int) -> bytes:
        """Measure ``n_bytes`` fresh random bytes now.

        CRITICAL: generate entropy during this call, never from a buffer or a
        pool filled earlier: the measurement must happen after the request.
        """
        chunks: list[bytes] = []
        remaining = n_bytes
        while remaining > 0:
            chunk = self._device.read(remaining)
            if not chunk:
                raise OSError(f"{self.device_path}: device returned no data")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        """Release the hardware."""
        self._device.close()
