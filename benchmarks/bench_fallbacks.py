"""Fallbacks from a healthy server, and recovery after a restart.

1. Fallbacks per 10,000 fetches: the reference server (urandom backend) on
   127.0.0.1 TCP and on a unix socket; a ``build_source`` client with the
   default deadline settings (5 ms floor, 1.5 x P99, 5 s ceiling, 2 retries) and
   ``QR_FALLBACK_MODE=system``; 1, 4 and 8 threads each fetching 20,480 bytes
   in a loop for ``--seconds``, in every mode, while another process keeps one
   core busy.
2. Recovery: a client fetching in a loop from a unix-socket server that is
   killed (SIGKILL) and restarted at once, ``--restarts`` times; the time from
   the kill to the first fetch the server serves again (default recovery window
   10 s: the target is <= 11 s every time), and how long the restart itself
   took: a restart slower than the window makes the first probe find no server.

Usage: ``python benchmarks/bench_fallbacks.py [--seconds 20] [--restarts 15]
[--threads 1,4,8] [--modes unary,server_streaming,bidi_streaming] [--only fallbacks|recovery]``
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import get_args

from qr_entropy import EntropyConfig, FallbackEntropySource, GrpcMode, build_source

MODES: tuple[GrpcMode, ...] = get_args(GrpcMode)
N = 20_480
READY = "qr-entropy-server listening on "
WINDOW_S = EntropyConfig.model_fields["cb_recovery_window_s"].default


class Server:
    """The reference server as a process that can be killed and restarted."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Server:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qr_entropy_server", "--address", self.address],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(READY):
            self.proc.kill()
            raise SystemExit(f"server did not start: {line!r}")
        self.address = line[len(READY) :].strip()
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


def client(address: str, mode: GrpcMode, **fields: object) -> FallbackEntropySource:
    return build_source(
        EntropyConfig(
            entropy_source_type="quantum_grpc",
            grpc_server_address=address,
            grpc_mode=mode,
            fallback_mode="system",
            **fields,  # type: ignore[arg-type]
        )
    )


def fallbacks_run(address: str, mode: GrpcMode, threads: int, seconds: float) -> tuple[int, int]:
    """(fetches, fallbacks) of ``threads`` threads fetching for ``seconds``."""
    counts = [0, 0]
    lock = threading.Lock()
    with client(address, mode) as source:
        source.fetch(N)  # connect first: the run measures a warm client
        stop = time.monotonic() + seconds

        def work() -> None:
            done = fell = 0
            while time.monotonic() < stop:
                fell += source.fetch(N).fallback
                done += 1
            with lock:
                counts[0] += done
                counts[1] += fell

        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    return counts[0], counts[1]


def recovery_times(tmp: Path, mode: GrpcMode, restarts: int) -> list[tuple[float, float]]:
    """Per restart: (seconds from the kill to the first fetch the restarted server
    serves, seconds the restart itself took: kill to the server's ready line)."""
    server = Server(f"unix://{tmp / 'recovery.sock'}").start()
    served = threading.Condition()
    # (when the last served fetch began, when it ended): a fetch that began before
    # the kill may still be answered by the dying server, and does not count.
    last = [0.0, 0.0]
    stop = threading.Event()
    times: list[tuple[float, float]] = []
    with client(server.address, mode) as source:

        def fetch_loop() -> None:
            while not stop.is_set():
                began = time.monotonic()
                if not source.fetch(N).fallback:
                    with served:
                        last[:] = [began, time.monotonic()]
                        served.notify_all()

        worker = threading.Thread(target=fetch_loop)
        worker.start()
        try:
            for _ in range(restarts):
                with served:
                    start = time.monotonic()
                    served.wait_for(lambda start=start: last[0] > start, 30)
                killed = time.monotonic()
                server.kill()
                server.start()
                ready = time.monotonic() - killed
                with served:
                    served.wait_for(lambda killed=killed: last[0] > killed, 60)
                    times.append((last[1] - killed, ready))
                print(
                    f"  restart {len(times):2d}: back after {times[-1][0]:.2f} s "
                    f"(server ready after {ready:.2f} s)",
                    flush=True,
                )
        finally:
            stop.set()
            worker.join()
            server.kill()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per run")
    parser.add_argument("--restarts", type=int, default=15)
    parser.add_argument("--threads", default="1,4,8")
    parser.add_argument(
        "--modes", default=",".join(MODES), help="modes of the fallback runs, comma-separated"
    )
    parser.add_argument("--recovery-mode", default="unary", choices=MODES)
    parser.add_argument("--only", choices=["fallbacks", "recovery"], help="run one part")
    args = parser.parse_args()
    modes = args.modes.split(",")
    if unknown := sorted(set(modes) - set(MODES)):
        parser.error(f"--modes: unknown {', '.join(unknown)}; allowed: {', '.join(MODES)}")
    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with tempfile.TemporaryDirectory() as tmpdir:
            tmp = Path(tmpdir)
            servers = {
                "tcp": Server("127.0.0.1:0").start(),
                "unix": Server(f"unix://{tmp / 'q.sock'}").start(),
            }
            if args.only != "recovery":
                print(
                    f"\nfallbacks from a healthy server, {args.seconds:g} s per run, one core busy"
                )
                print("| transport | mode | threads | fetches | fallbacks | per 10,000 |")
                print("|---|---|---:|---:|---:|---:|")
            try:
                for transport, server in servers.items() if args.only != "recovery" else ():
                    for mode in modes:
                        for threads in (int(t) for t in args.threads.split(",")):
                            done, fell = fallbacks_run(server.address, mode, threads, args.seconds)
                            print(
                                f"| {transport} | {mode} | {threads} | {done:,} | {fell} "
                                f"| {fell * 10_000 / max(done, 1):.2f} |",
                                flush=True,
                            )
            finally:
                for server in servers.values():
                    server.kill()
            if args.restarts and args.only != "fallbacks":
                print(f"\nrecovery after {args.restarts} restarts ({args.recovery_mode}, unix)")
                runs = recovery_times(tmp, args.recovery_mode, args.restarts)
                back = sorted(b for b, _ in runs)
                quick = sorted(b for b, ready in runs if ready < WINDOW_S)
                print(
                    f"recovery p50 {back[(len(back) - 1) // 2]:.2f} s, max {back[-1]:.2f} s "
                    f"(window {WINDOW_S:g} s); restarts that took less than the window: "
                    f"{len(quick)} of {len(back)}, back within the window + 1 s: "
                    f"{sum(b <= WINDOW_S + 1 for b in quick)} of {len(quick)}"
                )
    finally:
        busy.kill()
        busy.wait()


if __name__ == "__main__":
    main()
