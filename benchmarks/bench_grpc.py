"""Benchmark the gRPC entropy client against the reference server.

Starts ``qr-entropy-server`` (urandom backend) twice, on 127.0.0.1 TCP and on a
unix socket, with ``--max-bytes`` large enough for 64 x 20,480 bytes in one
request, then times ``QuantumGrpcSource.fetch`` end to end (the caller's view:
request encoding, transport, server generation, decoding, checks) in every
mode, for 20,480 bytes (one token) and 1,310,720 bytes (a batch of 64 tokens in
one request), next to ``os.urandom`` for the same byte counts.

Targets: bidi over a unix socket p50 <= 200 us for 20,480 bytes; 64 x 20,480
bytes in one request <= 3 x the os.urandom time for the same bytes (p50).

Usage: ``python benchmarks/bench_grpc.py [--repeat N] [--warmup N]``
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import get_args

import grpc

from qr_entropy import EntropyConfig, GrpcMode
from qr_entropy.grpc import QuantumGrpcSource

MODES: tuple[GrpcMode, ...] = get_args(GrpcMode)
ONE = 20_480
BATCH = 64 * ONE
READY = "qr-entropy-server listening on "


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p99) in microseconds, nearest rank."""
    ordered = sorted(samples)
    p50 = ordered[max(0, -(-len(ordered) // 2) - 1)]
    p99 = ordered[max(0, -(-len(ordered) * 99 // 100) - 1)]
    return p50 * 1e6, p99 * 1e6


def timed(fn: Callable[[], object], repeat: int, warmup: int) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return percentiles(samples)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc), 0.0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(address: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qr_entropy_server",
            "--address",
            address,
            "--max-bytes",
            str(BATCH),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(READY):
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line[len(READY) :].strip()


def grpcio_floor(address: str, repeat: int, warmup: int) -> tuple[float, float]:
    """p50/p99 of a bare grpcio unary call: no project code on either side.

    An in-process grpcio server whose generic handler returns ``os.urandom(20480)``
    to a sync unary call with raw bytes over ``address``: what any Python
    gRPC entropy client pays per fetch on this machine, before its own work.
    """

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.unary_unary_rpc_method_handler(lambda _req, _ctx: os.urandom(ONE))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("floor.Floor", {"Get": handler}),)
    )
    server.add_insecure_port(address)
    server.start()
    try:
        with grpc.insecure_channel(address) as channel:
            call = channel.unary_unary("/floor.Floor/Get")
            return timed(functools.partial(call, b"", timeout=10.0), repeat, warmup)
    finally:
        server.stop(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=400, help="timed fetches per cell (400)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed fetches first (50)")
    args = parser.parse_args()
    batch_repeat = max(20, args.repeat // 8)

    print(
        f"python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    urandom = {
        n: timed(functools.partial(os.urandom, n), args.repeat if n == ONE else batch_repeat, 5)
        for n in (ONE, BATCH)
    }
    rows: list[tuple[str, str, int, float, float, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        servers = [start_server("127.0.0.1:0"), start_server(f"unix://{Path(tmp) / 'q.sock'}")]
        try:
            for (proc, address), transport in zip(servers, ("tcp", "unix"), strict=True):
                for mode in MODES:
                    config = EntropyConfig(
                        grpc_server_address=address,
                        grpc_mode=mode,
                        grpc_max_request_bytes=BATCH,
                        grpc_timeout_ms=10_000.0,
                    )
                    with QuantumGrpcSource(config) as source:
                        for n in (ONE, BATCH):
                            repeat = args.repeat if n == ONE else batch_repeat
                            # CPU time per fetch does not depend on what else the machine runs.
                            cpu0, srv0 = time.process_time(), process_cpu_s(proc.pid)
                            p50, p99 = timed(
                                functools.partial(source.fetch, n), repeat, args.warmup
                            )
                            calls = repeat + args.warmup
                            cpu = (time.process_time() - cpu0) / calls * 1e6
                            srv = (process_cpu_s(proc.pid) - srv0) / calls * 1e6
                            rows.append((mode, transport, n, p50, p99, cpu, srv))
        finally:
            for proc, _ in servers:
                proc.terminate()
                proc.wait(10)

    print(
        f"\n{'mode':<17}{'transport':<10}{'bytes':>10}{'p50 us':>10}{'p99 us':>10}"
        f"{'urandom p50':>13}{'ratio':>7}{'client CPU':>12}{'server CPU':>12}"
    )
    for label, transport, n, p50, p99, cpu, srv in rows:
        base = urandom[n][0]
        print(
            f"{label:<17}{transport:<10}{n:>10,}{p50:>10.0f}{p99:>10.0f}{base:>13.0f}"
            f"{p50 / base:>7.1f}{cpu:>12.0f}{srv:>12.0f}"
        )
    print("(CPU columns: microseconds of CPU time per fetch, client and server process)")
    with tempfile.TemporaryDirectory() as tmp:
        floor = grpcio_floor(f"unix://{Path(tmp) / 'floor.sock'}", args.repeat, args.warmup)
    print(
        f"grpcio floor (bare in-process sync unary, unix socket, 20,480 B, no project code): "
        f"p50 {floor[0]:.0f} us, p99 {floor[1]:.0f} us"
    )
    bidi_unix = next(r for r in rows if r[:3] == ("bidi_streaming", "unix", ONE))
    best_batch = min(r[3] for r in rows if r[2] == BATCH)
    print(
        f"\ntarget 1: bidi/unix 20,480 B p50 {bidi_unix[3]:.0f} us <= 200 us: "
        f"{'met' if bidi_unix[3] <= 200 else 'MISSED'}"
    )
    ratio = best_batch / urandom[BATCH][0]
    print(
        f"target 2: 64 x 20,480 B in one request, best mode p50 {best_batch:.0f} us = "
        f"{ratio:.1f} x os.urandom ({urandom[BATCH][0]:.0f} us) <= 3 x: "
        f"{'met' if ratio <= 3 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
