"""Real entropy-server processes for the gRPC integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qr_entropy import EntropyConfig

HERE = Path(__file__).resolve().parent
SERVER_READY = "qr-entropy-server listening on "
FAULT_READY = "fault-server listening on "


def payload(sequence_id: int, n: int) -> bytes:
    """What the fault server sends for ``sequence_id`` (see fault_server.py)."""
    unit = sequence_id.to_bytes(8, "big", signed=True)
    return (unit * (n // 8 + 1))[:n]


class ServerProcess:
    """A server subprocess that can be killed and restarted on the same address."""

    def __init__(self, argv: list[str], ready: str, address: str) -> None:
        self._argv = argv
        self._ready = ready
        self._requested = address
        self.address = ""
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> ServerProcess:
        address = self.address or self._requested
        # stderr goes to a file, not a pipe: no reader thread to count, no full pipe to block on.
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [*self._argv, "--address", address],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith(self._ready):
            self.proc.kill()
            self.proc.wait(10)
            self.stderr.seek(0)
            raise RuntimeError(f"server did not start: {line!r} {self.stderr.read()}")
        self.address = line[len(self._ready) :].strip()
        return self

    def kill(self) -> None:
        """SIGKILL: no goodbye to clients, like a crash or power loss."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


ServerFactory = Callable[..., ServerProcess]


@pytest.fixture(scope="module")
def servers() -> Iterator[Callable[..., ServerProcess]]:
    """Start reference servers: ``servers(*flags, address="127.0.0.1:0")``."""
    started: list[ServerProcess] = []

    def factory(*flags: str, address: str = "127.0.0.1:0") -> ServerProcess:
        server = ServerProcess(
            [sys.executable, "-m", "qr_entropy_server", *flags], SERVER_READY, address
        )
        started.append(server.start())
        return server

    yield factory
    for server in started:
        server.stop()


class FaultServer(ServerProcess):
    """The fault server plus its control file."""

    def __init__(self, control: Path, address: str, *flags: str) -> None:
        super().__init__(
            [sys.executable, str(HERE / "fault_server.py"), "--control", str(control), *flags],
            FAULT_READY,
            address,
        )
        self.control = control

    def set(self, mode: str) -> None:
        """Switch the behaviour for the following requests."""
        self.control.write_text(mode)

    @property
    def _received(self) -> Path:
        return self.control.with_name(self.control.name + ".received")

    def forget_requests(self) -> None:
        """Forget the last request seen in ``slow`` mode (see :meth:`wait_for_request`)."""
        self._received.unlink(missing_ok=True)

    def wait_for_request(self, timeout_s: float = 30.0) -> int:
        """Wait until a request arrives in ``slow`` mode; return its sequence_id."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                text = self._received.read_text()
            except FileNotFoundError:
                text = ""
            if text:  # the server writes it in one go; empty: not yet
                return int(text)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no request reached the fault server in {timeout_s} s")
            time.sleep(0.005)


@pytest.fixture(scope="module")
def fault_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., FaultServer]]:
    """Start fault servers: ``fault_servers(*flags, address=...)``."""
    started: list[FaultServer] = []

    def factory(*flags: str, address: str = "127.0.0.1:0") -> FaultServer:
        control = tmp_path_factory.mktemp("fault") / "control"
        control.write_text("ok")
        server = FaultServer(control, address, *flags)
        server.start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def faulty(fault_servers: Callable[..., FaultServer]) -> FaultServer:
    """One fault server for a test module."""
    return fault_servers()


@pytest.fixture(autouse=True)
def _no_qr_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings come from the tests only: no inherited QR_* variables, no .env."""
    for key in list(os.environ):
        if key.upper().startswith("QR_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def config(address: str, **fields: object) -> EntropyConfig:
    """An EntropyConfig for ``quantum_grpc`` at ``address`` with test-friendly defaults."""
    fields.setdefault("entropy_source_type", "quantum_grpc")
    fields.setdefault("fallback_mode", "error")
    fields.setdefault("grpc_timeout_ms", 5000.0)
    fields.setdefault("cb_recovery_window_s", 0.2)
    # A busy 2-core CI runner can stall a call past the 5 ms default floor; tests that
    # are about the adaptive deadline set the floor themselves.
    fields.setdefault("cb_min_timeout_ms", 1000.0)
    return EntropyConfig(grpc_server_address=address, **fields)  # type: ignore[arg-type]


def our_threads() -> list[threading.Thread]:
    """Live threads except a ``grpc.aio`` poller (the reference server's tests start one)."""
    return [t for t in threading.enumerate() if "_poll_wrapper" not in t.name]


@pytest.fixture
def thread_baseline(servers: Callable[..., ServerProcess]) -> Callable[[], list[str]]:
    """Returns a check: the threads (but grpc's poller) that were not there before.

    The baseline is taken once the client's one process-wide thread exists (started
    on first use, shared by every source): the ``qr-entropy-grpc-watchdog`` (bidi
    read deadlines). Nothing else may stay behind a closed source. grpc's public
    stream API ends a cancelled call's own threads shortly after the cancel, so
    the check allows them a second.
    """
    from qr_entropy.grpc import QuantumGrpcSource

    address = servers().address
    for mode in ("server_streaming", "bidi_streaming"):
        with QuantumGrpcSource(config(address, grpc_mode=mode)) as source:
            source.fetch(8)
    before = {t.ident for t in our_threads()}

    def new_threads() -> list[str]:
        deadline = time.monotonic() + 1.0
        while True:
            left = [t.name for t in our_threads() if t.ident not in before]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.01)

    return new_threads


@pytest.fixture(params=["core", "public"])
def layer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The call layer of the streaming modes under test: grpcio's core layer, or its
    public API (the fallback), chosen by reporting the core layer unavailable: a
    grpcio without it cannot be produced for real here."""
    if request.param == "public":
        from qr_entropy.grpc import _sync

        monkeypatch.setattr(_sync, "core_available", lambda channel: False)
    return str(request.param)


@pytest.fixture
def calls_left() -> Callable[[], int]:
    """``calls_left()``: calls on grpcio's core layer opened since the test began and
    not released yet (a batch still due): each must be read to its end or discarded."""
    from qr_entropy.grpc._core_call import open_core_calls

    before = open_core_calls()
    return lambda: open_core_calls() - before


@pytest.fixture
def make_config() -> Callable[..., EntropyConfig]:
    """``make_config(address, **fields)``: see :func:`config`."""
    return config


@pytest.fixture
def expected() -> Callable[[int, int], bytes]:
    """``expected(sequence_id, n)``: the fault server's bytes for that request."""
    return payload


QRNG_PROTO = """\
syntax = "proto3";
package qrng;

message RandomRequest { uint32 num_bytes = 1; }
message RandomResponse {
  bytes data = 1;
  uint64 timestamp = 2;  // epoch microseconds
  string device_id = 3;
}

service QuantumRNG {
  rpc GetRandomBytes (RandomRequest) returns (RandomResponse);
}
"""
QRNG_API_KEY = "qrng-test-key"


@pytest.fixture(scope="module")
def qrng_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A ``qrng.QuantumRNG`` server (``qrng_server.py``) with stubs generated here.

    It requires ``x-api-key: qrng-test-key``.
    """
    stubs = tmp_path_factory.mktemp("qrng_stubs")
    (stubs / "qrng.proto").write_text(QRNG_PROTO, encoding="utf-8")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{stubs}",
            f"--python_out={stubs}",
            f"--grpc_python_out={stubs}",
            str(stubs / "qrng.proto"),
        ],
        check=True,
        capture_output=True,
    )
    server = ServerProcess(
        [
            sys.executable,
            str(HERE / "qrng_server.py"),
            "--stubs",
            str(stubs),
            "--api-key",
            QRNG_API_KEY,
        ],
        "qrng-server listening on ",
        "127.0.0.1:0",
    ).start()
    yield server
    server.stop()
