"""qr-entropy-server: reference gRPC entropy servers for qr-sampler.

Serves ``qr_entropy.EntropyService`` (unary ``GetEntropy`` and streaming
``StreamEntropy``) from a backend: a QRNG on a serial port (``serial``) or a
character device (``chardev``), your own hardware class behind a vendor
library (see :mod:`qr_entropy_server.hardware_template`), ``timing-noise`` or
``urandom``. Every block from a physical source passes continuous health tests
before it is served, and every response carries the device's measured rate.
Run it with the ``qr-entropy-server`` command or embed :class:`EntropyServer`
(``--metrics-port``, with the ``metrics`` extra, adds a Prometheus endpoint);
:mod:`qr_entropy_server.testing` has a stand-in device.
"""

from qr_entropy_server.__about__ import __version__
from qr_entropy_server._backends import (
    EntropyBackend,
    TimingNoiseBackend,
    UrandomBackend,
    load_backend,
)
from qr_entropy_server._chardev import CharDeviceBackend
from qr_entropy_server._errors import (
    BackendError,
    BackendReplyError,
    DeviceError,
    DeviceStalledError,
    EntropyServerError,
    HealthTestError,
    ServerConfigError,
)
from qr_entropy_server._node import DeviceOptions
from qr_entropy_server._serial import SerialBackend
from qr_entropy_server._server import (
    DEFAULT_ADDRESS,
    DEFAULT_MAX_BYTES,
    EntropyServer,
    ServerOptions,
)

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_MAX_BYTES",
    "BackendError",
    "BackendReplyError",
    "CharDeviceBackend",
    "DeviceError",
    "DeviceOptions",
    "DeviceStalledError",
    "EntropyBackend",
    "EntropyServer",
    "EntropyServerError",
    "HealthTestError",
    "SerialBackend",
    "ServerConfigError",
    "ServerOptions",
    "TimingNoiseBackend",
    "UrandomBackend",
    "__version__",
    "load_backend",
]
