"""Benchmark signal amplification per sampling step (qr_core amplifiers).

Prints milliseconds per ``amplify_batch`` call of B rows x N = 20,480 bytes for
B in {1, 8, 64}: ``zscore_mean`` and ``zscore_bits`` (randomised transform, with
and without a device calibration) and their ``phi_approx_*`` variants, next to
the floor of one pass over the same bytes (``np.add.reduce`` into uint32). The
``... u, z`` rows ask for u and z only (``sample_mean=False``: what a step that
builds no records asks for), which spares ``zscore_bits`` its second pass over
the bytes (the byte sum behind each record's ``sample_mean``). The
null tables are built before timing (once per process, cached). Each figure is
the median and the minimum of ``--repeat`` timed calls after one warm-up call;
the cells take turns, one call each, so that a slow spell of a shared machine
falls on all of them alike.

Usage: ``python benchmarks/bench_amplify.py [--repeat N] [--sample-count N]``
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

from qr_core import SamplingConfig, SignalAmplifier, build_amplifier

BATCHES = (1, 8, 64)
NAMES = ("zscore_mean", "zscore_bits", "phi_approx_zscore_mean", "phi_approx_zscore_bits")


def calibrated(amp: SignalAmplifier, n: int) -> SignalAmplifier:
    """The amplifier calibrated on 64 blocks of os.urandom (the cost does not depend on it)."""
    builder = amp.calibration_builder()
    builder.add(np.frombuffer(os.urandom(64 * n), np.uint8).reshape(64, n))
    cal = builder.finish(
        source_type="system",
        source_address="",
        device_id="bench",
        started_at="",
        finished_at="",
        duration_s=0.0,
    )
    return amp.calibrated(cal)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--sample-count", type=int, default=20_480)
    args = parser.parse_args()
    n = args.sample_count
    machine = platform.processor() or platform.machine()
    print(f"{machine}, {os.cpu_count()} cores, numpy {np.__version__}")
    print(f"N = {n} bytes per row, median / min of {args.repeat} calls, ms per call (whole step)")
    raws = {b: np.frombuffer(os.urandom(b * n), np.uint8).reshape(b, n) for b in BATCHES}
    print(f"{'':38}" + "".join(f"B={b:<16}" for b in BATCHES))
    rows: dict[str, Callable[[np.ndarray], Callable[[], object]]] = {
        "floor: one pass (uint32 sums)": floor
    }
    for name in NAMES:
        amp = build_amplifier(SamplingConfig(signal_amplifier_type=name, sample_count=n))
        rows[name] = functools.partial(amplify, amp)
        if not name.startswith("phi"):
            cal = calibrated(amp, n)
            rows[name + " calibrated"] = functools.partial(amplify, cal)
            rows[name + ", u, z"] = functools.partial(amplify, amp, sample_mean=False)
            rows[name + " calibrated, u, z"] = functools.partial(amplify, cal, sample_mean=False)
    # Every cell's calls are interleaved with every other's, one call each in turn,
    # so that a slow spell of a shared machine falls on all of them alike.
    calls = {(label, b): make(raws[b]) for label, make in rows.items() for b in BATCHES}
    for call in calls.values():
        call()
    times: dict[tuple[str, int], list[float]] = {key: [] for key in calls}
    for _ in range(args.repeat):
        for key, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[key].append((time.perf_counter() - t0) * 1e3)
    for label in rows:
        cells = [
            f"{statistics.median(times[label, b]):6.3f} / {min(times[label, b]):6.3f}   "
            for b in BATCHES
        ]
        print(f"{label:38}" + "".join(cells))
    print(f"load average {os.getloadavg()[0]:.2f}")


def floor(raw: np.ndarray) -> Callable[[], object]:
    return lambda: np.add.reduce(raw, axis=1, dtype=np.uint32)


def amplify(
    amp: SignalAmplifier, raw: np.ndarray, *, sample_mean: bool = True
) -> Callable[[], object]:
    return lambda: amp.amplify_batch(raw, sample_mean=sample_mean)


if __name__ == "__main__":
    main()
