"""Throughput of vLLM with and without qr sampling, and where the adapter's time goes.

Runs the offline engine in-process (V1 runner on CPU) on the tiny local model
with a 32,000-token vocabulary, batch 1 and 8, the ``system`` entropy source
and 20,480 bytes per token. "Without" means the same engine and run, with
requests that opt out (``qr_enabled = false``) and use vLLM's own sampling at
the same temperature / top-k / top-p. Prints figures; asserts nothing.

    python benchmarks/bench_vllm.py [--tokens 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("QR_ENTROPY_SOURCE_TYPE", "system")
os.environ.setdefault("QR_LOG_LEVEL", "none")

from vllm import LLM, SamplingParams

from qr_vllm import QRSamplingLogitsProcessor
from qr_vllm.demo import TinyModelSpec, build_tiny_model

PROMPTS = [
    "The nature of consciousness is",
    "Once upon a time",
    "Quantum random number generators",
    "A language model assigns",
    "The quick brown fox",
    "Photon arrival times",
    "In the beginning",
    "Scientists measured",
]


def _params(tokens: int, qr: bool) -> SamplingParams:
    return SamplingParams(
        max_tokens=tokens,
        ignore_eos=True,
        temperature=0.7,
        top_k=50,
        top_p=0.9,
        extra_args={} if qr else {"qr_enabled": False},
    )


def _run(llm: LLM, batch: int, tokens: int, qr: bool) -> float:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    start = time.perf_counter()
    outputs = llm.generate(prompts, _params(tokens, qr), use_tqdm=False)
    elapsed = time.perf_counter() - start
    produced = sum(len(o.outputs[0].token_ids) for o in outputs)
    assert produced == batch * tokens
    return produced / elapsed


def main() -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128, help="tokens per request (128)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration (3)")
    parser.add_argument("--vocab", type=int, default=32_000, help="vocabulary size (32000)")
    args = parser.parse_args()

    model = build_tiny_model(TinyModelSpec(vocab_size=args.vocab))
    llm = LLM(
        model=str(model),
        enforce_eager=True,
        distributed_executor_backend="uni",
        max_model_len=512,
        seed=0,
    )
    (proc,) = QRSamplingLogitsProcessor.live_instances()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print(f"model: tiny Llama, vocab {args.vocab}; {args.tokens} tokens per request")
    print(f"entropy: {proc.config.entropy.entropy_source_type}, ", end="")
    print(f"{proc.config.sampling.sample_count} bytes per token\n")

    # Warm-up: first-call costs of both paths.
    _run(llm, 8, 16, qr=True)
    _run(llm, 8, 16, qr=False)

    header = f"{'batch':>5} {'vLLM tok/s':>11} {'qr tok/s':>10} {'ratio':>6}"
    stages = "fetch  amplify  select  temp  force  record  adapter/step  adapter share"
    print(header + "   per qr step (ms): " + stages)
    for batch in (1, 8):
        # Interleaved, so that load from other processes hits both alike.
        base: list[float] = []
        qr: list[float] = []
        wall = 0.0
        proc.reset_timings()
        for _ in range(args.repeats):
            base.append(_run(llm, batch, args.tokens, qr=False))
            start = time.perf_counter()
            qr.append(_run(llm, batch, args.tokens, qr=True))
            wall += time.perf_counter() - start
        t = proc.timings()
        steps = max(t.steps, 1)
        ms = {
            "fetch": t.fetch_s,
            "amplify": t.amplify_s,
            "select": t.select_s,
            "temp": t.temperature_s,
            "force": t.force_s,
            "record": t.record_s,
        }
        per_step = "  ".join(f"{v / steps * 1e3:.3f}" for v in ms.values())
        b, q = statistics.median(base), statistics.median(qr)
        print(
            f"{batch:>5} {b:>11.0f} {q:>10.0f} {q / b:>6.2f}   {per_step}  "
            f"{t.adapter_s / steps * 1e3:.3f}  {t.adapter_s / wall:.1%} of step time"
            f" (fetch {t.fetch_s / wall:.1%})"
        )
    proc.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
