"""Experiment arms in the processor: ``qr_entropy_source``, one fetch per arm, records.

The processor is built by vLLM's own V1 loader from the installed entry point
(as in test_processor.py); arms are configured with ``QR_SOURCES``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from vllm import SamplingParams

from qr_core.records import TokenSamplingRecord
from qr_entropy import MockUniformSource
from qr_entropy.settings import warn_unknown_variables
from qr_vllm import QRParamsError, QRSamplingLogitsProcessor
from qr_vllm._batch import BatchState
from qr_vllm.step._ops.entropy import byte_positions

from .engine_parts import add_requests, built_processor

VOCAB = 64
SAMPLE_COUNT = 256
SEEDED_ARMS = {
    "m1": {"entropy_source_type": "mock_uniform", "mock_uniform_seed": 1},
    "m2": {"entropy_source_type": "mock_uniform", "mock_uniform_seed": 2},
}


@pytest.fixture
def arms_env(seeded_env: pytest.MonkeyPatch) -> None:
    seeded_env.setenv("QR_SOURCES", json.dumps(SEEDED_ARMS))


def _params(arm: str | None, tag: str, **extra: object) -> SamplingParams:
    args: dict[str, object] = {"qr_request_tag": tag, **extra}
    if arm is not None:
        args["qr_entropy_source"] = arm
    return SamplingParams(extra_args=args)


def _logits(rows: int) -> torch.Tensor:
    return torch.randn(rows, VOCAB, generator=torch.Generator().manual_seed(0)) * 3


def _raw(record: TokenSamplingRecord) -> bytes:
    assert record.raw_bytes_hex is not None
    return bytes.fromhex(record.raw_bytes_hex)


@pytest.mark.usefixtures("arms_env")
def test_a_mixed_step_makes_one_fetch_per_arm_and_each_row_gets_its_arms_bytes() -> None:
    proc = built_processor()
    # Rows 0 and 3 use arm m1, row 2 arm m2, row 1 the default source; row 3
    # asks for fewer bytes, so the arm's bytes are laid out over unequal rows.
    add_requests(
        proc,
        _params("m1", "a"),
        _params(None, "d"),
        _params("m2", "b"),
        _params("m1", "c", qr_sample_count=100),
    )
    logits = _logits(4)
    proc.apply(logits)
    records = {r.request_tag: r for r in proc.diagnostic_records()}
    assert [records[t].arm for t in "adbc"] == ["m1", None, "m2", "m1"]
    assert [records[t].device_id for t in "adbc"] == [
        "pcg64(seed=1,bias=0.0)",
        "pcg64(seed=3,bias=0.0)",
        "pcg64(seed=2,bias=0.0)",
        "pcg64(seed=1,bias=0.0)",
    ]
    # Each arm made exactly one fetch for its rows, in ascending row order.
    m1 = MockUniformSource(seed=1).get_random_bytes(SAMPLE_COUNT + 100)
    assert _raw(records["a"]) == m1[:SAMPLE_COUNT]
    assert _raw(records["c"]) == m1[SAMPLE_COUNT:]
    assert _raw(records["b"]) == MockUniformSource(seed=2).get_random_bytes(SAMPLE_COUNT)
    assert _raw(records["d"]) == MockUniformSource(seed=3).get_random_bytes(SAMPLE_COUNT)
    for r in records.values():
        assert r.raw_sha256 == hashlib.sha256(_raw(r)).hexdigest()
        assert r.logits_ready_ns <= r.entropy_requested_ns <= r.entropy_received_ns
        assert not r.fallback
    assert records["a"].entropy_requested_ns == records["c"].entropy_requested_ns
    assert len({records[t].logits_ready_ns for t in "adbc"}) == 1, "one step"
    # The forced tokens are the recorded ones.
    for row, tag in enumerate("adbc"):
        assert int(torch.argmax(logits[row])) == records[tag].token_id
        assert int(torch.isfinite(logits[row]).sum()) == 1
    proc.close()


@pytest.mark.usefixtures("arms_env")
def test_a_step_of_one_arm_fetches_from_that_arm_only() -> None:
    proc = built_processor()
    add_requests(proc, _params("m2", "x"), _params("m2", "y"))
    proc.apply(_logits(2))
    records = proc.diagnostic_records()
    assert [r.arm for r in records] == ["m2", "m2"]
    expected = MockUniformSource(seed=2).get_random_bytes(2 * SAMPLE_COUNT)
    assert b"".join(_raw(r) for r in records) == expected
    proc.close()


@pytest.mark.usefixtures("arms_env")
def test_a_fault_in_one_arm_falls_back_for_its_rows_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A real fault: the arm's gRPC server socket does not exist.
    arms = {
        "qrng": {
            "entropy_source_type": "quantum_grpc",
            "grpc_server_address": f"unix://{tmp_path}/absent.sock",
            "grpc_retry_count": 0,
        },
        "control": {"entropy_source_type": "system"},
    }
    monkeypatch.setenv("QR_SOURCES", json.dumps(arms))
    proc = built_processor()
    add_requests(proc, _params("qrng", "q1"), _params("control", "c1"), _params("qrng", "q2"))
    proc.apply(_logits(3))
    records = {r.request_tag: r for r in proc.diagnostic_records()}
    for tag in ("q1", "q2"):
        assert records[tag].arm == "qrng"
        assert records[tag].fallback is True
        assert records[tag].entropy_source == "system"
        assert "absent.sock" in (records[tag].fallback_reason or "")
    assert records["c1"].arm == "control"
    assert records["c1"].fallback is False
    assert records["c1"].fallback_reason is None
    proc.close()


@pytest.mark.usefixtures("arms_env")
def test_validate_params_accepts_configured_arms_and_refuses_others() -> None:
    QRSamplingLogitsProcessor.validate_params(_params("m1", "ok"))
    QRSamplingLogitsProcessor.validate_params(_params(None, "ok"))
    with pytest.raises(QRParamsError) as info:
        QRSamplingLogitsProcessor.validate_params(_params("m3", "bad"))
    message = str(info.value)
    assert "qr_entropy_source='m3'" in message
    assert "'m1', 'm2'" in message
    assert isinstance(info.value, ValueError), "vLLM answers a ValueError with HTTP 400"
    with pytest.raises(QRParamsError, match="qr_entropy_source=7"):
        QRSamplingLogitsProcessor.validate_params(_params(None, "n", qr_entropy_source=7))


def test_an_arm_without_qr_sources_is_refused() -> None:
    with pytest.raises(QRParamsError, match="none is configured \\(set QR_SOURCES"):
        QRSamplingLogitsProcessor.validate_params(_params("qrng", "x"))


def test_the_arm_table_cannot_be_set_per_request() -> None:
    with pytest.raises(QRParamsError, match="environment variable QR_SOURCES"):
        QRSamplingLogitsProcessor.validate_params(_params(None, "x", qr_sources="{}"))


def test_an_invalid_qr_sources_names_the_arm_and_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QR_SOURCES", json.dumps({"qrng": {"grpc_timeout_ms": 0}}))
    with pytest.raises(QRParamsError, match="QR_SOURCES: arm 'qrng': grpc_timeout_ms=0"):
        QRSamplingLogitsProcessor.validate_params(_params(None, "x"))


def test_a_moved_slot_keeps_its_arm() -> None:
    state = BatchState(QRSamplingLogitsProcessor._base_settings(), ("a", "b"))
    state.add(0, _params("a", "x"), [])
    state.add(1, _params("b", "y"), [])
    state.add(2, _params(None, "z"), [])

    class Swap:
        name = "SWAP"

    state.move(0, 1, Swap())
    assert [state.slots()[i].arm for i in range(3)] == ["b", "a", None]


@pytest.mark.parametrize("counts", [[4, 4, 4, 4], [3, 1, 5, 2, 7], [1], [2, 9]])
def test_byte_positions_match_a_row_by_row_layout(counts: list[int]) -> None:
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    for mask in range(1, 2 ** len(counts)):
        rows = np.asarray([i for i in range(len(counts)) if mask >> i & 1], dtype=np.int64)
        expected = [b for i in rows.tolist() for b in range(offsets[i], offsets[i + 1])]
        assert byte_positions(offsets, rows).tolist() == expected


def test_qr_sources_is_a_known_variable_and_a_typo_of_it_is_named() -> None:
    # qr_vllm (imported above) has imported every settings module the check waits for.
    unknown = warn_unknown_variables({"QR_SOURCES": "{}", "QR_SOURCEZ": "{}"})
    assert unknown == ["QR_SOURCEZ"]
