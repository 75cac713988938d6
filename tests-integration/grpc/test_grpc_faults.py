"""Faults produced for real: misbehaving, slow, killed and absent servers.

For each: no fetch ever receives bytes generated for an earlier request (the
fault server's bytes encode the request's sequence_id), the failure falls back
with provenance when a fallback is configured, raises a clear
EntropyUnavailableError in mode ``error``, and the source recovers when the
server behaves again.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qr_entropy import EntropyUnavailableError, build_source
from qr_entropy.grpc import QuantumGrpcSource
from qr_entropy.grpc.testing import ManualClock

from .fault_helpers import Config, Expected, N, assert_fresh

MODES = ["unary", "server_streaming", "bidi_streaming"]


@pytest.fixture(autouse=True)
def _reset(faulty: Any) -> None:
    faulty.set("ok")
    faulty.forget_requests()


def fetch_in_background(source: QuantumGrpcSource) -> tuple[threading.Thread, list[BaseException]]:
    """Start one ``fetch(N)`` on a thread; its exception, if any, lands in the list."""
    errors: list[BaseException] = []

    def in_flight() -> None:
        try:
            source.fetch(N)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=in_flight)
    worker.start()
    return worker, errors


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("wrong_length", "server returned 4095 bytes, requested 4096"),
        ("wrong_seq", "does not match request"),
        ("garbage", "declares|varint|wire type"),
    ],
)
def test_bad_replies_are_rejected_then_recovered(
    mode: str, fault: str, message: str, faulty: Any, make_config: Config, expected: Expected
) -> None:
    cfg = make_config(faulty.address, grpc_mode=mode, grpc_retry_count=1)
    with QuantumGrpcSource(cfg) as source:
        assert_fresh(source.fetch(N), expected)  # a healthy stream first
        faulty.set(fault)
        with pytest.raises(EntropyUnavailableError, match=message):
            source.fetch(N)
        assert source.health_check()["total_failures"] == 2  # first try + one retry
        faulty.set("ok")
        for _ in range(3):
            assert_fresh(source.fetch(N), expected)


@pytest.mark.parametrize("mode", MODES)
def test_bad_replies_fall_back_with_provenance(mode: str, faulty: Any, make_config: Config) -> None:
    faulty.set("wrong_seq")
    cfg = make_config(faulty.address, grpc_mode=mode, fallback_mode="system")
    with build_source(cfg) as source:
        fetch = source.fetch(N)
        assert fetch.fallback
        assert fetch.source == "system"
        assert fetch.fallback_reason is not None
        assert "does not match" in fetch.fallback_reason
        assert source.last_source_used == "system"


def test_unechoed_sequence_id_is_accepted_and_chunks_are_joined(
    faulty: Any, make_config: Config, expected: Expected
) -> None:
    with QuantumGrpcSource(make_config(faulty.address, grpc_mode="server_streaming")) as source:
        faulty.set("chunks 4")
        fetch = source.fetch(N)
        assert fetch.response_count == 4
        assert_fresh(fetch, expected)
        faulty.set("no_seq")
        assert_fresh(source.fetch(N), expected)


@pytest.mark.parametrize("mode", MODES)
def test_a_late_reply_never_reaches_a_later_fetch(
    mode: str,
    faulty: Any,
    make_config: Config,
    expected: Expected,
    past_deadline_ms: Callable[[str, str], float],
) -> None:
    """Known defect 7: after a timeout, the next fetch must get its own bytes."""
    # The deadline follows the machine's load; every call gets it (floor = ceiling).
    deadline_ms = past_deadline_ms(faulty.address, mode)
    cfg = make_config(
        faulty.address,
        grpc_mode=mode,
        grpc_timeout_ms=deadline_ms,
        cb_min_timeout_ms=deadline_ms,
        grpc_retry_count=0,
    )
    with QuantumGrpcSource(cfg) as source:
        assert_fresh(source.fetch(N), expected)
        faulty.set("hang")  # no reply until released: far past any deadline
        with pytest.raises(EntropyUnavailableError, match="DEADLINE_EXCEEDED"):
            source.fetch(N)
        faulty.set("ok")  # releases the reply, now late
        assert faulty.wait_for_answer() == 2  # the late reply leaves the server
        fetches = [source.fetch(N) for _ in range(5)]
    for fetch in fetches:
        assert_fresh(fetch, expected)
    assert fetches[0].sequence_id == 3


@pytest.mark.parametrize("mode", MODES)
def test_a_server_slower_than_the_floor_is_followed_not_locked_out(
    mode: str, faulty: Any, make_config: Config, expected: Expected
) -> None:
    """Known defect 8, and issue 12: a slowing server is followed and never fallen back from.

    A call that outlives its learnt deadline is asked again, on the same server, at
    the configured timeout, without spending a retry (``grpc_retry_count=0`` here):
    no fetch falls back, and the learnt deadline grows to meet the server.
    """
    cfg = make_config(
        faulty.address,
        grpc_mode=mode,
        grpc_timeout_ms=2000.0,
        cb_min_timeout_ms=5.0,
        cb_window_size=20,
        cb_max_consecutive_failures=1,
        grpc_retry_count=0,
        fallback_mode="system",
    )
    with build_source(cfg) as source:
        warmup = [source.fetch(N) for _ in range(20)]
        # Slower than the deadline learnt so far, whatever the machine's load made
        # it: at least 50 ms (ten times the 5 ms floor), twice the learnt deadline.
        learnt_ms = float(source.primary.health_check()["timeout_ms"])  # type: ignore[arg-type]
        slow_ms = max(50.0, 2 * learnt_ms)
        faulty.set(f"slow {slow_ms / 1000}")
        results = [source.fetch(N) for _ in range(25)]
        health = source.primary.health_check()
    for fetch in warmup + results:
        assert not fetch.fallback, fetch.fallback_reason
        assert_fresh(fetch, expected)
    # Learnt deadlines ran out (and were retried at the configured timeout).
    assert int(health["total_timeouts"]) >= 1  # type: ignore[call-overload]
    assert health["times_opened"] == 0  # even with one failure opening the circuit
    assert float(health["timeout_ms"]) >= slow_ms  # type: ignore[arg-type]
    assert health["circuit_state"] == "closed"


def test_open_circuit_fails_fast_then_probes(
    faulty: Any, make_config: Config, expected: Expected
) -> None:
    cfg = make_config(
        faulty.address,
        grpc_mode="bidi_streaming",
        grpc_retry_count=0,
        cb_max_consecutive_failures=2,
        cb_recovery_window_s=0.3,
    )
    clock = ManualClock()  # times the recovery window: the test moves it
    with QuantumGrpcSource(cfg, clock=clock) as source:
        faulty.set("garbage")
        for _ in range(2):
            with pytest.raises(EntropyUnavailableError):
                source.fetch(N)
        assert source.health_check()["circuit_state"] == "open"
        assert not source.is_available
        with pytest.raises(EntropyUnavailableError, match="circuit open"):
            source.fetch(N)
        faulty.set("ok")
        clock.advance(0.29)
        assert source.health_check()["circuit_state"] == "open"  # not yet
        clock.advance(0.01)  # the recovery window (0.3 s) has passed
        assert source.health_check()["circuit_state"] == "half_open"
        assert_fresh(source.fetch(N), expected)  # the half-open probe succeeds
        health = source.health_check()
    assert health["circuit_state"] == "closed"
    assert health["total_rejected"] == 1


@pytest.mark.parametrize("mode", MODES)
def test_other_service_and_method_names(
    mode: str, fault_servers: Callable[..., Any], make_config: Config, expected: Expected
) -> None:
    server = fault_servers(
        "--unary-path",
        "/qrng.QuantumRNG/GetRandomBytes",
        "--stream-path",
        "/qrng.QuantumRNG/StreamRandomBytes",
    )
    cfg = make_config(
        server.address,
        grpc_mode=mode,
        grpc_method_path="/qrng.QuantumRNG/GetRandomBytes",
        grpc_stream_method_path="/qrng.QuantumRNG/StreamRandomBytes",
    )
    with QuantumGrpcSource(cfg) as source:
        fetches = [source.fetch(N) for _ in range(3)]
    for fetch in fetches:
        assert_fresh(fetch, expected)
        assert fetch.device_id == "fault-server"
    # The default paths do not exist there: UNIMPLEMENTED, named clearly. On a bidi
    # stream grpc core may instead end the call with its own INTERNAL ("Internal
    # error from Core") when the server's trailers race the client's first write
    # (seen once in a full CI run); either status is final, and the path is named.
    status = "UNIMPLEMENTED|INTERNAL" if mode == "bidi_streaming" else "UNIMPLEMENTED"
    with (
        QuantumGrpcSource(make_config(server.address, grpc_mode=mode)) as source,
        pytest.raises(
            EntropyUnavailableError, match=rf"^({status}) from .*/qr_entropy\.EntropyService/"
        ),
    ):
        source.fetch(N)


@pytest.mark.parametrize("mode", MODES)
def test_server_killed_mid_call_and_restarted(
    mode: str,
    fault_servers: Callable[..., Any],
    make_config: Config,
    expected: Expected,
    tmp_path: Path,
    thread_baseline: Callable[[], list[str]],
    calls_left: Callable[[], int],
) -> None:
    server = fault_servers(address=f"unix://{tmp_path}/q.sock")
    cfg = make_config(
        server.address,
        grpc_mode=mode,
        grpc_retry_count=0,
        grpc_timeout_ms=3000.0,
    )
    with QuantumGrpcSource(cfg) as source:
        assert_fresh(source.fetch(N), expected)
        server.forget_requests()
        server.set("hang")  # no reply until released
        worker, errors = fetch_in_background(source)
        server.wait_for_request()  # the call is on the server, waiting for its reply
        server.kill()
        worker.join(10)
        assert len(errors) == 1
        assert isinstance(errors[0], EntropyUnavailableError)
        with pytest.raises(EntropyUnavailableError):
            source.fetch(N)  # nothing listens now (socket file may remain)
        server.set("ok")
        server.start()
        # Two failures, fewer than the three that open the circuit: no recovery window
        # to wait out, the next fetch is let through at once.
        assert source.health_check()["circuit_state"] == "closed"
        fetch = source.fetch(N)
        assert_fresh(fetch, expected)
    assert thread_baseline() == []
    assert calls_left() == 0


def test_unreachable_address(make_config: Config) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = make_config(f"127.0.0.1:{port}", grpc_timeout_ms=1000.0, grpc_retry_count=1)
    with (
        QuantumGrpcSource(cfg) as source,
        pytest.raises(EntropyUnavailableError, match=r"UNAVAILABLE|DEADLINE_EXCEEDED"),
    ):
        source.fetch(N)
    with build_source(cfg.model_copy(update={"fallback_mode": "mock_uniform"})) as source:
        fetch = source.fetch(N)
    assert fetch.fallback
    assert fetch.source == "mock_uniform"


def test_missing_socket_file_then_server_appears(
    servers: Callable[..., Any], make_config: Config, tmp_path: Path
) -> None:
    sock = tmp_path / "later.sock"
    cfg = make_config(f"unix://{sock}", grpc_mode="bidi_streaming")
    with QuantumGrpcSource(cfg) as source:
        with pytest.raises(EntropyUnavailableError, match=r"later\.sock.*does not exist"):
            source.fetch(N)
        with build_source(cfg.model_copy(update={"fallback_mode": "system"})) as wrapped:
            fetch = wrapped.fetch(N)
            assert fetch.fallback
            assert "does not exist" in (fetch.fallback_reason or "")
        servers(address=f"unix://{sock}")  # returns once the server printed its ready line
        # One failure, fewer than the three that open the circuit: no recovery window
        # to wait out, the next fetch is let through at once.
        assert source.health_check()["circuit_state"] == "closed"
        fetch = source.fetch(N)
    assert len(fetch.data) == N
    assert fetch.device_id.startswith("urandom@")


@pytest.mark.parametrize("mode", MODES)
def test_close_during_a_call_leaves_nothing_behind(
    mode: str,
    faulty: Any,
    make_config: Config,
    thread_baseline: Callable[[], list[str]],
    calls_left: Callable[[], int],
) -> None:
    source = QuantumGrpcSource(make_config(faulty.address, grpc_mode=mode, grpc_retry_count=0))
    source.fetch(N)
    faulty.forget_requests()
    faulty.set("hang")  # no reply until released
    worker, errors = fetch_in_background(source)
    faulty.wait_for_request()  # the call is on the server, waiting for its reply
    source.close()
    worker.join(5)
    faulty.set("ok")
    assert not worker.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], EntropyUnavailableError)
    assert "closed" in str(errors[0])
    assert calls_left() == 0
    assert thread_baseline() == []
