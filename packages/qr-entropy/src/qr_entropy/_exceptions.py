"""Exceptions raised by qr-entropy.

Every error derives from one root, so callers can catch the package's failures
without catching unrelated ones::

    QREntropyError
    ├── EntropyUnavailableError      a source cannot deliver bytes now (the only
    │   │                            error FallbackEntropySource catches)
    │   └── SourceConfigurationError its server refuses this configuration: a
    │                                retry cannot fix it (wrong key, CA, method,
    │                                layout); fallback reason "configuration"
    ├── ConfigError (ValueError)     a bad setting or per-request override; names
    │   │                            the key and the allowed values
    │   └── UnknownSourceError       a source name nobody registered; lists the known names
    ├── ByteCountError (ValueError)  a byte count that is not a positive integer
    └── RegistryError                a conflicting registration
        └── SourceLoadError          a plugin's entry point failed to load; names it

``ConfigError`` and ``ByteCountError`` are ``ValueError`` subclasses so that
vLLM answers a bad request with HTTP 400 instead of failing the engine.
"""

from __future__ import annotations

__all__ = [
    "ByteCountError",
    "ConfigError",
    "EntropyUnavailableError",
    "QREntropyError",
    "RegistryError",
    "SourceConfigurationError",
    "SourceLoadError",
    "UnknownSourceError",
]


class QREntropyError(Exception):
    """Root of every error raised by qr-entropy."""


class EntropyUnavailableError(QREntropyError):
    """A source cannot deliver the requested bytes right now.

    Raised for transient or device-side failures (timeouts, an open circuit,
    a short read, a failed health test). ``FallbackEntropySource`` catches this
    error and nothing else.
    """


class SourceConfigurationError(EntropyUnavailableError):
    """The source's server refuses this client's configuration: no retry can fix it.

    A configuration-class failure, as opposed to a transient one (a server that
    is down, a deadline): a wrong or missing API key (UNAUTHENTICATED), a refused
    permission (PERMISSION_DENIED), a method the server does not have
    (UNIMPLEMENTED), a request it refuses (INVALID_ARGUMENT), a TLS certificate
    that fails verification or names another host, TLS against a plaintext
    port, or a response layout the server does not speak.

    At start-up :meth:`EntropySource.probe` raises it. During a run
    :class:`FallbackEntropySource` still falls back where ``QR_FALLBACK_MODE``
    allows, with ``fallback_reason="configuration"``, and logs an ERROR at least
    once a minute while it lasts.

    Args:
        message: What failed, naming the address and the cause.
        address: The server's address ("" when the source has none).
        cause: The cause alone, in words.
        arm: The experiment arm (``QR_SOURCES``) whose source it is, if any.
    """

    def __init__(
        self, message: str, *, address: str = "", cause: str = "", arm: str | None = None
    ) -> None:
        super().__init__(message)
        self.address = address
        self.cause = cause or message
        self.arm = arm


class ConfigError(QREntropyError, ValueError):
    """A setting or per-request override is invalid.

    The message names the offending key and the values it accepts.
    """


class UnknownSourceError(ConfigError):
    """No entropy source is registered under the requested name."""


class ByteCountError(QREntropyError, ValueError):
    """A requested byte count ``n`` is not a positive integer."""


class RegistryError(QREntropyError):
    """A source registration conflicts with an existing one or is not a source."""


class SourceLoadError(RegistryError):
    """A third-party entry point could not be loaded or is not an ``EntropySource``."""
