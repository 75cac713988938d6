"""QuantumGrpcSource against real qr-entropy-server processes: every mode, TCP and unix."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qr_entropy import EntropyConfig, EntropyUnavailableError, build_source
from qr_entropy.grpc import QuantumGrpcSource

from .tls_certificates import write_certificates

MODES = ["unary", "server_streaming", "bidi_streaming"]
N = 20480
Config = Callable[..., EntropyConfig]


@pytest.fixture(scope="module")
def tcp_server(servers: Callable[..., Any]) -> str:
    return servers("--max-bytes", str(64 * N)).address


@pytest.fixture(scope="module")
def unix_server(servers: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory) -> str:
    sock = tmp_path_factory.mktemp("sock") / "qrng.sock"
    return servers(address=f"unix://{sock}").address


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_bytes_and_provenance(
    mode: str, transport: str, tcp_server: str, unix_server: str, make_config: Config
) -> None:
    address = tcp_server if transport == "tcp" else unix_server
    with QuantumGrpcSource(make_config(address, grpc_mode=mode)) as source:
        fetches = [source.fetch(N) for _ in range(3)]
        health = source.health_check()
    for fetch in fetches:
        assert len(fetch.data) == N
        assert fetch.source == "quantum_grpc"
        assert fetch.device_id.startswith("urandom@")
        assert fetch.requested_ns <= fetch.generated_ns <= fetch.received_ns  # same host clock
        assert fetch.response_count == 1
        assert not fetch.fallback
    assert [f.sequence_id for f in fetches] == [1, 2, 3]
    assert len({f.data for f in fetches}) == 3
    assert health["mode"] == mode
    assert health["circuit_state"] == "closed"
    assert health["total_successes"] == 3


@pytest.mark.parametrize("mode", MODES)
def test_batch_in_one_request_and_split_requests(
    mode: str, tcp_server: str, make_config: Config
) -> None:
    one = make_config(tcp_server, grpc_mode=mode, grpc_max_request_bytes=64 * N)
    with QuantumGrpcSource(one) as source:
        fetch = source.fetch(64 * N)
    assert (len(fetch.data), fetch.response_count) == (64 * N, 1)
    # Default 1 MiB per request: 1,310,720 bytes go as two consecutive requests.
    with QuantumGrpcSource(make_config(tcp_server, grpc_mode=mode)) as source:
        fetch = source.fetch(64 * N)
    assert (len(fetch.data), fetch.response_count, fetch.sequence_id) == (64 * N, 2, 1)


def test_server_limit_is_reported_as_resource_exhausted(
    servers: Callable[..., Any], make_config: Config
) -> None:
    address = servers("--max-bytes", "1000").address
    with QuantumGrpcSource(make_config(address, grpc_retry_count=2)) as source:
        with pytest.raises(EntropyUnavailableError, match="RESOURCE_EXHAUSTED"):
            source.fetch(1001)
        assert source.health_check()["total_failures"] == 1  # not retried
        assert len(source.fetch(1000).data) == 1000


@pytest.mark.parametrize("mode", MODES)
def test_api_key(mode: str, servers: Callable[..., Any], make_config: Config) -> None:
    secret = "correct-horse-battery"
    address = servers("--api-key", secret, "--api-key-header", "x-qrng-key").address
    with (
        QuantumGrpcSource(make_config(address, grpc_mode=mode)) as source,
        pytest.raises(EntropyUnavailableError, match=r"UNAUTHENTICATED.*requires an API key"),
    ):
        source.fetch(64)
    wrong = make_config(
        address, grpc_mode=mode, grpc_api_key="nope", grpc_api_key_header="x-qrng-key"
    )
    with QuantumGrpcSource(wrong) as source:
        with pytest.raises(EntropyUnavailableError, match=r"UNAUTHENTICATED.*rejected") as info:
            source.fetch(64)
        assert "nope" not in str(info.value)
        assert source.health_check()["total_failures"] == 1  # UNAUTHENTICATED is not retried
    right = make_config(
        address, grpc_mode=mode, grpc_api_key=secret, grpc_api_key_header="x-qrng-key"
    )
    with QuantumGrpcSource(right) as source:
        assert len(source.fetch(64).data) == 64
        health = source.health_check()
    assert health["authenticated"] is True
    assert secret not in repr(health)


def test_unauthenticated_falls_back_with_provenance(
    servers: Callable[..., Any], make_config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    address = servers("--api-key", "k").address
    with (
        caplog.at_level(logging.ERROR, logger="qr_entropy._fallback"),
        build_source(make_config(address, fallback_mode="system")) as source,
    ):
        fetch = source.fetch(128)
    assert fetch.fallback
    assert fetch.source == "system"
    # Configuration-class (issue 26): the reason is "configuration", the detail is logged.
    assert fetch.fallback_reason == "configuration"
    assert "UNAUTHENTICATED" in caplog.text


def test_many_threads_share_one_source_and_nothing_is_left(
    tcp_server: str,
    make_config: Config,
    thread_baseline: Callable[[], list[str]],
    calls_left: Callable[[], int],
) -> None:
    for mode in MODES:
        source = QuantumGrpcSource(make_config(tcp_server, grpc_mode=mode))
        results: list[tuple[int | None, bytes]] = []

        def work(
            source: QuantumGrpcSource = source, results: list[tuple[int | None, bytes]] = results
        ) -> None:
            for _ in range(10):
                fetch = source.fetch(1024)
                results.append((fetch.sequence_id, fetch.data))  # list.append is atomic

        workers = [threading.Thread(target=work) for _ in range(6)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        source.close()
        assert len(results) == 60
        assert len({seq for seq, _ in results}) == 60  # every request its own sequence_id
        assert all(len(data) == 1024 for _, data in results)
        assert calls_left() == 0  # every call read to its end or discarded
    assert thread_baseline() == []


# --- TLS and mutual TLS -------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_certificates(tmp_path_factory.mktemp("certs"))


@pytest.mark.parametrize("mode", MODES)
def test_tls(
    mode: str, servers: Callable[..., Any], certs: dict[str, Path], make_config: Config
) -> None:
    server = servers(
        "--tls-cert",
        str(certs["server_cert"]),
        "--tls-key",
        str(certs["server_key"]),
        "--api-key",
        "tls-key",
    )
    address = server.address
    tls = {
        "grpc_tls": True,
        "grpc_tls_ca_file": str(certs["ca_cert"]),
        "grpc_tls_server_name": "qrng.test",
        "grpc_api_key": "tls-key",
        "grpc_mode": mode,
    }
    with QuantumGrpcSource(make_config(address, **tls)) as source:
        fetch = source.fetch(N)
        assert source.health_check()["tls"] is True
    assert len(fetch.data) == N
    # Plaintext against a TLS port fails, never silently downgrades.
    plain = make_config(address, grpc_mode=mode, grpc_timeout_ms=1000.0, grpc_retry_count=0)
    with QuantumGrpcSource(plain) as source, pytest.raises(EntropyUnavailableError):
        source.fetch(16)


def test_mutual_tls(
    servers: Callable[..., Any], certs: dict[str, Path], make_config: Config
) -> None:
    server = servers(
        "--tls-cert",
        str(certs["server_cert"]),
        "--tls-key",
        str(certs["server_key"]),
        "--tls-client-ca",
        str(certs["ca_cert"]),
    )
    address = server.address
    base = {
        "grpc_tls": True,
        "grpc_tls_ca_file": str(certs["ca_cert"]),
        "grpc_tls_server_name": "qrng.test",
        "grpc_mode": "bidi_streaming",
        "grpc_timeout_ms": 2000.0,
        "grpc_retry_count": 0,
    }
    with (
        QuantumGrpcSource(make_config(address, **base)) as source,
        pytest.raises(EntropyUnavailableError, match=r"UNAVAILABLE|DEADLINE"),
    ):
        source.fetch(16)
    with_cert = {
        **base,
        "grpc_tls_cert_file": str(certs["client_cert"]),
        "grpc_tls_key_file": str(certs["client_key"]),
    }
    with QuantumGrpcSource(make_config(address, **with_cert)) as source:
        assert len(source.fetch(N).data) == N


def test_fetch_starts_after_the_call(tcp_server: str, make_config: Config) -> None:
    """Just in time: the server's timestamp lies after the fetch began, for every fetch."""
    with QuantumGrpcSource(make_config(tcp_server, grpc_mode="bidi_streaming")) as source:
        for _ in range(20):
            start = time.time_ns()
            fetch = source.fetch(256)
            assert start <= fetch.requested_ns <= fetch.generated_ns <= fetch.received_ns


@pytest.mark.parametrize("mode", MODES)
def test_close_while_threads_fetch_only_raises_entropy_unavailable(
    mode: str, tcp_server: str, make_config: Config
) -> None:
    source = QuantumGrpcSource(make_config(tcp_server, grpc_mode=mode))
    source.fetch(64)
    outcomes: list[BaseException | None] = []
    # Every worker has fetched at least once, so all four are in their loops.
    fetching = threading.Barrier(5)

    def work() -> None:
        try:
            source.fetch(1024)
            fetching.wait(30)
            while True:
                source.fetch(1024)
        except BaseException as exc:
            outcomes.append(exc)

    workers = [threading.Thread(target=work) for _ in range(4)]
    for worker in workers:
        worker.start()
    fetching.wait(30)
    source.close()
    for worker in workers:
        worker.join(10)
    assert len(outcomes) == 4
    assert all(isinstance(exc, EntropyUnavailableError) for exc in outcomes), outcomes


def test_logs_never_contain_the_key_and_report_the_circuit_once(
    servers: Callable[..., Any], make_config: Config, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "do-not-log-me-42"
    address = servers("--api-key", "another-key").address
    cfg = make_config(
        address, grpc_api_key=secret, cb_max_consecutive_failures=2, cb_recovery_window_s=60.0
    )
    with (
        caplog.at_level(logging.DEBUG),
        build_source(cfg.model_copy(update={"fallback_mode": "system"})) as source,
    ):
        fetches = [source.fetch(64) for _ in range(5)]
    assert all(f.fallback for f in fetches)
    assert secret not in caplog.text
    assert all(secret not in (f.fallback_reason or "") for f in fetches)
    opened = [r for r in caplog.records if "circuit opened" in r.getMessage()]
    assert len(opened) == 1
    assert opened[0].levelno == logging.WARNING
