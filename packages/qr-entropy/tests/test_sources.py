"""Unit and property tests of the built-in sources and the EntropySource base class."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qr_entropy import (
    ByteCountError,
    EntropyConfig,
    EntropySource,
    EntropyUnavailableError,
    MockUniformSource,
    ShamEntropySource,
    SystemEntropySource,
    TimingNoiseSource,
    get_source_class,
)
from qr_entropy._timing import MIN_SAMPLES_PER_BLOCK, min_entropy_mcv, raw_timing_deltas

LOCAL_SOURCES = ["system", "timing_noise", "mock_uniform", "sham"]


@pytest.mark.parametrize("name", LOCAL_SOURCES)
@pytest.mark.parametrize("n", [1, 63, 64, 65, 4097])
def test_fetch_returns_exactly_n_bytes_with_provenance(name: str, n: int) -> None:
    with get_source_class(name).from_config(EntropyConfig()) as source:
        before = time.time_ns()
        fetch = source.fetch(n)
        after = time.time_ns()
    assert isinstance(fetch.data, bytes)
    assert len(fetch.data) == n
    assert fetch.source == name == source.name
    assert fetch.device_id == source.device_id != ""
    assert fetch.sequence_id is None
    assert before <= fetch.requested_ns <= fetch.generated_ns <= fetch.received_ns <= after
    assert fetch.fallback is False
    assert fetch.fallback_reason is None
    assert fetch.response_count == 1


@pytest.mark.parametrize("name", LOCAL_SOURCES)
@pytest.mark.parametrize("n", [0, -1, 2.0, "8", True, None])
def test_bad_byte_count_is_a_value_error_naming_n(name: str, n: object) -> None:
    source = get_source_class(name).from_config(EntropyConfig())
    for call in (source.get_random_bytes, source.fetch):
        with pytest.raises(ByteCountError, match="n must be a positive int") as info:
            call(n)  # type: ignore[arg-type]
        assert isinstance(info.value, ValueError)
        assert repr(n) in str(info.value) or f"n={n}" in str(info.value)


@pytest.mark.parametrize("name", LOCAL_SOURCES)
def test_health_check_and_context_manager(name: str) -> None:
    source = get_source_class(name).from_config(EntropyConfig())
    assert source.is_available is True
    health = source.health_check()
    assert health["source"] == name
    assert health["healthy"] is True
    with source as entered:
        assert entered is source
    source.close()  # a second close is harmless


@pytest.mark.parametrize("name", ["system", "timing_noise", "sham"])
def test_consecutive_fetches_differ(name: str) -> None:
    # Just in time: nothing is replayed. Two equal 32-byte draws have probability 2^-256.
    source = get_source_class(name).from_config(EntropyConfig())
    draws = {source.get_random_bytes(32) for _ in range(20)}
    assert len(draws) == 20


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**63 - 1), sizes=st.lists(st.integers(1, 300), min_size=1, max_size=5))
def test_mock_uniform_is_deterministic_per_seed_and_call_sequence(
    seed: int, sizes: list[int]
) -> None:
    a = MockUniformSource(seed=seed)
    b = MockUniformSource(seed=seed)
    chunks = [a.get_random_bytes(n) for n in sizes]
    assert chunks == [b.get_random_bytes(n) for n in sizes]
    assert all(len(c) == n for c, n in zip(chunks, sizes, strict=True))
    # The stream continues: a fresh source with the same seed repeats only the first chunk.
    assert a.get_random_bytes(64) != MockUniformSource(seed=seed).get_random_bytes(64)


@pytest.mark.parametrize("bias", [-127.5, -20.0, -0.5, 0.0, 0.5, 3.0, 60.0, 127.5])
def test_mock_uniform_mean_is_127_5_plus_bias(bias: float) -> None:
    # n = 2,000,000 bytes, seed 2024. Under the model the mean's standard deviation is
    # at most 73.9 / sqrt(n) = 0.052; a tolerance of 0.26 is five of them.
    n = 2_000_000
    data = np.frombuffer(MockUniformSource(seed=2024, bias=bias).get_random_bytes(n), np.uint8)
    assert abs(data.mean() - (127.5 + bias)) < 0.26
    if bias == 127.5:
        assert (data == 255).all()
    if bias == -127.5:
        assert (data == 0).all()


def test_mock_uniform_seed_and_bias_come_from_config() -> None:
    config = EntropyConfig(mock_uniform_seed=7, mock_uniform_bias=1.5)
    source = get_source_class("mock_uniform").from_config(config)
    assert isinstance(source, MockUniformSource)
    assert source.bias == 1.5
    assert source.device_id == "pcg64(seed=7,bias=1.5)"
    assert source.get_random_bytes(64) == MockUniformSource(seed=7, bias=1.5).get_random_bytes(64)
    assert source.health_check()["seed"] == 7


@pytest.mark.parametrize("bias", [-127.6, 128.0, float("nan")])
def test_mock_uniform_rejects_bias_out_of_range(bias: float) -> None:
    with pytest.raises(ValueError, match="bias"):
        MockUniformSource(bias=bias)


def test_unseeded_mock_sources_differ() -> None:
    assert MockUniformSource().get_random_bytes(32) != MockUniformSource().get_random_bytes(32)


def test_sham_waits_its_latency_before_delivering() -> None:
    # A lower bound guaranteed by time.sleep, not a speed measurement.
    source = ShamEntropySource.from_config(EntropyConfig(sham_latency_ms=30.0))
    assert isinstance(source, ShamEntropySource)
    assert source.latency_ms == pytest.approx(30.0)
    assert source.health_check()["latency_ms"] == pytest.approx(30.0)
    start = time.perf_counter_ns()
    fetch = source.fetch(16)
    assert time.perf_counter_ns() - start >= 30_000_000
    assert fetch.generated_ns - fetch.requested_ns >= 30_000_000 - 1_000_000
    assert fetch.source == "sham"


def test_sham_rejects_negative_latency() -> None:
    with pytest.raises(ValueError, match="latency_ms"):
        ShamEntropySource(latency_ms=-1.0)


def test_system_source_is_os_urandom() -> None:
    source = SystemEntropySource()
    assert source.device_id == "os.urandom"
    assert len(set(source.get_random_bytes(4096))) > 200


def test_timing_raw_samples_and_min_entropy_estimate() -> None:
    raw = raw_timing_deltas(MIN_SAMPLES_PER_BLOCK)
    assert raw.dtype == np.int64
    assert raw.shape == (MIN_SAMPLES_PER_BLOCK,)
    assert (raw >= 0).all()  # perf_counter_ns is monotonic
    assert min_entropy_mcv(np.zeros(1000, dtype=np.int64)) == 0.0
    # 256 equiprobable values, 256,000 samples: estimate just under 8 bits.
    spread = np.tile(np.arange(256, dtype=np.int64), 1000)
    assert 7.8 < min_entropy_mcv(spread) < 8.0


def test_timing_health_failure_raises_entropy_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A stuck clock (every delta equal) cannot be produced on this machine, so the
    # clock read is replaced by a constant counter step.
    ticks = iter(range(0, 10**12, 100))
    monkeypatch.setattr(time, "perf_counter_ns", lambda: next(ticks))
    source = TimingNoiseSource()
    with pytest.raises(EntropyUnavailableError, match="health test failed") as info:
        source.fetch(64)
    assert "0.000 bits" in str(info.value)
    assert source.health_check()["min_entropy_per_sample"] == 0.0


def test_timing_block_size_grows_when_the_raw_estimate_is_low(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A clock whose deltas are 100 ns with probability 0.7 and otherwise uniform on
    # 101..164 (seed 3): the estimate is about -log2(0.7 + bound) < 0.5 bits, so each
    # 512-bit block must condition more than 2 * 512 / 0.5 = 2048 samples.
    rng = np.random.default_rng(3)
    steps = np.where(rng.random(10**6) < 0.7, 100, rng.integers(101, 165, 10**6))
    clock = iter(np.cumsum(steps).tolist())
    monkeypatch.setattr(time, "perf_counter_ns", lambda: next(clock))
    source = TimingNoiseSource()
    data = source.get_random_bytes(200)
    health = source.health_check()
    estimate = health["min_entropy_per_sample"]
    assert isinstance(estimate, float)
    assert 0.125 < estimate < 0.5
    assert health["samples_per_block"] == math.ceil(2 * 512 / estimate)
    assert len(data) == 200


def test_timing_health_check_reports_estimate_after_a_fetch() -> None:
    source = TimingNoiseSource()
    assert source.health_check()["min_entropy_per_sample"] is None
    source.get_random_bytes(128)
    estimate = source.health_check()["min_entropy_per_sample"]
    assert isinstance(estimate, float)
    assert estimate >= source.health_check()["required_min_entropy_per_sample"]  # type: ignore[operator]


class _ShortSource(EntropySource):
    """A plugin that breaks the contract by returning the wrong number of bytes."""

    def __init__(self, result: object) -> None:
        self._result = result

    @property
    def name(self) -> str:
        return "short"

    @property
    def is_available(self) -> bool:
        return True

    def get_random_bytes(self, n: int) -> bytes:
        return self._result  # type: ignore[return-value]

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("result", "message"),
    [(b"abc", "returned 3 bytes, expected exactly n=4"), ("abcd", "returned str")],
)
def test_fetch_rejects_wrong_length_or_type(result: object, message: str) -> None:
    with pytest.raises(EntropyUnavailableError, match=message):
        _ShortSource(result).fetch(4)


def test_default_fetch_accepts_bytearray_and_default_from_config() -> None:
    source = _ShortSource.__new__(_ShortSource)
    source._result = bytearray(b"wxyz")
    fetch = source.fetch(4)
    assert fetch.data == b"wxyz"
    assert type(fetch.data) is bytes
    assert fetch.device_id == ""
    assert fetch.generated_ns == fetch.received_ns
