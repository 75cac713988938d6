"""Real entropy-server processes for the gRPC integration tests.

The servers (the reference server, the fault server, the ``qrng`` server and the
protoc run that makes its stubs) run on the interpreter named by the environment
variable ``GRPC_TEST_SERVER_PYTHON``, default this one (``sys.executable``). The
client under test always runs here. So the client can be tested on a grpcio the
servers cannot use: qr-entropy-server's generated stubs need grpcio >= 1.85.1,
while qr-entropy allows grpcio >= 1.62 (``hatch run grpc-oldest:test`` sets the
variable to the default environment's interpreter; see ``hatch.toml``).
"""

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
from qr_entropy.grpc import QuantumGrpcSource
from qr_entropy.grpc.testing import core_layer_usable, open_core_calls, public_api_only

HERE = Path(__file__).resolve().parent
SERVER_READY = "qr-entropy-server listening on "
FAULT_READY = "fault-server listening on "
SERVER_PYTHON_VAR = "GRPC_TEST_SERVER_PYTHON"
SERVER_PYTHON = os.environ.get(SERVER_PYTHON_VAR) or sys.executable
"""The interpreter of every server process these tests start (see the module docstring)."""


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
        if not Path(self._argv[0]).exists():
            raise RuntimeError(
                f"{SERVER_PYTHON_VAR}={self._argv[0]!r} does not exist: create that "
                "environment first (for the default one: `hatch env create`)"
            )
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
            [SERVER_PYTHON, "-m", "qr_entropy_server", *flags], SERVER_READY, address
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
            [SERVER_PYTHON, str(HERE / "fault_server.py"), "--control", str(control), *flags],
            FAULT_READY,
            address,
        )
        self.control = control

    def set(self, mode: str) -> None:
        """Switch the behaviour for the following requests."""
        self.control.write_text(mode)

    def _note(self, what: str) -> Path:
        return self.control.with_name(f"{self.control.name}.{what}")

    def forget_requests(self) -> None:
        """Forget the last request seen and answered in ``slow`` or ``hang`` mode
        (see :meth:`wait_for_request` and :meth:`wait_for_answer`)."""
        self._note("received").unlink(missing_ok=True)
        self._note("answered").unlink(missing_ok=True)

    def _wait_for(self, what: str, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                text = self._note(what).read_text()
            except FileNotFoundError:
                text = ""
            if text:  # the server writes it in one go; empty: not yet
                return int(text)
            if time.monotonic() > deadline:
                raise TimeoutError(f"the fault server {what} no request in {timeout_s} s")
            time.sleep(0.005)

    def wait_for_request(self, timeout_s: float = 30.0) -> int:
        """Wait until a request arrives in ``slow`` or ``hang`` mode; return its sequence_id."""
        return self._wait_for("received", timeout_s)

    def wait_for_answer(self, timeout_s: float = 30.0) -> int:
        """Wait until a ``slow`` or ``hang`` request is answered (its late reply leaves);
        return its sequence_id."""
        return self._wait_for("answered", timeout_s)


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
def layer(request: pytest.FixtureRequest) -> Iterator[str]:
    """The call layer of the streaming modes under test: grpcio's core layer, or its
    public API (the fallback), chosen with ``public_api_only()``: a grpcio without a
    usable core layer is not installed beside this one. On a grpcio whose core layer
    is not usable (< 1.63), only the public API runs, so ``core`` is skipped."""
    if request.param == "public":
        with public_api_only():
            yield "public"
        return
    if not core_layer_usable():
        pytest.skip("this grpcio's core layer is not usable: the streaming modes run on its API")
    yield "core"


@pytest.fixture
def calls_left() -> Callable[[], int]:
    """``calls_left()``: calls on grpcio's core layer opened since the test began and
    not released yet (a batch still due): each must be read to its end or discarded."""
    before = open_core_calls()
    return lambda: open_core_calls() - before


@pytest.fixture
def past_deadline_ms(make_config: Callable[..., EntropyConfig]) -> Callable[[str, str], float]:
    """``past_deadline_ms(address, mode)``: a deadline for a test that makes a call outlive it.

    Learnt from the machine's present load, not fixed: 10 x the slowest first fetch
    of three fresh sources in ``mode`` (a new channel each, the costliest fetch a
    test makes), at least 300 ms. Such a test's normal fetches then end well within
    it, and the call meant to outlive it is made to wait for far longer (the fault
    server's ``hang``: no reply until the test releases it).
    """

    def learn(address: str, mode: str) -> float:
        slowest = 0.0
        for _ in range(3):
            with QuantumGrpcSource(make_config(address, grpc_mode=mode)) as source:
                start = time.perf_counter()
                source.fetch(16)
                slowest = max(slowest, time.perf_counter() - start)
        return max(300.0, 10_000.0 * slowest)

    return learn


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
            SERVER_PYTHON,
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
            SERVER_PYTHON,
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
