"""``QR_LOG_LEVEL=summary``: one log line per finished request, with exact figures."""

from __future__ import annotations

import dataclasses
import logging
from types import SimpleNamespace

import pytest

from qr_core.records import LOG_SINK_LOGGER, TokenSamplingRecord
from qr_vllm._summary import RequestSummaries

_BASE = TokenSamplingRecord(
    request_id="r1",
    request_tag="exp",
    token_index=0,
    logits_ready_ns=1,
    entropy_requested_ns=2,
    entropy_generated_ns=3,
    entropy_received_ns=4,
    entropy_source="quantum_grpc",
    device_id="",
    sequence_id=1,
    fallback=False,
    fallback_reason=None,
    sample_count=8,
    raw_sha256="0" * 64,
    raw_bytes_hex=None,
    amplifier="zscore_mean",
    sample_mean=127.5,
    z_score=0.0,
    u=0.5,
    temperature_strategy="fixed",
    temperature=0.7,
    shannon_entropy=1.0,
    token_id=5,
    token_rank=0,
    token_prob=0.5,
    num_candidates=3,
    top_k=50,
    top_p=0.9,
    config_hash="1" * 64,
)


def _record(**changes: object) -> TokenSamplingRecord:
    return dataclasses.replace(_BASE, **changes)  # type: ignore[arg-type]


@pytest.fixture
def log() -> logging.Logger:
    logger = logging.getLogger("qr-vllm-test.summary")
    logger.setLevel(logging.INFO)
    return logger


def test_one_line_per_finished_request(
    log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    summaries = RequestSummaries(log)
    with caplog.at_level(logging.INFO, logger=log.name):
        summaries.add([_record(z_score=1.0), _record(request_id="r2", request_tag=None)])
        summaries.add(
            [
                _record(token_index=1, z_score=-0.25, fallback=True, entropy_source="system"),
                _record(token_index=2, z_score=0.75),
                # Entropy spent on a token vLLM dropped: not a token of the request.
                _record(token_index=3, z_score=9.0, discarded=True),
            ]
        )
        assert caplog.records == [], "nothing is logged while requests run"
        summaries.finish(["r1", "unknown"])
        summaries.finish(["r1"])  # already logged: no second line
    assert [r.getMessage() for r in caplog.records] == [
        "qr request req=r1 tag=exp tokens=3 mean_z=+0.5000 fallbacks=1 "
        "sources=quantum_grpc=2,system=1"
    ]
    assert summaries.pending() == 1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=log.name):
        summaries.finish_all()
    assert [r.getMessage() for r in caplog.records] == [
        "qr request req=r2 tag=None tokens=1 mean_z=+0.0000 fallbacks=0 sources=quantum_grpc=1"
    ]
    assert summaries.pending() == 0


def test_model_runner_v2_logs_a_request_when_its_slot_is_reused(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # V2 reports no removals: the summary line comes when the slot is taken again.
    import numpy as np
    import torch
    from vllm import SamplingParams
    from vllm.config import VllmConfig
    from vllm.v1.worker.gpu.sample.logits_processor import (
        LogitsContext,
        build_custom_logits_processors,
    )

    from qr_vllm import QRSamplingLogitsProcessor

    monkeypatch.setenv("QR_ENTROPY_SOURCE_TYPE", "mock_uniform")
    monkeypatch.setenv("QR_MOCK_UNIFORM_SEED", "1")
    monkeypatch.setenv("QR_SAMPLE_COUNT", "64")
    lengths = np.zeros(4, dtype=np.int32)
    req_states = SimpleNamespace(
        device=torch.device("cpu"),
        max_num_reqs=4,
        vocab_size=32,
        all_token_ids=None,
        prompt_len=SimpleNamespace(np=lengths),
        prefill_len=SimpleNamespace(np=lengths),
        total_len=None,
    )
    procs = build_custom_logits_processors(VllmConfig(), req_states, is_pooling_model=False)  # type: ignore[arg-type]
    (proc,) = [p for p in procs if isinstance(p, QRSamplingLogitsProcessor)]
    idx = np.array([1], dtype=np.int32)
    with caplog.at_level(logging.INFO, logger=LOG_SINK_LOGGER):
        assert proc.add_request(1, SamplingParams(extra_args={"qr_request_tag": "first"}))
        lengths[1] = 3
        for seq_len in (3, 4):
            ctx = LogitsContext(
                expanded_idx_mapping=torch.from_numpy(idx),
                idx_mapping=torch.from_numpy(idx),
                idx_mapping_np=idx,
                expanded_local_pos=torch.zeros(1, dtype=torch.int32),
                input_ids=torch.zeros(1, dtype=torch.int64),
                pos=torch.tensor([seq_len - 1]),
                seq_lens_upper_bound_np=np.array([seq_len]),
            )
            proc.apply(torch.randn(1, 32, generator=torch.Generator().manual_seed(seq_len)), ctx)
        assert "tag=first" not in caplog.text
        assert proc.add_request(1, SamplingParams(extra_args={"qr_request_tag": "second"}))
    assert caplog.text.count("tag=first tokens=2 ") == 1
    assert "tag=second" not in caplog.text
    proc.close()
