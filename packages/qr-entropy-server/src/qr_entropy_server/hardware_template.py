"""Template for a QRNG that only its vendor's library can reach.

Serial-port devices (TrueRNG, OneRNG, NeuG) and character devices (Quantis
PCIe, Dragonfly, ``/dev/hwrng``) need no code: use ``--backend serial`` or
``--backend chardev`` (see the server README, "Connecting your device"). Write
a class like this one for a device behind a library: Quantis USB or ComScire
through ``libqwqng``, Crypta Labs QCicada or Firefly through ``pyqcc``. Copy
this file into your own package, replace :class:`_VendorLibrary` with the
vendor's calls, and run::

    qr-entropy-server --backend my_package.my_qrng:QRNGHardware

The server handles everything else: unary and streaming RPCs, health, API
keys, TLS, the continuous health tests on every block, graceful shutdown.

What ``generate(n)`` must do to keep the freshness guarantee (the server
stamps ``read_started_ns`` right before calling it and
``generation_timestamp_ns`` right after it returns, and a client trusts every
byte in between to have been measured after its request):

1. **Discard what waited.** First thing, throw away everything the library,
   the driver or the device buffered before this call: call the library's
   flush, clear or reset function (pyserial-based libraries:
   ``reset_input_buffer()``; a device with a FIFO: read and drop its fill
   level). If the library has none, read and drop at least as many bytes as it
   can hold.
2. **Then measure.** Read exactly ``n`` bytes produced after that. If the
   device has a one-shot mode (measure n bytes on command), that is best.
3. **No read-ahead.** Never keep a pool, a background thread that reads
   ahead, or the rest of an earlier read for the next call.
4. **Fail loudly.** Raise (``OSError`` or your own exception) when the device
   fails; never return fewer, more, or made-up bytes. The call then fails
   INTERNAL and health turns NOT_SERVING.
5. **Reopen.** After a failure, reopen the device in the next ``generate``
   and set ``reopens = True``: the server then probes the class every 0.5 s
   while NOT_SERVING, so a replugged device serves again without a restart.
6. **Stay under the deadline.** Give the library a read timeout below
   ``--backend-timeout``, so a stalled device fails instead of holding the
   thread.

As shipped, :class:`_VendorLibrary` stands in for a real library with
``os.urandom``, so ``--backend qr_entropy_server.hardware_template:QRNGHardware``
runs anywhere. ``QR_HARDWARE_DEVICE`` selects the device (a serial number or
a path, as your library wants it).
"""

from __future__ import annotations

import os

__all__ = ["QRNGHardware"]


class _VendorLibrary:
    """Stand-in for a vendor's device handle; replace it with the real calls."""

    def __init__(self, selector: str) -> None:
        # e.g. handle = qwqng.QWQNG(); handle = cmdctrl.device("serial", selector)
        if not selector:
            raise OSError("no device selected")
        self.selector = selector

    def clear(self) -> None:
        """Drop what the device and the library buffered (e.g. ``Clear()``, ``flush``)."""

    def read(self, n: int) -> bytes:
        """Measure ``n`` bytes now (e.g. ``RandBytes(n)``, ``start_one_shot(n)``)."""
        return os.urandom(n)

    def close(self) -> None:
        """Release the device."""


class QRNGHardware:
    """One QRNG device reached through its vendor's library.

    The server creates it once, with no arguments, and calls ``generate`` from
    one thread at a time (set ``thread_safe = True`` only if the library
    allows concurrent reads).
    """

    thread_safe = False
    reopens = True

    def __init__(self) -> None:
        """Open the device (the server calls this with no arguments)."""
        self.selector = os.environ.get("QR_HARDWARE_DEVICE", "stand-in-0")
        # Shown in every response's device_id: name the device, e.g. its serial number.
        self.device_id = f"vendor-qrng:{self.selector}"
        self._device: _VendorLibrary | None = _VendorLibrary(self.selector)

    def generate(self, n_bytes: int) -> bytes:
        """Discard what the device buffered, then measure ``n_bytes`` fresh bytes."""
        if self._device is None:  # failed before: reopen (a replugged device)
            self._device = _VendorLibrary(self.selector)
        try:
            self._device.clear()
            data = self._device.read(n_bytes)
        except Exception:
            self.close()
            raise
        if len(data) != n_bytes:
            self.close()
            raise OSError(f"{self.device_id}: {len(data)} bytes, {n_bytes} were asked")
        return data

    def close(self) -> None:
        """Release the device (a later ``generate`` reopens it)."""
        device, self._device = self._device, None
        if device is not None:
            device.close()
