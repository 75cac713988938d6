"""The server's counters and the device's measured rate (``_stats``), without a server."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qr_entropy_server import EntropyServer, ServerConfigError, ServerOptions, UrandomBackend
from qr_entropy_server._stats import (
    FOLD_WALL_NS,
    HALF_LIFE_S,
    READ_BUCKETS_S,
    ServerStats,
    self_test_sizes,
)

SECOND = 1_000_000_000


def test_a_read_counts_in_its_bucket_and_the_rate_is_bytes_over_read_time() -> None:
    stats = ServerStats()
    start = 10 * SECOND
    stats.answered(0, 1000, start, start + 1_000_000)  # 1,000 bytes in 1 ms: 1 MB/s
    assert stats.bytes_per_second == pytest.approx(1e6)
    assert stats.requests["GetEntropy", "OK"] == 1
    assert stats.bytes_served == 1000
    bucket = next(i for i, b in enumerate(READ_BUCKETS_S) if b >= 0.001)
    assert stats.read_counts[bucket] == 1
    assert sum(stats.read_counts) == 1


def test_older_windows_weigh_less_by_the_half_life() -> None:
    stats = ServerStats()
    t = 10 * SECOND
    stats.read(1000, t, t + 1_000_000)  # 1 MB/s, folded at once (the first read)
    later = t + round(HALF_LIFE_S * SECOND)
    # 3 MB/s one half-life later: weights 1/2 (old) and 1 (new), bytes over read time.
    stats.read(3000, later - 1_000_000, later)
    # (The first fold came 1 ms after t: its weight is a hair above 1/2.)
    assert stats.bytes_per_second == pytest.approx((500 + 3000) / (0.5e-3 + 1e-3), rel=1e-4)


def test_a_window_is_folded_after_wall_time_even_when_reads_are_short() -> None:
    stats = ServerStats()
    t = 10 * SECOND
    stats.read(100, t, t + 1000)
    first = stats.bytes_per_second
    stats.read(100, t + 1000, t + 11_000)  # ten times slower, within the window: not yet
    assert stats.bytes_per_second == first
    t2 = t + FOLD_WALL_NS + 11_000
    stats.read(100, t2 - 10_000, t2)
    assert stats.bytes_per_second < first


def test_a_wall_clock_step_back_counts_as_a_zero_read() -> None:
    stats = ServerStats()
    stats.read(10, 5 * SECOND, 4 * SECOND)
    assert stats.read_ns == 0
    assert stats.read_counts[0] == 1


def test_refusals_and_health_test_failures_are_counted() -> None:
    stats = ServerStats()
    stats.refused(1, grpc.StatusCode.RESOURCE_EXHAUSTED)
    stats.health_test_failed("repetition_count")
    stats.health_test_failed("no-such-test")
    assert stats.requests["StreamEntropy", "RESOURCE_EXHAUSTED"] == 1
    assert stats.health_test_failures == {"repetition_count": 1, "adaptive_proportion": 0}


def test_self_test_sizes_grow_to_one_token_and_fit_max_bytes() -> None:
    sizes = self_test_sizes(1 << 20)
    assert sizes[:4] == (512, 2048, 8192, 20_480)
    assert sum(sizes) <= (1 << 20) + 512 + 2048 + 8192
    assert set(self_test_sizes(1000)) == {512, 1000}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"api_key": "line\nbreak"}, "control character"),
        ({"api_key": "k", "api_key_header": "x key"}, "is not a gRPC metadata key"),
        ({"metrics_port": -1}, "--metrics-port must be 0-65535"),
        ({"metrics_port": 0, "metrics_address": " "}, "--metrics-address is empty"),
    ],
)
def test_server_options_refuse_what_grpc_cannot_carry(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ServerConfigError, match=message) as info:
        EntropyServer(UrandomBackend(), ServerOptions(address="127.0.0.1:0", **options))  # type: ignore[arg-type]
    assert "line\nbreak" not in str(info.value)


def test_the_self_test_of_a_slow_device_stops_before_a_read_could_time_out(spawn: Any) -> None:
    """A device at 200 bytes/s: 512 bytes take 2.6 s, 2,048 would take 10 s. The
    self-test stops after the first block (a quarter of --backend-timeout 10 s is
    2.5 s), so the server starts SERVING with the rate of that block."""
    server = spawn(
        "--backend",
        "throttled_backend:ThrottledBackend",
        "--address",
        "127.0.0.1:0",
        "--min-entropy",
        "1",
        env={"QR_TEST_RATE": "200"},
    )
    channel = grpc.insecure_channel(server.address)
    try:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        channel.close()
    assert server.stop() == 0
