"""``server_streaming`` in the caller's thread, against a real fault-server process.

One call per request: the request is written and the call half-closed as it
opens, the responses are read until the server ends the call, under one gRPC
deadline. Each test runs on both call layers (fixture ``layer``), and checks
that every call on grpcio's core layer was read to its end or discarded, so
grpcio released it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from qr_entropy import EntropyUnavailableError
from qr_entropy.grpc import QuantumGrpcSource
from qr_entropy.grpc.testing import transport_state

from .fault_helpers import Config, Expected, N, assert_fresh


@pytest.fixture(autouse=True)
def _reset(faulty: Any) -> None:
    faulty.set("ok")
    faulty.forget_requests()


def test_chunks_are_joined_and_every_call_is_released(
    faulty: Any, make_config: Config, expected: Expected, layer: str, calls_left: Callable[[], int]
) -> None:
    with QuantumGrpcSource(make_config(faulty.address, grpc_mode="server_streaming")) as source:
        first = source.fetch(N)
        # The grpcio installed here has the core layer as expected: a change shows here.
        state = transport_state(source)
        assert state is not None
        assert state.on_core is (layer == "core")
        faulty.set("chunks 4")
        chunked = [source.fetch(N) for _ in range(3)]
        assert calls_left() == 0  # one call per request, each read to its end
    assert_fresh(first, expected)
    assert first.response_count == 1
    for fetch in chunked:
        assert fetch.response_count == 4
        assert_fresh(fetch, expected)


def test_a_call_past_its_deadline_times_out_and_is_released(
    faulty: Any,
    make_config: Config,
    expected: Expected,
    layer: str,
    calls_left: Callable[[], int],
    past_deadline_ms: Callable[[str, str], float],
) -> None:
    # The deadline follows the machine's load; every call gets it (floor = ceiling).
    deadline_ms = past_deadline_ms(faulty.address, "server_streaming")
    cfg = make_config(
        faulty.address,
        grpc_mode="server_streaming",
        grpc_timeout_ms=deadline_ms,
        cb_min_timeout_ms=deadline_ms,
        grpc_retry_count=0,
    )
    with QuantumGrpcSource(cfg) as source:
        assert_fresh(source.fetch(N), expected)
        faulty.set("hang")  # no reply until released: far past any deadline
        with pytest.raises(EntropyUnavailableError, match="DEADLINE_EXCEEDED") as raised:
            source.fetch(N)
        assert raised.value.timed_out  # type: ignore[attr-defined]
        assert calls_left() == 0
        faulty.set("ok")
        assert_fresh(source.fetch(N), expected)
    assert source.breaker.total_timeouts == 1


@pytest.mark.parametrize(
    ("fault", "message", "attempts"),
    [
        # A final status is not asked again; a wrong reply is, on a new call (retry_count=1).
        ("abort INTERNAL", r"INTERNAL from .*aborted by the fault server", 1),
        ("wrong_seq", "does not match request", 2),
        ("wrong_length", "server returned 4095 bytes, requested 4096", 2),
    ],
)
def test_a_failed_call_is_reported_and_released(
    fault: str,
    message: str,
    attempts: int,
    faulty: Any,
    make_config: Config,
    expected: Expected,
    layer: str,
    calls_left: Callable[[], int],
) -> None:
    cfg = make_config(faulty.address, grpc_mode="server_streaming", grpc_retry_count=1)
    with QuantumGrpcSource(cfg) as source:
        faulty.set(fault)
        with pytest.raises(EntropyUnavailableError, match=message):
            source.fetch(N)
        assert source.health_check()["total_failures"] == attempts
        assert calls_left() == 0
        faulty.set("ok")
        assert_fresh(source.fetch(N), expected)
