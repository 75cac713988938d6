"""The adapter's sampling step on a CUDA device: same tokens as the CPU path, no host copy.

Runs qr-vllm's :class:`~qr_vllm.step.StepSampler` (what the processor calls
from ``apply()``) on CUDA logits and on a CPU copy of the same logits with the
same entropy bytes, and reports:

* how many rows chose a different token (only rows whose ``u`` lies within
  about 1e-6 of a CDF boundary may: torch's and numpy's float32 ``exp`` differ
  by a few ulp, see qr_core's selection docstring);
* the bytes copied device -> host during one step (from a CUDA profiler
  trace), next to the size of the logits: the step must not copy the logits
  to the host;
* the step time split into temperature, fetch, amplification, selection and
  forcing, for both devices, and the step's costliest CUDA operations;
* per step: the aten operations and host syncs of ``StepSampler.sample``
  (counted by ``qr_core.testing``) at B = 8 and at ``--rows``, with one
  group of settings and with the mixed ones, beside the stage times, and those
  of qr-core's device path alone
  (per-row power-law temperatures and ``select_tokens(engine="device",
  defer_checks=True)`` after one host-to-device copy of the per-row
  parameters, then forcing) at B = 8 and at ``--rows``, with one group of
  settings and with the mixed ones, and its step time.

Without a GPU it runs on the CPU alone: the CPU step on both engines
(``StepSampler(engine="host")`` and ``engine="device"``, the GPU path forced
onto CPU tensors) with their stage times and counts, and qr-core's device path
(the check that needs no GPU).

No vLLM is needed: ``qr_vllm`` and ``qr_vllm.step`` import no vLLM (only the
processor class does, on first use), so the script runs on a bare GPU host.

Usage: ``python benchmarks/bench_cuda_step.py [--rows 64] [--vocab 151936] [--steps 30]
[--core-steps 10]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qr_core import (
    Engine,
    build_temperature_strategy,
    power_law_temperatures,
    select_tokens,
)
from qr_core.testing import OpCount, count_ops
from qr_entropy import EntropyFetch
from qr_vllm import SamplingSettings, make_plan, resolve_request
from qr_vllm.step import Slot, StepSampler

WARMUP_STEPS = 3  # left out of the timings (CUDA context, kernel loading, caches)

# Per-row (top_k, top_p, temperature strategy): a mixed batch in two groups.
ROW_SETTINGS: list[dict[str, Any]] = [
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


def make_slots(rows: int, settings: list[dict[str, Any]] = ROW_SETTINGS) -> list[Slot]:
    base = SamplingSettings()
    return [
        Slot(plan=make_plan(resolve_request(base, settings[i % len(settings)])), output_ids=[])
        for i in range(rows)
    ]


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


def pack_params(slots: list[Slot], u: np.ndarray, device: torch.device) -> torch.Tensor:
    """u, top_k, top_p and the power-law parameters as ONE ``(7, B)`` float64
    host tensor (pinned for a GPU, so that its copy is asynchronous)."""
    laws = []
    for slot in slots:
        law = build_temperature_strategy(slot.plan.core).power_law()
        assert law is not None, "built-in strategies are power laws"
        laws.append((law.base_temp, law.exponent, law.min_temp, law.max_temp))
    core = [(s.plan.core.top_k, s.plan.core.top_p) for s in slots]
    rows = np.column_stack([u, np.asarray(core, dtype=np.float64), np.asarray(laws)]).T
    packed = torch.from_numpy(np.ascontiguousarray(rows))
    return packed.pin_memory() if device.type == "cuda" else packed


def core_device_step(logits: torch.Tensor, packed_host: torch.Tensor) -> torch.Tensor:
    """qr-core's device path for every row: one upload, temperatures, selection,
    forcing, and the per-row values started on their way back (not waited for)."""
    packed = packed_host.to(logits.device, non_blocking=True)  # the one host-to-device copy
    u, top_k, top_p, base, exponent, lo, hi = packed.unbind(0)
    temp = power_law_temperatures(logits, base, exponent, lo, hi, defer_checks=True)
    sel = select_tokens(
        logits,
        u,
        temperature=temp.temperature,
        top_k=top_k.to(torch.int64),
        top_p=top_p,
        engine="device",
        defer_checks=True,
    )
    logits.fill_(float("-inf"))
    logits.scatter_(1, sel.token_id[:, None], 0.0)
    assert sel.invalid is not None
    per_row = torch.stack(
        [
            sel.token_id.to(torch.float64),
            sel.token_rank.to(torch.float64),
            sel.token_prob,
            sel.num_candidates.to(torch.float64),
            sel.invalid.to(torch.float64),
            temp.temperature,
            temp.shannon_entropy,
        ]
    )
    # Records read this after an event; on the CPU it is already there.
    return per_row.to("cpu", non_blocking=True)


def count_line(label: str, c: OpCount) -> str:
    return f"{label}: {c.ops} aten ops, {c.syncs} host syncs, {c.uploads} uploads per step"


def core_report(args: argparse.Namespace, device: torch.device) -> None:
    """Counts of the device path at B = 8 and --rows, 1 and mixed groups; its p50."""
    gen = torch.Generator().manual_seed(0)
    counts: dict[tuple[int, str], OpCount] = {}
    for rows in sorted({8, args.rows}):
        for label, settings in (("1 group", ROW_SETTINGS[:1]), ("mixed", ROW_SETTINGS)):
            slots = make_slots(rows, settings)
            packed = pack_params(slots, np.random.default_rng(rows).uniform(size=rows), device)
            logits = (torch.randn(rows, args.vocab, generator=gen) * 3).to(device)
            counts[rows, label], _ = count_ops(partial(core_device_step, logits, packed))
            where = f"{device.type} qr-core device path, B = {rows:>3}, {label:<7}"
            print(count_line(where, counts[rows, label]))
    same = len({tuple(sorted(c.by_op.items())) for c in counts.values()}) == 1
    print(f"the same operations for every B and mix of settings: {'yes' if same else 'NO'}")
    slots = make_slots(args.rows)
    times = []
    differ = 0
    for step in range(args.core_steps + 1):
        u = np.random.default_rng(step).uniform(size=args.rows)
        packed = pack_params(slots, u, device)
        host = torch.randn(args.rows, args.vocab, generator=gen) * 3
        logits = host.to(device)
        _sync(device)
        start = time.perf_counter()
        per_row = core_device_step(logits, packed)
        _sync(device)
        if step:  # the first call warms up
            times.append((time.perf_counter() - start) * 1e3)
        # The same rows through numpy temperatures and the numpy bucket engine.
        x, params = host.numpy(), packed.numpy()
        temp = power_law_temperatures(x, *params[3:])
        want = select_tokens(
            x,
            params[0],
            temperature=temp.temperature,
            top_k=params[1].astype(np.int64),
            top_p=params[2],
        )
        differ += int(np.sum(per_row[0].numpy().astype(np.int64) != want.token_id))
    times.sort()
    print(
        f"{device.type} qr-core device path: step p50 {times[len(times) // 2]:.2f} ms "
        f"(B = {args.rows}, V = {args.vocab:,}, {args.core_steps} steps, fetch excluded); "
        f"rows whose token differs from the numpy path: {differ} of "
        f"{args.rows * (args.core_steps + 1)}"
    )


def stage_line(label: str, sampler: StepSampler, p50_ms: float) -> str:
    """The step's p50 and its mean time per stage."""
    t = sampler.timings()
    per = 1e3 / max(t.steps, 1)
    return (
        f"{label}: step p50 {p50_ms:.2f} ms | mean per step: "
        f"temperature {t.temperature_s * per:.2f}, fetch {t.fetch_s * per:.2f}, "
        f"amplify {t.amplify_s * per:.2f}, select {t.select_s * per:.2f}, "
        f"force {t.force_s * per:.2f}, records {t.record_s * per:.2f} ms"
    )


def sampler_counts(engine: Engine, device: torch.device, args: argparse.Namespace) -> None:
    """Counts of StepSampler.sample at B = 8 and --rows, one group and mixed groups."""
    counts: dict[tuple[int, str], OpCount] = {}
    for rows in sorted({8, args.rows}):
        for label, settings in (("1 group", ROW_SETTINGS[:1]), ("mixed", ROW_SETTINGS)):
            entropy = ReplayEntropy()
            sampler = StepSampler(entropy.fetch, lambda _r, _s: None, engine=engine)
            slots = make_slots(rows, settings)
            rows_list = list(range(rows))
            sampler.sample(torch.randn(rows, args.vocab, device=device), rows_list, slots)
            logits = torch.randn(rows, args.vocab, device=device)
            c, _ = count_ops(partial(sampler.sample, logits, rows_list, slots))
            counts[rows, label] = c
            where = f"{device.type} StepSampler.sample engine={engine}, B = {rows:>3}, {label:<7}"
            print(count_line(where, c))
    same = len({tuple(sorted(c.by_op.items())) for c in counts.values()}) == 1
    sites = sorted({s for c in counts.values() for s in c.sync_sites})
    print(f"  the same operations for every B and mix of settings: {'yes' if same else 'no'}")
    print(f"  its host reads: {', '.join(sites) or 'none'}")


def cpu_report(args: argparse.Namespace) -> None:
    """The adapter's step on CPU tensors, both engines: p50, stage times and counts."""
    engines: tuple[Engine, ...] = ("host", "device")
    for engine in engines:
        entropy = ReplayEntropy()
        sampler = StepSampler(entropy.fetch, lambda _records, _slots: None, engine=engine)
        slots = make_slots(args.rows)
        rows = list(range(args.rows))
        gen = torch.Generator().manual_seed(0)
        times = []
        for step in range(args.steps):
            if step == WARMUP_STEPS:
                sampler.reset_timings()
            entropy.step = step
            logits = torch.randn(args.rows, args.vocab, generator=gen) * 3
            start = time.perf_counter()
            sampler.sample(logits, rows, slots)
            times.append((time.perf_counter() - start) * 1e3)
        times = sorted(times[WARMUP_STEPS:])
        print(stage_line(f" cpu engine={engine}", sampler, times[len(times) // 2]))
        sampler_counts(engine, torch.device("cpu"), args)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--core-steps", type=int, default=10)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if not torch.cuda.is_available():
        print("no CUDA device: the CPU alone")
        cpu_report(args)
        core_report(args, torch.device("cpu"))
        return
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

    sampler_counts("auto", cuda, args)
    print("  (plus the one explicit wait, for the logits before the fetch)")

    logits = torch.randn(args.rows, args.vocab, device=cuda) * 3
    entropy.step = 0
    copied = profile_step(lambda: samplers["cuda"].sample(logits, rows, slots["cuda"]))
    size = logits.numel() * logits.element_size()
    print(f"device -> host bytes in one CUDA step: {copied:,} (logits are {size:,} bytes)")

    for dev, sampler in samplers.items():
        times = sorted(step_ms[dev][WARMUP_STEPS:])
        print(stage_line(f"{dev:>4}", sampler, times[len(times) // 2]))
    core_report(args, cuda)


if __name__ == "__main__":
    main()
