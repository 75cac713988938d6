"""Issue 12, item 1: a server of another protocol (``qrng.QuantumRNG``) through a response layout.

The server is built from its own ``.proto``, whose stubs this module generates
with grpcio-tools into a temporary directory, and runs as its own process
(``qrng_server.py``). The client reaches it through the environment, as a user
would: ``QR_GRPC_METHOD_PATH``, ``QR_GRPC_RESPONSE_LAYOUT=qrng`` and an API key.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from qr_entropy import EntropyConfig, build_source
from qr_entropy.grpc import GrpcEntropyError, QuantumGrpcSource, WireFormatError

API_KEY = "qrng-test-key"  # what the qrng_server fixture requires
N = 20480


def _environment(monkeypatch: pytest.MonkeyPatch, address: str, layout: str) -> None:
    for name, value in {
        "QR_ENTROPY_SOURCE_TYPE": "quantum_grpc",
        "QR_GRPC_SERVER_ADDRESS": address,
        "QR_GRPC_MODE": "unary",
        "QR_GRPC_METHOD_PATH": "/qrng.QuantumRNG/GetRandomBytes",
        "QR_GRPC_STREAM_METHOD_PATH": "",
        "QR_GRPC_RESPONSE_LAYOUT": layout,
        "QR_GRPC_API_KEY": API_KEY,
        "QR_GRPC_API_KEY_HEADER": "x-api-key",
        "QR_FALLBACK_MODE": "error",
    }.items():
        monkeypatch.setenv(name, value)


def test_qrng_server_serves_fetches_with_its_timestamp_and_device(
    qrng_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _environment(monkeypatch, qrng_server.address, "qrng")
    with build_source(EntropyConfig()) as source:
        start_ns = time.time_ns()
        fetches = [source.fetch(N) for _ in range(5)]
        big = source.fetch(3 * 1024 * 1024 + 1)  # split into four requests (1 MiB each)
        health = source.primary.health_check()
    assert {len(f.data) for f in fetches} == {N}
    assert len({f.data for f in fetches}) == 5  # fresh bytes each time
    for fetch in [*fetches, big]:
        assert not fetch.fallback
        assert fetch.source == "quantum_grpc"
        assert fetch.device_id == "qrng-test-device"
        assert fetch.generated_ns is not None
        # Microseconds from the server, converted to ns: within the fetch (1 us of rounding).
        assert fetch.requested_ns - 1000 <= fetch.generated_ns <= fetch.received_ns
        assert fetch.requested_ns >= start_ns
    assert len(big.data) == 3 * 1024 * 1024 + 1
    assert big.response_count == 4
    assert health["authenticated"] is True
    # A learnt deadline may run out under load; it is retried at the configured timeout.
    assert health["total_failures"] == health["total_timeouts"], health["last_error"]


def test_bytes_only_layout_records_time_and_device_as_absent(
    qrng_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _environment(monkeypatch, qrng_server.address, "bytes_only")
    with QuantumGrpcSource(EntropyConfig()) as source:
        fetch = source.fetch(64)
    assert len(fetch.data) == 64
    assert fetch.generated_ns is None  # never invented
    assert fetch.device_id == ""


def test_default_layout_against_qrng_names_the_field_layout_and_wire_type(
    qrng_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's report: field 3 of a qrng reply is a string where qr_entropy has a varint."""
    _environment(monkeypatch, qrng_server.address, "qr_entropy")
    monkeypatch.setenv("QR_GRPC_RETRY_COUNT", "0")
    with QuantumGrpcSource(EntropyConfig()) as source, pytest.raises(WireFormatError) as info:
        source.fetch(64)
    message = str(info.value)
    assert "field 3 (timestamp_ns) of response layout 'qr_entropy'" in message
    assert "arrived as length-delimited, expected a varint" in message
    assert "QR_GRPC_RESPONSE_LAYOUT" in message


def test_a_wrong_api_key_is_refused_once_not_retried(
    qrng_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _environment(monkeypatch, qrng_server.address, "qrng")
    monkeypatch.setenv("QR_GRPC_API_KEY", "wrong")
    with QuantumGrpcSource(EntropyConfig()) as source:
        with pytest.raises(GrpcEntropyError) as info:
            source.fetch(64)
        failures = source.health_check()["total_failures"]
    assert info.value.code == "UNAUTHENTICATED"
    assert not info.value.retryable
    assert failures == 1
    assert "wrong" not in str(info.value)
