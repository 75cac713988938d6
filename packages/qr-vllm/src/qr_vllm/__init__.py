"""qr-vllm: sample vLLM's tokens with external entropy (quantum RNG, OS, timing jitter).

Installed next to vLLM, the processor registers itself in the entry-point
group ``vllm.logits_processors``; ``vllm serve MODEL`` and ``LLM(model=...)``
load it with no flags. Settings come from ``QR_*`` environment variables and
per-request ``qr_*`` keys (``SamplingParams.extra_args`` offline,
``"vllm_xargs"`` over HTTP).

Subpackages: :mod:`qr_vllm.step` (the sampling step, usable without vLLM) and
:mod:`qr_vllm.demo` (``python -m qr_vllm.demo`` and the tiny test model).
"""

from typing import TYPE_CHECKING

from qr_vllm.__about__ import __version__
from qr_vllm._adapter_config import AdapterConfig
from qr_vllm._engine_guard import check_engine
from qr_vllm._errors import (
    ConfigurationMismatchError,
    QRParamsError,
    QRVllmError,
    SourceRefusedError,
    UnsupportedEngineError,
)
from qr_vllm._request_plan import RequestPlan, calibrated_hash, make_plan, resolve_request
from qr_vllm._settings import EngineSettings, RecordSettings, SamplingSettings
from qr_vllm.step import StepTimings

if TYPE_CHECKING:
    from qr_vllm._processor import QRSamplingLogitsProcessor

__all__ = [
    "AdapterConfig",
    "ConfigurationMismatchError",
    "EngineSettings",
    "QRParamsError",
    "QRSamplingLogitsProcessor",
    "QRVllmError",
    "RecordSettings",
    "RequestPlan",
    "SamplingSettings",
    "SourceRefusedError",
    "StepTimings",
    "UnsupportedEngineError",
    "__version__",
    "calibrated_hash",
    "check_engine",
    "make_plan",
    "resolve_request",
]


def __getattr__(name: str) -> object:
    # Imported on first use: it imports vLLM, which logs at import time, and the
    # demo must be able to send those messages to its log file before they are
    # written (qr_vllm and qr_vllm.step also import where vLLM is not installed).
    if name == "QRSamplingLogitsProcessor":
        from qr_vllm._processor import QRSamplingLogitsProcessor

        return QRSamplingLogitsProcessor
    raise AttributeError(f"module 'qr_vllm' has no attribute {name!r}")
