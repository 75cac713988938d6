"""The continuous health tests (NIST SP 800-90B 4.4): cutoffs, refusals, no false alarms."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qr_entropy_server import EntropyServer, ServerConfigError, TimingNoiseBackend, UrandomBackend
from qr_entropy_server._errors import HealthTestError
from qr_entropy_server._health_tests import (
    DEFAULT_MIN_ENTROPY,
    RECOVERY_BLOCKS,
    WINDOW,
    ContinuousTests,
    cutoffs,
)
from qr_entropy_server.proto import entropy_service_pb2 as pb2
from qr_entropy_server.proto import entropy_service_pb2_grpc as pb2_grpc

MIB = 1 << 20
Starter = Callable[..., EntropyServer]
Channel = Callable[[EntropyServer], grpc.Channel]


def _binomial_tail(n: int, p: float, c: int) -> float:
    return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(c, n + 1))


@pytest.mark.parametrize("h", [1.0, 4.0, DEFAULT_MIN_ENTROPY, 7.5, 8.0])
@pytest.mark.parametrize("block", [20_480, MIB])
def test_cutoffs_are_the_smallest_that_keep_false_alarms_under_2_to_the_30(
    h: float, block: int
) -> None:
    limits = cutoffs(h, block)
    p = 2.0**-h
    windows = -(-block // WINDOW)
    # Repetition count: each position ends a run of C equal bytes with probability <= p^(C-1).
    assert block * p ** (limits.repetition - 1) <= 2.0**-31
    assert block * p ** (limits.repetition - 2) > 2.0**-31  # one less would not do
    # Adaptive proportion, checked in floating point against the exact integer sums.
    assert windows * _binomial_tail(WINDOW - 1, p, limits.proportion) <= 2.0**-31 * (1 + 1e-9)
    assert windows * _binomial_tail(WINDOW - 1, p, limits.proportion - 1) > 2.0**-31
    assert limits.false_alarm_log2 <= -30
    assert max(limits.repetition_log2, limits.proportion_log2) <= -31


def test_the_default_cutoffs_are_the_documented_ones() -> None:
    limits = cutoffs(DEFAULT_MIN_ENTROPY, MIB)
    assert (DEFAULT_MIN_ENTROPY, limits.repetition, limits.proportion) == (6.0, 10, 36)
    assert round(limits.false_alarm_log2, 1) == -31.3


def test_min_entropy_outside_the_byte_is_a_config_error() -> None:
    for bad in (0.0, 8.5):
        with pytest.raises(ServerConfigError, match="--min-entropy must be between"):
            cutoffs(bad, MIB)


def _fails(tests: ContinuousTests, block: bytes) -> str | None:
    try:
        tests.check(block)
    except HealthTestError as exc:
        return str(exc)
    return None


def test_constant_bytes_fail_the_repetition_count_at_the_cutoff() -> None:
    limits = cutoffs(DEFAULT_MIN_ENTROPY, MIB)
    tests = ContinuousTests(limits)
    assert _fails(tests, bytes(limits.repetition - 1)) is None  # one short of the cutoff
    message = _fails(tests, b"\x00")  # the run carries across blocks
    assert message is not None
    assert message.startswith(f"repetition count: byte 0x00 {limits.repetition} times in a row")
    assert _fails(tests, b"\x00") is not None  # a stuck source keeps failing
    for block in (b"\x41" * 20_480, b"\xff" * MIB):
        assert "repetition count" in str(_fails(ContinuousTests(limits), block))


@pytest.mark.parametrize("period", [2, 3, 4, 8, 14])
def test_a_short_repeating_cycle_fails_the_adaptive_proportion(period: int) -> None:
    cycle = bytes(random.Random(period).sample(range(256), period))
    message = _fails(ContinuousTests(cutoffs(DEFAULT_MIN_ENTROPY, MIB)), cycle * 2048)
    assert message is not None
    assert message.startswith("adaptive proportion: byte 0x")


def test_windows_continue_across_small_blocks() -> None:
    tests = ContinuousTests(cutoffs(DEFAULT_MIN_ENTROPY, MIB))
    outcomes = [_fails(tests, bytes([1, 2])) for _ in range(WINDOW // 2)]
    assert outcomes[:-1] == [None] * (WINDOW // 2 - 1)
    assert "adaptive proportion" in str(outcomes[-1])  # the 512th byte closes the window


def test_a_healthy_source_passes_10000_blocks_without_a_false_alarm() -> None:
    """10,000 blocks of 20,480 bytes from a seeded generator (seed 20240), default cutoffs.

    At the cutoffs for --max-bytes 1 MiB, a block of 20,480 independent uniform
    bytes fails with probability below 2^-36.9 (repetition count 20,480 * 2^-54,
    adaptive proportion 40 windows * 2^-42.5), so this test fails by chance with
    probability below 10^4 * 2^-36.9 < 10^-7; with the fixed seed it is deterministic.
    """
    tests = ContinuousTests(cutoffs(DEFAULT_MIN_ENTROPY, MIB))
    rng = random.Random(20240)
    for _ in range(10_000):
        tests.check(rng.randbytes(20_480))


class _Switch:
    """A module-style backend that is healthy or stuck at the test's command."""

    device_id = "switch"

    def __init__(self) -> None:
        self.stuck = False

    def generate(self, n: int) -> bytes:
        return b"\x07" * n if self.stuck else os.urandom(n)

    def close(self) -> None:
        pass


def test_a_failed_block_is_never_served_and_health_waits_for_passing_blocks(
    start_server: Starter, channel_to: Channel
) -> None:
    backend = _Switch()
    server = start_server(backend)
    channel = channel_to(server)
    stub = pb2_grpc.EntropyServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)

    def status() -> int:
        return int(health.Check(health_pb2.HealthCheckRequest()).status)

    assert status() == health_pb2.HealthCheckResponse.SERVING
    backend.stuck = True
    with pytest.raises(grpc.RpcError) as info:
        stub.GetEntropy(pb2.EntropyRequest(bytes_needed=20_480))
    assert info.value.code() is grpc.StatusCode.INTERNAL
    assert str(info.value.details()).startswith(
        "health test failed: repetition count: byte 0x07 20480 times in a row"
    )
    assert status() == health_pb2.HealthCheckResponse.NOT_SERVING
    backend.stuck = False
    for passed in range(1, RECOVERY_BLOCKS + 1):
        reply = stub.GetEntropy(pb2.EntropyRequest(bytes_needed=1024))
        assert len(reply.data) == 1024  # a passing block is served
        expected = passed == RECOVERY_BLOCKS
        assert status() == (
            health_pb2.HealthCheckResponse.SERVING
            if expected
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )


def test_urandom_is_not_tested_and_every_other_backend_is() -> None:
    assert UrandomBackend.continuous_tests is False
    assert getattr(TimingNoiseBackend, "continuous_tests", True) is True
    assert getattr(_Switch, "continuous_tests", True) is True
