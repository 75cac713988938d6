"""qr-vllm: sample vLLM's tokens with external entropy (quantum RNG, OS, timing jitter).

Installed next to vLLM, the processor registers itself in the entry-point
group ``vllm.logits_processors``; ``vllm serve MODEL`` and ``LLM(model=...)``
load it with no flags. Settings come from ``QR_*`` environment variables and
per-request ``qr_*`` keys (``SamplingParams.extra_args`` offline,
``"vllm_xargs"`` over HTTP).
"""

from typing import TYPE_CHECKING

from qr_vllm.__about__ import __version__
from qr_vllm._config import AdapterConfig, RequestPlan, resolve_request
from qr_vllm._engine_guard import check_engine
from qr_vllm._errors import QRParamsError, QRVllmError, UnsupportedEngineError
from qr_vllm._settings import RecordSettings, SamplingSettings
from qr_vllm._step import StepTimings
from qr_vllm._tiny_model import TinyModelSpec, build_tiny_model

if TYPE_CHECKING:
    from qr_vllm._processor import QRSamplingLogitsProcessor

__all__ = [
    "AdapterConfig",
    "QRParamsError",
    "QRSamplingLogitsProcessor",
    "QRVllmError",
    "RecordSettings",
    "RequestPlan",
    "SamplingSettings",
    "StepTimings",
    "TinyModelSpec",
    "UnsupportedEngineError",
    "__version__",
    "build_tiny_model",
    "check_engine",
    "resolve_request",
]


def __getattr__(name: str) -> object:
    # Imported on first use: vLLM logs at import time, and the demo must be
    # able to send those messages to its log file before they are written.
    if name == "QRSamplingLogitsProcessor":
        from qr_vllm._processor import QRSamplingLogitsProcessor

        return QRSamplingLogitsProcessor
    raise AttributeError(f"module 'qr_vllm' has no attribute {name!r}")
