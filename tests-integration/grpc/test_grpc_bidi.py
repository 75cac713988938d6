"""``bidi_streaming`` in the caller's thread, against a real fault-server process.

The read of each reply blocks in the caller's thread; its deadline is kept by
the process-wide watchdog, which cancels the call. These tests prove what that
must keep: a read that outlives its deadline ends the call for good (the next
fetch opens a new one and gets its own bytes), a call the server ends is
reported with its status and replaced, and ``close()`` ends a read that is
waiting, without counting it as the server's failure or leaving a thread.

The tests of a source run on both call layers (fixture ``layer``): grpcio's
core layer (``CoreCall``, used wherever grpcio's internal layer is as expected)
and its public stream API (the fallback; selected with ``public_api_only()``).
The last tests are about the core call itself; the fallback from a core layer
found changed at the first call is tested in qr-entropy's own tests
(``test_grpc_core_layer.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from qr_entropy import EntropyUnavailableError
from qr_entropy.grpc import QuantumGrpcSource
from qr_entropy.grpc.testing import (
    CallEndedError,
    CoreCall,
    TransportState,
    core_layer_usable,
    decode_response,
    encode_request,
    failing_watchdog,
    open_core_calls,
    transport_state,
    watchdog_alarms_fired,
    watchdog_failures,
)

from .fault_helpers import Config, Expected, N, assert_fresh

STREAM_PATH = "/qr_entropy.EntropyService/StreamEntropy"


@pytest.fixture(autouse=True)
def _reset(faulty: Any) -> None:
    faulty.set("ok")
    faulty.forget_requests()


def _state(source: QuantumGrpcSource) -> TransportState:
    state = transport_state(source)
    assert state is not None
    return state


def test_a_read_past_its_deadline_is_cancelled_and_the_next_fetch_opens_a_new_call(
    faulty: Any,
    make_config: Config,
    expected: Expected,
    layer: str,
    past_deadline_ms: Callable[[str, str], float],
) -> None:
    # The deadline follows the machine's load; every call gets it (floor = ceiling).
    deadline_ms = past_deadline_ms(faulty.address, "bidi_streaming")
    cfg = make_config(
        faulty.address,
        grpc_mode="bidi_streaming",
        grpc_timeout_ms=deadline_ms,
        cb_min_timeout_ms=deadline_ms,
        grpc_retry_count=0,
    )
    with QuantumGrpcSource(cfg) as source:
        first = source.fetch(N)
        assert_fresh(first, expected)
        # Where the grpcio installed has the core layer as expected, it is used.
        assert _state(source).on_core is (layer == "core")
        assert _state(source).streams_opened == 1
        fired = watchdog_alarms_fired()
        faulty.set("hang")  # no reply until released: far past any deadline
        with pytest.raises(EntropyUnavailableError, match=r"DEADLINE_EXCEEDED.*stream dropped"):
            source.fetch(N)
        assert faulty.wait_for_request() == first.sequence_id + 1
        # The watchdog, not the reply, ended the read: it cancelled the call once.
        assert watchdog_alarms_fired() == fired + 1
        faulty.set("ok")
        fetches = [source.fetch(N) for _ in range(3)]
        assert _state(source).streams_opened == 2  # one new call, then kept
    for fetch in fetches:
        assert_fresh(fetch, expected)
    assert [f.sequence_id for f in fetches] == [first.sequence_id + i for i in (2, 3, 4)]


def test_close_ends_a_waiting_read_at_once_counts_no_failure_and_leaves_no_thread(
    faulty: Any, make_config: Config, thread_baseline: Callable[[], list[str]], layer: str
) -> None:
    source = QuantumGrpcSource(
        make_config(faulty.address, grpc_mode="bidi_streaming", grpc_timeout_ms=30_000.0)
    )
    source.fetch(N)
    faulty.set("hang")  # no reply until released
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
    faulty.set("ok")
    assert not worker.is_alive()
    # Had the read waited for the reply, it would still wait: the reply is held back.
    assert len(errors) == 1
    assert isinstance(errors[0], EntropyUnavailableError)
    assert "closed" in str(errors[0])
    assert source.breaker.total_failures == 0  # close() is not the server's failure
    assert thread_baseline() == []


@pytest.mark.parametrize(
    ("fault", "code", "message"),
    [
        ("end", "OK", r"OK from .* stream ended"),
        ("abort INTERNAL", "INTERNAL", r"INTERNAL from .*aborted by the fault server"),
        ("abort UNAVAILABLE", "UNAVAILABLE", r"UNAVAILABLE from .*aborted by the fault server"),
    ],
)
def test_a_call_the_server_ends_is_reported_with_its_status_and_replaced(
    fault: str,
    code: str,
    message: str,
    faulty: Any,
    make_config: Config,
    expected: Expected,
    layer: str,
) -> None:
    cfg = make_config(faulty.address, grpc_mode="bidi_streaming", grpc_retry_count=1)
    with QuantumGrpcSource(cfg) as source:
        assert_fresh(source.fetch(N), expected)
        assert _state(source).channels_opened == 1
        faulty.set(fault)
        with pytest.raises(EntropyUnavailableError, match=message) as raised:
            source.fetch(N)
        assert raised.value.code == code  # type: ignore[attr-defined]
        # Only UNAVAILABLE is asked again (retry_count=1).
        unavailable = code == "UNAVAILABLE"
        assert source.health_check()["total_failures"] == (2 if unavailable else 1)
        faulty.set("ok")
        fetches = [source.fetch(N) for _ in range(3)]
        now = _state(source)
        # UNAVAILABLE replaces the channel; any other end replaces the call. Then it is kept.
        assert (now.channels_opened > 1) is unavailable
        assert now.streams_opened == (1 if unavailable else 2)
    for fetch in fetches:
        assert_fresh(fetch, expected)


@pytest.fixture
def core_layer() -> None:
    if not core_layer_usable():
        pytest.skip("this grpcio's core layer is not usable: no core call to test")


@pytest.mark.usefixtures("core_layer")
def test_a_core_call_releases_everything_when_discarded(faulty: Any) -> None:
    """grpcio frees a core call once its last batch is read: ``discard`` reads them all."""
    before = open_core_calls()
    with grpc.insecure_channel(faulty.address) as channel:
        call = CoreCall(channel, STREAM_PATH, ())
        reply = decode_response(call.exchange(encode_request(N, 41)))
        assert reply.sequence_id == 41
        assert len(reply.data) == N
        call.discard()
        assert open_core_calls() == before  # no batch of the call is due any more
        # An ended call takes no more requests, and says so without waiting.
        with pytest.raises(CallEndedError) as ended:
            call.exchange(encode_request(N, 42))
        assert ended.value.code is grpc.StatusCode.CANCELLED


@pytest.mark.usefixtures("core_layer")
def test_a_core_call_cancelled_from_another_thread_ends_the_wait(faulty: Any) -> None:
    faulty.set("hang")
    before = open_core_calls()
    with grpc.insecure_channel(faulty.address) as channel:
        call = CoreCall(channel, STREAM_PATH, ())

        def cancel_once_the_request_arrived() -> None:
            faulty.wait_for_request()
            call.cancel("cancelled by the test")

        canceller = threading.Thread(target=cancel_once_the_request_arrived)
        canceller.start()
        # Had the wait not ended at the cancel, it would still wait for the hung reply.
        with pytest.raises(CallEndedError, match="cancelled by the test") as ended:
            call.exchange(encode_request(N, 7))
        canceller.join(10)
        assert ended.value.code is grpc.StatusCode.CANCELLED
        call.discard()
        assert open_core_calls() == before
        faulty.set("ok")  # releases the hung handler


def test_the_watchdog_survives_a_failure_of_its_own_and_another_sources_deadline_fires(
    faulty: Any, make_config: Config, layer: str
) -> None:
    """Issue 26: a day-long deadline beside a 200 ms one, and the watchdog's loop failing.

    Source A waits on a hung server with the longest deadline the settings allow; the
    process-wide watchdog's own loop is made to fail once (``failing_watchdog``); source
    B's 200 ms deadline must still end B's read. Were the thread dead, B would wait for
    the hung server for good: the thread running B's fetch is given a minute, a hang guard.
    """
    day_ms = 86_400_000.0
    long = make_config(
        faulty.address,
        grpc_mode="bidi_streaming",
        grpc_timeout_ms=day_ms,
        cb_min_timeout_ms=day_ms,
        grpc_retry_count=0,
    )
    short = make_config(
        faulty.address,
        grpc_mode="bidi_streaming",
        grpc_timeout_ms=200.0,
        cb_min_timeout_ms=200.0,
        grpc_retry_count=0,
    )
    survived = watchdog_failures()
    outcomes: dict[str, BaseException | None] = {}

    def fetch(name: str, source: QuantumGrpcSource) -> None:
        try:
            source.fetch(N)
            outcomes[name] = None
        except BaseException as exc:
            outcomes[name] = exc

    with QuantumGrpcSource(long) as a, QuantumGrpcSource(short) as b:
        faulty.set("hang")
        with failing_watchdog(times=1) as injected:
            waiting = threading.Thread(target=fetch, args=("a", a))
            waiting.start()
            faulty.wait_for_request()  # A's read is armed a day ahead and blocked
            second = threading.Thread(target=fetch, args=("b", b))
            second.start()
            second.join(60)
            assert not second.is_alive(), "B's 200 ms deadline never fired"
            assert injected() == 1
        error = outcomes["b"]
        assert isinstance(error, EntropyUnavailableError)
        assert "DEADLINE_EXCEEDED" in str(error)
        assert watchdog_failures() == survived + 1
        faulty.set("ok")  # A's late reply arrives; A's own read was never cancelled
        waiting.join(60)
        assert not waiting.is_alive()
        assert outcomes["a"] is None
