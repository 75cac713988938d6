"""``start_server_process``: the real command, awaited by its ready line, its output kept."""

from __future__ import annotations

import signal
from pathlib import Path

import grpc
import pytest

from qr_entropy_server.proto import entropy_service_pb2 as pb2
from qr_entropy_server.proto import entropy_service_pb2_grpc as pb2_grpc
from qr_entropy_server.server_process import ServerProcessError, start_server_process


def test_the_server_serves_at_the_address_it_printed(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with start_server_process("--address", "127.0.0.1:0", "-v", log=log) as server:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb2_grpc.EntropyServiceStub(channel)
            reply = stub.GetEntropy(pb2.EntropyRequest(bytes_needed=32), timeout=30)
        assert len(reply.data) == 32
        status = server.stop(signal.SIGTERM)
    assert status == 0
    assert server.proc.poll() == 0
    # The reader thread has copied everything up to the exit: the ready line and the logs.
    assert f"qr-entropy-server listening on {server.address}" in server.output()
    assert log.read_text().startswith(server.output().splitlines(keepends=True)[0])


def test_an_api_key_from_env_is_required_by_the_server(tmp_path: Path) -> None:
    sock = tmp_path / "e.sock"
    env = {"QR_SERVER_API_KEY": "k"}
    with start_server_process("--address", f"unix://{sock}", env=env) as server:
        assert server.address == f"unix://{sock}"
        with grpc.insecure_channel(server.address) as channel:
            stub = pb2_grpc.EntropyServiceStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.GetEntropy(pb2.EntropyRequest(bytes_needed=8), timeout=30)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            reply = stub.GetEntropy(
                pb2.EntropyRequest(bytes_needed=8), metadata=(("api-key", "k"),), timeout=30
            )
            assert len(reply.data) == 8


def test_a_server_that_exits_before_it_is_ready_raises_with_its_output() -> None:
    with pytest.raises(ServerProcessError) as failed:
        start_server_process("--backend", "no_such_module:Backend", "--address", "127.0.0.1:0")
    message = str(failed.value)
    assert "was not ready (exit status 2)" in message
    assert "no_such_module" in message  # the server's own error, from its stderr
