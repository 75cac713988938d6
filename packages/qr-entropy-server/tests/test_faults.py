"""Failing hardware and hostile input against real servers: status codes, health, logs, exit.

The server processes load ``faulty_backend:FaultyBackend`` (this folder is on
their PYTHONPATH); ``QR_TEST_FAULT`` picks how it misbehaves.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qr_entropy_server import EntropyServer
from qr_entropy_server.proto import entropy_service_pb2 as pb2
from qr_entropy_server.proto import entropy_service_pb2_grpc as pb2_grpc

Spawn = Callable[..., Any]
Starter = Callable[..., EntropyServer]
Channel = Callable[[EntropyServer], grpc.Channel]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
FAULTY = ("--backend", "faulty_backend:FaultyBackend")
GUARD_S = 60.0  # hang guard per call


def _raw(channel: grpc.Channel) -> grpc.UnaryUnaryMultiCallable[bytes, bytes]:
    """GetEntropy with the request sent as given bytes."""
    return channel.unary_unary("/qr_entropy.EntropyService/GetEntropy", None, None)


def _health(channel: grpc.Channel) -> int:
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="qr_entropy.EntropyService"), timeout=GUARD_S
    )
    return int(reply.status)


def test_hung_backend_fails_calls_flips_health_and_cannot_hold_sigterm(spawn: Spawn) -> None:
    # The first two generate calls never return: the start-up probe and one client call.
    server = spawn(
        *FAULTY, "--address", "127.0.0.1:0", "--backend-timeout", "0.5", "--grace", "1",
        env={"QR_TEST_FAULT": "hang:2"},
    )  # fmt: skip
    with grpc.insecure_channel(server.address) as channel:
        stub = pb2_grpc.EntropyServiceStub(channel)
        assert _health(channel) == NOT_SERVING  # the probe never answered
        with pytest.raises(grpc.RpcError) as info:
            stub.GetEntropy(pb2.EntropyRequest(bytes_needed=32, sequence_id=1), timeout=GUARD_S)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "--backend-timeout=0.5 s" in str(info.value.details())
        assert _health(channel) == NOT_SERVING
        reply = stub.GetEntropy(pb2.EntropyRequest(bytes_needed=32, sequence_id=2), timeout=GUARD_S)
        assert (len(reply.data), reply.sequence_id) == (32, 2)
        assert _health(channel) == SERVING  # a generate succeeded again
    # Two threads are still stuck in the backend; SIGTERM must not wait for them.
    assert server.stop() == 0, server.stderr
    timeouts = [line for line in server.stderr.splitlines() if "--backend-timeout" in line]
    assert len(timeouts) == 1, server.stderr  # the second one was counted, not printed
    assert "1 more backend-timeout warnings were suppressed" in server.stderr


def test_close_that_raises_is_logged_and_exit_stays_0(spawn: Spawn) -> None:
    server = spawn(*FAULTY, "--address", "127.0.0.1:0", env={"QR_TEST_FAULT": "close-raises"})
    assert server.stop() == 0
    assert "backend close() failed: OSError: device already gone" in server.stderr
    assert "Traceback" not in server.stderr


class _Returns:
    """A backend whose ``generate`` returns a fixed kind of wrong value."""

    def __init__(self, make: Callable[[int], object]) -> None:
        self.device_id = "wrong"
        self._make = make

    def generate(self, n: int) -> bytes:
        return self._make(n)  # type: ignore[return-value]

    def close(self) -> None:
        pass


def _raise(n: int) -> object:
    raise OSError("device unplugged")


@pytest.mark.parametrize(
    ("make", "text"),
    [
        (lambda n: "x" * n, "backend returned str, not bytes"),
        (lambda n: None, "backend returned NoneType, not bytes"),
        (lambda n: os.urandom(n + 1), "backend returned 11 bytes, 10 were requested"),
        (lambda n: b"", "backend returned 0 bytes, 10 were requested"),
        (_raise, "backend failed: OSError"),
    ],
    ids=["str", "none", "long", "empty", "raises"],
)
def test_every_backend_misbehaviour_is_internal(
    start_server: Starter, channel_to: Channel, make: Callable[[int], object], text: str
) -> None:
    server = start_server(_Returns(make))
    channel = channel_to(server)
    with pytest.raises(grpc.RpcError) as unary:
        pb2_grpc.EntropyServiceStub(channel).GetEntropy(pb2.EntropyRequest(bytes_needed=10))
    with pytest.raises(grpc.RpcError) as stream:
        list(
            pb2_grpc.EntropyServiceStub(channel).StreamEntropy(
                iter([pb2.EntropyRequest(bytes_needed=10)])
            )
        )
    for error in (unary.value, stream.value):
        assert error.code() is grpc.StatusCode.INTERNAL
        assert text in str(error.details())
    assert _health(channel) == NOT_SERVING


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@pytest.mark.parametrize(
    ("bytes_needed", "code", "text"),
    [
        (2**32 + 5, grpc.StatusCode.INVALID_ARGUMENT, "bytes_needed=4294967301 is outside int32"),
        (2**31, grpc.StatusCode.INVALID_ARGUMENT, "bytes_needed=2147483648 is outside int32"),
        (-(2**31) - 1, grpc.StatusCode.INVALID_ARGUMENT, "=-2147483649 is outside int32"),
        (2**31 - 1, grpc.StatusCode.RESOURCE_EXHAUSTED, "bytes_needed=2147483647 exceeds"),
        (-(2**31), grpc.StatusCode.INVALID_ARGUMENT, "must be > 0, got -2147483648"),
        (-1, grpc.StatusCode.INVALID_ARGUMENT, "must be > 0, got -1"),
    ],
)
def test_bytes_needed_outside_int32_is_invalid_argument(
    start_server: Starter, channel_to: Channel, bytes_needed: int, code: grpc.StatusCode, text: str
) -> None:
    server = start_server()
    raw = _raw(channel_to(server))
    # Field 1 as a raw varint, as a client with a 64-bit field would send it.
    with pytest.raises(grpc.RpcError) as info:
        raw(b"\x08" + _varint(bytes_needed) + b"\x10\x07")
    assert info.value.code() is code
    assert text in str(info.value.details())


def test_malformed_requests_and_a_failing_backend_log_one_line_each(spawn: Spawn) -> None:
    server = spawn(*FAULTY, "--address", "127.0.0.1:0", env={"QR_TEST_FAULT": "raise"})
    with grpc.insecure_channel(server.address) as channel:
        raw = _raw(channel)
        for _ in range(200):
            with pytest.raises(grpc.RpcError) as info:
                raw(b"\x08\xff", timeout=GUARD_S)  # varint cut short
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details() == "malformed EntropyRequest: cannot be parsed"
        stub = pb2_grpc.EntropyServiceStub(channel)
        for _ in range(50):
            with pytest.raises(grpc.RpcError) as info:
                stub.GetEntropy(pb2.EntropyRequest(bytes_needed=8), timeout=GUARD_S)
            assert info.value.code() is grpc.StatusCode.INTERNAL
    assert server.stop() == 0
    lines = server.stderr.splitlines()
    assert "Traceback" not in server.stderr
    assert sum("malformed EntropyRequest" in line for line in lines) == 1, server.stderr
    assert sum("failed to generate" in line for line in lines) == 1, server.stderr
    assert all(" WARNING " in line for line in lines), server.stderr
    assert "199 more malformed-request warnings were suppressed" in server.stderr
    # 50 client calls plus the start-up probe failed; one line stood for all 51.
    assert "50 more backend-error:OSError warnings were suppressed" in server.stderr
    assert len(lines) < 10, server.stderr


def test_tracebacks_only_with_vv(spawn: Spawn) -> None:
    server = spawn(*FAULTY, "--address", "127.0.0.1:0", "-vv", env={"QR_TEST_FAULT": "raise"})
    with grpc.insecure_channel(server.address) as channel, pytest.raises(grpc.RpcError):
        _raw(channel)(b"\x08\xff", timeout=GUARD_S)
    assert server.stop() == 0
    assert "Traceback" in server.stderr
    assert "OSError: device unplugged" in server.stderr
    assert "DecodeError" in server.stderr
