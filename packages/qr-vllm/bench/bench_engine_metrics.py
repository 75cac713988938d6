"""Benchmark what the engine's Prometheus metrics cost each sampling step.

Drives qr-vllm's :class:`~qr_vllm.step.StepSampler` (no vLLM engine) on CPU logits
of ``--vocab`` tokens, ``--rows`` qr-sampled rows per step spread over ``--arms``
experiment arms (seeded ``mock_uniform`` sources), without records (the usual
production step), in two cells that take turns: without an observer (``off``), and
with the processor's observer (``on``: the per-arm tallies, the counters, the
histogram, the budget). Each cell's figure is the median over ``--repeat`` runs of
the mean time per step; the difference is the metrics' cost per step. The cost of
the observer alone (tallies plus counting, no sampling) is timed too, and so is
rendering one scrape (what the endpoint's thread does when Prometheus asks).

Usage: ``python packages/qr-vllm/bench/bench_engine_metrics.py [--rows B] [--arms A]
[--steps N] [--repeat R] [--vocab V]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Mapping

import numpy as np
import torch
from prometheus_client import generate_latest

from qr_entropy import ArmSources, EntropyFetch, MockUniformSource
from qr_vllm import make_plan
from qr_vllm._metrics import EngineMetrics
from qr_vllm._monitor import EngineMonitor
from qr_vllm._settings import SamplingSettings
from qr_vllm.step import ObserveStep, Slot, StepMetadata, StepSampler
from qr_vllm.step._ops.entropy import draw
from qr_vllm.step._tally import tally

SAMPLE_COUNT = 1024


def _sampler(arms: int, observe: ObserveStep | None) -> tuple[StepSampler, ArmSources]:
    names = [f"arm{i}" for i in range(arms)]
    sources = ArmSources(
        MockUniformSource(seed=0), {n: MockUniformSource(seed=i + 1) for i, n in enumerate(names)}
    )

    def fetch_many(counts: Mapping[str | None, int]) -> Mapping[str | None, EntropyFetch]:
        return sources.fetch_many(counts)

    sampler = StepSampler(
        sources.default.fetch,
        lambda records, slots: None,
        fetch_many=fetch_many,
        wants_records=lambda slots: False,
        observe=observe,
    )
    return sampler, sources


def _slots(rows: int, arms: int) -> list[Slot]:
    plan = make_plan(SamplingSettings(sample_count=SAMPLE_COUNT))
    return [Slot(plan, None, arm=f"arm{i % arms}") for i in range(rows)]


def _run(rows: int, arms: int, steps: int, vocab: int, metrics: bool) -> float:
    monitor = EngineMonitor(EngineMetrics(None), None) if metrics else None
    sampler, sources = _sampler(arms, None if monitor is None else monitor.observe)
    slots = _slots(rows, arms)
    logits = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(0))
    index = list(range(rows))
    for _ in range(5):  # warm-up
        sampler.sample(logits.clone(), index, slots)
    work = [logits.clone() for _ in range(steps)]
    start = time.perf_counter()
    for tensor in work:
        sampler.sample(tensor, index, slots)
    elapsed = (time.perf_counter() - start) / steps
    sources.close()
    return elapsed


def _observer_alone(rows: int, arms: int, steps: int) -> float:
    """Seconds per step of the tallies and the counting alone."""
    monitor = EngineMonitor(EngineMetrics(None), None)
    sampler, sources = _sampler(arms, None)
    slots = _slots(rows, arms)
    grouper = sampler._grouper  # this package's own step: its privates are fair game
    step = StepMetadata.build(
        rows, list(range(rows)), slots, grouper, recorded=False, on_device=False
    )
    drawn = draw(step, sources.default.fetch, sources.fetch_many, sampler._clock)
    start = time.perf_counter()
    for _ in range(steps):
        monitor.observe(tally(drawn))
    elapsed = (time.perf_counter() - start) / steps
    sources.close()
    return elapsed


def _scrape(rows: int, arms: int, repeat: int) -> tuple[float, int]:
    """Seconds to render one scrape of a registry that has counted every arm, and its size."""
    monitor = EngineMonitor(EngineMetrics(None), None)
    sampler, sources = _sampler(arms, monitor.observe)
    slots = _slots(rows, arms)
    logits = torch.randn(rows, 1000, generator=torch.Generator().manual_seed(0))
    for _ in range(5):
        sampler.sample(logits.clone(), list(range(rows)), slots)
    sources.close()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        text = generate_latest(monitor.metrics.registry)
        times.append(time.perf_counter() - start)
    return statistics.median(times), len(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--arms", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--vocab", type=int, default=32_000)
    args = parser.parse_args()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f}, Python {platform.python_version()}, torch "
        f"{torch.__version__}, numpy {np.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    print(
        f"{args.rows} rows x {SAMPLE_COUNT} bytes, {args.arms} arms, vocabulary {args.vocab}, "
        f"{args.steps} steps per run, {args.repeat} runs per cell"
    )
    cells: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(args.repeat):
        for name in cells:  # the cells take turns
            cells[name].append(_run(args.rows, args.arms, args.steps, args.vocab, name == "on"))
    off, on = (statistics.median(cells[n]) for n in ("off", "on"))
    alone = statistics.median(
        _observer_alone(args.rows, args.arms, 10 * args.steps) for _ in range(args.repeat)
    )
    print(f"step without metrics: {off * 1e6:9.1f} us (median of runs)")
    print(f"step with metrics:    {on * 1e6:9.1f} us  difference {(on - off) * 1e6:+.1f} us")
    print(f"observer alone:       {alone * 1e6:9.1f} us per step (tallies + counting)")
    scrape, size = _scrape(args.rows, args.arms, 10 * args.repeat)
    print(f"one scrape:           {scrape * 1e6:9.1f} us ({size} bytes of text, median)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
