"""examples/transformers_qr_sampling.py: qr-core and qr-entropy inside transformers' generate().

The example runs on the tiny local model (random weights, 1,024 tokens) with a
real ``qr-entropy-server`` process as its ``quantum_grpc`` source; the records
its sinks receive must be exactly the tokens ``generate()`` produced.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from qr_core import SamplingConfig
from qr_core.records import JsonlFileSink, RingBufferSink, read_records
from qr_entropy import EntropyConfig, build_source
from qr_entropy_server.server_process import start_server_process
from qr_vllm.demo import build_tiny_model

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "transformers_qr_sampling.py"
PROMPTS = ["Once upon a time", "The nature of consciousness is a question"]


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("transformers_qr_sampling", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def server_address() -> Iterator[str]:
    """A real reference server process (urandom backend) on a free local port."""
    with start_server_process("--address", "127.0.0.1:0") as server:
        yield server.address


@pytest.fixture(scope="module")
def tiny() -> tuple[Path, Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_model()
    return path, AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)


def _grpc_config(address: str) -> EntropyConfig:
    # No fallback: every token's bytes must come from the server process.
    return EntropyConfig(
        entropy_source_type="quantum_grpc",
        grpc_server_address=address,
        fallback_mode="error",
        grpc_timeout_ms=5000.0,
        cb_min_timeout_ms=1000.0,
    )


def test_recorded_tokens_are_the_generated_tokens(
    example: ModuleType, server_address: str, tiny: tuple[Path, Any, Any], tmp_path: Path
) -> None:
    _, tokenizer, model = tiny
    path = tmp_path / "records.jsonl"
    memory = RingBufferSink(10_000)
    file_sink = JsonlFileSink(str(path))
    config = SamplingConfig(sample_count=1024, top_k=50, top_p=0.9)
    with build_source(_grpc_config(server_address)) as source:
        processor = example.QRLogitsProcessor(
            source,
            config,
            sinks=[memory, file_sink],
            eos_token_ids=example.eos_ids(model),
            request_tag="hf",
        )
        completions = example.generate(model, tokenizer, PROMPTS, processor, max_new_tokens=12)
    file_sink.close()
    records = memory.records()

    assert len(completions) == 2
    by_request: dict[str, list[Any]] = {}
    for r in records:
        by_request.setdefault(r.request_id, []).append(r)
    assert len(by_request) == 2
    # Request ids are made per row in row order; a dict keeps first-seen order.
    for ids, recs in zip(completions, by_request.values(), strict=True):
        recs.sort(key=lambda r: r.token_index)
        assert [r.token_index for r in recs] == list(range(len(ids)))
        assert [r.token_id for r in recs] == ids
        assert 1 <= len(ids) <= 12
    assert {r.entropy_source for r in records} == {"quantum_grpc"}
    assert not any(r.fallback for r in records)
    assert all(r.sequence_id is not None and r.sample_count == 1024 for r in records)
    assert all(r.request_tag == "hf" and 0.0 < r.u < 1.0 for r in records)
    assert all(r.logits_ready_ns <= r.entropy_requested_ns for r in records)
    assert all(r.num_candidates <= 50 and r.top_k == 50 for r in records)
    # The file holds the same tokens with the same entropy.
    stored = read_records(path).records
    key = [(r.request_id, r.token_index, r.token_id, r.raw_sha256, r.u) for r in records]
    assert [(r.request_id, r.token_index, r.token_id, r.raw_sha256, r.u) for r in stored] == key


def test_command_line_writes_the_records_it_reports(
    server_address: str, tiny: tuple[Path, Any, Any], tmp_path: Path
) -> None:
    model_path, _, _ = tiny
    path = tmp_path / "cli.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QR_")}
    env.update(
        QR_ENTROPY_SOURCE_TYPE="quantum_grpc",
        QR_GRPC_SERVER_ADDRESS=server_address,
        QR_FALLBACK_MODE="error",
    )
    argv = [sys.executable, str(EXAMPLE), "--model", str(model_path), "--max-new-tokens", "6"]
    result = subprocess.run(
        [*argv, "--prompt", "Once upon a time", "--records", str(path), "--log", "summary"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = read_records(path).records
    assert 1 <= len(lines) <= 6
    assert {r.entropy_source for r in lines} == {"quantum_grpc"}
    assert f"tokens {len(lines)}, " in result.stdout
    assert f"records: {len(lines)} appended to {path}" in result.stdout
    # --log summary: one line per token on stderr.
    logged = [line for line in result.stderr.splitlines() if line.startswith("qr token ")]
    assert len(logged) == len(lines), result.stderr[-3000:]
