"""The adapter's sampling step on a CUDA device: same tokens as the CPU path, no host copy.

Runs qr-vllm's :class:`~qr_vllm._step.StepSampler` (what the processor calls
from ``apply()``) on CUDA logits and on a CPU copy of the same logits with the
same entropy bytes, and reports:

* how many rows chose a different token (only rows whose ``u`` lies within
  about 1e-6 of a CDF boundary may: torch's and numpy's float32 ``exp`` differ
  by a few ulp, see qr_core's selection docstring);
* the bytes copied device -> host during one step (from a CUDA profiler
  trace), next to the size of the logits: the step must not copy the logits
  to the host;
* the step time split into temperature, fetch, amplification, selection and
  forcing, for both devices, and the step's costliest CUDA operations.

No vLLM is needed: where vLLM is not installed (a bare GPU host), the
``qr_vllm`` package's step modules are loaded without its ``__init__`` (which
imports vLLM for the processor class).

Usage: ``python benchmarks/bench_cuda_step.py [--rows 64] [--vocab 151936] [--steps 30]``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
WARMUP_STEPS = 3  # left out of the timings (CUDA context, kernel loading, caches)


def _load_qr_vllm_without_vllm() -> None:
    if importlib.util.find_spec("vllm") is not None:
        return
    package = types.ModuleType("qr_vllm")
    package.__path__ = [str(ROOT / "packages/qr-vllm/src/qr_vllm")]
    sys.modules["qr_vllm"] = package


_load_qr_vllm_without_vllm()

from qr_entropy import EntropyFetch  # noqa: E402
from qr_vllm._batch import Slot, plan_for_params  # noqa: E402
from qr_vllm._settings import SamplingSettings  # noqa: E402
from qr_vllm._step import StepSampler  # noqa: E402

# Per-row (top_k, top_p, temperature strategy): a mixed batch in two groups.
ROW_SETTINGS = [
    {"qr_top_k": 50, "qr_top_p": 0.9},
    {"qr_top_k": 0, "qr_top_p": 1.0},
    {"qr_top_k": 0, "qr_top_p": 0.9},
    {"qr_top_k": 20, "qr_top_p": 0.95, "qr_temperature_strategy": "edt"},
]


class ReplayEntropy:
    """Deterministic bytes per step, the same for the CUDA and the CPU sampler."""

    def __init__(self) -> None:
        self.step = 0

    def fetch(self, n: int) -> EntropyFetch:
        now = time.time_ns()
        data = np.random.default_rng(self.step).bytes(n)
        return EntropyFetch(data, "replay", "bench", None, now, now, now)


def make_slots(rows: int) -> list[Slot]:
    base = SamplingSettings()
    slots = []
    for i in range(rows):
        params = SimpleNamespace(temperature=1.0, extra_args=ROW_SETTINGS[i % len(ROW_SETTINGS)])
        plan = plan_for_params(base, params)  # type: ignore[arg-type]
        assert plan is not None
        slots.append(Slot(plan=plan, output_ids=[]))
    return slots


def profile_step(fn: Any) -> int:
    """Print the step's costliest CUDA operations; return the bytes copied device -> host."""
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        fn()
        torch.cuda.synchronize()
    print(
        prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=40)
    )
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text()).get("traceEvents", [])
    return sum(
        int(e.get("args", {}).get("bytes", 0))
        for e in events
        if e.get("cat") == "gpu_memcpy" and "DtoH" in e.get("name", "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device")
    cuda = torch.device("cuda")
    print(f"{torch.cuda.get_device_name(cuda)}, torch {torch.__version__}")
    print(f"rows {args.rows}, vocab {args.vocab:,}, steps {args.steps}, groups: fixed + edt")

    entropy = ReplayEntropy()
    samplers = {
        dev: StepSampler(entropy.fetch, lambda _records, _slots: None) for dev in ("cuda", "cpu")
    }
    slots = {dev: make_slots(args.rows) for dev in samplers}
    rows = list(range(args.rows))
    differ = 0
    step_ms: dict[str, list[float]] = {"cuda": [], "cpu": []}
    generator = torch.Generator(device=cuda)
    for step in range(args.steps):
        if step == WARMUP_STEPS:
            for sampler in samplers.values():
                sampler.reset_timings()
        generator.manual_seed(step)
        logits = torch.randn(args.rows, args.vocab, device=cuda, generator=generator) * 3
        host = logits.cpu()
        chosen = {}
        for dev, tensor in (("cuda", logits), ("cpu", host)):
            entropy.step = step
            torch.cuda.synchronize()
            start = time.perf_counter()
            samplers[dev].sample(tensor, rows, slots[dev])
            torch.cuda.synchronize()
            step_ms[dev].append((time.perf_counter() - start) * 1e3)
            chosen[dev] = tensor.argmax(dim=1).cpu()
            assert torch.all(tensor.max(dim=1).values == 0.0), "every row forced"
        differ += int((chosen["cuda"] != chosen["cpu"]).sum())
    print(f"rows whose token differs between CUDA and CPU: {differ} of {args.rows * args.steps}")

    logits = torch.randn(args.rows, args.vocab, device=cuda) * 3
    entropy.step = 0
    copied = profile_step(lambda: samplers["cuda"].sample(logits, rows, slots["cuda"]))
    size = logits.numel() * logits.element_size()
    print(f"device -> host bytes in one CUDA step: {copied:,} (logits are {size:,} bytes)")

    for dev, sampler in samplers.items():
        t = sampler.timings()
        per = 1e3 / t.steps
        times = sorted(step_ms[dev][WARMUP_STEPS:])
        print(
            f"{dev:>4}: step p50 {times[len(times) // 2]:.2f} ms | mean per step: "
            f"temperature {t.temperature_s * per:.2f}, fetch {t.fetch_s * per:.2f}, "
            f"amplify {t.amplify_s * per:.2f}, select {t.select_s * per:.2f}, "
            f"force {t.force_s * per:.2f} ms"
        )


if __name__ == "__main__":
    main()
