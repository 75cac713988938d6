"""The main job: ``python -m qr_vllm.demo`` (``hatch run generate``).

The tiny random-weight model for the fast checks; one test runs the default
real-model path from scratch (GGUF download and conversion of
SmolLM2-135M-Instruct into a temporary cache, then the engine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# Lines vLLM, torch and their C++ code print; none may reach the demo's output.
_NOISE = ("Triton", "WARNING", "INFO", "oneDNN", "LD_PRELOAD", "nanobind", "Traceback")


def _demo(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith("QR_")}
    result = subprocess.run(
        [sys.executable, "-m", "qr_vllm.demo", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stderr == "", result.stderr[-3000:]
    noisy = [line for line in result.stdout.splitlines() if any(n in line for n in _NOISE)]
    assert noisy == [], noisy
    return result.stdout


def _provenance(stdout: str) -> list[list[str]]:
    """Table rows: index, id, rank, prob, u, z, T, source, seq, fallback, token..."""
    rows = []
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 11 and parts[0].isdigit() and parts[9] in ("yes", "no"):
            rows.append(parts)
    return rows


def _runs(rows: list[list[str]]) -> list[list[list[str]]]:
    """The rows split into one run per prompt (token indices 0, 1, ...)."""
    starts = [i for i, row in enumerate(rows) if row[0] == "0"]
    return [rows[b:e] for b, e in zip(starts, [*starts[1:], len(rows)], strict=True)]


def test_tiny_model_generates_with_system_entropy(tiny_model: Path, tmp_path: Path) -> None:
    out = _demo("--model", "tiny", "--max-tokens", "8", "--ignore-eos", cwd=tmp_path)
    assert "=== prompt 0" in out
    assert "=== prompt 1" in out
    runs = _runs(_provenance(out))
    # --ignore-eos: exactly 8 tokens each, whatever the model samples.
    assert len(runs) == 2, out
    for i, run in enumerate(runs):
        assert [int(row[0]) for row in run] == list(range(8)), out
        assert f"--- demo-{i}: tokens 8, mean z " in out
    assert out.count("ended by the token limit") == 2
    rows = [row for run in runs for row in run]
    assert all(row[7] == "system" and row[9] == "no" for row in rows)
    assert all(0.0 < float(row[4]) < 1.0 for row in rows)
    assert "records: in memory only" in out


def test_same_seed_gives_the_same_text(tiny_model: Path, tmp_path: Path) -> None:
    args = ("--model", "tiny", "--max-tokens", "8", "--seed", "7")
    first = _demo(*args, cwd=tmp_path)
    second = _demo(*args, cwd=tmp_path)
    texts = [
        [line for line in out.splitlines() if line.startswith("--- text:")]
        for out in (first, second)
    ]
    assert len(texts[0]) == 2
    assert texts[0] == texts[1]
    assert _provenance(first) == _provenance(second)
    assert all(row[7] == "mock_uniform" for row in _provenance(first))


def test_default_real_model_from_scratch_with_records(tmp_path: Path) -> None:
    """Conversion into an empty cache, then SmolLM2 answers through qr sampling.

    ``qr_top_k=1`` keeps one candidate per token: qr sampling then picks the
    model's most probable token (u still drawn and recorded), so the answer
    is the model's greedy one, which names Paris.
    """
    records = tmp_path / "records.jsonl"
    out = _demo(
        *("--prompt", "What is the capital of France?", "--max-tokens", "12"),
        *("--xarg", "qr_top_k=1"),
        cwd=tmp_path,
        env={"QR_TINY_MODEL_CACHE": str(tmp_path / "cache"), "QR_RECORD_PATH": str(records)},
    )
    assert "Converting SmolLM2-135M-Instruct" in out
    assert "Starting the vLLM engine" in out
    (text,) = [line for line in out.splitlines() if line.startswith("--- text:")]
    assert "Paris" in text, out
    (run,) = _runs(_provenance(out))
    assert all(row[2] == "0" and row[3] == "1.0000" for row in run)
    # The processor writes its own writer series under QR_RECORD_PATH.
    files = sorted(tmp_path.glob("records*.jsonl"))
    assert len(files) == 1
    stored = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert [d["token_id"] for d in stored] == [int(row[1]) for row in run]
    assert f"records: {len(run)} appended to " in out
    assert (tmp_path / "cache" / "smollm2-135m-instruct-bf16" / "model.safetensors").is_file()
