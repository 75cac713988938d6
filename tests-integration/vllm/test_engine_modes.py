"""Engine modes that cannot use qr sampling fail at start, on real CPU engines.

vLLM 0.32's V1 runner builds no entry-point logits processor under
speculative decoding or for pooling models (a warning only), so without the
adapter's ``vllm.general_plugins`` guard such an engine would accept ``qr_*``
requests and sample them without entropy. Speculative decoding uses vLLM's
n-gram proposer, which needs no draft model.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from vllm import LLM, SamplingParams

from qr_vllm import QRParamsError, UnsupportedEngineError

pytestmark = pytest.mark.slow

NGRAM = {
    "method": "ngram",
    "num_speculative_tokens": 2,
    "prompt_lookup_min": 1,
    "prompt_lookup_max": 3,
}
SPECULATIVE = {"speculative_config": NGRAM}
SPEC_JSON = json.dumps(NGRAM)
POOLING = {"runner": "pooling", "convert": "embed"}


@pytest.fixture
def engine_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    monkeypatch.setenv("QR_ENTROPY_SOURCE_TYPE", "system")
    monkeypatch.setenv("QR_LOG_LEVEL", "none")


def _engine(model: Path, **mode: Any) -> LLM:
    return LLM(
        model=str(model),
        enforce_eager=True,
        distributed_executor_backend="uni",
        max_model_len=256,
        seed=0,
        **mode,
    )


@pytest.fixture
def started() -> Iterator[list[LLM]]:
    engines: list[LLM] = []
    yield engines
    for engine in engines:
        engine.llm_engine.engine_core.shutdown()


@pytest.mark.usefixtures("engine_env")
@pytest.mark.parametrize(
    ("mode", "reason"),
    [(SPECULATIVE, "speculative decoding"), (POOLING, "pooling models")],
    ids=["speculative", "pooling"],
)
def test_unsupported_mode_fails_at_start(
    tiny_model: Path, mode: dict[str, Any], reason: str
) -> None:
    with pytest.raises(UnsupportedEngineError, match=rf"{reason}.*QR_ENABLED=false"):
        _engine(tiny_model, **mode)


@pytest.mark.usefixtures("engine_env")
def test_speculative_engine_with_qr_disabled_refuses_qr_requests(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch, started: list[LLM]
) -> None:
    monkeypatch.setenv("QR_ENABLED", "false")
    # The engine core in its own process: vLLM's n-gram proposer imports numba,
    # after which vLLM 0.32 cannot start another CPU engine in the same process.
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    llm = _engine(tiny_model, **SPECULATIVE)
    started.append(llm)
    with pytest.raises(QRParamsError, match=r"qr_enabled: .*speculative decoding.*allowed: false"):
        llm.generate(
            ["one two one two"],
            SamplingParams(max_tokens=4, extra_args={"qr_enabled": True}),
            use_tqdm=False,
        )
    # The engine keeps serving requests that use vLLM's own sampling.
    (out,) = llm.generate(
        ["one two one two"],
        SamplingParams(max_tokens=4, temperature=0.8, ignore_eos=True),
        use_tqdm=False,
    )
    assert len(out.outputs[0].token_ids) == 4


@pytest.mark.usefixtures("engine_env")
def test_pooling_engine_with_qr_disabled_embeds(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch, started: list[LLM]
) -> None:
    monkeypatch.setenv("QR_ENABLED", "false")
    llm = _engine(tiny_model, **POOLING)
    started.append(llm)
    (out,) = llm.embed(["hello"], use_tqdm=False)
    assert len(out.outputs.embedding) == 64  # the tiny model's hidden size


def test_vllm_serve_with_speculative_decoding_fails_at_start(
    serve_command: Callable[..., list[str]], tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QR_")}
    env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    result = subprocess.run(
        serve_command("--port", "0", "--max-model-len", "256", "--speculative-config", SPEC_JSON),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stderr + result.stdout
    assert result.returncode != 0
    assert "UnsupportedEngineError" in output
    assert "qr sampling cannot run with speculative decoding" in output
