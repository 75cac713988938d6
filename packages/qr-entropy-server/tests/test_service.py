"""The servicer over real gRPC: answers, errors, API keys, health, reflection."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qr_entropy_server import (
    BackendError,
    EntropyServer,
    ServerConfigError,
    TimingNoiseBackend,
    load_backend,
)
from qr_entropy_server.hardware_template import QRNGHardware
from qr_entropy_server.proto import entropy_service_pb2 as pb2
from qr_entropy_server.proto import entropy_service_pb2_grpc as pb2_grpc

Starter = Callable[..., EntropyServer]
Channel = Callable[[EntropyServer], grpc.Channel]


def test_get_entropy_answers_fresh_bytes_with_provenance(
    start_server: Starter, channel_to: Channel
) -> None:
    server = start_server()
    stub = pb2_grpc.EntropyServiceStub(channel_to(server))
    before = time.time_ns()
    first = stub.GetEntropy(pb2.EntropyRequest(bytes_needed=20480, sequence_id=41))
    second = stub.GetEntropy(pb2.EntropyRequest(bytes_needed=20480, sequence_id=42))
    after = time.time_ns()
    assert len(first.data) == 20480
    assert first.data != second.data
    assert (first.sequence_id, second.sequence_id) == (41, 42)
    assert before <= first.generation_timestamp_ns <= second.generation_timestamp_ns <= after
    assert first.device_id.startswith("urandom@")


def test_stream_answers_each_request_as_it_arrives(
    start_server: Starter, channel_to: Channel
) -> None:
    server = start_server()
    stub = pb2_grpc.EntropyServiceStub(channel_to(server))
    sizes = [1, 100, 20480]
    replies = list(
        stub.StreamEntropy(
            iter(
                [pb2.EntropyRequest(bytes_needed=n, sequence_id=i) for i, n in enumerate(sizes, 1)]
            )
        )
    )
    assert [len(r.data) for r in replies] == sizes
    assert [r.sequence_id for r in replies] == [1, 2, 3]


@pytest.mark.parametrize(
    ("bytes_needed", "code", "text"),
    [
        (0, grpc.StatusCode.INVALID_ARGUMENT, "bytes_needed must be > 0, got 0"),
        (-5, grpc.StatusCode.INVALID_ARGUMENT, "got -5"),
        (1025, grpc.StatusCode.RESOURCE_EXHAUSTED, "exceeds this server's --max-bytes=1024"),
    ],
)
def test_bad_byte_counts(
    start_server: Starter, channel_to: Channel, bytes_needed: int, code: grpc.StatusCode, text: str
) -> None:
    server = start_server(max_bytes=1024)
    stub = pb2_grpc.EntropyServiceStub(channel_to(server))
    with pytest.raises(grpc.RpcError) as info:
        stub.GetEntropy(pb2.EntropyRequest(bytes_needed=bytes_needed, sequence_id=1))
    assert info.value.code() is code
    assert text in str(info.value.details())
    assert len(stub.GetEntropy(pb2.EntropyRequest(bytes_needed=1024)).data) == 1024


def test_api_key_is_required_except_for_health(start_server: Starter, channel_to: Channel) -> None:
    server = start_server(api_key="k-123", api_key_header="x-key")
    channel = channel_to(server)
    stub = pb2_grpc.EntropyServiceStub(channel)
    request = pb2.EntropyRequest(bytes_needed=8, sequence_id=1)
    for metadata in (None, (("x-key", "wrong"),), (("api-key", "k-123"),)):
        with pytest.raises(grpc.RpcError) as info:
            stub.GetEntropy(request, metadata=metadata)
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as info:
        list(stub.StreamEntropy(iter([request])))
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert len(stub.GetEntropy(request, metadata=(("x-key", "k-123"),)).data) == 8
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_health_reports_the_service(start_server: Starter, channel_to: Channel) -> None:
    server = start_server()
    health = health_pb2_grpc.HealthStub(channel_to(server))
    reply = health.Check(health_pb2.HealthCheckRequest(service="qr_entropy.EntropyService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_service(start_server: Starter, channel_to: Channel) -> None:
    pytest.importorskip("grpc_reflection")
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    server = start_server(reflection=True)
    stub = reflection_pb2_grpc.ServerReflectionStub(channel_to(server))
    replies = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert "qr_entropy.EntropyService" in names


def test_unix_socket(start_server: Starter, tmp_path: Path) -> None:
    sock = tmp_path / "qrng.sock"
    server = start_server(address=f"unix://{sock}")
    assert sock.exists()
    with grpc.insecure_channel(f"unix://{sock}") as channel:
        reply = pb2_grpc.EntropyServiceStub(channel).GetEntropy(
            pb2.EntropyRequest(bytes_needed=64, sequence_id=9)
        )
    assert (len(reply.data), reply.sequence_id) == (64, 9)
    assert server.address == f"unix://{sock}"


def test_short_backend_reply_is_an_internal_error(
    start_server: Starter, channel_to: Channel
) -> None:
    class Short:
        device_id = "short"

        def generate(self, n: int) -> bytes:
            return os.urandom(n - 1)

        def close(self) -> None:
            pass

    server = start_server(Short())
    with pytest.raises(grpc.RpcError) as info:
        pb2_grpc.EntropyServiceStub(channel_to(server)).GetEntropy(
            pb2.EntropyRequest(bytes_needed=10)
        )
    assert info.value.code() is grpc.StatusCode.INTERNAL
    assert "backend returned 9 bytes, 10 were requested" in str(info.value.details())


def test_timing_noise_backend_returns_the_count_and_varies() -> None:
    backend = TimingNoiseBackend()
    a, b = backend.generate(64), backend.generate(64)
    assert len(a) == len(b) == 64
    assert a != b  # 512 timing bits identical twice would mean no jitter at all


def test_hardware_template_serves_through_its_library_and_reopens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QR_HARDWARE_DEVICE", "SN-1234")
    backend = load_backend("qr_entropy_server.hardware_template:QRNGHardware")
    assert isinstance(backend, QRNGHardware)
    assert backend.reopens is True
    assert len(backend.generate(5000)) == 5000
    assert backend.device_id == "vendor-qrng:SN-1234"
    backend.close()  # as after a failure: the next generate opens the device again
    assert len(backend.generate(16)) == 16
    backend.close()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("quantum", "expected one of"),
        ("no_such_module_xyz:Thing", "cannot import module 'no_such_module_xyz'"),
        ("qr_entropy_server.hardware_template:Nope", "has no 'Nope'"),
        ("collections:OrderedDict", "needs generate"),
    ],
)
def test_bad_backend_specs_are_named(spec: str, message: str) -> None:
    with pytest.raises(BackendError, match=message):
        load_backend(spec)


def test_template_constructor_failure_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QR_HARDWARE_DEVICE", "")
    with pytest.raises(BackendError, match="constructor failed: no device selected"):
        load_backend("qr_entropy_server.hardware_template:QRNGHardware")


def test_tls_options_are_validated(start_server: Starter, tmp_path: Path) -> None:
    with pytest.raises(ServerConfigError, match="--tls-cert and --tls-key must be given together"):
        start_server(tls_cert=tmp_path / "c.pem")
    with pytest.raises(ServerConfigError, match="--tls-client-ca needs"):
        start_server(tls_client_ca=tmp_path / "ca.pem")
    with pytest.raises(ServerConfigError, match=r"--tls-key .*cannot be read"):
        start_server(tls_cert=tmp_path / "c.pem", tls_key=tmp_path / "k.pem")
    with pytest.raises(ServerConfigError, match="--max-bytes must be > 0"):
        start_server(max_bytes=0)
