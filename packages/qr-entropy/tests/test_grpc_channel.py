"""From EntropyConfig to channel settings: validation, TLS files, secrets, modes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from qr_entropy import ConfigError, EntropyConfig, EntropyUnavailableError, get_source_class
from qr_entropy.grpc import QuantumGrpcSource
from qr_entropy.grpc._channel import ChannelSettings, unix_socket_path

from .certificates import write_certificates

SECRET = "s3cr3t-key-value"


def test_registered_as_quantum_grpc() -> None:
    assert get_source_class("quantum_grpc") is QuantumGrpcSource


def test_api_key_goes_into_metadata_and_never_into_repr_or_health() -> None:
    config = EntropyConfig(grpc_api_key=SECRET, grpc_api_key_header="x-api-key")
    settings = ChannelSettings.from_config(config)
    assert settings.metadata == (("x-api-key", SECRET),)
    assert SECRET not in repr(settings)
    with QuantumGrpcSource(config) as source:
        health = source.health_check()
    assert health["authenticated"] is True
    assert SECRET not in repr(health)


def test_no_key_means_no_metadata() -> None:
    settings = ChannelSettings.from_config(EntropyConfig())
    assert settings.metadata == ()
    assert not settings.authenticated


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("grpc_method_path", "GetEntropy", "grpc_method_path='GetEntropy'"),
        ("grpc_method_path", "/svc/", "expected '/package.Service/Method'"),
        ("grpc_stream_method_path", "/a/b/c", "grpc_stream_method_path"),
    ],
)
def test_bad_settings_name_the_field(field: str, value: str, message: str) -> None:
    config = EntropyConfig(**{field: value})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message):
        ChannelSettings.from_config(config)


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, Path]:
    return write_certificates(tmp_path)


def test_tls_files_without_tls_are_refused(pem: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="grpc_tls is false"):
        ChannelSettings.from_config(EntropyConfig(grpc_tls_ca_file=str(pem["ca_cert"])))


def test_client_cert_needs_its_key(pem: dict[str, Path]) -> None:
    config = EntropyConfig(grpc_tls=True, grpc_tls_cert_file=str(pem["client_cert"]))
    with pytest.raises(ConfigError, match="must be set together"):
        ChannelSettings.from_config(config)


def test_unreadable_ca_file_is_refused_when_the_settings_load(tmp_path: Path) -> None:
    missing = tmp_path / "missing-ca.pem"
    with pytest.raises(ValidationError, match=r"grpc_tls_ca_file[\s\S]*cannot be read"):
        EntropyConfig(grpc_tls=True, grpc_tls_ca_file=str(missing))


def test_tls_settings_become_channel_options(pem: dict[str, Path]) -> None:
    ca = pem["ca_cert"]
    config = EntropyConfig(
        grpc_tls=True, grpc_tls_ca_file=str(ca), grpc_tls_server_name="qrng.example"
    )
    settings = ChannelSettings.from_config(config)
    assert settings.root_certificates == ca.read_bytes()
    assert ("grpc.ssl_target_name_override", "qrng.example") in settings.options()


def test_receive_limit_follows_max_request_bytes() -> None:
    small = dict(ChannelSettings.from_config(EntropyConfig()).options())
    big = dict(ChannelSettings.from_config(EntropyConfig(grpc_max_request_bytes=8 << 20)).options())
    assert small["grpc.max_receive_message_length"] == 4 << 20
    assert big["grpc.max_receive_message_length"] > 8 << 20


@pytest.mark.parametrize(
    ("address", "path"),
    [("unix:///run/q.sock", "/run/q.sock"), ("unix:rel.sock", "rel.sock"), ("h:1", None)],
)
def test_unix_socket_path(address: str, path: str | None) -> None:
    assert unix_socket_path(address) == path


def test_missing_socket_file_is_reported_without_a_call(tmp_path: Path) -> None:
    sock = tmp_path / "absent.sock"
    config = EntropyConfig(
        grpc_server_address=f"unix://{sock}", grpc_retry_count=0, cb_max_consecutive_failures=5
    )
    with (
        QuantumGrpcSource(config) as source,
        pytest.raises(EntropyUnavailableError, match=r"absent\.sock.*does not exist"),
    ):
        source.fetch(16)


def test_empty_stream_path_disables_streaming_once(caplog: pytest.LogCaptureFixture) -> None:
    config = EntropyConfig(grpc_mode="bidi_streaming", grpc_stream_method_path="")
    with caplog.at_level(logging.WARNING), QuantumGrpcSource(config) as source:
        assert source.mode == "unary"
        health = source.health_check()
    assert health["streaming_enabled"] is False
    assert health["configured_mode"] == "bidi_streaming"
    assert sum("streaming disabled" in r.getMessage() for r in caplog.records) == 1


def test_closed_source_refuses_fetches() -> None:
    source = QuantumGrpcSource(EntropyConfig())
    source.close()
    source.close()
    assert not source.is_available
    with pytest.raises(EntropyUnavailableError, match="closed"):
        source.fetch(8)


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        ("UNAVAILABLE", True),
        ("DEADLINE_EXCEEDED", True),
        ("INTERNAL", False),
        ("UNKNOWN", False),
        ("NOT_FOUND", False),
        ("UNAUTHENTICATED", False),
        ("RESOURCE_EXHAUSTED", False),
    ],
)
def test_retries_follow_an_allow_list_of_status_codes(code: str, retryable: bool) -> None:
    import grpc
    from grpc import aio

    from qr_entropy.grpc._replies import map_rpc_error

    settings = ChannelSettings.from_config(EntropyConfig())
    status = grpc.StatusCode[code]
    error = aio.AioRpcError(status, aio.Metadata(), aio.Metadata(), details="from the test")
    mapped = map_rpc_error(error, "/x.Y/Z", settings)
    assert mapped.code == code
    assert mapped.retryable is retryable
    assert mapped.timed_out is (code == "DEADLINE_EXCEEDED")


@pytest.mark.parametrize(
    ("code", "configuration"),
    [
        ("UNAUTHENTICATED", True),
        ("PERMISSION_DENIED", True),
        ("UNIMPLEMENTED", True),
        ("INVALID_ARGUMENT", True),
        ("UNAVAILABLE", False),
        ("DEADLINE_EXCEEDED", False),
        ("INTERNAL", False),
        ("RESOURCE_EXHAUSTED", False),
    ],
)
def test_configuration_class_status_codes(code: str, configuration: bool) -> None:
    import grpc

    from qr_entropy import SourceConfigurationError
    from qr_entropy.grpc import GrpcConfigurationError
    from qr_entropy.grpc._replies import status_error

    settings = ChannelSettings.from_config(EntropyConfig(grpc_server_address="qrng:7"))
    error = status_error(grpc.StatusCode[code], "from the test", "/x.Y/Z", settings)
    assert isinstance(error, SourceConfigurationError) is configuration
    assert isinstance(error, GrpcConfigurationError) is configuration
    if configuration:
        assert isinstance(error, SourceConfigurationError)
        assert error.address == "qrng:7"
        assert error.retryable is False
        assert str(error).startswith(f"{code} from qrng:7 (/x.Y/Z): ")


# What grpcio says for a TLS failure: the details of an UNAVAILABLE, worded by each
# release (recorded against real servers; tests-integration/grpc checks them live).
TLS_DETAILS = {
    "wrong CA, grpcio 1.85": "failed to connect to all addresses; last error: UNKNOWN: "
    "ipv4:127.0.0.1:1: Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: "
    "error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: unable to get "
    "local issuer certificate: OK",
    "wrong CA, grpcio 1.62": "failed to connect to all addresses; last error: UNKNOWN: "
    "ipv4:127.0.0.1:1: Ssl handshake failed: SSL_ERROR_SSL: error:1000007d:SSL "
    "routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED",
    "wrong host, grpcio 1.85": "failed to connect to all addresses; last error: UNKNOWN: "
    "ipv4:127.0.0.1:1: Custom verification check failed with error: UNAUTHENTICATED: "
    "Hostname Verification Check failed.",
    "wrong host, grpcio 1.62": "failed to connect to all addresses; last error: UNKNOWN: "
    "ipv4:127.0.0.1:1: Peer name other.test is not in peer certificate",
    "plaintext server": "failed to connect to all addresses; last error: UNKNOWN: "
    "ipv4:127.0.0.1:1: Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: "
    "error:100000f7:SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER",
}
DOWN = "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: " + (
    "Failed to connect to remote host: Connection refused"
)


@pytest.mark.parametrize("case", list(TLS_DETAILS))
def test_tls_failures_are_configuration_class_and_a_dead_server_is_not(
    case: str, pem: dict[str, Path]
) -> None:
    import grpc

    from qr_entropy.grpc._replies import configuration_cause

    tls = ChannelSettings.from_config(
        EntropyConfig(grpc_tls=True, grpc_tls_ca_file=str(pem["ca_cert"]))
    )
    plain = ChannelSettings.from_config(EntropyConfig())
    unavailable = grpc.StatusCode.UNAVAILABLE
    cause = configuration_cause(unavailable, TLS_DETAILS[case], "/x.Y/Z", tls)
    assert cause is not None
    assert cause.startswith("TLS ")
    assert configuration_cause(unavailable, DOWN, "/x.Y/Z", tls) is None
    assert configuration_cause(unavailable, TLS_DETAILS[case], "/x.Y/Z", plain) is None
