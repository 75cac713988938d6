"""Settings the code cannot honour are refused when they load, naming the variable (issue 26).

Every time and size setting has an upper bound the code supports; the API key
and its header must be what gRPC metadata can carry; the TLS files must hold
what their names say; ``QR_SOURCES`` may not name a key twice.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qr_entropy import ConfigError, EntropyConfig, SettingsError, load_sources

from .certificates import write_certificates


@pytest.mark.parametrize(
    ("field", "text", "allowed"),
    [
        ("grpc_timeout_ms", "1e15", "<= 86400000"),  # the issue's: killed the watchdog
        ("grpc_timeout_ms", "86400001", "<= 86400000"),
        ("cb_min_timeout_ms", "1e13", "<= 86400000"),
        ("cb_recovery_window_s", "86401", "<= 86400"),
        ("sham_latency_ms", "1e12", "<= 86400000"),
        ("cb_window_size", "100001", "<= 100000"),
        ("grpc_retry_count", "101", "<= 100"),
        ("cb_timeout_multiplier", "1001", "<= 1000"),
        ("cb_max_consecutive_failures", "1000001", "<= 1000000"),
        ("mock_uniform_seed", "-1", ">= 0"),
    ],
)
def test_a_time_or_size_beyond_its_bound_is_refused_naming_the_range(
    monkeypatch: pytest.MonkeyPatch, field: str, text: str, allowed: str
) -> None:
    monkeypatch.setenv(f"QR_{field.upper()}", text)
    with pytest.raises(SettingsError) as info:
        EntropyConfig()
    message = str(info.value)
    assert f"QR_{field.upper()}={text!r}" in message
    assert "allowed: " in message
    assert allowed in message.split("allowed: ", 1)[1]


def test_the_longest_allowed_timeout_loads() -> None:
    assert EntropyConfig(grpc_timeout_ms=86_400_000).grpc_timeout_ms == 86_400_000


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("abc\ndef", "control character"),
        ("esc\x1b[0m", "control character"),
        ("del\x7f", "control character"),
        ("tab\tkey", "control character"),
        ("clé", "printable ASCII"),
    ],
)
def test_an_api_key_with_a_control_character_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, key: str, why: str
) -> None:
    monkeypatch.setenv("QR_GRPC_API_KEY", key)
    with pytest.raises(SettingsError) as info:
        EntropyConfig()
    message = str(info.value)
    assert "QR_GRPC_API_KEY=<secret>" in message
    assert why in message
    assert key not in message + repr(info.value.errors())


@pytest.mark.parametrize(
    ("header", "why"),
    [
        ("X-Api-Key", "lower-case"),
        ("api\nkey", "lower-case"),
        ("api key", "lower-case"),
        ("x-key-bin", "-bin"),
        ("grpc-key", "reserved"),
    ],
)
def test_a_header_name_grpc_cannot_send_is_refused(
    monkeypatch: pytest.MonkeyPatch, header: str, why: str
) -> None:
    monkeypatch.setenv("QR_GRPC_API_KEY_HEADER", header)
    with pytest.raises(SettingsError) as info:
        EntropyConfig()
    message = str(info.value)
    assert f"QR_GRPC_API_KEY_HEADER={header!r}" in message
    assert why in message


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, Path]:
    made = write_certificates(tmp_path)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_text(
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAMCAQA=\n-----END ENCRYPTED PRIVATE KEY-----\n"
    )
    der = tmp_path / "ca.der"
    der.write_bytes(b"\x30\x03\x02\x01\x00")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
    cut = tmp_path / "cut.pem"
    body = made["ca_cert"].read_text().splitlines()
    cut.write_text("\n".join([*body[:3], *body[-1:]]) + "\n")  # a certificate cut short
    return {**made, "encrypted": encrypted, "der": der, "garbage": garbage, "cut": cut}


@pytest.mark.parametrize(
    ("variable", "file", "why"),
    [
        ("QR_GRPC_TLS_CA_FILE", "ca_key", "holds no certificate, only PRIVATE KEY"),  # the issue's
        ("QR_GRPC_TLS_CA_FILE", "missing", "cannot be read"),
        ("QR_GRPC_TLS_CA_FILE", "der", "is DER, not PEM"),
        ("QR_GRPC_TLS_CA_FILE", "garbage", "not valid base64"),
        ("QR_GRPC_TLS_CA_FILE", "cut", "not a well-formed DER structure"),
        ("QR_GRPC_TLS_CERT_FILE", "client_key", "holds no certificate"),
        ("QR_GRPC_TLS_KEY_FILE", "client_cert", "holds no private key, only CERTIFICATE"),
        ("QR_GRPC_TLS_KEY_FILE", "encrypted", "encrypted private key"),
    ],
)
def test_a_tls_file_that_does_not_hold_what_it_should_is_refused(
    monkeypatch: pytest.MonkeyPatch, pem: dict[str, Path], variable: str, file: str, why: str
) -> None:
    monkeypatch.setenv("QR_GRPC_TLS", "true")
    path = str(pem[file]) if file in pem else str(pem["ca_cert"].with_name("absent.pem"))
    monkeypatch.setenv(variable, path)
    with pytest.raises(SettingsError) as info:
        EntropyConfig()
    message = str(info.value)
    assert message.startswith(f"{variable}=")  # the value: cut to 60 characters
    assert why in message


def test_a_client_key_of_another_certificate_is_refused(
    monkeypatch: pytest.MonkeyPatch, pem: dict[str, Path]
) -> None:
    monkeypatch.setenv("QR_GRPC_TLS", "true")
    monkeypatch.setenv("QR_GRPC_TLS_CERT_FILE", str(pem["client_cert"]))
    monkeypatch.setenv("QR_GRPC_TLS_KEY_FILE", str(pem["server_key"]))
    with pytest.raises(SettingsError, match=r"QR_GRPC_TLS_KEY_FILE=.*is not the key of"):
        EntropyConfig()


def test_good_tls_files_load(monkeypatch: pytest.MonkeyPatch, pem: dict[str, Path]) -> None:
    monkeypatch.setenv("QR_GRPC_TLS", "true")
    monkeypatch.setenv("QR_GRPC_TLS_CA_FILE", str(pem["ca_cert"]))
    monkeypatch.setenv("QR_GRPC_TLS_CERT_FILE", str(pem["client_cert"]))
    monkeypatch.setenv("QR_GRPC_TLS_KEY_FILE", str(pem["client_key"]))
    config = EntropyConfig()
    assert config.grpc_tls_key_file == str(pem["client_key"])


@pytest.mark.parametrize(
    ("text", "duplicate"),
    [
        ('{"qrng": {"entropy_source_type": "system"}, "qrng": {}}', "'qrng'"),
        ('{"a": {"grpc_timeout_ms": 100, "grpc_timeout_ms": 200}}', "'grpc_timeout_ms'"),
    ],
)
def test_a_key_named_twice_in_qr_sources_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, text: str, duplicate: str
) -> None:
    monkeypatch.setenv("QR_SOURCES", text)
    with pytest.raises(ConfigError) as info:
        load_sources(EntropyConfig())
    message = str(info.value)
    assert message.startswith("QR_SOURCES")
    assert f"key {duplicate} appears twice" in message


def test_a_key_named_twice_in_a_qr_sources_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "arms.json"
    path.write_text('{"x": {}, "y": {}, "x": {}}')
    monkeypatch.setenv("QR_SOURCES", str(path))
    with pytest.raises(ConfigError, match=r"QR_SOURCES file .*arms\.json.*key 'x' appears twice"):
        load_sources(EntropyConfig())


def test_an_arm_beyond_a_bound_is_refused_naming_the_arm_and_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QR_SOURCES", '{"slow": {"grpc_timeout_ms": 1e15}}')
    with pytest.raises(ConfigError, match=r"QR_SOURCES: arm 'slow': grpc_timeout_ms=.*<= 86400000"):
        load_sources(EntropyConfig())
