"""QR_PREREGISTRATION_PATH: loaded at start, refused when missing or invalid, its hash
in every record and its config hash; the record file sealed at close."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate

from qr_core.records import (
    StoppingRule,
    load_preregistration,
    preregistration_bytes,
    read_records,
    verify_chain,
    writer_file,
)
from qr_vllm import QRParamsError, QRSamplingLogitsProcessor, SamplingSettings, resolve_request
from qr_vllm._adapter_config import AdapterConfig
from qr_vllm._preregistration import registered_hash

from .engine_parts import built_processor


def _plan(path: Path, tokens: int = 100) -> Path:
    path.write_bytes(
        preregistration_bytes(
            hypothesis="qrng shifts mean z",
            design="two-arm",
            group_by="tag",
            arms=["a", "b"],
            tokens_per_arm=tokens,
            alpha=0.05,
            primary_statistic="z",
            stopping=StoppingRule("fixed"),
        )
    )
    return path


def _steps(proc: QRSamplingLogitsProcessor, steps: int) -> None:
    params = [SamplingParams(extra_args={"qr_request_tag": t}) for t in ("a", "b")]
    outs: list[list[int]] = [[], []]
    proc.update_state(
        BatchUpdate(
            batch_size=2,
            removed=[],
            added=[(i, p, [1, 2, 3], outs[i]) for i, p in enumerate(params)],
            moved=[],
        )
    )
    for step in range(steps):
        logits = torch.randn(2, 64, generator=torch.Generator().manual_seed(step))
        proc.apply(logits)
        for row, out in enumerate(outs):
            out.append(int(torch.isfinite(logits[row]).nonzero()[0, 0]))


def test_plan_is_loaded_from_the_variable(seeded_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    plan = _plan(tmp_path / "plan.json")
    seeded_env.setenv("QR_PREREGISTRATION_PATH", str(plan))
    config = AdapterConfig.from_env()
    assert config.preregistration == load_preregistration(plan)
    assert AdapterConfig.from_env().preregistration is not None


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, r"QR_PREREGISTRATION_PATH: cannot read plan file .*plan\.json"),
        (b"{}", r"QR_PREREGISTRATION_PATH: plan file .*missing=\['alpha'"),
        (b"not json", r"QR_PREREGISTRATION_PATH: plan file .*not valid JSON"),
    ],
)
def test_engine_refuses_to_start_without_a_valid_plan(
    seeded_env: pytest.MonkeyPatch, tmp_path: Path, content: bytes | None, expected: str
) -> None:
    path = tmp_path / "plan.json"
    if content is not None:
        path.write_bytes(content)
    seeded_env.setenv("QR_PREREGISTRATION_PATH", str(path))
    with pytest.raises(QRParamsError, match=expected):
        AdapterConfig.from_env()
    with pytest.raises(QRParamsError, match="QR_PREREGISTRATION_PATH"):
        built_processor()  # what vLLM's engine builds at start


def test_a_request_cannot_name_another_plan() -> None:
    with pytest.raises(QRParamsError, match="qr_preregistration_path"):
        resolve_request(SamplingSettings(), {"qr_preregistration_path": "/tmp/other.json"})


def test_records_carry_the_plan_and_the_file_is_sealed(
    seeded_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    plan = load_preregistration(_plan(tmp_path / "plan.json"))
    base = tmp_path / "records.jsonl"
    seeded_env.setenv("QR_RECORD_PATH", str(base))
    proc = built_processor()
    _steps(proc, 2)
    unregistered = {r.config_hash for r in proc.diagnostic_records()}
    proc.close()

    seeded_env.setenv("QR_PREREGISTRATION_PATH", str(tmp_path / "plan.json"))
    proc = built_processor()
    _steps(proc, 3)
    proc.close()
    # One process, one writer id: the second processor appends a new series to the file.
    records = read_records(writer_file(base, proc.writer_id)).records[4:]
    assert len(records) == 6
    assert {r.preregistration_sha256 for r in records} == {plan.sha256}
    (digest,) = unregistered
    assert {r.config_hash for r in records} == {registered_hash(digest, plan.sha256)}
    assert registered_hash(digest, plan.sha256) != digest
    report = verify_chain(base)  # both series: chained, intact, each sealed by close()
    assert report.findings == ()
    assert [(s.records, s.sealed) for s in report.series] == [(4, True), (6, True)]
    assert report.series[1].preregistrations == (plan.sha256,)
