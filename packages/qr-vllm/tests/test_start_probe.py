"""Fail closed at start: the processor and the front end probe every entropy server.

Against a real ``qr-entropy-server`` process (unix socket, API key required): a wrong
key refuses the start naming the arm, the address and the cause; a server that is
down starts with a warning, or refuses with ``QR_REQUIRE_SOURCES_AT_START=true``.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from qr_entropy import ArmSources
from qr_entropy_server.server_process import start_server_process
from qr_vllm import AdapterConfig, SourceRefusedError
from qr_vllm._start_probe import probe_in_front_end, start_up_checks, to_probe

from .engine_parts import built_processor

KEY = "the-right-key"


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    """A real entropy server that requires ``KEY``, on a unix socket."""
    folder = Path(tempfile.mkdtemp(prefix="qvp"))  # unix socket paths are short
    try:
        flags = ("--address", f"unix://{folder}/e.sock")
        with start_server_process(*flags, env={"QR_SERVER_API_KEY": KEY}) as server:
            yield server.address
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _arm(address: str, key: str) -> dict[str, object]:
    return {
        "qrng": {
            "entropy_source_type": "quantum_grpc",
            "grpc_server_address": address,
            "grpc_api_key": key,
            "grpc_retry_count": 0,
        },
        "control": {"entropy_source_type": "system"},
    }


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("QR_METRICS_PORT", "0")
    monkeypatch.setenv("QR_SAMPLE_COUNT", "256")
    return monkeypatch


def test_a_wrong_api_key_refuses_the_processor_naming_arm_address_and_cause(
    env: pytest.MonkeyPatch, address: str
) -> None:
    env.setenv("QR_SOURCES", json.dumps(_arm(address, "not-the-key")))
    with pytest.raises(SourceRefusedError) as info:
        built_processor()
    text = str(info.value)
    assert text.startswith("qr-vllm refuses to start: the entropy server refuses")
    assert f"QR_SOURCES: arm 'qrng': UNAUTHENTICATED from {address}" in text
    assert "rejected the API key" in text
    assert "not-the-key" not in text
    env.setenv("QR_SOURCES", json.dumps(_arm(address, KEY)))
    built_processor().close()


def test_a_refused_start_closes_the_sources_it_opened(
    env: pytest.MonkeyPatch, address: str
) -> None:
    env.setenv("QR_SOURCES", json.dumps(_arm(address, "not-the-key")))
    config = AdapterConfig.from_env()
    sources = ArmSources.build(config.entropy, config.sources)
    closed: list[bool] = []
    close = sources.close

    def spy() -> None:
        closed.append(True)
        close()

    env.setattr(sources, "close", spy)
    with pytest.raises(SourceRefusedError):
        start_up_checks(sources, config)
    assert closed == [True]


def test_the_front_end_refuses_before_any_engine_starts(
    env: pytest.MonkeyPatch, address: str
) -> None:
    env.setenv("QR_ENTROPY_SOURCE_TYPE", "quantum_grpc")
    env.setenv("QR_GRPC_SERVER_ADDRESS", address)
    env.setenv("QR_GRPC_API_KEY", "not-the-key")
    with pytest.raises(SourceRefusedError) as info:
        probe_in_front_end(AdapterConfig.from_env())
    text = str(info.value)
    assert f"QR_ENTROPY_SOURCE_TYPE='quantum_grpc': UNAUTHENTICATED from {address}" in text
    assert "QR_GRPC_API_KEY" in text
    env.setenv("QR_GRPC_API_KEY", KEY)
    probe_in_front_end(AdapterConfig.from_env())  # answers: nothing to refuse


def test_a_server_down_starts_with_a_warning_unless_required(
    env: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    down = f"unix://{tmp_path}/nobody.sock"
    env.setenv("QR_SOURCES", json.dumps(_arm(down, KEY)))
    with caplog.at_level(logging.WARNING, logger="qr_vllm._start_probe"):
        proc = built_processor()
    proc.close()
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "qr_vllm._start_probe"]
    assert f"entropy server down at start-up: QR_SOURCES: arm 'qrng' at {down}" in warning
    assert "QR_REQUIRE_SOURCES_AT_START=true" in warning
    env.setenv("QR_REQUIRE_SOURCES_AT_START", "true")
    with pytest.raises(SourceRefusedError, match=r"QR_REQUIRE_SOURCES_AT_START=true") as info:
        built_processor()
    assert f"QR_SOURCES: arm 'qrng' at {down}" in str(info.value)
    with pytest.raises(SourceRefusedError, match=r"QR_REQUIRE_SOURCES_AT_START=true"):
        probe_in_front_end(AdapterConfig.from_env())


def test_local_sources_are_probed_only_when_calibrated(env: pytest.MonkeyPatch) -> None:
    env.setenv("QR_ENTROPY_SOURCE_TYPE", "mock_uniform")
    arms = {"a": {"entropy_source_type": "system"}, "g": _arm("unix:///x", KEY)["qrng"]}
    env.setenv("QR_SOURCES", json.dumps(arms))
    assert to_probe(AdapterConfig.from_env()) == ["g"]
    env.delenv("QR_SOURCES")
    assert to_probe(AdapterConfig.from_env()) == []
