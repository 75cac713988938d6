"""Load benchmark of the reference entropy server: many clients, idle streams, two transports.

Starts ``qr-entropy-server`` (urandom backend, default flags) on 127.0.0.1 TCP
and on a unix socket. For each transport, mode (unary ``GetEntropy`` or one
bidirectional ``StreamEntropy`` per client) and client count (16 / 64 / 256),
every client first gets one untimed answer (its connection and stream are up;
a server that leaves some unanswered gets 30 s, then is timed anyway), then
all fetch 20,480 bytes per request, back to back, for ``--seconds``;
then the same again while 1,000 idle streams (each answered once, then
silent) stay open. The clients run in ``--client-procs`` worker processes
(asyncio, one channel per 16 clients) so that the client side is not one GIL.

Printed per run: requests per second, p50 / p99 latency of a request, starved
clients (no answer inside the timed window; fewer than one answer per second), and the
server's resident memory (VmRSS) at the end of the run. A probe before the
load runs measures sequential unary and health-check latency without and with
the 1,000 idle streams (target: at most 2x).

Usage: ``python benchmarks/bench_server_load.py [--seconds S] [--clients 16,64,256]
[--server-path DIR] [--server-args FLAGS] [--faults [--old-flags]]``
(``--server-args`` adds server flags; ``--server-path`` puts another
``qr_entropy_server`` source tree first on the server's PYTHONPATH, e.g. an
older release to compare; ``--faults`` instead times SIGTERM with a backend
whose ``generate`` never returns and measures the log written for 2,000
malformed requests).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qr_entropy_server.proto import entropy_service_pb2 as pb2

SIZE = 20_480
IDLE = 1_000
READY = "qr-entropy-server listening on "
UNARY = "/qr_entropy.EntropyService/GetEntropy"
STREAM = "/qr_entropy.EntropyService/StreamEntropy"
PER_CHANNEL = 16
CALL_TIMEOUT_S = 30.0
WARMUP_S = 30.0


@dataclass(frozen=True)
class Run:
    """Figures of one load run."""

    transport: str
    """``tcp`` or ``unix``."""
    mode: str
    """``unary`` or ``bidi``."""
    clients: int
    """Concurrent clients."""
    idle: int
    """Idle streams held open during the run."""
    rps: float
    """Answered requests per second, all clients together."""
    p50_ms: float
    """Median request latency."""
    p99_ms: float
    """99th-percentile request latency."""
    errors: int
    """Requests that ended with an error."""
    none_served: int
    """Clients that got no answer at all."""
    under_1_per_s: int
    """Clients with fewer answers than seconds in the run."""
    rss_mib: float
    """Server resident memory at the end of the run."""


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of a sorted list (0.0 for an empty one)."""
    if not ordered:
        return 0.0
    return ordered[max(0, -(-len(ordered) * int(q * 100) // 100) - 1)]


def rss_mib(pid: int) -> float:
    """Resident memory of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --------------------------------------------------------------------------- clients


class _Window:
    """The timed window shared by the clients of one worker process."""

    def __init__(self, clients: int) -> None:
        self.opened = asyncio.Event()
        self.all_warm = asyncio.Event()
        self.start_at = 0.0
        self.stop_at = 0.0
        self._cold = clients

    def warm(self) -> None:
        self._cold -= 1
        if self._cold == 0:
            self.all_warm.set()

    def counts(self, answered_at: float) -> bool:
        """An answer counts if it came inside the window."""
        return self.opened.is_set() and self.start_at <= answered_at <= self.stop_at


async def _client(
    channel: aio.Channel, mode: str, index: int, window: _Window
) -> tuple[int, int, list[float]]:
    """One client: one untimed answer (warm-up), then fetch back to back until the window ends.

    Returns (answers inside the window, errors, their latencies).
    """
    latencies: list[float] = []
    errors = 0
    seq = index << 32
    stream = channel.stream_stream(STREAM, None, None)(None) if mode == "bidi" else None
    unary = channel.unary_unary(UNARY, None, None)
    warm = False
    try:
        while not window.opened.is_set() or time.monotonic() < window.stop_at:
            if warm and not window.opened.is_set():
                await window.opened.wait()
            seq += 1
            request = pb2.EntropyRequest(bytes_needed=SIZE, sequence_id=seq).SerializeToString()
            start = time.perf_counter()
            if stream is None:
                try:
                    await unary(request, timeout=CALL_TIMEOUT_S * 4)
                except aio.AioRpcError:
                    errors += 1
                    continue
            else:
                await stream.write(request)
                await asyncio.wait_for(stream.read(), CALL_TIMEOUT_S * 4)
            if window.counts(time.monotonic()):
                latencies.append(time.perf_counter() - start)
            if not warm:
                warm = True
                window.warm()
    except (aio.AioRpcError, TimeoutError, asyncio.InvalidStateError):
        errors += 1
    finally:
        if stream is not None:
            stream.cancel()
    return len(latencies), errors, latencies


async def _load(
    address: str, mode: str, clients: int, seconds: float, start_at: float
) -> dict[str, Any]:
    per_channel = int(os.environ.get("QR_BENCH_PER_CHANNEL", PER_CHANNEL))
    channels = [aio.insecure_channel(address) for _ in range(-(-clients // per_channel))]
    for channel in channels:
        await asyncio.wait_for(channel.channel_ready(), CALL_TIMEOUT_S)
    window = _Window(clients)
    tasks = [
        asyncio.create_task(_client(channels[i // per_channel], mode, i, window))
        for i in range(clients)
    ]
    # Every client gets one answer before timing starts (a server that never
    # answers some of them gets WARMUP_S, then is timed anyway).
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(window.all_warm.wait(), WARMUP_S)
    await asyncio.sleep(max(start_at - time.time(), 0.0))  # workers start together
    window.start_at = time.monotonic()
    window.stop_at = window.start_at + seconds
    window.opened.set()
    results = await asyncio.gather(*tasks)
    for channel in channels:
        await channel.close(None)
    return {
        "answers": [r[0] for r in results],
        "errors": sum(r[1] for r in results),
        "latencies": [x for r in results for x in r[2]],
    }


def worker_main(address: str, mode: str, clients: int, seconds: float, start_at: float) -> None:
    """Child process: run ``clients`` clients and print their figures as JSON."""
    print(json.dumps(asyncio.run(_load(address, mode, clients, seconds, start_at))), flush=True)


async def _hold_idle(address: str, count: int) -> None:
    """Child process: open ``count`` streams, get one answer on each, then stay silent."""
    async with aio.insecure_channel(address) as channel:
        calls = [channel.stream_stream(STREAM, None, None)(None) for _ in range(count)]
        request = pb2.EntropyRequest(bytes_needed=8).SerializeToString()

        async def first(call: aio.StreamStreamCall[bytes, bytes]) -> None:
            await call.write(request)
            await asyncio.wait_for(call.read(), CALL_TIMEOUT_S * 4)

        await asyncio.gather(*(first(c) for c in calls))
        print("idle streams open", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


# --------------------------------------------------------------------------- driver


def start_server(
    address: str,
    server_path: str | None,
    extra: list[str],
    *,
    env_extra: dict[str, str] | None = None,
    capture_log: bool = False,
) -> tuple[subprocess.Popen[str], str]:
    """Start ``qr-entropy-server`` (``server_path`` first on the module path) and
    wait for its ready line; ``capture_log`` pipes its stderr to the caller."""
    env = {**os.environ, **(env_extra or {})}
    if server_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [server_path, env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "qr_entropy_server", "--address", address, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if capture_log else None,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(READY):
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line[len(READY) :].strip()


def hold_idle(address: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--idle-holder", address],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "idle streams open" not in line:
        proc.kill()
        raise SystemExit("could not open the idle streams (the server stalls on them?)")
    return proc


def release(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def load_run(
    server: subprocess.Popen[str],
    address: str,
    transport: str,
    mode: str,
    clients: int,
    idle: int,
    seconds: float,
    procs: int,
) -> Run:
    start_at = time.time() + 5.0
    shares = [clients // procs + (i < clients % procs) for i in range(procs)]
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                address,
                mode,
                str(n),
                str(seconds),
                str(start_at),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in shares
        if n
    ]
    answers: list[int] = []
    latencies: list[float] = []
    errors = 0
    for worker in workers:
        out, _ = worker.communicate()
        data = json.loads(out)
        answers += data["answers"]
        latencies += data["latencies"]
        errors += data["errors"]
    latencies.sort()
    return Run(
        transport=transport,
        mode=mode,
        clients=clients,
        idle=idle,
        rps=sum(answers) / seconds,
        p50_ms=percentile(latencies, 0.50) * 1e3,
        p99_ms=percentile(latencies, 0.99) * 1e3,
        errors=errors,
        none_served=sum(a == 0 for a in answers),
        under_1_per_s=sum(a < seconds for a in answers),
        rss_mib=rss_mib(server.pid),
    )


async def _probe(address: str, count: int) -> tuple[float, float, float, float]:
    """p50 of ``count`` sequential unary calls and health checks, then their p99s."""
    async with aio.insecure_channel(address) as channel:
        unary = channel.unary_unary(UNARY, None, None)
        health = health_pb2_grpc.HealthStub(channel)
        request = pb2.EntropyRequest(bytes_needed=SIZE).SerializeToString()
        u: list[float] = []
        h: list[float] = []
        for _ in range(20):  # warm-up: connection, first-call paths
            await unary(request, timeout=CALL_TIMEOUT_S)
            await health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
        for _ in range(count):
            start = time.perf_counter()
            await unary(request, timeout=CALL_TIMEOUT_S)
            u.append(time.perf_counter() - start)
            start = time.perf_counter()
            await health.Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
            h.append(time.perf_counter() - start)
    u.sort()
    h.sort()
    return (
        percentile(u, 0.5) * 1e3,
        percentile(h, 0.5) * 1e3,
        percentile(u, 0.99) * 1e3,
        percentile(h, 0.99) * 1e3,
    )


def faults(server_path: str | None, new_flags: bool) -> None:
    """Time SIGTERM with a hung backend; count the log bytes of 2,000 malformed requests."""
    tests = Path(__file__).resolve().parents[1] / "packages" / "qr-entropy-server" / "tests"
    path = os.pathsep.join(filter(None, [server_path, str(tests)]))
    # tests/faulty_backend.py: generate never returns
    env: dict[str, str] = {"PYTHONPATH": path, "QR_TEST_FAULT": "hang:1000000"}

    def spawn(*args: str) -> tuple[subprocess.Popen[str], str]:
        return start_server("127.0.0.1:0", None, list(args), env_extra=env, capture_log=True)

    hung = ["--backend", "faulty_backend:FaultyBackend", "--grace", "5"]
    proc, address = spawn(*hung, *(["--backend-timeout", "2"] if new_flags else []))
    request = pb2.EntropyRequest(bytes_needed=8).SerializeToString()
    with grpc.insecure_channel(address) as channel:
        try:
            channel.unary_unary(UNARY, None, None)(request, timeout=3)
        except grpc.RpcError as exc:
            print(f"call to a hung backend: {exc.code().name}: {exc.details()}")
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(60)
        print(
            f"SIGTERM, --grace 5, hung backend: exit {code} after {time.monotonic() - start:.1f} s"
        )
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        print("SIGTERM, --grace 5, hung backend: still running after 60 s (killed)")
    env.pop("QR_TEST_FAULT")
    proc, address = spawn()
    assert proc.stderr is not None
    log: list[str] = []
    # Drained as it comes: a server that floods its log must not block on a full pipe.
    drain = threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    drain.start()
    codes: dict[str, int] = {}
    start = time.monotonic()
    with grpc.insecure_channel(address) as channel:
        raw = channel.unary_unary(UNARY, None, None)
        for _ in range(2000):
            try:
                raw(b"\x08\xff", timeout=10)  # a varint cut short
            except grpc.RpcError as exc:
                codes[exc.code().name] = codes.get(exc.code().name, 0) + 1
    elapsed = time.monotonic() - start
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    drain.join(10)
    text = "".join(log)
    print(
        f"2,000 malformed requests in {elapsed:.1f} s: {codes}; server log "
        f"{len(text.encode())} bytes, {len(text.splitlines())} lines"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", default="16,64,256")
    parser.add_argument("--modes", default="unary,bidi")
    parser.add_argument("--transports", default="tcp,unix")
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--probe-count", type=int, default=300)
    parser.add_argument("--no-idle", action="store_true", help="skip the idle-stream runs")
    parser.add_argument("--server-path", default=None)
    parser.add_argument(
        "--server-args", default="", help="more server flags, e.g. '--max-workers 4'"
    )
    parser.add_argument(
        "--faults",
        action="store_true",
        help="only the fault figures (hung backend + SIGTERM, malformed-request logs)",
    )
    parser.add_argument(
        "--old-flags", action="store_true", help="the server has no --backend-timeout flag"
    )
    args = parser.parse_args()
    if args.faults:
        faults(args.server_path, not args.old_flags)
        return

    counts = [int(c) for c in args.clients.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="qrload-", dir="/tmp"))
    print(
        f"# {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}, grpcio {grpc.__version__}, "
        f"load average {os.getloadavg()[0]:.2f}, {args.seconds:g} s per run, "
        f"{SIZE} bytes per request, {args.client_procs} client processes"
    )
    runs: list[Run] = []
    try:
        for transport in args.transports.split(","):
            address = "127.0.0.1:0" if transport == "tcp" else f"unix://{tmp / 'load.sock'}"
            server, bound = start_server(address, args.server_path, args.server_args.split())
            try:
                base = asyncio.run(_probe(bound, args.probe_count))
                idle_procs = [] if args.no_idle else [hold_idle(bound)]
                try:
                    with_idle = asyncio.run(_probe(bound, args.probe_count)) if idle_procs else None
                finally:
                    for proc in idle_procs:
                        release(proc)
                print(
                    f"{transport}: probe unary p50 {base[0]:.2f} ms, health p50 {base[1]:.2f} ms"
                    + (
                        f"; with {IDLE} idle streams unary p50 {with_idle[0]:.2f} ms "
                        f"({with_idle[0] / base[0]:.2f}x), health p50 {with_idle[1]:.2f} ms "
                        f"({with_idle[1] / base[1]:.2f}x)"
                        if with_idle
                        else ""
                    ),
                    flush=True,
                )
                for idle in (0,) if args.no_idle else (0, IDLE):
                    holder = hold_idle(bound) if idle else None
                    try:
                        for mode in args.modes.split(","):
                            for clients in counts:
                                run = load_run(
                                    server, bound, transport, mode, clients, idle,
                                    args.seconds, args.client_procs,
                                )  # fmt: skip
                                runs.append(run)
                                print(
                                    f"{run.transport:4} {run.mode:5} clients {run.clients:3} "
                                    f"idle {run.idle:4}: {run.rps:7.0f} req/s  "
                                    f"p50 {run.p50_ms:7.1f} ms  p99 {run.p99_ms:7.1f} ms  "
                                    f"errors {run.errors}  none served {run.none_served}  "
                                    f"<1/s {run.under_1_per_s}  server RSS {run.rss_mib:.0f} MiB",
                                    flush=True,
                                )
                    finally:
                        if holder is not None:
                            release(holder)
            finally:
                server.terminate()
                server.wait(30)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        address, mode, clients, seconds, start_at = sys.argv[2:7]
        worker_main(address, mode, int(clients), float(seconds), float(start_at))
    elif len(sys.argv) > 1 and sys.argv[1] == "--idle-holder":
        asyncio.run(_hold_idle(sys.argv[2], IDLE))
    else:
        main()
