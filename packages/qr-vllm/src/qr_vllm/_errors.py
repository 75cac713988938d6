"""Exceptions raised by qr-vllm.

One root, so callers can catch everything the adapter raises::

    QRVllmError
    ├── QRParamsError (also ValueError)        a bad ``qr_*`` per-request key or value;
    │                                          vLLM answers the request with HTTP 400
    ├── UnsupportedEngineError (also RuntimeError)
    │                                          the engine runs in a mode where qr
    │                                          sampling cannot run (speculative
    │                                          decoding, pooling models)
    ├── ConfigurationMismatchError (also RuntimeError)
    │                                          a process of the engine reads another
    │                                          qr configuration than its front end
    │                                          (or the front end stamped none); the
    │                                          engine does not start
    └── SourceRefusedError (also RuntimeError)
                                               an entropy server refuses this
                                               configuration at start (API key, CA,
                                               method, layout), or is down while
                                               QR_REQUIRE_SOURCES_AT_START=true; the
                                               engine does not start
"""

from __future__ import annotations

__all__ = [
    "ConfigurationMismatchError",
    "QRParamsError",
    "QRVllmError",
    "SourceRefusedError",
    "UnsupportedEngineError",
]


class QRVllmError(Exception):
    """Root of every error raised by qr-vllm."""


class QRParamsError(QRVllmError, ValueError):
    """A per-request ``qr_*`` argument is unknown, forbidden or out of range.

    It is a ``ValueError`` because vLLM turns a ``ValueError`` from
    ``validate_params`` into an HTTP 400 answer and keeps serving.
    """


class UnsupportedEngineError(QRVllmError, RuntimeError):
    """The engine configuration cannot run qr sampling; raised at start-up."""


class ConfigurationMismatchError(QRVllmError, RuntimeError):
    """A process of the engine would sample on another qr configuration than the front
    end validates requests with; raised at start-up, naming the differing settings
    (never a secret's value) and how to carry the settings to every process."""


class SourceRefusedError(QRVllmError, RuntimeError):
    """An entropy source cannot serve this engine, found by the start-up probe: its server
    refuses the configuration (a retry cannot fix it), or it is down and
    ``QR_REQUIRE_SOURCES_AT_START`` is true. The message names the arm, the address and
    the cause."""
