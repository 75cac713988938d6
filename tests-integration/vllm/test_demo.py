"""The main job: ``python -m qr_vllm.demo`` (``hatch run generate``) on the tiny model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _demo(*args: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QR_")}
    result = subprocess.run(
        [sys.executable, "-m", "qr_vllm.demo", "--max-tokens", "8", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _provenance(stdout: str) -> list[list[str]]:
    """The per-token table rows: index, token, id, rank, prob, u, z, T, source, seq, fallback."""
    rows = []
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 11 and parts[0].isdigit() and parts[-1] in ("yes", "no"):
            rows.append(parts)
    return rows


def test_demo_generates_with_system_entropy(tiny_model: Path, tmp_path: Path) -> None:
    out = _demo(cwd=tmp_path)
    assert "=== prompt 0" in out
    assert "=== prompt 1" in out
    rows = _provenance(out)
    # One run of token indices 0, 1, ... per prompt: 8 tokens, or fewer where the
    # model sampled its end-of-sequence token (the demo does not ignore EOS).
    indices = [int(row[0]) for row in rows]
    starts = [i for i, index in enumerate(indices) if index == 0]
    assert len(starts) == 2, out
    for begin, end in zip(starts, [*starts[1:], len(indices)], strict=True):
        assert indices[begin:end] == list(range(end - begin)), out
        assert 1 <= end - begin <= 8, out
    assert all(row[-3] == "system" and row[-1] == "no" for row in rows)
    assert all(0.0 < float(row[5]) < 1.0 for row in rows)


def test_same_seed_gives_the_same_text(tiny_model: Path, tmp_path: Path) -> None:
    first = _demo("--seed", "7", cwd=tmp_path)
    second = _demo("--seed", "7", cwd=tmp_path)
    texts = [
        [line for line in out.splitlines() if line.startswith("--- text:")]
        for out in (first, second)
    ]
    assert len(texts[0]) == 2
    assert texts[0] == texts[1]
    assert _provenance(first) == _provenance(second)
    assert all(row[-3] == "mock_uniform" for row in _provenance(first))
