"""Exceptions raised by qr-vllm.

One root, so callers can catch everything the adapter raises::

    QRVllmError
    ├── QRParamsError (also ValueError)        a bad ``qr_*`` per-request key or value;
    │                                          vLLM answers the request with HTTP 400
    └── UnsupportedEngineError (also RuntimeError)
                                               the engine runs in a mode where qr
                                               sampling cannot run (speculative
                                               decoding, pooling models)
"""

from __future__ import annotations

__all__ = ["QRParamsError", "QRVllmError", "UnsupportedEngineError"]


class QRVllmError(Exception):
    """Root of every error raised by qr-vllm."""


class QRParamsError(QRVllmError, ValueError):
    """A per-request ``qr_*`` argument is unknown, forbidden or out of range.

    It is a ``ValueError`` because vLLM turns a ``ValueError`` from
    ``validate_params`` into an HTTP 400 answer and keeps serving.
    """


class UnsupportedEngineError(QRVllmError, RuntimeError):
    """The engine configuration cannot run qr sampling; raised at start-up."""
