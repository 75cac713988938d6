"""FallbackEntropySource: what it catches, provenance of every fetch, logging once per outage."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from qr_entropy import (
    CONFIGURATION_REASON,
    ByteCountError,
    EntropyConfig,
    EntropyUnavailableError,
    FallbackEntropySource,
    MockUniformSource,
    SourceConfigurationError,
    SystemEntropySource,
    build_source,
)
from qr_entropy._fallback import ERROR_INTERVAL_S

LOGGER = "qr_entropy._fallback"


def test_primary_bytes_are_not_flagged(switchable: Any) -> None:
    source = FallbackEntropySource(switchable, SystemEntropySource())
    fetch = source.fetch(32)
    assert (fetch.source, fetch.device_id, fetch.fallback) == ("switchable", "switch-0", False)
    assert fetch.fallback_reason is None
    assert source.last_source_used == "switchable"
    assert source.name == "switchable"


def test_fallback_fetch_is_flagged_with_reason(switchable: Any) -> None:
    source = FallbackEntropySource(switchable, SystemEntropySource())
    switchable.up = False
    fetch = source.fetch(32)
    assert len(fetch.data) == 32
    assert fetch.source == "system"
    assert fetch.device_id == "os.urandom"
    assert fetch.fallback is True
    assert fetch.fallback_reason == (
        "switchable: EntropyUnavailableError: switchable is switched off"
    )
    assert source.last_source_used == "system"
    assert len(source.get_random_bytes(8)) == 8
    health = source.health_check()
    assert health["in_outage"] is True
    assert health["fallback_fetches"] == 2
    assert health["last_source_used"] == "system"


def test_warning_once_per_outage_and_info_on_recovery(
    switchable: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    source = FallbackEntropySource(switchable, SystemEntropySource())
    switchable.up = False
    flags = [source.fetch(8).fallback for _ in range(25)]
    switchable.up = True
    flags += [source.fetch(8).fallback for _ in range(5)]
    switchable.up = False
    flags += [source.fetch(8).fallback for _ in range(3)]
    assert flags == [True] * 25 + [False] * 5 + [True] * 3
    records = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]
    assert records == [
        (
            logging.WARNING,
            "Entropy source 'switchable' unavailable, falling back to system: "
            "switchable: EntropyUnavailableError: switchable is switched off",
        ),
        (logging.INFO, "Entropy source 'switchable' recovered after 25 failed fetches"),
        (
            logging.WARNING,
            "Entropy source 'switchable' unavailable, falling back to system: "
            "switchable: EntropyUnavailableError: switchable is switched off",
        ),
    ]


def test_error_mode_reraises(switchable: Any, caplog: pytest.LogCaptureFixture) -> None:
    source = FallbackEntropySource(switchable, None)
    switchable.up = False
    for _ in range(3):
        with pytest.raises(EntropyUnavailableError, match="switched off"):
            source.fetch(8)
    assert source.is_available is False
    assert source.health_check()["fallback"] is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == LOGGER]
    assert len(warnings) == 1
    assert "nothing (mode 'error')" in warnings[0].getMessage()


@pytest.mark.parametrize("error", [RuntimeError("bug"), ValueError("bad"), KeyError("k")])
def test_other_errors_propagate_without_fallback(switchable: Any, error: Exception) -> None:
    source = FallbackEntropySource(switchable, SystemEntropySource())
    switchable.error = error
    with pytest.raises(type(error)):
        source.fetch(8)
    assert source.health_check()["fallback_fetches"] == 0


def test_bad_count_is_rejected_before_any_source_is_called(switchable: Any) -> None:
    source = FallbackEntropySource(switchable, SystemEntropySource())
    switchable.up = False
    with pytest.raises(ByteCountError):
        source.fetch(0)
    assert source.health_check()["in_outage"] is False


def test_failing_fallback_propagates(switchable: Any) -> None:
    broken_fallback = type(switchable)("backup")
    broken_fallback.up = False
    source = FallbackEntropySource(switchable, broken_fallback)
    switchable.up = False
    with pytest.raises(EntropyUnavailableError, match="backup is switched off"):
        source.fetch(8)
    assert source.is_available is False


def test_close_closes_both(switchable: Any) -> None:
    backup = type(switchable)("backup")
    with FallbackEntropySource(switchable, backup):
        pass
    assert switchable.closed
    assert backup.closed


@pytest.mark.parametrize(
    ("mode", "fallback_type"),
    [("system", SystemEntropySource), ("mock_uniform", MockUniformSource), ("error", None)],
)
def test_build_source_always_wraps_with_configured_fallback(
    mode: str, fallback_type: type | None
) -> None:
    config = EntropyConfig(fallback_mode=mode, mock_uniform_seed=3)  # type: ignore[arg-type]
    source = build_source(config)
    assert isinstance(source, FallbackEntropySource)
    assert source.primary.name == "system"
    if fallback_type is None:
        assert source.fallback is None
    else:
        assert type(source.fallback) is fallback_type
    if mode == "mock_uniform":
        expected = MockUniformSource(seed=3).get_random_bytes(16)
        assert source.fallback is not None
        assert source.fallback.get_random_bytes(16) == expected


def test_real_unreachable_grpc_server_falls_back_with_provenance(
    unused_tcp_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    # A real fault: nothing listens on the port.
    config = EntropyConfig(
        entropy_source_type="quantum_grpc",
        grpc_server_address=f"127.0.0.1:{unused_tcp_port}",
        grpc_timeout_ms=300,
        grpc_retry_count=0,
        fallback_mode="system",
    )
    caplog.set_level(logging.INFO)
    with build_source(config) as source:
        fetches = [source.fetch(64) for _ in range(3)]
    assert all(f.fallback and f.source == "system" and len(f.data) == 64 for f in fetches)
    assert all(
        f.fallback_reason and f.fallback_reason.startswith("quantum_grpc: ") for f in fetches
    )
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1


class SlowFailingSource(SystemEntropySource):
    """Fails after ``delay_s`` (a primary whose deadline runs out), noting when it was asked."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.entered_ns = 0

    def fetch(self, n: int) -> Any:
        self.entered_ns = time.time_ns()
        threading.Event().wait(self.delay_s)  # the primary's own latency, not a wait for readiness
        raise EntropyUnavailableError("DEADLINE_EXCEEDED after the configured timeout")


def test_a_fallback_fetch_records_when_it_was_requested_and_why() -> None:
    """Issue 12: ``requested_ns`` is the request's time, not the time the fallback ran."""
    primary = SlowFailingSource(delay_s=0.05)
    source = FallbackEntropySource(primary, SystemEntropySource())
    before = time.time_ns()
    fetch = source.fetch(16)
    assert fetch.fallback
    assert before <= fetch.requested_ns <= primary.entered_ns
    # The fallback's bytes came at least the primary's 50 ms later.
    assert fetch.generated_ns is not None
    assert fetch.generated_ns - fetch.requested_ns >= 50_000_000
    assert fetch.fallback_reason == (
        "system: EntropyUnavailableError: DEADLINE_EXCEEDED after the configured timeout"
    )


# --- configuration-class failures (issue 26) ------------------------------------------------


def _misconfigured(switchable: Any) -> None:
    switchable.error = SourceConfigurationError(
        "UNAUTHENTICATED from qrng:50051 (/x.Y/Z): the server rejected the API key",
        address="qrng:50051",
        cause="the server rejected the API key",
    )


def test_a_configuration_failure_falls_back_with_reason_configuration(
    switchable: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    source = FallbackEntropySource(switchable, SystemEntropySource())
    _misconfigured(switchable)
    fetch = source.fetch(16)
    assert (fetch.fallback, fetch.source, fetch.fallback_reason) == (
        True,
        "system",
        "configuration",
    )
    assert fetch.fallback_reason == CONFIGURATION_REASON
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "rejected the API key" in errors[0].getMessage()
    assert "qrng:50051" in errors[0].getMessage()


def test_the_error_is_logged_again_at_least_once_a_minute_while_it_lasts(
    switchable: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger=LOGGER)
    now = [1000.0]
    source = FallbackEntropySource(switchable, SystemEntropySource(), clock=lambda: now[0])
    _misconfigured(switchable)
    for _ in range(50):  # a minute's fetches within 59 s: one ERROR
        source.fetch(4)
        now[0] += 1.18
    assert len(caplog.records) == 1
    now[0] = 1000.0 + ERROR_INTERVAL_S + 0.5
    source.fetch(4)
    assert len(caplog.records) == 2
    switchable.error = None  # recovered: a new failure is reported at once
    source.fetch(4)
    _misconfigured(switchable)
    source.fetch(4)
    assert len(caplog.records) == 3


def test_in_error_mode_a_configuration_failure_raises_and_is_logged(
    switchable: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger=LOGGER)
    source = FallbackEntropySource(switchable, None)
    _misconfigured(switchable)
    with pytest.raises(SourceConfigurationError, match="rejected the API key"):
        source.fetch(4)
    assert len(caplog.records) == 1


def test_a_transient_failure_keeps_its_full_reason(switchable: Any) -> None:
    source = FallbackEntropySource(switchable, SystemEntropySource())
    switchable.up = False
    assert source.fetch(4).fallback_reason != CONFIGURATION_REASON


def test_the_probe_is_the_primarys(switchable: Any) -> None:
    source = FallbackEntropySource(switchable, SystemEntropySource())
    result = source.probe()
    assert (result.source, result.reachable, result.device_id) == ("switchable", True, "switch-0")
    switchable.up = False
    down = source.probe()
    assert (down.reachable, down.detail) == (False, "switchable is switched off")
    _misconfigured(switchable)
    with pytest.raises(SourceConfigurationError) as info:
        source.probe()
    assert info.value.address == "qrng:50051"
