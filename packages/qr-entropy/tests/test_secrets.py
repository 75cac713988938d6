"""The API key appears in no repr, log line, health output or error message."""

from __future__ import annotations

import json
import logging

import pytest
from pydantic import ValidationError

from qr_entropy import ConfigError, EntropyConfig, apply_overrides, build_source

SECRET = "sk-live-7f3c9a1b-DO-NOT-LEAK"


def _config_with_key(monkeypatch: pytest.MonkeyPatch, **env: str) -> EntropyConfig:
    monkeypatch.setenv("QR_GRPC_API_KEY", SECRET)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return EntropyConfig()


def test_key_is_read_but_hidden_in_every_rendering(monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config_with_key(monkeypatch)
    assert config.grpc_api_key.get_secret_value() == SECRET
    renderings = [
        repr(config),
        str(config),
        repr(config.grpc_api_key),
        str(config.grpc_api_key),
        config.model_dump_json(),
        json.dumps(config.model_dump(mode="json")),
        repr(config.model_dump()),
    ]
    for text in renderings:
        assert SECRET not in text


def test_key_not_in_validation_errors_of_other_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QR_GRPC_TIMEOUT_MS", "-5")
    with pytest.raises(ValidationError) as info:
        _config_with_key(monkeypatch)
    assert SECRET not in str(info.value)
    assert "grpc_timeout_ms" in str(info.value)


def test_key_not_echoed_by_override_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config_with_key(monkeypatch)
    with pytest.raises(ConfigError) as info:
        apply_overrides(
            config, {"qr_grpc_api_key": SECRET}, forbidden=tuple(EntropyConfig.model_fields)
        )
    assert SECRET not in str(info.value)
    assert "QR_GRPC_API_KEY" in str(info.value)


def test_key_not_in_logs_health_or_fallback_reasons_with_a_real_dead_server(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, unused_tcp_port: int
) -> None:
    config = _config_with_key(
        monkeypatch,
        QR_ENTROPY_SOURCE_TYPE="quantum_grpc",
        QR_GRPC_SERVER_ADDRESS=f"127.0.0.1:{unused_tcp_port}",
        QR_GRPC_TIMEOUT_MS="300",
        QR_GRPC_RETRY_COUNT="0",
    )
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    with build_source(config) as source:
        texts.append(repr(source.health_check()))
        for _ in range(3):
            fetch = source.fetch(32)
            assert fetch.fallback is True
            texts.append(repr(fetch))
        texts.append(repr(source.health_check()))
        texts.append(repr(source))
    texts.extend(record.getMessage() for record in caplog.records)
    texts.extend(caplog.text.splitlines())
    assert len(texts) > 6
    for text in texts:
        assert SECRET not in text
