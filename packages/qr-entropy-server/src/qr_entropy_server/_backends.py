"""Entropy backends: where the server's random bytes come from.

A backend is any object with ``generate(n) -> bytes`` and ``close()``; it may
also carry ``device_id: str``, ``thread_safe: bool``, ``never_blocks: bool``
(``generate`` cannot wait for anything, so the server may call it on its event
loop; see :mod:`qr_entropy_server._pool`), ``reopens: bool`` (``generate``
reopens the device after a failure, so the server probes it while NOT_SERVING)
and ``continuous_tests: bool`` (False only for a DRBG's output such as
``os.urandom``: the health tests have no noise source to watch there). Every
call of ``generate`` must produce fresh bytes at that moment (no pools, no
buffers): the server stamps ``read_started_ns`` right before the call and
``generation_timestamp_ns`` right after it returns.

Built in: ``urandom``, ``timing-noise``, and the device backends ``serial``
(:mod:`qr_entropy_server._serial`) and ``chardev``
(:mod:`qr_entropy_server._chardev`), which need :class:`DeviceOptions`.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
import threading
import time
from typing import Protocol, runtime_checkable

from qr_entropy_server._chardev import CharDeviceBackend
from qr_entropy_server._errors import BackendError
from qr_entropy_server._node import DeviceOptions
from qr_entropy_server._serial import SerialBackend

__all__ = [
    "BUILTIN_BACKENDS",
    "DEVICE_BACKENDS",
    "EntropyBackend",
    "TimingNoiseBackend",
    "UrandomBackend",
    "close_backend",
    "load_backend",
]

logger = logging.getLogger(__name__)


@runtime_checkable
class EntropyBackend(Protocol):
    """What the server needs from a generator of random bytes."""

    def generate(self, n: int) -> bytes:
        """Generate exactly ``n`` fresh random bytes now."""
        ...

    def close(self) -> None:
        """Release the device."""
        ...


class UrandomBackend:
    """The operating system's CSPRNG (``os.urandom``): a baseline, not quantum."""

    thread_safe = True
    # getrandom() waits only until the kernel's pool is first seeded, at boot.
    never_blocks = True
    # A DRBG's output: no noise source for the health tests to watch, and they
    # would about double the cost of a request (see the README).
    continuous_tests = False

    def __init__(self) -> None:
        self.device_id = f"urandom@{socket.gethostname()}"

    def generate(self, n: int) -> bytes:
        """Return ``n`` bytes from ``os.urandom``."""
        return os.urandom(n)

    def close(self) -> None:
        """Nothing to release."""


class TimingNoiseBackend:
    """CPU timing jitter (experimental): one bit per timed no-op loop.

    Each bit is the parity of the low byte of the nanosecond duration of a
    short loop; eight bits make a byte. The output is raw, unconditioned
    jitter, so it can be biased: use it to study a physical noise source, not
    as a cryptographic generator.
    """

    thread_safe = False

    def __init__(self, spin: int = 4) -> None:
        self.device_id = f"timing-noise@{socket.gethostname()}"
        self._spin = range(spin)

    def generate(self, n: int) -> bytes:
        """Time ``8 * n`` short loops and pack the parity bits into ``n`` bytes."""
        clock = time.perf_counter_ns
        spin = self._spin
        out = bytearray(n)
        for i in range(n):
            byte = 0
            for _ in range(8):
                start = clock()
                for _ in spin:
                    pass
                delta = clock() - start
                byte = (byte << 1) | (delta.bit_count() & 1)
            out[i] = byte
        return bytes(out)

    def close(self) -> None:
        """Nothing to release."""


BUILTIN_BACKENDS: dict[str, type[UrandomBackend] | type[TimingNoiseBackend]] = {
    "urandom": UrandomBackend,
    "timing-noise": TimingNoiseBackend,
}
DEVICE_BACKENDS: dict[str, type[SerialBackend] | type[CharDeviceBackend]] = {
    "serial": SerialBackend,
    "chardev": CharDeviceBackend,
}


def load_backend(spec: str, device: DeviceOptions | None = None) -> EntropyBackend:
    """Instantiate a backend by name or by ``module:Class``.

    Args:
        spec: ``urandom``, ``timing-noise``, ``serial``, ``chardev``, or
            ``package.module:ClassName`` of a class whose no-argument
            constructor opens the hardware.
        device: The node and its settings; required by ``serial`` and
            ``chardev``, refused by the others.

    Returns:
        The backend instance. A device backend opens its node at the first
        ``generate``, so the server starts (NOT_SERVING) before the device is
        plugged in.

    Raises:
        BackendError: unknown name, module or class not importable, the
            object lacks ``generate``/``close``, or ``device`` is missing or
            not wanted.
        ServerConfigError: a device setting is unusable (e.g. the baud rate).
    """
    if spec in DEVICE_BACKENDS:
        if device is None:
            raise BackendError(f"--backend {spec} needs --device PATH")
        return DEVICE_BACKENDS[spec](device)
    if device is not None:
        raise BackendError(
            f"--device applies to --backend {' or '.join(DEVICE_BACKENDS)} only, not {spec!r}"
        )
    if spec in BUILTIN_BACKENDS:
        return BUILTIN_BACKENDS[spec]()
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        names = sorted([*BUILTIN_BACKENDS, *DEVICE_BACKENDS])
        raise BackendError(f"backend {spec!r}: expected one of {names} or 'module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(
            f"backend {spec!r}: cannot import module {module_name!r}: {exc}"
        ) from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise BackendError(f"backend {spec!r}: module {module_name!r} has no {class_name!r}")
    try:
        instance = cls()
    except Exception as exc:
        raise BackendError(f"backend {spec!r}: constructor failed: {exc}") from exc
    if not isinstance(instance, EntropyBackend):
        raise BackendError(f"backend {spec!r}: object needs generate(n) -> bytes and close()")
    if not isinstance(getattr(instance, "device_id", None), str):
        # Identify user hardware by its class when it does not name itself.
        with contextlib.suppress(AttributeError):
            instance.device_id = spec  # type: ignore[attr-defined]
    return instance


def device_id_of(backend: EntropyBackend) -> str:
    """Return the backend's ``device_id`` or its class name."""
    value = getattr(backend, "device_id", None)
    return value if isinstance(value, str) else type(backend).__qualname__


def close_backend(backend: EntropyBackend, limit_s: float) -> None:
    """``backend.close()`` in a daemon thread: an error is logged, a hang is abandoned."""
    errors: list[BaseException] = []

    def close() -> None:
        try:
            backend.close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    closer = threading.Thread(target=close, name="qr-backend-close", daemon=True)
    closer.start()
    closer.join(limit_s)
    if closer.is_alive():
        logger.warning("backend close() did not return within %.1f s; exiting anyway", limit_s)
    elif errors:
        exc = errors[0]
        logger.warning(
            "backend close() failed: %s: %s",
            type(exc).__name__,
            exc,
            exc_info=exc if logger.isEnabledFor(logging.DEBUG) else None,
        )
