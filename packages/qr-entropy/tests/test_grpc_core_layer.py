"""Which call layer the streaming modes run on, and the fallback to grpcio's public API.

The streaming transports drive grpcio's core layer where it is as expected and
its public API where it is not. Against a real gRPC server in this process
(grpcio's own server, generic handlers speaking the ``qr_entropy`` layout):

- the layer is chosen before the first call, by the shape check: on a grpcio
  whose ``segregated_call`` takes no registered-call handle (1.62, before 1.63)
  the fallback is taken at once and logged once, and no call raises TypeError;
- a core layer found changed at the first call (a signature the shape check
  could not see) falls back too, with one warning per process.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from qr_entropy import EntropyConfig
from qr_entropy.grpc import QuantumGrpcSource, _core_call
from qr_entropy.grpc._transports import base, bidi
from qr_entropy.grpc.testing import core_layer_usable, transport_state

SERVICE = "qr_entropy.EntropyService"
STREAMING = ["server_streaming", "bidi_streaming"]


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _request_fields(raw: bytes) -> dict[int, int]:
    """The varint fields of a request (``bytes_needed`` = 1, ``sequence_id`` = 2)."""
    fields: dict[int, int] = {}
    pos = 0
    while pos < len(raw):
        key, pos = raw[pos], pos + 1
        value = shift = 0
        while True:
            byte, pos = raw[pos], pos + 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        fields[key >> 3] = value
    return fields


def _reply(raw: bytes) -> bytes:
    """``sequence_id`` as 8 bytes, repeated to the length asked for, and echoed."""
    fields = _request_fields(raw)
    n, seq = fields.get(1, 0), fields.get(2, 0)
    data = (seq.to_bytes(8, "big") * (n // 8 + 1))[:n]
    return b"\x0a" + _varint(len(data)) + data + b"\x10" + _varint(seq)


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    """A gRPC server in this process: unary, server-streaming and bidi methods."""

    def unary(raw: bytes, context: grpc.ServicerContext) -> bytes:
        return _reply(raw)

    def bidi_stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for raw in requests:
            yield _reply(raw)

    def server_stream(raw: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield _reply(raw)

    handlers: dict[str, Any] = {
        "GetEntropy": grpc.unary_unary_rpc_method_handler(unary),
        "StreamEntropy": grpc.stream_stream_rpc_method_handler(bidi_stream),
        "ServerStreamEntropy": grpc.unary_stream_rpc_method_handler(server_stream),
    }
    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0).wait()


def _config(address: str, mode: str) -> EntropyConfig:
    path = "ServerStreamEntropy" if mode == "server_streaming" else "StreamEntropy"
    return EntropyConfig(
        entropy_source_type="quantum_grpc",
        grpc_server_address=address,
        grpc_mode=mode,  # type: ignore[arg-type]
        grpc_stream_method_path=f"/{SERVICE}/{path}",
        grpc_timeout_ms=10_000.0,
    )


def _assert_own_bytes(data: bytes, sequence_id: int | None) -> None:
    assert sequence_id is not None
    assert data == (sequence_id.to_bytes(8, "big") * 9)[: len(data)]


def _grpcio_minor() -> tuple[int, int]:
    major, minor = grpc.__version__.split(".")[:2]
    return int(major), int(minor)


def test_a_channel_without_the_registered_call_handle_is_not_driven_on_the_core_layer() -> None:
    # grpcio 1.62's channel: segregated_call takes 8 arguments, the client passes 9.
    old = types.SimpleNamespace(_channel=types.SimpleNamespace(segregated_call=print))
    problem = _core_call.core_layer_problem(old)  # type: ignore[arg-type]
    assert problem is not None
    assert "get_registered_call_handle" in problem
    assert "1.63" in problem
    current = types.SimpleNamespace(
        _channel=types.SimpleNamespace(segregated_call=print, get_registered_call_handle=print)
    )
    assert (_core_call.core_layer_problem(current) is None) is _core_call._SHAPE_OK  # type: ignore[arg-type]


def test_the_layer_is_chosen_before_the_first_call_and_a_fallback_is_logged_once(
    address: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # grpcio 1.63 added the registered-call handle the core calls pass.
    usable = _grpcio_minor() >= (1, 63)
    assert core_layer_usable() is usable
    monkeypatch.setattr(base, "_core_fallback_logged", False)
    with caplog.at_level(logging.WARNING, logger=base.__name__):
        for mode in STREAMING * 2:  # four sources, two of each mode
            with QuantumGrpcSource(_config(address, mode)) as source:
                fetches = [source.fetch(64) for _ in range(3)]
                state = transport_state(source)
                assert state is not None
                assert state.on_core is usable
                assert source.health_check()["total_failures"] == 0
            for fetch in fetches:
                _assert_own_bytes(fetch.data, fetch.sequence_id)
    warnings = [r.getMessage() for r in caplog.records if r.name == base.__name__]
    if usable:
        assert warnings == []
    else:
        assert len(warnings) == 1, warnings  # at once, before any call, and once
        assert "public stream API" in warnings[0]
        assert "get_registered_call_handle" in warnings[0]
        assert "TypeError" not in warnings[0]


def test_a_core_layer_changed_at_the_first_call_falls_back_with_one_warning(
    address: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if not core_layer_usable():
        pytest.skip("this grpcio's core layer is not usable: the shape check already refuses it")

    def changed_signature(*args: object) -> object:
        raise TypeError("segregated_call() takes 7 positional arguments")

    monkeypatch.setattr(bidi, "CoreCall", changed_signature)
    monkeypatch.setattr(base, "_core_fallback_logged", False)
    with caplog.at_level(logging.WARNING, logger=base.__name__):
        for _ in range(2):  # two sources: one warning per process
            with QuantumGrpcSource(_config(address, "bidi_streaming")) as source:
                fetches = [source.fetch(64) for _ in range(3)]
                state = transport_state(source)
                assert state is not None
                assert state.on_core is False
                assert state.streams_opened == 1
            for fetch in fetches:
                _assert_own_bytes(fetch.data, fetch.sequence_id)
    warnings = [r.getMessage() for r in caplog.records if r.name == base.__name__]
    assert len(warnings) == 1
    assert "public stream API" in warnings[0]
    assert "segregated_call() takes 7 positional arguments" in warnings[0]
