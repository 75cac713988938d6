"""The qr-entropy-server command as a real process: readiness, shutdown, errors, systemd."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

from qr_entropy_server.cli import READY_PREFIX, build_parser
from qr_entropy_server.proto import entropy_service_pb2 as pb2
from qr_entropy_server.proto import entropy_service_pb2_grpc as pb2_grpc

HERE = Path(__file__).resolve().parent
SYSTEMD = HERE.parent / "systemd"


def spawn(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    full_env = {**os.environ, "PYTHONPATH": str(HERE), **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "qr_entropy_server", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith(READY_PREFIX), line + (proc.stderr.read() if proc.stderr else "")
    return proc, line[len(READY_PREFIX) :].strip()


def test_defaults_match_the_spec() -> None:
    args = build_parser().parse_args([])
    assert (args.port, args.backend, args.max_bytes, args.api_key_header) == (
        50051,
        "urandom",
        1 << 20,
        "api-key",
    )


def test_sigterm_drains_an_in_flight_call() -> None:
    proc, address = spawn(
        "--address",
        "127.0.0.1:0",
        "--backend",
        "slow_backend:SlowBackend",
        env={"QR_TEST_DELAY_S": "1.0"},
    )
    result: dict[str, object] = {}

    def call() -> None:
        with grpc.insecure_channel(address) as channel:
            stub = pb2_grpc.EntropyServiceStub(channel)
            try:
                result["reply"] = stub.GetEntropy(
                    pb2.EntropyRequest(bytes_needed=32, sequence_id=5)
                )
            except grpc.RpcError as exc:  # pragma: no cover - the assertion below reports it
                result["error"] = exc

    worker = threading.Thread(target=call)
    worker.start()
    # Wait until the call is inside the backend, then ask the server to stop.
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
    threading.Event().wait(0.4)
    proc.send_signal(signal.SIGTERM)
    worker.join(15)
    assert proc.wait(15) == 0
    reply = result.get("reply")
    assert isinstance(reply, pb2.EntropyResponse), result
    assert (len(reply.data), reply.sequence_id) == (32, 5)


def test_sigint_stops_the_server_cleanly() -> None:
    proc, _ = spawn("--address", "127.0.0.1:0")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(15) == 0


def test_configuration_errors_exit_2_with_a_message(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "qr_entropy_server",
            "--address",
            "127.0.0.1:0",
            "--backend",
            "nope:Nope",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "cannot import module 'nope'" in done.stderr


def test_reflection_without_the_extra_is_a_clear_error() -> None:
    # Hide grpc_reflection in the child process as if the extra were not installed.
    code = (
        "import sys; sys.modules['grpc_reflection'] = None; "
        "from qr_entropy_server.cli import main; "
        "sys.exit(main(['--address', '127.0.0.1:0', '--reflection']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "pip install 'qr-entropy-server[reflection]'" in done.stderr


def test_api_key_from_the_environment() -> None:
    proc, address = spawn("--address", "127.0.0.1:0", env={"QR_SERVER_API_KEY": "env-key"})
    try:
        with grpc.insecure_channel(address) as channel:
            stub = pb2_grpc.EntropyServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.GetEntropy(pb2.EntropyRequest(bytes_needed=4))
            assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
            reply = stub.GetEntropy(
                pb2.EntropyRequest(bytes_needed=4), metadata=(("api-key", "env-key"),)
            )
            assert len(reply.data) == 4
    finally:
        proc.terminate()
        proc.wait(15)


def test_systemd_unit_keeps_devices_visible() -> None:
    unit = (SYSTEMD / "qr-entropy-server.service").read_text()
    directives = {
        line.split("=", 1)[0].strip()
        for line in unit.splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    assert "PrivateDevices" not in directives
    assert "DevicePolicy" not in directives
    assert "DeviceAllow" not in directives
    assert {"ExecStart", "EnvironmentFile", "KillSignal"} <= directives
    env = (SYSTEMD / "qr-entropy-server.env").read_text()
    for name in ("QR_SERVER_BACKEND", "QR_SERVER_ADDRESS", "QR_SERVER_MAX_BYTES"):
        assert f"${{{name}}}" in unit
        assert f"{name}=" in env


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (SYSTEMD / "qr-entropy-server.service").read_text()
    # verify insists that ExecStart exists on this machine.
    copy = tmp_path / "qr-entropy-server.service"
    copy.write_text(
        unit.replace("/usr/local/bin/qr-entropy-server", shutil.which("true") or "/bin/true")
    )
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr
