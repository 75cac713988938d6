"""The processor under vLLM's own loaders and interfaces, without an engine.

V1: instantiated by ``vllm.v1.sample.logits_processor.build_logitsprocs`` from
the installed entry point. Model Runner V2 (needs Triton, so it cannot run an
engine here): loaded and instantiated by vLLM's own V2 loader and validator.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from vllm import SamplingParams
from vllm.config import VllmConfig
from vllm.exceptions import VLLMValidationError
from vllm.v1.sample.logits_processor import (
    BatchUpdate,
    validate_logits_processors_parameters,
)
from vllm.v1.worker.gpu.sample.logits_processor import (
    LogitsContext,
    build_custom_logits_processors,
    build_custom_logits_processors_params_validator,
)

from qr_core.records import LOG_SINK_LOGGER, TokenSamplingRecord, writer_file
from qr_vllm import QRSamplingLogitsProcessor
from qr_vllm.step import _records as step_records

from .engine_parts import add_requests, built_processor

VOCAB = 64
# Small sample counts keep the unit tests fast; the engine tests use the default.
SAMPLE_COUNT = "256"


@pytest.fixture
def seeded_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QR_ENTROPY_SOURCE_TYPE", "mock_uniform")
    monkeypatch.setenv("QR_MOCK_UNIFORM_SEED", "1234")
    monkeypatch.setenv("QR_SAMPLE_COUNT", SAMPLE_COUNT)
    monkeypatch.setenv("QR_DIAGNOSTIC_MODE", "true")


def _v1_processor() -> QRSamplingLogitsProcessor:
    proc = built_processor()
    assert proc.runner == "v1"
    return proc


def _logits(rows: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, VOCAB, generator=gen) * 3


def _assert_forced(row: torch.Tensor) -> int:
    finite = torch.isfinite(row)
    assert int(finite.sum()) == 1
    token = int(torch.nonzero(finite)[0, 0])
    assert float(row[token]) == 0.0
    return token


@pytest.mark.usefixtures("seeded_env")
def test_v1_forces_qr_rows_and_records_them() -> None:
    proc = _v1_processor()
    add_requests(
        proc,
        SamplingParams(extra_args={"qr_request_tag": "a"}),
        SamplingParams(temperature=0.0),
        SamplingParams(extra_args={"qr_request_tag": "greedy-by-qr", "qr_top_k": 1}),
    )
    logits = _logits(3)
    original = logits.clone()
    out = proc.apply(logits)
    assert out is logits
    tok_a = _assert_forced(logits[0])
    assert torch.equal(logits[1], original[1]), "a temperature=0 row is vLLM's to sample"
    tok_k1 = _assert_forced(logits[2])
    assert tok_k1 == int(original[2].argmax())

    records = proc.diagnostic_records()
    assert [(r.request_tag, r.token_id, r.token_index) for r in records] == [
        ("a", tok_a, 0),
        ("greedy-by-qr", tok_k1, 0),
    ]
    # One fetch for the whole step: both rows share its provenance.
    assert len({(r.entropy_requested_ns, r.entropy_received_ns) for r in records}) == 1
    for r in records:
        assert r.logits_ready_ns <= r.entropy_requested_ns <= r.entropy_received_ns
        assert r.entropy_source == "mock_uniform"
        assert r.sample_count == int(SAMPLE_COUNT)
        assert 0.0 < r.u < 1.0
        assert r.num_candidates >= 1
        # Recorded steps carry the entropy even for the fixed strategy.
        assert 0.0 < r.shannon_entropy <= np.log(VOCAB)
    assert records[1].num_candidates == 1
    assert proc.timings().steps == 1
    assert proc.timings().rows == 2
    proc.close()


@pytest.mark.usefixtures("seeded_env")
def test_same_seed_same_tokens_and_token_index_advances() -> None:
    chosen = []
    for _ in range(2):
        proc = _v1_processor()
        (out,) = add_requests(proc, SamplingParams(extra_args={"qr_top_k": 0, "qr_top_p": 1.0}))
        tokens = []
        for step in range(5):
            logits = _logits(1, seed=step)
            proc.apply(logits)
            tokens.append(_assert_forced(logits[0]))
            out.append(tokens[-1])
        chosen.append(tokens)
        assert [r.token_index for r in proc.diagnostic_records()] == list(range(5))
        assert [r.token_id for r in proc.diagnostic_records()] == tokens
        proc.close()
    assert chosen[0] == chosen[1]


@pytest.mark.usefixtures("seeded_env")
def test_mixed_settings_in_one_step_use_one_fetch() -> None:
    proc = _v1_processor()
    add_requests(
        proc,
        SamplingParams(extra_args={"qr_sample_count": 128, "qr_temperature_strategy": "edt"}),
        SamplingParams(),
        SamplingParams(extra_args={"qr_sample_count": 128, "qr_fixed_temperature": 1.3}),
        SamplingParams(extra_args={"qr_temperature_strategy": "edt", "qr_sample_count": 128}),
    )
    logits = _logits(4)
    proc.apply(logits)
    for row in logits:
        _assert_forced(row)
    records = proc.diagnostic_records()
    assert [r.sample_count for r in records] == [128, 256, 128, 128]
    assert [r.temperature_strategy for r in records] == ["edt", "fixed", "fixed", "edt"]
    assert records[1].temperature == pytest.approx(0.7)
    assert records[2].temperature == pytest.approx(1.3)
    assert len({r.entropy_requested_ns for r in records}) == 1
    assert len({r.raw_sha256 for r in records}) == 4, "each row gets its own bytes"
    assert proc.timings().steps == 1
    proc.close()


@pytest.mark.usefixtures("seeded_env")
def test_log_level_is_honoured_per_request(caplog: pytest.LogCaptureFixture) -> None:
    proc = _v1_processor()
    outs = add_requests(
        proc,
        SamplingParams(extra_args={"qr_request_tag": "quiet", "qr_log_level": "none"}),
        SamplingParams(extra_args={"qr_request_tag": "loud", "qr_log_level": "full"}),
        SamplingParams(extra_args={"qr_request_tag": "brief"}),
    )
    with caplog.at_level(logging.INFO):
        logits = _logits(3)
        proc.apply(logits)
        # As vLLM does: keep the tokens, then start the next step, where a
        # request's first record is settled (qr_vllm._emitted).
        for row, out in enumerate(outs):
            out.append(_assert_forced(logits[row]))
        proc.update_state(None)
        assert "tag=brief" not in caplog.text, "summary: no line per token"
        # The requests finish: summary logs one line per request.
        proc.update_state(BatchUpdate(batch_size=0, removed=[2, 1, 0], added=[], moved=[]))
    text = caplog.text
    assert "quiet" not in text
    assert '"request_tag":"loud"' in text
    assert text.count("tag=brief tokens=1 ") == 1
    proc.close()


@pytest.mark.usefixtures("seeded_env")
def test_diagnostic_mode_is_per_request_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QR_DIAGNOSTIC_MODE", "false")
    monkeypatch.setenv("QR_DIAGNOSTIC_BUFFER_SIZE", "3")
    proc = _v1_processor()
    add_requests(
        proc,
        SamplingParams(extra_args={"qr_request_tag": "kept", "qr_diagnostic_mode": 1}),
        SamplingParams(extra_args={"qr_request_tag": "not-kept"}),
    )
    for step in range(5):
        proc.apply(_logits(2, seed=step))
    records = proc.diagnostic_records()
    assert len(records) == 3
    assert {r.request_tag for r in records} == {"kept"}
    proc.close()


@pytest.mark.usefixtures("seeded_env")
def test_records_are_built_only_while_a_sink_receives_them(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("QR_DIAGNOSTIC_MODE", "false")
    built: list[int] = []
    real = step_records.build_token_records

    def counting(*args: Any, **kwargs: Any) -> list[TokenSamplingRecord]:
        records = real(*args, **kwargs)
        built.extend(r.token_index for r in records)
        return records

    # A spy, not a fake: the real records are still built and delivered.
    monkeypatch.setattr(step_records, "build_token_records", counting)
    proc = _v1_processor()
    (out,) = add_requests(proc, SamplingParams(extra_args={"qr_request_tag": "t"}))  # level summary
    # Log level summary, but the record logger below INFO: nobody receives them.
    caplog.set_level(logging.WARNING, logger=LOG_SINK_LOGGER)
    for step in range(3):
        logits = _logits(1, seed=step)
        proc.apply(logits)
        out.append(_assert_forced(logits[0]))
    assert built == []
    assert proc.timings().rows == 3
    with caplog.at_level(logging.INFO, logger=LOG_SINK_LOGGER):
        proc.apply(_logits(1, seed=3))
        proc.update_state(BatchUpdate(batch_size=0, removed=[0], added=[], moved=[]))
    assert built == [3]
    # The request's summary line counts the one token recorded while INFO was on.
    assert "tag=t tokens=1 " in caplog.text
    proc.close()


@pytest.mark.usefixtures("seeded_env")
def test_record_file_holds_every_record(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    monkeypatch.setenv("QR_RECORD_PATH", str(path))
    monkeypatch.setenv("QR_RECORD_RAW_BYTES", "true")
    proc = _v1_processor()
    outs = add_requests(proc, SamplingParams(extra_args={"qr_log_level": "none"}), SamplingParams())
    for step in range(3):
        logits = _logits(2, seed=step)
        proc.apply(logits)
        for row, out in enumerate(outs):
            out.append(_assert_forced(logits[row]))
    proc.close()
    assert not path.exists()  # each process writes its own series under the base path
    own = writer_file(path, proc.writer_id)
    *lines, seal = [json.loads(line) for line in own.read_text().splitlines()]
    assert seal["seal"]["count"] == 6  # close() sealed the hash-chained series
    assert {d["writer_id"] for d in lines} == {proc.writer_id}
    assert not any(d["discarded"] for d in lines)
    assert len(lines) == 6
    kept = proc.diagnostic_records()
    assert [d["token_id"] for d in lines] == [r.token_id for r in kept]
    raw = bytes.fromhex(lines[0]["raw_bytes_hex"])
    assert len(raw) == int(SAMPLE_COUNT)
    assert np.frombuffer(raw, np.uint8).mean() == pytest.approx(lines[0]["sample_mean"])


def test_validate_params_through_vllm_gives_validation_errors() -> None:
    validate_logits_processors_parameters(None, SamplingParams(extra_args={"qr_top_k": 3}))
    with pytest.raises(VLLMValidationError, match=r"qr_top_p.*allowed"):
        validate_logits_processors_parameters(None, SamplingParams(extra_args={"qr_top_p": 2}))


@pytest.mark.usefixtures("seeded_env")
def test_model_runner_v2_loader_and_interface() -> None:
    validate = build_custom_logits_processors_params_validator(None)
    validate(SamplingParams(extra_args={"qr_top_k": 3}))
    with pytest.raises(VLLMValidationError, match="qr_log_level"):
        validate(SamplingParams(extra_args={"qr_log_level": "loud"}))

    slots = 8
    prompt_len = np.zeros(slots, dtype=np.int32)
    prefill_len = np.zeros(slots, dtype=np.int32)
    req_states = SimpleNamespace(
        device=torch.device("cpu"),
        max_num_reqs=slots,
        vocab_size=VOCAB,
        all_token_ids=None,
        prompt_len=SimpleNamespace(np=prompt_len),
        prefill_len=SimpleNamespace(np=prefill_len),
        total_len=None,
    )
    procs = build_custom_logits_processors(VllmConfig(), req_states, is_pooling_model=False)  # type: ignore[arg-type]
    ours = [p for p in procs if isinstance(p, QRSamplingLogitsProcessor)]
    assert len(ours) == 1
    proc = ours[0]
    assert proc.runner == "v2"
    assert proc.add_request(2, SamplingParams(extra_args={"qr_request_tag": "v2", "qr_top_k": 1}))
    assert not proc.add_request(5, SamplingParams(temperature=0.0))
    assert proc.add_request(3, SamplingParams(extra_args={"qr_request_tag": "long-prompt"}))
    prompt_len[[2, 3, 5]] = [5, 12, 4]
    prefill_len[[2, 3, 5]] = [5, 12, 4]
    proc.apply_staged_writes()

    def ctx(seq_lens: list[int]) -> LogitsContext:
        # Rows are reordered each step: row 0 is slot 5, row 1 slot 2, row 2 slot 3.
        idx = np.array([5, 2, 3], dtype=np.int32)
        return LogitsContext(
            expanded_idx_mapping=torch.from_numpy(idx),
            idx_mapping=torch.from_numpy(idx),
            idx_mapping_np=idx,
            expanded_local_pos=torch.zeros(3, dtype=torch.int32),
            input_ids=torch.zeros(3, dtype=torch.int64),
            pos=torch.tensor(seq_lens) - 1,
            seq_lens_upper_bound_np=np.array(seq_lens),
        )

    # Slot 2 samples its 3rd token; slot 3 is still prefilling (8 of 12 prompt tokens).
    logits = _logits(3)
    original = logits.clone()
    proc.apply(logits, ctx([6, 7, 8]))
    assert torch.equal(logits[0], original[0]), "vLLM's greedy row"
    assert _assert_forced(logits[1]) == int(original[1].argmax())
    assert torch.equal(logits[2], original[2]), "a prefill chunk gets no entropy"
    (record,) = proc.diagnostic_records()
    assert (record.request_tag, record.token_index) == ("v2", 2)

    proc.apply(_logits(3, seed=1), ctx([7, 8, 12]))
    assert [(r.request_tag, r.token_index) for r in proc.diagnostic_records()[1:]] == [
        ("v2", 3),
        ("long-prompt", 0),
    ]
    # A recycled slot starts over with the new request's settings.
    assert not proc.add_request(2, SamplingParams(extra_args={"qr_enabled": 0}))
    assert not proc.add_request(3, SamplingParams(extra_args={"qr_enabled": 0}))
    logits = _logits(3, seed=2)
    original = logits.clone()
    proc.apply(logits, ctx([8, 9, 13]))
    assert torch.equal(logits, original)
    proc.close()
