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
import queue
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import get_args

import grpc

from qr_entropy import EntropyConfig, EntropyFetch, GrpcMode
from qr_entropy.grpc import CircuitBreaker, QuantumGrpcSource
from qr_entropy.grpc._wire import decode_response

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


def entropy_server_args(address: str) -> list[str]:
    return ["-m", "qr_entropy_server", "--address", address, "--max-bytes", str(BATCH)]


def start_server(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    """Start ``python ARGS`` and wait for its ready line; return it with its address."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(READY):
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line[len(READY) :].strip()


def floor_server(kind: str, address: str) -> None:
    """Child process: a server with no project code, answering os.urandom(20,480) per request.

    ``grpc``: a bare grpcio server with a unary ``/floor.Floor/Get`` and a
    bidirectional ``/floor.Floor/Bi`` method on raw bytes. ``raw``: a plain
    unix socket that answers each 4-byte length with that many bytes.
    """
    if kind == "grpc":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))

        def bidi(requests: Iterator[bytes], _ctx: grpc.ServicerContext) -> Iterator[bytes]:
            for _ in requests:
                yield os.urandom(ONE)

        handlers = {
            "Get": grpc.unary_unary_rpc_method_handler(lambda _req, _ctx: os.urandom(ONE)),
            "Bi": grpc.stream_stream_rpc_method_handler(bidi),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("floor.Floor", handlers),)
        )
        server.add_insecure_port(address)
        server.start()
        print(READY + address, flush=True)
        server.wait_for_termination()
        return
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(address)
        listener.listen(1)
        print(READY + address, flush=True)
        conn, _ = listener.accept()
        with conn:
            while header := conn.recv(4):
                conn.sendall(os.urandom(int.from_bytes(header, "little")))


def floors(tmp: Path, repeat: int, warmup: int) -> dict[str, tuple[float, float]]:
    """p50/p99 of 20,480-byte round trips with no project code on either side.

    What any Python client pays per fetch on this machine before its own work:
    a bare grpcio unary call and a bare grpcio bidirectional exchange (sync
    API) against a bare grpcio server in another process, and a plain unix
    socket round trip to a process that answers with os.urandom.
    """
    results: dict[str, tuple[float, float]] = {}
    grpc_proc, address = start_server(
        [__file__, "--floor-server", "grpc", f"unix://{tmp / 'floor.sock'}"]
    )
    try:
        with grpc.insecure_channel(address) as channel:
            unary = channel.unary_unary("/floor.Floor/Get")
            results["bare grpcio unary"] = timed(
                functools.partial(unary, b"", timeout=10.0), repeat, warmup
            )
            requests: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
            responses = channel.stream_stream("/floor.Floor/Bi")(iter(requests.get, None))

            def exchange() -> bytes:
                requests.put(b"")
                return next(responses)

            results["bare grpcio bidi"] = timed(exchange, repeat, warmup)
            requests.put(None)
    finally:
        grpc_proc.terminate()
        grpc_proc.wait(10)
    raw_proc, path = start_server([__file__, "--floor-server", "raw", str(tmp / "raw.sock")])
    try:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(path)
            buffer = bytearray(ONE)
            view = memoryview(buffer)

            def round_trip() -> None:
                conn.sendall(ONE.to_bytes(4, "little"))
                got = 0
                while got < ONE:
                    got += conn.recv_into(view[got:])

            results["plain unix socket"] = timed(round_trip, repeat, warmup)
    finally:
        raw_proc.terminate()
        raw_proc.wait(10)
    return results


def breakdown(address: str, repeat: int, warmup: int) -> dict[str, tuple[float, float]]:
    """Where a bidi fetch of 20,480 bytes spends its time (p50/p99 of each part, us).

    Each part is timed on its own, ``repeat`` times: the whole fetch; the hand-off
    of a coroutine that does nothing from the caller's thread to the client's
    event-loop thread and back; the exchange itself (write, read, decode and
    checks) timed inside the event loop, with no hand-off; decoding alone; the
    breaker's bookkeeping (admit and record a success); building the fetch's
    provenance record.
    """
    config = EntropyConfig(grpc_server_address=address, grpc_mode="bidi_streaming")
    parts: dict[str, tuple[float, float]] = {}
    with QuantumGrpcSource(config) as source:
        parts["whole fetch (caller's view)"] = timed(
            functools.partial(source.fetch, ONE), repeat, warmup
        )
        loop, transport = source._started()

        async def noop() -> None:
            return None

        parts["hand-off to the loop thread and back"] = timed(
            lambda: loop.run(noop()), repeat, warmup
        )

        async def exchanges() -> list[float]:
            samples = []
            for i in range(repeat + warmup):
                start = time.perf_counter()
                await transport.request(ONE, 10_000_000 + i, 10.0)
                samples.append(time.perf_counter() - start)
            return samples[warmup:]

        parts["exchange on the loop (write, read, decode, checks)"] = percentiles(
            loop.run(exchanges())
        )
        payload = encode_response_for_breakdown(ONE)
        parts["decode 20,480-byte response"] = timed(
            functools.partial(decode_response, payload), repeat, warmup
        )
        breaker = CircuitBreaker(ceiling_ms=5000.0)

        def bookkeeping() -> None:
            breaker.record_success(breaker.acquire(ONE), 0.001)

        parts["breaker admit + record"] = timed(bookkeeping, repeat, warmup)
        data = os.urandom(ONE)

        def provenance() -> EntropyFetch:
            requested = time.time_ns()
            return EntropyFetch(data, "quantum_grpc", "d", 1, requested, None, time.time_ns())

        parts["provenance record (EntropyFetch)"] = timed(provenance, repeat, warmup)
    return parts


def encode_response_for_breakdown(n: int) -> bytes:
    """A ``qr_entropy`` response of ``n`` bytes, encoded by hand (tag, length, data)."""
    length = bytearray()
    value = n
    while value > 0x7F:
        length.append((value & 0x7F) | 0x80)
        value >>= 7
    length.append(value)
    return b"\x0a" + bytes(length) + os.urandom(n) + b"\x10\x01"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=400, help="timed fetches per cell (400)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed fetches first (50)")
    parser.add_argument(
        "--floor-server", nargs=2, metavar=("KIND", "ADDRESS"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="only time the parts of a bidi fetch over a unix socket",
    )
    args = parser.parse_args()
    if args.breakdown:
        with tempfile.TemporaryDirectory() as tmp:
            proc, address = start_server(entropy_server_args(f"unix://{Path(tmp) / 'q.sock'}"))
            try:
                parts = breakdown(address, args.repeat, args.warmup)
            finally:
                proc.terminate()
                proc.wait(10)
            floor = floors(Path(tmp), args.repeat, args.warmup)["bare grpcio bidi"]
        print(f"load average {os.getloadavg()[0]:.2f}; bidi, unix socket, 20,480 bytes")
        for label, (p50, p99) in parts.items():
            print(f"  {label:<52} p50 {p50:>7.1f} us  p99 {p99:>7.1f} us")
        print(
            f"  {'bare grpcio bidi floor (sync API)':<52} p50 {floor[0]:>7.1f} us  "
            f"p99 {floor[1]:>7.1f} us"
        )
        return
    if args.floor_server:
        floor_server(*args.floor_server)
        return
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
        servers = [
            start_server(entropy_server_args("127.0.0.1:0")),
            start_server(entropy_server_args(f"unix://{Path(tmp) / 'q.sock'}")),
        ]
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
    print("\nfloors: 20,480 B per round trip over a unix socket, no project code:")
    with tempfile.TemporaryDirectory() as tmp:
        for label, (p50, p99) in floors(Path(tmp), args.repeat, args.warmup).items():
            print(f"  {label:<20} p50 {p50:>6.0f} us  p99 {p99:>6.0f} us")
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
