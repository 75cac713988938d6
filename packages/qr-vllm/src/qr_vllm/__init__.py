"""qr-vllm: sample vLLM's tokens with external entropy (quantum RNG, OS, timing jitter).

Installed next to vLLM, the processor registers itself in the entry-point
group ``vllm.logits_processors``; ``vllm serve MODEL`` and ``LLM(model=...)``
load it with no flags. Settings come from ``QR_*`` environment variables and
per-request ``qr_*`` keys (``SamplingParams.extra_args`` offline,
``"vllm_xargs"`` over HTTP).
"""

from qr_vllm.__about__ import __version__
from qr_vllm._config import AdapterConfig, RequestPlan, resolve_request
from qr_vllm._engine_guard import check_engine
from qr_vllm._errors import QRParamsError, QRVllmError, UnsupportedEngineError
from qr_vllm._processor import QRSamplingLogitsProcessor
from qr_vllm._settings import RecordSettings, SamplingSettings
from qr_vllm._step import StepTimings
from qr_vllm._tiny_model import TinyModelSpec, build_tiny_model

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
