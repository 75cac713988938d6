"""The demo and the models it runs: ``python -m qr_vllm.demo`` (``hatch run generate``).

:func:`main` generates text with vLLM and qr sampling and prints where every
token came from (``--arms``: a small two-arm experiment in one engine;
``--serve``: ``vllm serve`` with the processor). The models are built
locally, with no model hub: :func:`build_smollm2` converts SmolLM2-135M-Instruct
from a GGUF file on PyPI, :func:`build_tiny_model` builds the tiny random-weight
Llama the tests and benchmarks use.

Importing this package imports neither vLLM nor transformers: the demo sends
their import-time messages to its log file first.
"""

from qr_vllm.demo._cli import main
from qr_vllm.demo._smollm2 import SMOLLM2_REQUIREMENT, build_smollm2, smollm2_dir
from qr_vllm.demo._tiny_model import TinyModelSpec, build_tiny_model, default_cache_dir

__all__ = [
    "SMOLLM2_REQUIREMENT",
    "TinyModelSpec",
    "build_smollm2",
    "build_tiny_model",
    "default_cache_dir",
    "main",
    "smollm2_dir",
]
