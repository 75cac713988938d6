"""Fixtures of the qr-entropy-server tests: in-process servers and server processes."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from qr_entropy_server import EntropyServer, ServerOptions, UrandomBackend
from qr_entropy_server._backends import EntropyBackend

ServerFactory = Callable[..., EntropyServer]

HERE = Path(__file__).resolve().parent
READY_PREFIX = "qr-entropy-server listening on "
# A hang guard, not a speed target: a healthy start takes about a second.
_READY_LIMIT_S = 120.0


@pytest.fixture
def start_server() -> Iterator[ServerFactory]:
    """Start ``EntropyServer(backend, ServerOptions(**options))``; stopped at teardown."""
    servers: list[EntropyServer] = []

    def factory(backend: EntropyBackend | None = None, **options: object) -> EntropyServer:
        options.setdefault("address", "127.0.0.1:0")
        server = EntropyServer(backend or UrandomBackend(), ServerOptions(**options))  # type: ignore[arg-type]
        server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop(0)


@pytest.fixture
def channel_to() -> Iterator[Callable[[EntropyServer], grpc.Channel]]:
    """Open an insecure channel to a server; closed at teardown."""
    channels: list[grpc.Channel] = []

    def factory(server: EntropyServer) -> grpc.Channel:
        channel = grpc.insecure_channel(server.address)
        channels.append(channel)
        return channel

    yield factory
    for channel in channels:
        channel.close()


@dataclass
class ServerProcess:
    """A ``qr-entropy-server`` child process that printed its ready line."""

    proc: subprocess.Popen[str]
    address: str
    stderr: str = field(default="")

    def stop(self, sig: int = signal.SIGTERM, limit_s: float = 60.0) -> int:
        """Send ``sig``, wait for the exit (``limit_s`` is a hang guard), keep stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            _, self.stderr = self.proc.communicate(timeout=limit_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, self.stderr = self.proc.communicate()
            raise AssertionError(f"server ignored signal {sig} for {limit_s} s") from None
        return self.proc.returncode


def server_command(*args: str) -> list[str]:
    """The argument vector that runs the server command with this interpreter."""
    return [sys.executable, "-m", "qr_entropy_server", *args]


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test environment without QR_* variables, with the test backends importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QR_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    return {**env, **(extra or {})}


def launch(*args: str, env: dict[str, str] | None = None, **popen: object) -> ServerProcess:
    """Start the server command and wait for its ready line.

    Raises:
        AssertionError: the process exited (or hung) before it was ready.
    """
    proc = subprocess.Popen(  # type: ignore[call-overload]
        server_command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=server_env(env),
        **popen,
    )
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + _READY_LIMIT_S
    while time.monotonic() < deadline:
        if selector.select(timeout=0.5):
            line = proc.stdout.readline()
            if line.startswith(READY_PREFIX):
                return ServerProcess(proc, line[len(READY_PREFIX) :].strip())
            if not line:
                break
    proc.kill()
    _, stderr = proc.communicate()
    raise AssertionError(f"server not ready (exit {proc.returncode}):\n{stderr}")


def run_command(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the server command to completion (for start-up errors)."""
    return subprocess.run(
        server_command(*args),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=server_env(env),
    )


@pytest.fixture
def spawn() -> Iterator[Callable[..., ServerProcess]]:
    """:func:`launch`, with every process still running killed at teardown."""
    started: list[ServerProcess] = []

    def factory(*args: str, env: dict[str, str] | None = None, **popen: object) -> ServerProcess:
        server = launch(*args, env=env, **popen)
        started.append(server)
        return server

    yield factory
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.communicate()


@pytest.fixture(scope="session")
def launcher() -> Callable[..., ServerProcess]:
    """:func:`launch` for module-scoped fixtures (they stop their server themselves)."""
    return launch


@pytest.fixture(scope="session")
def run_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """:func:`run_command`."""
    return run_command
