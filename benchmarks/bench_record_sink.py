"""Benchmark the JSON Lines record sink: records per second, hash-chained or plain.

Writes ``--records`` records (about 1 KB each, as qr-vllm writes them) in ``write``
calls of ``--batch`` records (64: one engine step of a large batch) to a
``JsonlFileSink`` in a temporary directory, and times from the first ``write`` to the
return of ``close()`` (every record encoded, written, fsynced; the series sealed). The
cells: queued (the default: a background thread encodes) and write-through (qr-vllm's
mode: ``write`` encodes), each with the hash chain (``chain=True``, the default) and
without (``chain=False``). With ``--baseline SRC`` (the ``src`` folder of an older
qr-core, e.g. from ``git archive c275c6a packages/qr-core/src``) the same runs of that
code are added as ``before``: the sink before the chain, with the records of its own
schema.

Every run is a fresh process; the cells take turns, one run each, so that a slow spell
of a shared machine falls on all of them alike. Each figure is the median (and the
best) of ``--repeat`` runs: records per second of wall-clock time, and CPU time per
record of the whole process (all threads: what the sink costs the host, and the figure
other work on a shared machine moves least).

Usage: ``python benchmarks/bench_record_sink.py [--records N] [--batch B] [--repeat R]
[--baseline SRC]``
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import inspect
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from qr_core.analysis import simulate_records
from qr_core.records import JsonlFileSink


def one_run(records: int, batch: int, write_through: bool, chain: bool) -> str:
    """One timed run in this process: ``"records_per_s cpu_us_per_record bytes"``."""
    logging.getLogger("qr_core.records").setLevel(logging.ERROR)  # no back-pressure notes
    made = simulate_records(records, seed=1, arm="qrng", request_tag="experiment")
    fields = {f.name for f in dataclasses.fields(made[0])}
    extra: dict[str, Any] = {"writer_id": "bench-p1-dp0"}
    if "preregistration_sha256" in fields:
        extra["preregistration_sha256"] = hashlib.sha256(b"plan").hexdigest()
    made = [dataclasses.replace(r, **extra) for r in made]
    batches = [made[i : i + batch] for i in range(0, len(made), batch)]
    options: dict[str, object] = {"write_through": write_through}
    if "chain" in inspect.signature(JsonlFileSink).parameters:  # not in a --baseline
        options["chain"] = chain
    with tempfile.TemporaryDirectory() as tmp:
        sink = JsonlFileSink(
            Path(tmp) / "records.jsonl",
            install_sigterm_handler=False,
            writer_id="bench-p1-dp0",
            **options,  # type: ignore[arg-type]
        )
        t0, c0 = time.perf_counter(), time.process_time()
        for b in batches:
            sink.write(b)
        sink.close()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        size = sum(f.stat().st_size for f in Path(tmp).iterdir())
    return f"{records / elapsed} {1e6 * cpu / records} {size / records}"


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--records", type=int, default=64_000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeat", type=int, default=9)
    p.add_argument("--baseline", type=Path, help="src folder of an older qr-core to compare")
    p.add_argument("--one", nargs=2, metavar=("MODE", "CHAIN"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        mode, chain = args.one
        print(one_run(args.records, args.batch, mode == "write-through", chain == "yes"))
        return
    cells = [(mode, chain) for mode in ("queued", "write-through") for chain in ("no", "yes")]
    if args.baseline is not None:
        cells = [(mode, "before") for mode in ("queued", "write-through")] + cells
    figures: dict[tuple[str, str], list[tuple[float, float, float]]] = {c: [] for c in cells}
    for _ in range(args.repeat):
        for mode, chain in cells:
            env = dict(os.environ)
            if chain == "before":
                env["PYTHONPATH"] = os.pathsep.join([str(args.baseline), env.get("PYTHONPATH", "")])
            command = [sys.executable, __file__, "--records", str(args.records)]
            command += ["--batch", str(args.batch), "--one", mode, chain]
            out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            rate, cpu, size = (float(x) for x in out.stdout.split())
            figures[(mode, chain)].append((rate, cpu, size))
    print(
        f"JsonlFileSink, {args.records} records in writes of {args.batch}; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}; median (best) of {args.repeat} runs"
    )
    print(
        f"{'mode':<14}{'chain':<7}{'records/s':>10}{'(best)':>9}"
        f"{'CPU us/rec':>12}{'(best)':>8}{'bytes/rec':>10}"
    )
    for mode, chain in cells:
        rows = figures[(mode, chain)]
        rates, cpus = [r[0] for r in rows], [r[1] for r in rows]
        print(
            f"{mode:<14}{chain:<7}{statistics.median(rates):>10,.0f}{max(rates):>9,.0f}"
            f"{statistics.median(cpus):>12.1f}{min(cpus):>8.1f}{rows[0][2]:>10.0f}"
        )


if __name__ == "__main__":
    main()
