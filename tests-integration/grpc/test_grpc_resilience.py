"""Issue 12, items 2 and 3: no fallback from a healthy server; recovery after a restart.

Short runs for CI (``benchmarks/bench_fallbacks.py`` runs the long ones and
measures the times): the real reference server on TCP and on a unix socket,
default deadline settings (5 ms floor, learnt deadlines), several client threads,
and another process keeping one of the machine's cores busy.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qr_entropy import EntropyConfig, EntropyFetch, build_source

N = 20480
MODES = ("unary", "server_streaming", "bidi_streaming")
Config = Callable[..., EntropyConfig]


@pytest.fixture(scope="module")
def busy_core() -> Iterator[None]:
    """Another process spinning on one core for the module's tests."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    yield
    proc.kill()
    proc.wait(10)


@pytest.fixture(scope="module")
def addresses(
    servers: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    sock = tmp_path_factory.mktemp("resilience") / "q.sock"
    return {"tcp": servers().address, "unix": servers(address=f"unix://{sock}").address}


def hammer(source: Any, threads: int, per_thread: int) -> list[EntropyFetch]:
    """``per_thread`` fetches from each of ``threads`` threads at once; every result."""
    results: list[EntropyFetch] = []
    lock = threading.Lock()

    def work() -> None:
        mine = [source.fetch(N) for _ in range(per_thread)]
        with lock:
            results.extend(mine)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return results


@pytest.mark.parametrize("transport", ["tcp", "unix"])
@pytest.mark.parametrize("mode", MODES)
def test_no_fetch_falls_back_from_a_healthy_server_under_load(
    mode: str, transport: str, addresses: dict[str, str], busy_core: None
) -> None:
    cfg = EntropyConfig(
        entropy_source_type="quantum_grpc",
        grpc_server_address=addresses[transport],
        grpc_mode=mode,  # type: ignore[arg-type]
        fallback_mode="system",
    )  # deadline settings left at their defaults: 5 ms floor, 1.5 x P99
    with build_source(cfg) as source:
        fetches = hammer(source, threads=8, per_thread=40)
        health = source.primary.health_check()
    fallbacks = [f.fallback_reason for f in fetches if f.fallback]
    assert len(fetches) == 320
    assert fallbacks == []
    assert health["times_opened"] == 0


class Fetcher:
    """Fetches on a thread, as the engine would, noting when the primary served."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self._stop = threading.Event()
        self.served = threading.Condition()
        self.last_served = 0.0
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            fetch = self._source.fetch(N)
            if not fetch.fallback:
                with self.served:
                    self.last_served = time.monotonic()
                    self.served.notify_all()

    def served_after(self, since: float, timeout_s: float) -> float:
        """Seconds from ``since`` to the first primary fetch after it (inf: none in time)."""
        with self.served:
            self.served.wait_for(lambda: self.last_served > since, timeout_s)
            return self.last_served - since if self.last_served > since else float("inf")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize("mode", ["unary", "bidi_streaming"])
def test_the_first_probe_after_a_restart_finds_the_server(
    mode: str, servers: Callable[..., Any], tmp_path: Path
) -> None:
    """Issue 12, item 3: the half-open probe has the configured timeout and succeeds.

    The circuit opens on the kill. Once the new server has printed its ready
    line, at most one more probe may fail (one already in flight then); the
    next one must close the circuit, a fresh connection notwithstanding. How
    long that takes is measured by ``benchmarks/bench_fallbacks.py``, not here.
    """
    window_s = 0.5
    server = servers(address=f"unix://{tmp_path}/r.sock")
    cfg = EntropyConfig(
        entropy_source_type="quantum_grpc",
        grpc_server_address=server.address,
        grpc_mode=mode,  # type: ignore[arg-type]
        cb_recovery_window_s=window_s,
        fallback_mode="system",
    )
    with build_source(cfg) as source:
        fetcher = Fetcher(source)
        try:
            for restart in range(2):
                assert fetcher.served_after(time.monotonic(), 60.0) < 60.0
                before = source.primary.health_check()["times_opened"]
                server.kill()
                server.start()  # returns once the new process prints its ready line
                ready = time.monotonic()
                at_ready = source.primary.health_check()["times_opened"]
                # Served after the ready line, so by the new process: a fetch the dying
                # one answered after the kill was sent must not count as recovery.
                # A liveness bound only (a hang would otherwise block the suite).
                assert fetcher.served_after(ready, 60.0) < 60.0, "never recovered"
                health = source.primary.health_check()
                assert health["circuit_state"] == "closed"
                assert at_ready > before  # the outage did open the circuit
                assert health["times_opened"] <= at_ready + 1, (restart, health)
        finally:
            fetcher.stop()
