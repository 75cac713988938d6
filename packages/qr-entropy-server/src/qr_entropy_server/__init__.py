"""qr-entropy-server: reference gRPC entropy servers for qr-sampler.

Serves ``qr_entropy.EntropyService`` (unary ``GetEntropy`` and streaming
``StreamEntropy``) from a backend: ``urandom``, ``timing-noise`` or your own
hardware class (see :mod:`qr_entropy_server.hardware_template`). Run it with
the ``qr-entropy-server`` command or embed :class:`EntropyServer`.
"""

from qr_entropy_server.__about__ import __version__
from qr_entropy_server._backends import (
    EntropyBackend,
    TimingNoiseBackend,
    UrandomBackend,
    load_backend,
)
from qr_entropy_server._errors import BackendError, EntropyServerError, ServerConfigError
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
    "EntropyBackend",
    "EntropyServer",
    "EntropyServerError",
    "ServerConfigError",
    "ServerOptions",
    "TimingNoiseBackend",
    "UrandomBackend",
    "__version__",
    "load_backend",
]
