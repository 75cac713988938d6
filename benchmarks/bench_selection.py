"""Benchmark batched token selection (qr_core.select_tokens).

Prints milliseconds per row for B in {1, 8, 64}, V = 151,936 (Qwen-sized vocabulary),
(top_k, top_p) in {(0, 1.0), (50, 0.9), (0, 0.9)}, on the numpy path and the
torch-CPU path, next to the floor of one pass over the same data (a row max).

CPU torch tensors reach the same bucket engine as numpy through a zero-copy view;
CUDA tensors take the sort engine on the GPU (not measured here). Weights are
float32 for float32 logits (see packages/qr-core/README.md, "Token selection").

Logits are synthetic but LLM-shaped, float32, seeded: a N(0, 2^2) bulk with 32
tokens raised by 6 to 12, so that the top few dozen tokens carry most of the mass
and the tail still matters for exactness. Temperature 0.7, u ~ U(0, 1) per row.
Each figure is the median of ``--repeat`` timed calls after one warm-up call.

Usage: ``python benchmarks/bench_selection.py [--repeat N] [--vocab V] [--clock wall|cpu]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

import qr_core

try:
    import torch
except ImportError:  # torch is optional: the numpy path is the one with targets.
    HAVE_TORCH = False
else:
    HAVE_TORCH = True

SETTINGS = ((0, 1.0), (50, 0.9), (0, 0.9))
BATCHES = (1, 8, 64)


def make_logits(rows: int, vocab: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 2.0, size=(rows, vocab)).astype(np.float32)
    for r in range(rows):
        top = rng.choice(vocab, size=32, replace=False)
        x[r, top] += rng.uniform(6.0, 12.0, size=32).astype(np.float32)
    return x


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed calls per figure")
    parser.add_argument("--vocab", type=int, default=151_936, help="vocabulary size V")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall time, or this process's CPU time (all its threads) on a shared machine",
    )
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]

    load = ", ".join(f"{a:.2f}" for a in os.getloadavg())
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs,"
        f" {platform.processor() or 'cpu'}, load average {load}"
    )
    print(
        f"numpy {np.__version__}"
        + (f", torch {torch.__version__} ({torch.get_num_threads()} threads)" if HAVE_TORCH else "")
    )
    print(
        f"V = {args.vocab}, float32 logits, T = 0.7, median of {args.repeat} ({args.clock} clock);"
        " figures in ms per row"
    )
    header = f"{'B':>3} {'path':<6} {'row max':>8}" + "".join(
        f" {f'k={k},p={p}':>12}" for k, p in SETTINGS
    )
    print(header)
    print("-" * len(header))
    for rows in BATCHES:
        x = make_logits(rows, args.vocab, seed=rows)
        u = np.random.default_rng(1000 + rows).uniform(size=rows)
        paths: list[tuple[str, Any, Any]] = [("numpy", x, u)]
        if HAVE_TORCH:
            paths.append(("torch", torch.from_numpy(x), torch.from_numpy(u)))
        for name, logits, uu in paths:
            if name == "numpy":
                floor = median_ms(partial(np.max, logits, axis=1), args.repeat)
            else:
                floor = median_ms(partial(torch.amax, logits, dim=1), args.repeat)
            cells = []
            for k, p in SETTINGS:
                call = partial(qr_core.select_tokens, logits, uu, temperature=0.7, top_k=k, top_p=p)
                cells.append(f" {median_ms(call, args.repeat) / rows:>12.3f}")
            print(f"{rows:>3} {name:<6} {floor / rows:>8.3f}" + "".join(cells))


if __name__ == "__main__":
    main()
