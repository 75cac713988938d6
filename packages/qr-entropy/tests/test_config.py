"""EntropyConfig: every field from the environment and from .env, defaults, rejections."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from qr_entropy import ConfigError, EntropyConfig, SettingsError
from qr_entropy.settings import _unknown

from .certificates import write_certificates

# One non-default value per field: (field, text as written in env / .env, parsed value).
NON_DEFAULTS: list[tuple[str, str, object]] = [
    ("entropy_source_type", "timing_noise", "timing_noise"),
    ("grpc_server_address", "unix:///run/qrng.sock", "unix:///run/qrng.sock"),
    ("grpc_timeout_ms", "250.5", 250.5),
    ("grpc_retry_count", "0", 0),
    ("grpc_mode", "bidi_streaming", "bidi_streaming"),
    ("grpc_method_path", "/qrng.QuantumRNG/GetRandomBytes", "/qrng.QuantumRNG/GetRandomBytes"),
    ("grpc_stream_method_path", "", ""),
    ("grpc_api_key", "k3y-from-test", "k3y-from-test"),
    ("grpc_api_key_header", "x-api-key", "x-api-key"),
    ("grpc_tls", "true", True),
    # Real PEM files (the TLS files are checked when the settings load), in the working
    # directory: written there by the autouse fixture below.
    ("grpc_tls_ca_file", "ca.pem", "ca.pem"),
    ("grpc_tls_cert_file", "client.pem", "client.pem"),
    ("grpc_tls_key_file", "client.key", "client.key"),
    ("grpc_tls_server_name", "qrng.example", "qrng.example"),
    ("fallback_mode", "mock_uniform", "mock_uniform"),
    ("cb_window_size", "7", 7),
    ("cb_min_timeout_ms", "0.5", 0.5),
    ("cb_timeout_multiplier", "3", 3.0),
    ("cb_recovery_window_s", "0.25", 0.25),
    ("cb_max_consecutive_failures", "9", 9),
    ("mock_uniform_seed", "42", 42),
    ("mock_uniform_bias", "-1.25", -1.25),
    ("sham_latency_ms", "12.5", 12.5),
    ("calibration_path", "/etc/qr/calibration.json", "/etc/qr/calibration.json"),
    ("grpc_max_request_bytes", "4096", 4096),
    ("grpc_response_layout", "qrng", "qrng"),
]

DEFAULTS: dict[str, object] = {
    "entropy_source_type": "system",
    "grpc_server_address": "localhost:50051",
    "grpc_timeout_ms": 5000.0,
    "grpc_retry_count": 2,
    "grpc_mode": "unary",
    "grpc_method_path": "/qr_entropy.EntropyService/GetEntropy",
    "grpc_stream_method_path": "/qr_entropy.EntropyService/StreamEntropy",
    "grpc_api_key": "",
    "grpc_api_key_header": "api-key",
    "grpc_tls": False,
    "grpc_tls_ca_file": "",
    "grpc_tls_cert_file": "",
    "grpc_tls_key_file": "",
    "grpc_tls_server_name": "",
    "fallback_mode": "system",
    "cb_window_size": 100,
    "cb_min_timeout_ms": 5.0,
    "cb_timeout_multiplier": 1.5,
    "cb_recovery_window_s": 10.0,
    "cb_max_consecutive_failures": 3,
    "mock_uniform_seed": None,
    "mock_uniform_bias": 0.0,
    "sham_latency_ms": 0.0,
    "calibration_path": "",
    "grpc_max_request_bytes": 1_048_576,
    "grpc_response_layout": "qr_entropy",
}


@pytest.fixture(autouse=True)
def tls_files(tmp_path: Path) -> None:
    """``ca.pem``, ``client.pem`` and ``client.key`` in the working directory (``tmp_path``)."""
    made = write_certificates(tmp_path)
    (tmp_path / "ca.pem").write_bytes(made["ca_cert"].read_bytes())
    (tmp_path / "client.pem").write_bytes(made["client_cert"].read_bytes())
    (tmp_path / "client.key").write_bytes(made["client_key"].read_bytes())


def _value(config: EntropyConfig, field: str) -> object:
    value = getattr(config, field)
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def test_tables_cover_every_field() -> None:
    assert [f for f, _, _ in NON_DEFAULTS] == list(EntropyConfig.model_fields)
    assert list(DEFAULTS) == list(EntropyConfig.model_fields)


def test_defaults() -> None:
    config = EntropyConfig()
    assert {f: _value(config, f) for f in DEFAULTS} == DEFAULTS
    for field in EntropyConfig.model_fields.values():
        assert field.description


@pytest.mark.parametrize(("field", "text", "expected"), NON_DEFAULTS)
def test_each_field_from_env(
    monkeypatch: pytest.MonkeyPatch, field: str, text: str, expected: object
) -> None:
    monkeypatch.setenv(f"QR_{field.upper()}", text)
    assert _value(EntropyConfig(), field) == expected


@pytest.mark.parametrize(("field", "text", "expected"), NON_DEFAULTS)
def test_each_field_from_dotenv(tmp_path: Path, field: str, text: str, expected: object) -> None:
    # The autouse fixture made tmp_path the working directory.
    (tmp_path / ".env").write_text(f"# comment\nQR_{field.upper()}={text}\n", encoding="utf-8")
    assert _value(EntropyConfig(), field) == expected


def test_all_fields_from_one_dotenv_file(tmp_path: Path) -> None:
    lines = [f"QR_{field.upper()}={text}" for field, text, _ in NON_DEFAULTS]
    (tmp_path / ".env").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = EntropyConfig()
    assert {f: _value(config, f) for f, _, _ in NON_DEFAULTS} == {f: v for f, _, v in NON_DEFAULTS}


def test_env_wins_over_dotenv_and_other_qr_vars_are_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "QR_GRPC_RETRY_COUNT=5\nQR_TOP_K=13\nQR_SOMETHING_ELSE=x\n", encoding="utf-8"
    )
    monkeypatch.setenv("QR_GRPC_RETRY_COUNT", "6")
    monkeypatch.setenv("QR_SAMPLE_COUNT", "1024")  # owned by qr-vllm
    config = EntropyConfig()
    assert config.grpc_retry_count == 6
    assert not hasattr(config, "top_k")


def test_explicit_env_file_argument(tmp_path: Path) -> None:
    path = tmp_path / "profile.env"
    path.write_text("QR_GRPC_MODE=server_streaming\n", encoding="utf-8")
    assert EntropyConfig(_env_file=path).grpc_mode == "server_streaming"  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("field", "text"),
    [
        ("entropy_source_type", ""),
        ("grpc_server_address", ""),
        ("grpc_timeout_ms", "0"),
        ("grpc_timeout_ms", "nan"),
        ("grpc_timeout_ms", "inf"),
        ("grpc_retry_count", "-1"),
        ("grpc_retry_count", "1.5"),
        ("grpc_mode", "streaming"),
        ("grpc_method_path", ""),
        ("grpc_api_key_header", ""),
        ("grpc_tls", "maybe"),
        ("fallback_mode", "urandom"),
        ("cb_window_size", "0"),
        ("cb_min_timeout_ms", "0"),
        ("cb_timeout_multiplier", "0.9"),
        ("cb_recovery_window_s", "0"),
        ("cb_max_consecutive_failures", "0"),
        ("mock_uniform_seed", "seed"),
        ("mock_uniform_bias", "127.6"),
        ("mock_uniform_bias", "-128"),
        ("sham_latency_ms", "-0.1"),
        ("grpc_max_request_bytes", "0"),
        ("grpc_max_request_bytes", "99999999999"),  # the issue's: passed, then OverflowError
        ("grpc_response_layout", "qrngg"),
        ("grpc_response_layout", "data=1,seq=2"),
    ],
)
def test_invalid_env_values_are_refused_naming_the_variable_value_and_allowed(
    monkeypatch: pytest.MonkeyPatch, field: str, text: str
) -> None:
    monkeypatch.setenv(f"QR_{field.upper()}", text)
    with pytest.raises(SettingsError) as info:
        EntropyConfig()
    message = str(info.value)
    assert f"QR_{field.upper()}={text!r}" in message
    assert "allowed: " in message
    # Still a ConfigError (the package's tree) and a ValidationError (for pydantic callers).
    assert isinstance(info.value, ConfigError)
    assert isinstance(info.value, ValidationError)
    assert field in str(info.value.errors())


def test_a_value_from_dotenv_is_named_by_its_variable(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("QR_GRPC_TIMEOUT_MS=-5\n", encoding="utf-8")
    expected = r"QR_GRPC_TIMEOUT_MS='-5' \(setting grpc_timeout_ms\) is invalid .*> 0"
    with pytest.raises(SettingsError, match=expected):
        EntropyConfig()


def test_secret_values_are_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QR_GRPC_API_KEY", "s3cret-value")
    monkeypatch.setenv("QR_GRPC_TIMEOUT_MS", "-1")
    with pytest.raises(SettingsError) as info:
        EntropyConfig()
    assert "s3cret-value" not in str(info.value) + repr(info.value.errors())


def test_values_passed_as_arguments_keep_their_field_names() -> None:
    with pytest.raises(ValidationError) as info:
        EntropyConfig(grpc_timeout_ms=-1)
    assert not isinstance(info.value, SettingsError)
    assert "grpc_timeout_ms" in str(info.value)


def test_a_misspelled_variable_is_warned_about_once_naming_the_closest(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setattr(_unknown, "_settings_modules", [])  # all settings modules count as loaded
    monkeypatch.setattr(_unknown, "_warned", set())
    monkeypatch.setattr(_unknown, "_checked", None)
    monkeypatch.setenv("QR_GRPC_MDOE", "bidi_streaming")
    (tmp_path / ".env").write_text("QR_CB_WINDOW_SIZ=5\nQR_SERVER_API_KEY=x\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="qr_entropy.settings._unknown"):
        EntropyConfig()
        EntropyConfig()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, warnings  # once each, and nothing for the server's variable
    assert any(w.startswith("QR_GRPC_MDOE is set") and "QR_GRPC_MODE?" in w for w in warnings)
    assert any(
        w.startswith("QR_CB_WINDOW_SIZ is set") and "QR_CB_WINDOW_SIZE?" in w for w in warnings
    )


def test_the_warning_waits_until_every_settings_module_is_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    modules = ["qr_entropy._config", "not_imported.settings"]
    monkeypatch.setattr(_unknown, "_settings_modules", modules)
    monkeypatch.setattr(_unknown, "_warned", set())
    monkeypatch.setattr(_unknown, "_checked", None)
    assert _unknown.warn_unknown_variables({"QR_GRPC_MDOE": "x"}) == []
    monkeypatch.setattr(_unknown, "_settings_modules", ["qr_entropy._config"])
    assert _unknown.warn_unknown_variables({"QR_GRPC_MDOE": "x", "QR_GRPC_MODE": "unary"}) == [
        "QR_GRPC_MDOE"
    ]


def test_every_installed_settings_module_is_declared() -> None:
    from importlib.metadata import entry_points

    modules = {ep.module for ep in entry_points(group=_unknown.SETTINGS_GROUP)}
    assert {"qr_entropy._config", "qr_vllm._settings"} <= modules


def test_config_is_frozen() -> None:
    config = EntropyConfig()
    with pytest.raises(ValidationError):
        config.grpc_retry_count = 9
