"""What the reference server reports beyond the bytes: the fresh read's start and the device rate.

``EntropyFetch.read_started_ns`` (response field 5) and
``EntropyFetch.device_bytes_per_second`` (field 6, the entropy budget) from a
real server in every mode, ``None`` from a layout that does not declare them,
and ``qr-entropy check`` printing the rate and the tokens per second it supports.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from qr_entropy import EntropyConfig
from qr_entropy.grpc import QuantumGrpcSource

MODES = ["unary", "server_streaming", "bidi_streaming"]
Config = Callable[..., EntropyConfig]


@pytest.fixture(scope="module")
def address(servers: Callable[..., Any]) -> str:
    return str(servers("--max-bytes", str(1 << 21)).address)


@pytest.mark.parametrize("mode", MODES)
def test_every_fetch_carries_the_read_start_and_the_device_rate(
    mode: str, address: str, make_config: Config
) -> None:
    with QuantumGrpcSource(make_config(address, grpc_mode=mode)) as source:
        fetches = [source.fetch(20_480) for _ in range(3)]
    for fetch in fetches:
        assert fetch.read_started_ns is not None
        assert fetch.generated_ns is not None
        # Same host, same clock: requested, then the read began, ended, arrived.
        assert fetch.requested_ns <= fetch.read_started_ns <= fetch.generated_ns
        assert fetch.generated_ns <= fetch.received_ns
        assert fetch.device_bytes_per_second is not None
        assert fetch.device_bytes_per_second > 0


def test_a_split_fetch_keeps_the_earliest_read_start(address: str, make_config: Config) -> None:
    config = make_config(address, grpc_max_request_bytes=4096)
    with QuantumGrpcSource(config) as source:
        fetch = source.fetch(3 * 4096)
    assert fetch.response_count == 3
    assert fetch.read_started_ns is not None
    assert fetch.generated_ns is not None
    assert fetch.requested_ns <= fetch.read_started_ns <= fetch.generated_ns


def test_a_layout_without_the_fields_records_none(address: str, make_config: Config) -> None:
    with QuantumGrpcSource(make_config(address, grpc_response_layout="bytes_only")) as source:
        fetch = source.fetch(64)
    assert (fetch.read_started_ns, fetch.device_bytes_per_second) == (None, None)


def test_check_prints_the_device_rate_and_the_tokens_it_supports(
    address: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The check pulls in qr-core's statistics: imported here, for this test only.
    from qr_entropy.cli import main

    monkeypatch.setenv("QR_ENTROPY_SOURCE_TYPE", "quantum_grpc")
    monkeypatch.setenv("QR_GRPC_SERVER_ADDRESS", address)
    monkeypatch.setenv("QR_SAMPLE_COUNT", "10240")
    argv = ["check", "--bytes", "1024", "--samples", "4"]
    main([*argv, "--json"])
    report = json.loads(capsys.readouterr().out)
    rate = report["device_bytes_per_second"]
    assert rate > 0
    assert report["sample_count"] == 10240
    assert report["device_tokens_per_second"] == pytest.approx(rate / 10240)
    main(argv)
    lines = capsys.readouterr().out.splitlines()
    line = next(x for x in lines if x.startswith("device rate"))
    assert "MB/s (measured by the server) supports" in line
    assert line.endswith("tokens/s at QR_SAMPLE_COUNT=10240")
