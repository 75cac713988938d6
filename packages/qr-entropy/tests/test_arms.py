"""Experiment arms: ``QR_SOURCES`` parsing and validation, and concurrent per-arm fetches."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from qr_entropy import (
    ArmSources,
    ConfigError,
    EntropyConfig,
    EntropySource,
    EntropyUnavailableError,
    FallbackEntropySource,
    SourceConfigurationError,
    SystemEntropySource,
    load_sources,
    parse_sources,
)

TWO_ARMS = {
    "qrng": {"entropy_source_type": "quantum_grpc", "grpc_server_address": "unix:///tmp/q.sock"},
    "control": {"entropy_source_type": "system"},
}


def test_json_text_names_arms_in_order_and_arms_inherit_top_level_settings() -> None:
    base = EntropyConfig(grpc_timeout_ms=250.0, fallback_mode="mock_uniform")
    arms = parse_sources(json.dumps(TWO_ARMS), base)
    assert list(arms) == ["qrng", "control"]
    assert arms["qrng"].entropy_source_type == "quantum_grpc"
    assert arms["qrng"].grpc_server_address == "unix:///tmp/q.sock"
    assert arms["control"].entropy_source_type == "system"
    # Fields an arm does not set keep the top-level values.
    assert arms["qrng"].grpc_timeout_ms == 250.0
    assert arms["control"].fallback_mode == "mock_uniform"
    assert arms["control"].grpc_server_address == base.grpc_server_address


def test_an_arm_is_calibrated_by_its_own_calibration_path_only() -> None:
    # A calibration describes one device: the top-level one is not the arms'.
    base = EntropyConfig(calibration_path="/etc/qr/top.json")
    table = {**TWO_ARMS, "qrng": {**TWO_ARMS["qrng"], "calibration_path": "/etc/qr/q.json"}}
    arms = parse_sources(json.dumps(table), base)
    assert arms["qrng"].calibration_path == "/etc/qr/q.json"
    assert arms["control"].calibration_path == ""


def test_a_path_names_a_json_file(tmp_path: Path) -> None:
    path = tmp_path / "arms.json"
    path.write_text(json.dumps(TWO_ARMS), encoding="utf-8")
    assert list(parse_sources(f"  {path}\n", EntropyConfig())) == ["qrng", "control"]


def test_empty_means_no_arms() -> None:
    assert parse_sources("", EntropyConfig()) == {}
    assert parse_sources("   ", EntropyConfig()) == {}


def test_load_sources_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_sources(EntropyConfig()) == {}
    monkeypatch.setenv("QR_SOURCES", json.dumps({"sham": {"entropy_source_type": "sham"}}))
    monkeypatch.setenv("QR_SHAM_LATENCY_MS", "2")
    arms = load_sources(EntropyConfig())
    assert list(arms) == ["sham"]
    assert arms["sham"].sham_latency_ms == 2.0


def test_the_arm_table_is_no_setting_of_the_top_level_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # QR_SOURCES belongs to SourcesSettings; EntropyConfig ignores it.
    monkeypatch.setenv("QR_SOURCES", json.dumps(TWO_ARMS))
    assert "sources" not in EntropyConfig().model_dump()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "QR_SOURCES (JSON text) is not valid JSON"),
        ("/no/such/arms.json", "QR_SOURCES='/no/such/arms.json' is neither a JSON object"),
        ('{"a": 1}', "QR_SOURCES: arm 'a' must map to an object of entropy settings, got int"),
        ('{"bad name": {}}', "QR_SOURCES: arm name 'bad name' is not allowed; allowed: 1-64"),
        ('{"": {}}', "QR_SOURCES: arm name '' is not allowed"),
        (
            '{"qrng": {"grpc_adress": "x"}}',
            "QR_SOURCES: arm 'qrng': unknown setting(s) 'grpc_adress'; "
            "allowed: entropy_source_type, grpc_server_address,",
        ),
        (
            '{"qrng": {"grpc_timeout_ms": -1}}',
            "QR_SOURCES: arm 'qrng': grpc_timeout_ms=-1 is invalid (Input should be greater "
            "than 0); allowed: a number > 0",
        ),
        (
            '{"c": {"fallback_mode": "nope"}}',
            "QR_SOURCES: arm 'c': fallback_mode='nope' is invalid",
        ),
        (
            '{"c": {"entropy_source_type": "no_such_source"}}',
            "QR_SOURCES: arm 'c': entropy_source_type: unknown entropy source 'no_such_source'",
        ),
    ],
)
def test_errors_name_qr_sources_the_arm_and_the_field(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_sources(text, EntropyConfig())
    assert expected in str(info.value)
    assert isinstance(info.value, ValueError)


def test_a_json_array_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"QR_SOURCES must be a JSON object .* got list"):
        parse_sources('["qrng"]', EntropyConfig())


def test_a_bad_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "arms.json"
    path.write_text("{oops", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"QR_SOURCES file .*arms\.json.* is not valid JSON"):
        parse_sources(str(path), EntropyConfig())


def test_a_refused_secret_is_never_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        parse_sources('{"q": {"grpc_api_key": ["s3cret-value"]}}', EntropyConfig())
    assert "grpc_api_key=<secret> is invalid" in str(info.value)
    assert "s3cret" not in str(info.value)


class BarrierSource(EntropySource):
    """Real ``os.urandom`` bytes, delivered only once every party of ``barrier`` is
    fetching too: sequential fetches break the barrier (after its timeout)."""

    def __init__(self, name: str, barrier: threading.Barrier) -> None:
        self._name = name
        self._barrier = barrier
        self.threads: list[str] = []

    @property
    def name(self) -> str:
        return self._name

    @property
    def is_available(self) -> bool:
        return True

    def get_random_bytes(self, n: int) -> bytes:
        self.threads.append(threading.current_thread().name)
        self._barrier.wait()
        return os.urandom(n)

    def close(self) -> None:
        pass


def test_arms_are_fetched_concurrently_and_returned_in_the_order_asked() -> None:
    barrier = threading.Barrier(3, timeout=30)
    sources = {name: BarrierSource(name, barrier) for name in ("a", "b", "default")}
    arms = ArmSources(sources["default"], {"a": sources["a"], "b": sources["b"]})
    try:
        fetched = arms.fetch_many({"b": 7, None: 5, "a": 3})
    finally:
        arms.close()
    assert list(fetched) == ["b", None, "a"]
    assert [len(fetched[k].data) for k in ("b", None, "a")] == [7, 5, 3]
    assert [fetched[k].source for k in ("b", None, "a")] == ["b", "default", "a"]
    # All three were inside get_random_bytes at once, on three different threads.
    threads = {t for s in sources.values() for t in s.threads}
    assert len(threads) == 3
    assert not barrier.broken


def test_one_arm_uses_the_calling_thread() -> None:
    source = BarrierSource("a", threading.Barrier(1))
    arms = ArmSources(SystemEntropySource(), {"a": source})
    assert arms.fetch_many({"a": 4})["a"].source == "a"
    assert source.threads == [threading.current_thread().name]
    arms.close()


def test_a_fault_in_one_arm_falls_back_for_that_arm_only(switchable: Any) -> None:
    arms = ArmSources(
        SystemEntropySource(),
        {
            "qrng": FallbackEntropySource(switchable, SystemEntropySource()),
            "control": FallbackEntropySource(SystemEntropySource(), None),
        },
    )
    switchable.up = False
    fetched = arms.fetch_many({"qrng": 16, "control": 16})
    assert fetched["qrng"].fallback is True
    assert fetched["qrng"].fallback_reason == (
        "switchable: EntropyUnavailableError: switchable is switched off"
    )
    assert fetched["control"].fallback is False
    assert fetched["control"].source == "system"
    switchable.up = True
    assert arms.fetch_many({"qrng": 16, "control": 16})["qrng"].fallback is False
    arms.close()
    assert switchable.closed


def test_an_arm_without_fallback_raises_after_every_fetch_finished(switchable: Any) -> None:
    barrier = threading.Barrier(1)
    other = BarrierSource("other", barrier)
    arms = ArmSources(
        SystemEntropySource(),
        {"qrng": FallbackEntropySource(switchable, None), "other": other},
    )
    switchable.up = False
    with pytest.raises(EntropyUnavailableError, match="switchable is switched off"):
        arms.fetch_many({"qrng": 8, "other": 8})
    assert len(other.threads) == 1
    arms.close()


def test_unknown_arm_lists_the_configured_names() -> None:
    arms = ArmSources(SystemEntropySource(), {"qrng": SystemEntropySource()})
    with pytest.raises(ConfigError, match=r"unknown arm 'x'; configured arms \(QR_SOURCES\): qrng"):
        arms.fetch_many({"x": 8})
    assert arms.names == ("qrng",)
    assert arms.source(None) is arms.default
    arms.close()


def test_build_wraps_each_arm_in_its_own_fallback() -> None:
    configs = parse_sources(
        json.dumps(
            {
                "sham": {"entropy_source_type": "sham"},
                "strict": {"entropy_source_type": "system", "fallback_mode": "error"},
            }
        ),
        EntropyConfig(),
    )
    arms = ArmSources.build(EntropyConfig(), configs)
    try:
        assert arms.names == ("sham", "strict")
        sham = arms.source("sham")
        strict = arms.source("strict")
        assert isinstance(sham, FallbackEntropySource)
        assert isinstance(strict, FallbackEntropySource)
        assert sham.primary.name == "sham"
        assert sham.fallback is not None
        assert strict.fallback is None
        health = arms.health_check()
        assert set(health["arms"]) == {"sham", "strict"}  # type: ignore[arg-type]
        fetched = arms.fetch_many({"sham": 32, "strict": 32, None: 32})
        assert [f.source for f in fetched.values()] == ["sham", "system", "system"]
    finally:
        arms.close()
    arms.close()  # idempotent


def test_probe_reports_each_source_and_names_the_arm_of_a_configuration_failure(
    switchable: Any,
) -> None:
    arms = ArmSources(SystemEntropySource(), {"control": SystemEntropySource(), "qrng": switchable})
    results = arms.probe()
    assert list(results) == [None, "control", "qrng"]
    assert all(r.reachable for r in results.values())
    switchable.up = False  # a transient fault: a result, not an error
    assert arms.probe()["qrng"].reachable is False
    switchable.error = SourceConfigurationError(
        "INVALID_ARGUMENT from q:1 (/a.B/C): refused", address="q:1", cause="refused"
    )
    with pytest.raises(SourceConfigurationError) as info:
        arms.probe()
    assert str(info.value).startswith("QR_SOURCES: arm 'qrng': INVALID_ARGUMENT from q:1")
    assert (info.value.arm, info.value.address, info.value.cause) == ("qrng", "q:1", "refused")
