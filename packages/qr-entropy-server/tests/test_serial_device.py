"""``--backend serial`` against a pseudo-terminal that streams like a USB QRNG.

The stand-in (:class:`qr_entropy_server.testing.StandInDevice`) writes 64-byte
packets of timestamped words at about 2 MB/s whether anyone reads or not,
dropping what does not fit, as a UART does on overrun. Real server processes
serve it; the tests decode the served words and compare their CLOCK_MONOTONIC
stamps with the moment the request was sent.
"""

from __future__ import annotations

import os
import queue
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qr_entropy_server.proto import entropy_service_pb2 as pb2
from qr_entropy_server.proto import entropy_service_pb2_grpc as pb2_grpc
from qr_entropy_server.testing import CYCLE, PACKET, WORD, StandInDevice, age_us, decode_words

Spawn = Callable[..., Any]
SERVICE = "qr_entropy.EntropyService"
N = 20_480
IDLE_S = (0.2, 2.0, 5.0)
GUARD_S = 60.0  # hang guard per call


def _health(channel: grpc.Channel) -> int:
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=SERVICE), timeout=GUARD_S
    )
    return int(reply.status)


class _Bidi:
    """One long-lived StreamEntropy call; :meth:`fetch` sends a request and reads its answer."""

    def __init__(self, stub: pb2_grpc.EntropyServiceStub) -> None:
        self._requests: queue.Queue[pb2.EntropyRequest | None] = queue.Queue()
        self._replies = stub.StreamEntropy(iter(self._requests.get, None), timeout=600)

    def fetch(self, request: pb2.EntropyRequest) -> pb2.EntropyResponse:
        self._requests.put(request)
        return next(self._replies)

    def close(self) -> None:
        self._requests.put(None)
        for _ in self._replies:
            pass


def _fetcher(stub: pb2_grpc.EntropyServiceStub, mode: str) -> tuple[Callable[..., Any], Any]:
    if mode == "unary":
        return (lambda r: stub.GetEntropy(r, timeout=GUARD_S)), None
    if mode == "server_streaming":
        return (lambda r: next(iter(stub.StreamEntropy(iter([r]), timeout=GUARD_S)))), None
    bidi = _Bidi(stub)
    return bidi.fetch, bidi


def _check_fresh(reply: pb2.EntropyResponse, sent_us: int, sent_ns: int) -> dict[str, float]:
    """No served word was produced before the request, except one packet in flight."""
    assert len(reply.data) == N
    words = decode_words(reply.data)
    # Words cut by an overrun drop cannot be dated; nearly every byte is in a whole word.
    assert len(words) * WORD >= 0.9 * N, len(words)
    ages = [age_us(stamp, sent_us) for _, stamp in words]
    stale = {stamp for (_, stamp), age in zip(words, ages, strict=True) if age > 0}
    stale_words = sum(age > 0 for age in ages)
    assert len(stale) <= 1, stale  # one packet in flight at most
    assert stale_words <= PACKET // WORD, stale_words
    # The server's stamps: the fresh read began after the request was sent, ended after it began.
    assert sent_ns <= reply.read_started_ns <= reply.generation_timestamp_ns
    return {"oldest_ms": max(ages) / 1000, "stale_words": stale_words}


def _idle_then_fetch(spawn: Spawn, mode: str) -> list[dict[str, float]]:
    with StandInDevice() as device:
        server = spawn("--backend", "serial", "--device", device.path, "--address", "127.0.0.1:0")
        results = []
        with grpc.insecure_channel(server.address) as channel:
            fetch, bidi = _fetcher(pb2_grpc.EntropyServiceStub(channel), mode)
            fetch(pb2.EntropyRequest(bytes_needed=64, sequence_id=0))  # connected, warm
            for i, idle in enumerate(IDLE_S, 1):
                time.sleep(idle)  # the variable under test, not a wait for readiness
                sent_us, sent_ns = time.monotonic_ns() // 1000, time.time_ns()
                reply = fetch(pb2.EntropyRequest(bytes_needed=N, sequence_id=i))
                results.append(_check_fresh(reply, sent_us, sent_ns))
            if bidi is not None:
                bidi.close()
        assert server.stop() == 0, server.stderr
    return results


def test_no_served_byte_was_produced_before_the_request(spawn: Spawn) -> None:
    """0.2 s, 2 s and 5 s idle, on each transport; one server per transport, run together."""
    modes = ("unary", "server_streaming", "bidi")
    with ThreadPoolExecutor(len(modes)) as pool:
        outcomes = list(pool.map(lambda m: _idle_then_fetch(spawn, m), modes))
    assert [len(results) for results in outcomes] == [len(IDLE_S)] * len(modes)


def _proc_tty(pid: int) -> int:
    """Field 7 (tty_nr) of /proc/PID/stat: 0 when the process has no controlling terminal."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text.rsplit(")", 1)[1].split()[4])


def test_every_byte_value_passes_unchanged_and_0x03_signals_nothing(spawn: Spawn) -> None:
    """The stand-in repeats all 256 values (\\r, ^C, ^D, ^Q, ^S, ^Z, ^\\, DEL included)."""
    with StandInDevice(mode="cycle") as device:
        # A session leader, as under systemd: without O_NOCTTY the pty would become
        # its controlling terminal, and a 0x03 byte would send it SIGINT.
        server = spawn(
            "--backend", "serial", "--device", device.path, "--address", "127.0.0.1:0",
            start_new_session=True,
        )  # fmt: skip
        successor = {CYCLE[i]: CYCLE[(i + 1) % 256] for i in range(256)}
        with grpc.insecure_channel(server.address) as channel:
            stub = pb2_grpc.EntropyServiceStub(channel)
            for sequence_id in range(3):
                data = stub.GetEntropy(
                    pb2.EntropyRequest(bytes_needed=N, sequence_id=sequence_id), timeout=GUARD_S
                ).data
                assert set(data) == set(range(256))
                broken = [i for i in range(N - 1) if successor[data[i]] != data[i + 1]]
                assert broken == [], f"bytes changed at {broken[:5]}"
            assert _health(channel) == health_pb2.HealthCheckResponse.SERVING
        assert server.proc.poll() is None  # still running: no SIGINT, SIGQUIT or SIGTSTP
        assert os.getsid(server.proc.pid) == server.proc.pid
        assert _proc_tty(server.proc.pid) == 0  # the pty never became its terminal
        assert server.stop() == 0
    assert "signal" not in server.stderr, server.stderr


def _watch_until_serving(channel: grpc.Channel, limit_s: float) -> bool:
    """Health Watch: True once it reports SERVING within ``limit_s``."""
    stream = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=SERVICE), timeout=limit_s
    )
    try:
        for reply in stream:
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                stream.cancel()
                return True
    except grpc.RpcError as exc:
        if exc.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
    return False


@pytest.fixture
def link(tmp_path: Path) -> Path:
    """A udev-style symlink to the device node, repointed by the test."""
    return tmp_path / "serial-by-id-qrng"


def _point(link: Path, target: str) -> None:
    new = link.with_suffix(".new")
    new.symlink_to(target)
    new.replace(link)  # atomic, as udev does it


def test_unplug_fails_internal_then_replug_serves_again_without_restart(
    spawn: Spawn, link: Path
) -> None:
    first = StandInDevice()
    try:
        _point(link, first.path)
        server = spawn("--backend", "serial", "--device", str(link), "--address", "127.0.0.1:0")
        with grpc.insecure_channel(server.address) as channel:
            stub = pb2_grpc.EntropyServiceStub(channel)
            assert len(stub.GetEntropy(pb2.EntropyRequest(bytes_needed=N), timeout=GUARD_S).data)
            first.unplug()  # the writer goes, the pty hangs up, its node disappears
            with pytest.raises(grpc.RpcError) as info:
                stub.GetEntropy(pb2.EntropyRequest(bytes_needed=N), timeout=GUARD_S)
            assert info.value.code() is grpc.StatusCode.INTERNAL
            assert f"serial {link}" in str(info.value.details())
            assert _health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
            with StandInDevice() as second:  # replugged: a new node behind the same link
                _point(link, second.path)
                # The bound; the server probes every 0.5 s while NOT_SERVING.
                assert _watch_until_serving(channel, limit_s=5.0)
                reply = stub.GetEntropy(pb2.EntropyRequest(bytes_needed=N), timeout=GUARD_S)
                assert len(reply.data) == N
                assert server.proc.poll() is None  # the same process: no restart
                assert server.stop() == 0
    finally:
        first.close()
    assert "reopened" in server.stderr


def test_a_stalled_device_fails_within_the_backend_timeout(spawn: Spawn) -> None:
    with StandInDevice(rate=0) as device:  # plugged in, sends nothing
        server = spawn(
            "--backend", "serial", "--device", device.path, "--address", "127.0.0.1:0",
            "--backend-timeout", "0.5",
        )  # fmt: skip
        with grpc.insecure_channel(server.address) as channel:
            with pytest.raises(grpc.RpcError) as info:
                pb2_grpc.EntropyServiceStub(channel).GetEntropy(
                    pb2.EntropyRequest(bytes_needed=64), timeout=GUARD_S
                )
            assert info.value.code() is grpc.StatusCode.UNAVAILABLE
            assert "--backend-timeout=0.5 s" in str(info.value.details())
            assert _health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert server.stop(signal.SIGTERM) == 0


def test_a_stuck_device_never_reaches_a_client(spawn: Spawn) -> None:
    with StandInDevice(mode="constant") as device:
        server = spawn("--backend", "serial", "--device", device.path, "--address", "127.0.0.1:0")
        with grpc.insecure_channel(server.address) as channel:
            stub = pb2_grpc.EntropyServiceStub(channel)
            assert _health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
            for n in (N, 8, 1):  # small requests too: the run carries over
                with pytest.raises(grpc.RpcError) as info:
                    stub.GetEntropy(pb2.EntropyRequest(bytes_needed=n), timeout=GUARD_S)
                assert info.value.code() is grpc.StatusCode.INTERNAL
                assert "health test failed: repetition count: byte 0x5a" in str(
                    info.value.details()
                )
        assert server.stop() == 0
    lines = [line for line in server.stderr.splitlines() if "health test failed" in line]
    assert len(lines) == 1, server.stderr  # rate-limited: one line per minute
