"""Benchmark the gRPC entropy client against the reference server.

Starts ``qr-entropy-server`` (urandom backend) twice, on 127.0.0.1 TCP and on a
unix socket, with ``--max-bytes`` large enough for 64 x 20,480 bytes in one
request, then times ``QuantumGrpcSource.fetch`` end to end (the caller's view:
request encoding, transport, server generation, decoding, checks) in every
mode, for 20,480 bytes (one token) and 1,310,720 bytes (a batch of 64 tokens in
one request), next to ``os.urandom`` for the same byte counts.

Then the floors, over TCP and a unix socket: a bare grpcio client (synchronous
API, no project code) against a bare grpcio server; then, taking turns with that
floor, the same exchange on grpcio's core layer as the client drives it
(``CoreCall`` alone), the client (``bidi_streaming``, layout ``bytes_only``)
against that same bare server, which separates the client's cost from the
reference server's, and the client against the reference server.

Targets: bidi over a unix socket p50 <= 200 us for 20,480 bytes; 64 x 20,480
bytes in one request <= 3 x the os.urandom time for the same bytes (p50);
issue 12, item 7: the bidi fetch of 20,480 bytes p50 <= 1.15 x and p99 <= 2 x
the bare grpcio bidi floor, TCP and unix socket.

Usage: ``python benchmarks/bench_grpc.py [--repeat N] [--warmup N] [--breakdown]``
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
from qr_entropy.grpc.testing import CoreCall, Watchdog, decode_response, transport_request

MODES: tuple[GrpcMode, ...] = get_args(GrpcMode)
ONE = 20_480
BATCH = 64 * ONE
READY = "qr-entropy-server listening on "
FLOOR_BIDI_PATH = "/floor.Floor/Bi"
P50_RATIO, P99_RATIO = 1.15, 2.0  # issue 12, item 7


def field1_prefix(n: int) -> bytes:
    """Tag and length of protobuf field 1 holding ``n`` bytes (written by hand)."""
    length = bytearray()
    while n > 0x7F:
        length.append((n & 0x7F) | 0x80)
        n >>= 7
    length.append(n)
    return b"\x0a" + bytes(length)


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


def start_server(
    args: list[str], pythonpath: str | None = None
) -> tuple[subprocess.Popen[str], str]:
    """Start ``python ARGS`` (``pythonpath`` first on the module path) and wait for
    its ready line; return it with its address."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (pythonpath, env.get("PYTHONPATH"))))
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(READY):
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line[len(READY) :].strip()


def floor_server(kind: str, address: str) -> None:
    """Child process: a server with no project code, answering os.urandom(20,480) per request.

    ``grpc``: a bare grpcio server (synchronous API) with a unary
    ``/floor.Floor/Get`` and a bidirectional ``/floor.Floor/Bi`` method on raw
    bytes; each bidi reply is the bytes as protobuf field 1 (a 4-byte prefix),
    so the project's client can read it with layout ``bytes_only``. ``raw``: a
    plain unix socket that answers each 4-byte length with that many bytes.
    """
    if kind == "grpc":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        prefix = field1_prefix(ONE)

        def bidi(requests: Iterator[bytes], _ctx: grpc.ServicerContext) -> Iterator[bytes]:
            for _ in requests:
                yield prefix + os.urandom(ONE)

        handlers = {
            "Get": grpc.unary_unary_rpc_method_handler(lambda _req, _ctx: os.urandom(ONE)),
            "Bi": grpc.stream_stream_rpc_method_handler(bidi),
        }
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("floor.Floor", handlers),)
        )
        port = server.add_insecure_port(address)
        server.start()
        print(READY + (address if address.startswith("unix:") else f"127.0.0.1:{port}"), flush=True)
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


class BareBidi:
    """One bare grpcio bidi call on ``path`` (default: the floor's method): each
    call is one exchange (``request``, its reply); ``end()`` half-closes the call."""

    def __init__(
        self, channel: grpc.Channel, path: str = FLOOR_BIDI_PATH, request: bytes = b""
    ) -> None:
        self._requests: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._request = request
        method = channel.stream_stream(path)
        self._responses: Iterator[bytes] = method(iter(self._requests.get, None))

    def __call__(self) -> bytes:
        self._requests.put(self._request)
        return next(self._responses)

    def end(self) -> None:
        self._requests.put(None)


def floor_addresses(tmp: Path) -> dict[str, str]:
    """Where the floor servers listen, per transport."""
    return {"tcp": "127.0.0.1:0", "unix": f"unix://{tmp / 'floor.sock'}"}


def client_on_floor_server(address: str) -> QuantumGrpcSource:
    """The project's bidi client, pointed at the bare floor server."""
    return QuantumGrpcSource(
        EntropyConfig(
            grpc_server_address=address,
            grpc_mode="bidi_streaming",
            grpc_stream_method_path=FLOOR_BIDI_PATH,
            grpc_response_layout="bytes_only",
            grpc_timeout_ms=10_000.0,
        )
    )


def floors(
    tmp: Path, repeat: int, warmup: int, transports: tuple[str, ...] = ("tcp", "unix")
) -> dict[tuple[str, str], tuple[float, float]]:
    """p50/p99 of 20,480-byte round trips, keyed by (what, transport).

    What any Python client pays per fetch on this machine before its own work:
    a bare grpcio unary call and a bare grpcio bidirectional exchange (sync
    API) against a bare grpcio server in another process; over a unix socket
    also a plain socket round trip to a process that answers with os.urandom.
    """
    results: dict[tuple[str, str], tuple[float, float]] = {}
    for transport in transports:
        grpc_proc, address = start_server(
            [__file__, "--floor-server", "grpc", floor_addresses(tmp)[transport]]
        )
        try:
            with grpc.insecure_channel(address) as channel:
                unary = channel.unary_unary("/floor.Floor/Get")
                results["bare grpcio unary", transport] = timed(
                    functools.partial(unary, b"", timeout=10.0), repeat, warmup
                )
                exchange = BareBidi(channel)
                results["bare grpcio bidi", transport] = timed(exchange, repeat, warmup)
                exchange.end()
        finally:
            grpc_proc.terminate()
            grpc_proc.wait(10)
    if "unix" not in transports:
        return results
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

            results["plain unix socket", "unix"] = timed(round_trip, repeat, warmup)
    finally:
        raw_proc.terminate()
        raw_proc.wait(10)
    return results


def timed_together(
    fns: dict[str, Callable[[], object]], repeat: int, warmup: int, block: int = 25
) -> dict[str, tuple[float, float]]:
    """p50/p99 (us) of each function, taking turns in blocks of ``block`` calls.

    Taking turns puts every function under the same load over the same stretch
    of time, so their ratio does not depend on what the rest of the machine
    did when; blocks (rather than one call each) keep each path's threads warm
    as in a run of fetches. The first turn rotates each round, so that no
    function always follows the same one (the one timed after another's
    block measured a few per cent slower).
    """
    samples: dict[str, list[float]] = {label: [] for label in fns}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    items = list(fns.items())
    done = 0
    while done < repeat:
        count = min(block, repeat - done)
        first = done // block
        for i in range(len(items)):
            label, fn = items[(first + i) % len(items)]
            for _ in range(count):
                start = time.perf_counter()
                fn()
                samples[label].append(time.perf_counter() - start)
        done += count
    return {label: percentiles(values) for label, values in samples.items()}


def against_floor(
    tmp: Path, repeat: int, warmup: int, transports: tuple[str, ...] = ("tcp", "unix")
) -> dict[tuple[str, str], tuple[float, float]]:
    """Issue 12, item 7: the bidi fetch against the bare grpcio bidi floor, interleaved.

    Per transport, a bare grpcio server (the floor's) and the reference server
    run side by side; each repetition times, in turn, a bare grpcio bidi
    exchange with the bare server (the floor: grpcio's public API), the same
    exchange on grpcio's core layer as the client makes it (``CoreCall`` alone,
    no other project code), a ``quantum_grpc`` bidi fetch from the same bare
    server (layout ``bytes_only``, no sequence-id echo there; less the
    ``CoreCall`` row, the client's own cost), and a ``quantum_grpc`` bidi fetch
    from the reference server (the caller's view). Keyed by (what, transport).
    """
    results: dict[tuple[str, str], tuple[float, float]] = {}
    for transport in transports:
        ref_address = "127.0.0.1:0" if transport == "tcp" else f"unix://{tmp / 'ref.sock'}"
        procs = [
            start_server([__file__, "--floor-server", "grpc", floor_addresses(tmp)[transport]]),
            start_server(entropy_server_args(ref_address)),
        ]
        (_, floor_address), (_, reference) = procs
        config = EntropyConfig(
            grpc_server_address=reference, grpc_mode="bidi_streaming", grpc_timeout_ms=10_000.0
        )
        try:
            with (
                grpc.insecure_channel(floor_address) as channel,
                client_on_floor_server(floor_address) as on_floor,
                QuantumGrpcSource(config) as on_reference,
            ):
                exchange = BareBidi(channel)
                core = CoreCall(channel, FLOOR_BIDI_PATH, ())
                timings = timed_together(
                    {
                        "bare grpcio bidi (floor)": exchange,
                        "bare core-layer bidi (CoreCall)": functools.partial(core.exchange, b""),
                        "quantum_grpc, floor's server": functools.partial(on_floor.fetch, ONE),
                        "quantum_grpc, reference server": functools.partial(
                            on_reference.fetch, ONE
                        ),
                    },
                    repeat,
                    warmup,
                )
                exchange.end()
                core.discard()
        finally:
            for proc, _ in procs:
                proc.terminate()
                proc.wait(10)
        for label, figures in timings.items():
            results[label, transport] = figures
    return results


def breakdown(address: str, repeat: int, warmup: int) -> dict[str, tuple[float, float]]:
    """Where a bidi fetch of 20,480 bytes spends its time (p50/p99 of each part, us).

    Each part is timed on its own, ``repeat`` times: the whole fetch; the
    exchange itself (write, read, decode and checks) called on the transport
    directly, without the breaker and provenance; the watchdog's arm + disarm
    around each read; decoding alone; the breaker's bookkeeping (admit and
    record a success); building the fetch's provenance record.
    """
    config = EntropyConfig(grpc_server_address=address, grpc_mode="bidi_streaming")
    parts: dict[str, tuple[float, float]] = {}
    with QuantumGrpcSource(config) as source:
        parts["whole fetch (caller's view)"] = timed(
            functools.partial(source.fetch, ONE), repeat, warmup
        )
        sequence = iter(range(10_000_000, 20_000_000))
        parts["exchange (write, read, decode, checks)"] = timed(
            lambda: transport_request(source, ONE, next(sequence), 10.0), repeat, warmup
        )
    watchdog = Watchdog("bench-watchdog")
    parts["watchdog arm + disarm"] = timed(
        lambda: watchdog.disarm(watchdog.arm(10.0, int)), repeat, warmup
    )
    payload = field1_prefix(ONE) + os.urandom(ONE) + b"\x10\x01"
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


def print_target(label: str, p50: float, p99: float, floor: tuple[float, float]) -> None:
    """One line of issue 12 item 7's target: p50 and p99 against the bare bidi floor."""
    r50, r99 = p50 / floor[0], p99 / floor[1]
    met = r50 <= P50_RATIO and r99 <= P99_RATIO
    print(
        f"  {label:<40} p50 {p50:>6.0f} us = {r50:.2f} x, "
        f"p99 {p99:>6.0f} us = {r99:.2f} x: {'met' if met else 'MISSED'}"
    )


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
            together = against_floor(Path(tmp), args.repeat, args.warmup, ("unix",))
        print(f"load average {os.getloadavg()[0]:.2f}; bidi, unix socket, 20,480 bytes")
        print(" each part on its own, against the reference server (qr-entropy-server, urandom):")
        for label, (p50, p99) in parts.items():
            print(f"  {label:<52} p50 {p50:>7.1f} us  p99 {p99:>7.1f} us")
        print(" interleaved, bare grpcio server (sync API, no project code) and reference server:")
        for (label, _), (p50, p99) in together.items():
            print(f"  {label:<52} p50 {p50:>7.1f} us  p99 {p99:>7.1f} us")
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
    print("\nfloors: 20,480 B per round trip, against a bare grpcio server (no project code):")
    with tempfile.TemporaryDirectory() as tmp:
        floor = floors(Path(tmp), args.repeat, args.warmup)
    for (label, transport), (p50, p99) in floor.items():
        print(f"  {label:<24}{transport:<6} p50 {p50:>6.0f} us  p99 {p99:>6.0f} us")
    print(
        f"\ntarget (issue 12, item 7): bidi 20,480 B p50 <= {P50_RATIO} x and "
        f"p99 <= {P99_RATIO:.0f} x the bare grpcio bidi floor; the four interleaved:"
    )
    with tempfile.TemporaryDirectory() as tmp:
        together = against_floor(Path(tmp), args.repeat, args.warmup)
    for transport in ("tcp", "unix"):
        floor_bidi = together["bare grpcio bidi (floor)", transport]
        print(
            f"  {transport + ', bare grpcio bidi (floor)':<40} p50 {floor_bidi[0]:>6.0f} us  "
            f"p99 {floor_bidi[1]:>6.0f} us"
        )
        for label in (
            "quantum_grpc, reference server",
            "quantum_grpc, floor's server",
            "bare core-layer bidi (CoreCall)",
        ):
            print_target(f"{transport}, {label}", *together[label, transport], floor_bidi)
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
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
