"""Fail closed on configuration (issue 26, item 3) against real server processes.

A failure no retry can fix (a wrong API key, a CA that did not sign the server's
certificate, a certificate for another host, TLS against a plaintext port, a
method or a response layout the server does not speak) is a
``SourceConfigurationError``: the start-up probe raises it naming the address and
the cause, and during a run the fallback serves only where the mode allows, with
``fallback_reason == "configuration"`` and an ERROR in the log. A server that is
down is transient: the probe reports it, and fetches fall back as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qr_entropy import (
    CONFIGURATION_REASON,
    EntropyConfig,
    SourceConfigurationError,
    build_source,
)
from qr_entropy.grpc import GrpcConfigurationError, QuantumGrpcSource

from .tls_certificates import write_certificates

MODES = ["unary", "server_streaming", "bidi_streaming"]
Config = Callable[..., EntropyConfig]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_server(servers: Callable[..., Any], certs: dict[str, Path]) -> str:
    flags = ("--tls-cert", str(certs["server_cert"]), "--tls-key", str(certs["server_key"]))
    return str(servers(*flags).address)


def _tls(certs: dict[str, Path], **fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "grpc_tls": True,
        "grpc_tls_ca_file": str(certs["ca_cert"]),
        "grpc_tls_server_name": "qrng.test",
        "grpc_retry_count": 0,
    }
    return {**base, **fields}


@pytest.mark.parametrize("mode", MODES)
def test_a_wrong_api_key_fails_the_probe_naming_address_and_cause(
    mode: str, servers: Callable[..., Any], make_config: Config
) -> None:
    address = servers("--api-key", "the-right-key").address
    wrong = make_config(address, grpc_mode=mode, grpc_api_key="not-the-key")
    with QuantumGrpcSource(wrong) as source, pytest.raises(GrpcConfigurationError) as info:
        source.probe()
    error = info.value
    assert isinstance(error, SourceConfigurationError)
    assert (error.code, error.address) == ("UNAUTHENTICATED", address)
    assert "rejected the API key" in error.cause
    assert str(error).startswith(f"UNAUTHENTICATED from {address} (")
    assert "not-the-key" not in str(error)
    right = make_config(address, grpc_mode=mode, grpc_api_key="the-right-key")
    with QuantumGrpcSource(right) as source:
        result = source.probe()
    assert result.reachable
    assert result.address == address
    assert result.device_id.startswith("urandom@")
    assert result.device_bytes_per_second is not None
    assert result.device_bytes_per_second > 0


@pytest.mark.parametrize("mode", MODES)
def test_a_wrong_ca_is_configuration_class_not_a_dead_server(
    mode: str, tls_server: str, certs: dict[str, Path], make_config: Config
) -> None:
    # grpcio reports a failed verification as UNAVAILABLE, as it does a dead server.
    other_ca = str(certs["other_ca_cert"])
    wrong = make_config(tls_server, **_tls(certs, grpc_mode=mode, grpc_tls_ca_file=other_ca))
    with QuantumGrpcSource(wrong) as source, pytest.raises(GrpcConfigurationError) as info:
        source.probe()
    assert info.value.code == "UNAVAILABLE"
    assert info.value.address == tls_server
    assert info.value.cause.startswith("TLS certificate verification failed")
    assert "QR_GRPC_TLS_CA_FILE" in info.value.cause
    right = make_config(tls_server, **_tls(certs, grpc_mode=mode))
    with QuantumGrpcSource(right) as source:
        assert source.probe().reachable


def test_a_wrong_ca_during_a_run_falls_back_with_reason_configuration(
    tls_server: str, certs: dict[str, Path], make_config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = make_config(
        tls_server,
        **_tls(certs, grpc_tls_ca_file=str(certs["other_ca_cert"])),
        fallback_mode="system",
    )
    with (
        caplog.at_level(logging.ERROR, logger="qr_entropy._fallback"),
        build_source(wrong) as source,
    ):
        fetches = [source.fetch(32) for _ in range(5)]  # the circuit opens after three
    assert all(f.fallback and f.source == "system" for f in fetches)
    assert {f.fallback_reason for f in fetches} == {CONFIGURATION_REASON}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "TLS certificate verification failed" in errors[0]
    assert tls_server in errors[0]


def test_a_certificate_for_another_host_is_configuration_class(
    tls_server: str, certs: dict[str, Path], make_config: Config
) -> None:
    other = make_config(tls_server, **_tls(certs, grpc_tls_server_name="elsewhere.test"))
    with QuantumGrpcSource(other) as source, pytest.raises(GrpcConfigurationError) as info:
        source.probe()
    assert info.value.cause.startswith("TLS host name check failed")


def test_tls_against_a_plaintext_port_is_configuration_class(
    servers: Callable[..., Any], certs: dict[str, Path], make_config: Config
) -> None:
    address = servers().address
    with (
        QuantumGrpcSource(make_config(address, **_tls(certs))) as source,
        pytest.raises(GrpcConfigurationError, match="does not speak TLS"),
    ):
        source.probe()


def test_a_method_the_server_does_not_have_is_configuration_class(
    servers: Callable[..., Any], make_config: Config
) -> None:
    address = servers().address
    config = make_config(address, grpc_method_path="/qr_entropy.EntropyService/GetEntropee")
    with QuantumGrpcSource(config) as source, pytest.raises(GrpcConfigurationError) as info:
        source.probe()
    assert info.value.code == "UNIMPLEMENTED"
    assert "GetEntropee" in info.value.cause


def test_a_response_layout_the_server_does_not_speak_is_configuration_class(
    servers: Callable[..., Any], make_config: Config
) -> None:
    address = servers().address
    config = make_config(address, grpc_response_layout="qrng")  # the reference server is not
    with QuantumGrpcSource(config) as source, pytest.raises(GrpcConfigurationError) as info:
        source.probe()
    assert info.value.code is None
    assert "does not speak response layout 'qrng'" in info.value.cause


def test_a_server_that_is_down_is_transient(
    servers: Callable[..., Any], make_config: Config
) -> None:
    server = servers()
    address = server.address
    server.stop()
    config = make_config(address, fallback_mode="system", grpc_retry_count=0)
    with QuantumGrpcSource(config) as source:
        result = source.probe()
    assert (result.reachable, result.address) == (False, address)
    assert "UNAVAILABLE" in result.detail
    with build_source(config) as source:
        fetch = source.fetch(16)
    assert fetch.fallback
    assert fetch.fallback_reason != CONFIGURATION_REASON
    assert "UNAVAILABLE" in (fetch.fallback_reason or "")


@pytest.mark.parametrize("mode", MODES)
def test_restarting_the_server_with_another_key_falls_back_with_reason_configuration(
    mode: str,
    servers: Callable[..., Any],
    make_config: Config,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = servers("--api-key", "key-one")
    config = make_config(server.address, grpc_mode=mode, grpc_api_key="key-one")
    with build_source(config.model_copy(update={"fallback_mode": "system"})) as source:
        first = source.fetch(64)
        assert not first.fallback
        assert first.read_started_ns is not None
        server.stop()
        servers("--api-key", "key-two", address=server.address)
        with caplog.at_level(logging.ERROR, logger="qr_entropy._fallback"):
            fetches = [source.fetch(64) for _ in range(8)]
        health = source.health_check()
    assert all(f.fallback for f in fetches)
    # The first fetch may meet the restart itself (UNAVAILABLE, transient) on its old
    # channel; from the new server on, every fetch is refused for its key, also once the
    # circuit has opened on those refusals.
    assert fetches[-1].fallback_reason == CONFIGURATION_REASON
    assert {f.fallback_reason for f in fetches[2:]} == {CONFIGURATION_REASON}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "UNAUTHENTICATED" in errors[0]
    assert "key-one" not in errors[0]
    primary = health["primary"]
    assert isinstance(primary, dict)
    assert "UNAUTHENTICATED" in str(primary["configuration_error"])


def test_in_error_mode_the_configuration_error_is_raised(
    servers: Callable[..., Any], make_config: Config
) -> None:
    address = servers("--api-key", "k").address
    with build_source(make_config(address, grpc_api_key="other")) as source:
        with pytest.raises(SourceConfigurationError, match="UNAUTHENTICATED"):
            source.fetch(8)
        with pytest.raises(SourceConfigurationError):
            source.probe()
