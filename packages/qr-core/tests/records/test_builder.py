"""The one record builder: a step's per-row arrays in, one record per row out."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np
import pytest

from qr_core import (
    SamplingConfig,
    build_amplifier,
    build_temperature_strategy,
    select_tokens,
)
from qr_core.records import (
    RecordError,
    TokenSamplingRecord,
    build_token_records,
    config_hash,
    require_finite,
)


@dataclasses.dataclass(frozen=True)
class Fetch:
    """An entropy fetch as a source reports it (``qr_entropy.EntropyFetch`` has these)."""

    source: str
    device_id: str
    sequence_id: int | None
    requested_ns: int
    generated_ns: int | None
    received_ns: int
    fallback: bool = False
    fallback_reason: str | None = None


@dataclasses.dataclass(frozen=True)
class Amplified:
    u: np.ndarray
    z_score: np.ndarray
    sample_mean: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class Tempered:
    temperature: np.ndarray
    shannon_entropy: np.ndarray


@dataclasses.dataclass(frozen=True)
class Selected:
    token_id: np.ndarray
    token_rank: np.ndarray
    token_prob: np.ndarray
    num_candidates: np.ndarray


FETCH = Fetch("system", "dev-0", 7, 1_000, 1_100, 1_200)
ROWS = 3


def _step(seed: int = 0) -> tuple[Amplified, Tempered, Selected]:
    rng = np.random.default_rng(seed)
    return (
        Amplified(rng.random(ROWS), rng.standard_normal(ROWS), 127.5 + rng.standard_normal(ROWS)),
        Tempered(rng.random(ROWS) + 0.5, rng.random(ROWS) * 3),
        Selected(
            rng.integers(0, 1000, ROWS),
            rng.integers(0, 5, ROWS),
            rng.random(ROWS),
            rng.integers(1, 50, ROWS),
        ),
    )


def test_records_of_a_step_of_qr_cores_own_results() -> None:
    # What the transformers example does: qr-core's batch results, one fetch for the step.
    config = SamplingConfig(sample_count=64)
    amplifier = build_amplifier(config)
    strategy = build_temperature_strategy(config)
    logits = np.random.default_rng(1).standard_normal((ROWS, 100)).astype(np.float32)
    raw = np.random.default_rng(2).integers(0, 256, (ROWS, 64), dtype=np.uint8)
    temps = strategy.compute_batch(logits)
    amp = amplifier.amplify_batch(raw)
    chosen = select_tokens(logits, amp.u, temperature=temps.temperature, top_k=50, top_p=0.9)
    h = config_hash(dataclasses.asdict(config))
    records = build_token_records(
        amp,
        temps,
        chosen,
        request_id=["a", "b", "c"],
        request_tag="exp",
        token_index=4,
        logits_ready_ns=900,
        fetch=FETCH,
        raw=raw,
        amplifier=amplifier.name,
        temperature_strategy=strategy.name,
        u_transform=amplifier.u_transform,
        top_k=50,
        top_p=0.9,
        config_hash=h,
    )
    # The fields as the example wrote them by hand before the builder existed.
    expected = [
        TokenSamplingRecord(
            request_id=rid,
            request_tag="exp",
            token_index=4,
            logits_ready_ns=900,
            entropy_requested_ns=1_000,
            entropy_generated_ns=1_100,
            entropy_received_ns=1_200,
            entropy_source="system",
            device_id="dev-0",
            sequence_id=7,
            fallback=False,
            fallback_reason=None,
            sample_count=64,
            raw_sha256=hashlib.sha256(raw[i].tobytes()).hexdigest(),
            raw_bytes_hex=None,
            amplifier=amplifier.name,
            sample_mean=float(np.asarray(amp.sample_mean)[i]),
            z_score=float(amp.z_score[i]),
            u=float(amp.u[i]),
            temperature_strategy=strategy.name,
            temperature=float(np.asarray(temps.temperature)[i]),
            shannon_entropy=float(np.asarray(temps.shannon_entropy)[i]),
            token_id=int(np.asarray(chosen.token_id)[i]),
            token_rank=int(np.asarray(chosen.token_rank)[i]),
            token_prob=float(np.asarray(chosen.token_prob)[i]),
            num_candidates=int(np.asarray(chosen.num_candidates)[i]),
            top_k=50,
            top_p=0.9,
            config_hash=h,
            u_transform=amplifier.u_transform,
        )
        for i, rid in enumerate(["a", "b", "c"])
    ]
    assert records == expected
    for r in records:
        require_finite(r)
        assert TokenSamplingRecord.from_json_dict(r.to_json_dict()) == r
        assert all(type(getattr(r, f)) is float for f in ("u", "z_score", "token_prob"))
        assert all(type(getattr(r, f)) is int for f in ("token_id", "token_rank", "top_k"))


def test_rows_of_any_length_with_their_own_fetch_names_and_arm() -> None:
    # What an engine step does: rows of different arms, byte counts and settings.
    amp, temps, chosen = _step()
    raw = np.arange(10, dtype=np.uint8)
    offsets = np.array([0, 2, 5, 10])
    fetches = [dataclasses.replace(FETCH, sequence_id=i, fallback=i == 1) for i in range(ROWS)]
    records = build_token_records(
        amp,
        temps,
        chosen,
        request_id=["r0", "r1", "r2"],
        request_tag=["x", None, "y"],
        token_index=[0, 5, 9],
        logits_ready_ns=1,
        fetch=fetches,
        raw=raw,
        offsets=offsets,
        keep_raw=True,
        amplifier=["zscore_mean", "zscore_bits", "zscore_mean"],
        temperature_strategy=["fixed", "edt", "fixed"],
        u_transform="randomized_pit",
        top_k=np.array([0, 50, 1]),
        top_p=[1.0, 0.9, 0.5],
        config_hash=["h0", "h1", "h2"],
        arm=["qrng", "control", "qrng"],
        calibration_sha256=[None, "c1", None],
        writer_id="host-p1",
    )
    assert [r.sample_count for r in records] == [2, 3, 5]
    assert [r.raw_bytes_hex for r in records] == ["0001", "020304", "0506070809"]
    assert records[1].raw_sha256 == hashlib.sha256(bytes([2, 3, 4])).hexdigest()
    assert [r.sequence_id for r in records] == [0, 1, 2]
    assert [r.fallback for r in records] == [False, True, False]
    assert [r.request_tag for r in records] == ["x", None, "y"]
    assert [r.token_index for r in records] == [0, 5, 9]
    assert [r.amplifier for r in records] == ["zscore_mean", "zscore_bits", "zscore_mean"]
    assert [r.top_k for r in records] == [0, 50, 1]
    assert all(type(r.top_k) is int for r in records)
    assert [r.config_hash for r in records] == ["h0", "h1", "h2"]
    assert [r.arm for r in records] == ["qrng", "control", "qrng"]
    assert [r.calibration_sha256 for r in records] == [None, "c1", None]
    assert {r.writer_id for r in records} == {"host-p1"}
    assert [r.token_id for r in records] == chosen.token_id.tolist()
    assert [r.z_score for r in records] == amp.z_score.tolist()


def _build(**changes: object) -> list[TokenSamplingRecord]:
    amp, temps, chosen = _step()
    arguments: dict[str, object] = {
        "request_id": ["r0", "r1", "r2"],
        "token_index": 0,
        "logits_ready_ns": 1,
        "fetch": FETCH,
        "raw": np.zeros((ROWS, 4), dtype=np.uint8),
        "amplifier": "zscore_mean",
        "temperature_strategy": "fixed",
        "u_transform": "randomized_pit",
        "top_k": 0,
        "top_p": 1.0,
        "config_hash": "h",
    }
    steps: dict[str, Any] = {"amplified": amp, "tempered": temps, "selected": chosen}
    for name in list(changes):
        if name in steps:
            steps[name] = changes.pop(name)
    arguments.update(changes)
    return build_token_records(
        steps["amplified"],
        steps["tempered"],
        steps["selected"],
        **arguments,  # type: ignore[arg-type]
    )


def test_the_defaults_give_three_well_formed_records() -> None:
    records = _build()
    assert len(records) == ROWS
    assert {(r.request_tag, r.arm, r.writer_id, r.raw_bytes_hex) for r in records} == {
        (None, None, None, None)
    }


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"token_index": [0, 1]}, r"token_index must be one value or 3 \(one per request_id\)"),
        ({"arm": ["a"]}, r"arm must be one value or 3"),
        ({"raw": np.zeros((2, 4), dtype=np.uint8)}, r"raw must have shape \(3, N\)"),
        ({"raw": np.zeros((ROWS, 4), dtype=np.int16)}, "raw must be uint8 bytes"),
        ({"raw": np.zeros(8, dtype=np.uint8), "offsets": [0, 4, 8]}, "offsets have 4 entries"),
        (
            {"selected": Selected(np.zeros(2), np.zeros(3), np.zeros(3), np.zeros(3))},
            r"token_id must have shape \(3,\)",
        ),
        (
            {"amplified": Amplified(np.zeros(3), np.zeros(3), None)},
            "sample_mean is None; records need each row's byte mean",
        ),
    ],
)
def test_a_mismatch_is_refused_naming_the_argument(changes: dict[str, object], match: str) -> None:
    with pytest.raises(RecordError, match=match):
        _build(**changes)


@dataclasses.dataclass(frozen=True)
class FreshFetch(Fetch):
    """A fetch whose server said when its fresh read began (``EntropyFetch`` has it)."""

    read_started_ns: int | None = None


def test_the_servers_read_start_is_recorded_when_the_fetch_has_one() -> None:
    fresh = FreshFetch("quantum_grpc", "dev-0", 7, 1_000, 1_100, 1_200, read_started_ns=1_050)
    assert {r.entropy_read_started_ns for r in _build(fetch=fresh)} == {1_050}
    # An origin without the attribute (a host written before it) records None.
    assert {r.entropy_read_started_ns for r in _build()} == {None}
    record = _build(fetch=fresh)[0]
    assert TokenSamplingRecord.from_json_dict(record.to_json_dict()) == record
