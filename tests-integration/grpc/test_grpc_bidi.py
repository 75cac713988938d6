"""``bidi_streaming`` on grpcio's synchronous API, against a real fault-server process.

The read of each reply blocks in the caller's thread; its deadline is kept by
the process-wide watchdog, which cancels the call. These tests prove what that
must keep: a read that outlives its deadline ends the call for good (the next
fetch opens a new one and gets its own bytes), and ``close()`` ends a read that
is waiting, without counting it as the server's failure or leaving a thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from qr_entropy import EntropyUnavailableError
from qr_entropy.grpc import QuantumGrpcSource
from qr_entropy.grpc._watchdog import shared_watchdog

from .fault_helpers import Config, Expected, N, assert_fresh


@pytest.fixture(autouse=True)
def _reset(faulty: Any) -> None:
    faulty.set("ok")
    faulty.forget_requests()


def test_a_read_past_its_deadline_is_cancelled_and_the_next_fetch_opens_a_new_call(
    faulty: Any, make_config: Config, expected: Expected
) -> None:
    cfg = make_config(
        faulty.address, grpc_mode="bidi_streaming", grpc_timeout_ms=300.0, grpc_retry_count=0
    )
    watchdog = shared_watchdog()
    with QuantumGrpcSource(cfg) as source:
        first = source.fetch(N)
        assert_fresh(first, expected)
        transport = source._transport  # type: ignore[attr-defined]
        assert transport.streams_opened == 1
        fired = watchdog.fired
        faulty.set("slow 1.0")
        with pytest.raises(EntropyUnavailableError, match=r"DEADLINE_EXCEEDED.*stream dropped"):
            source.fetch(N)
        assert faulty.wait_for_request() == first.sequence_id + 1
        # The watchdog, not the reply, ended the read: it cancelled the call once.
        assert watchdog.fired == fired + 1
        faulty.set("ok")
        fetches = [source.fetch(N) for _ in range(3)]
        assert transport.streams_opened == 2  # one new call, then kept
    for fetch in fetches:
        assert_fresh(fetch, expected)
    assert [f.sequence_id for f in fetches] == [first.sequence_id + i for i in (2, 3, 4)]


def test_close_ends_a_waiting_read_at_once_counts_no_failure_and_leaves_no_thread(
    faulty: Any, make_config: Config, thread_baseline: Callable[[], list[str]]
) -> None:
    source = QuantumGrpcSource(
        make_config(faulty.address, grpc_mode="bidi_streaming", grpc_timeout_ms=30_000.0)
    )
    source.fetch(N)
    faulty.set("slow 5")
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            source.fetch(N)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=fetch)
    worker.start()
    faulty.wait_for_request()  # the request is on the server: the fetch waits for its reply
    source.close()
    worker.join(30)
    assert not worker.is_alive()
    # Had the read waited for the reply (5 s), the fetch would have succeeded.
    assert len(errors) == 1
    assert isinstance(errors[0], EntropyUnavailableError)
    assert "closed" in str(errors[0])
    assert source.breaker.total_failures == 0  # close() is not the server's failure
    assert thread_baseline() == []
