"""The start-up guard for engine modes that skip logits processors, without an engine.

The real engines (speculative decoding, pooling) run in
``tests-integration/vllm/test_engine_modes.py``.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from types import SimpleNamespace

import pytest
import torch
from vllm import SamplingParams
from vllm.exceptions import VLLMValidationError
from vllm.v1.engine.input_processor import InputProcessor

from qr_vllm import (
    QRParamsError,
    QRSamplingLogitsProcessor,
    UnsupportedEngineError,
    check_engine,
)
from qr_vllm._engine_guard import guard_validator, install
from qr_vllm._stamp import stamp

SPECULATIVE = SimpleNamespace(speculative_config=object(), model_config=None)
POOLING = SimpleNamespace(
    speculative_config=None, model_config=SimpleNamespace(runner_type="pooling")
)
GENERATING = SimpleNamespace(
    speculative_config=None, model_config=SimpleNamespace(runner_type="generate")
)


def test_engine_modes_without_sampling_fail_at_start() -> None:
    with pytest.raises(UnsupportedEngineError, match=r"speculative decoding.*QR_ENABLED=false"):
        check_engine(SPECULATIVE)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedEngineError, match=r"pooling models.*QR_ENABLED=false"):
        check_engine(POOLING)  # type: ignore[arg-type]
    check_engine(GENERATING)  # type: ignore[arg-type]


class _Validator:
    def __init__(self) -> None:
        self.seen: list[SamplingParams] = []

    def __call__(self, params: SamplingParams) -> None:
        self.seen.append(params)


def test_supported_engine_keeps_vllms_validator() -> None:
    validate = _Validator()
    assert guard_validator(GENERATING, validate) is validate  # type: ignore[arg-type]


@pytest.mark.parametrize("config", [SPECULATIVE, POOLING], ids=["speculative", "pooling"])
def test_unsupported_engine_refuses_to_start_while_qr_is_enabled(config: object) -> None:
    with pytest.raises(UnsupportedEngineError):
        guard_validator(config, _Validator())  # type: ignore[arg-type]


@pytest.mark.parametrize("config", [SPECULATIVE, POOLING], ids=["speculative", "pooling"])
def test_with_qr_disabled_only_opting_in_requests_are_refused(
    config: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QR_ENABLED", "false")
    validate = _Validator()
    guarded = guard_validator(config, validate)  # type: ignore[arg-type]
    plain = SamplingParams(temperature=0.8)
    guarded(plain)
    assert validate.seen == [plain], "requests without qr sampling reach vLLM's validator"
    with pytest.raises(QRParamsError, match=r"qr_enabled: .*allowed: false"):
        guarded(SamplingParams(temperature=0.8, extra_args={"qr_enabled": True}))
    assert validate.seen == [plain]


def test_plugin_entry_point_wraps_the_front_end_once(monkeypatch: pytest.MonkeyPatch) -> None:
    (plugin,) = [e for e in entry_points(group="vllm.general_plugins") if e.name == "qr_sampler"]
    assert plugin.load() is install
    original = InputProcessor._build_logits_processors_params_validator
    monkeypatch.setattr(InputProcessor, "_build_logits_processors_params_validator", original)
    install()
    wrapped = InputProcessor._build_logits_processors_params_validator
    assert wrapped is not original
    install()
    assert InputProcessor._build_logits_processors_params_validator is wrapped

    # The wrapped builder still returns vLLM's own validator for a generating model...
    model_config = SimpleNamespace(logits_processors=None, runner_type="generate")
    front_end = SimpleNamespace(
        model_config=model_config,
        vllm_config=SimpleNamespace(
            use_v2_model_runner=False, speculative_config=None, model_config=model_config
        ),
    )
    validate = wrapped(front_end)  # type: ignore[arg-type]
    # vLLM re-raises validate_params' ValueError as its own (HTTP 400) validation error.
    with pytest.raises(VLLMValidationError, match="qr_top_k"):
        validate(SamplingParams(extra_args={"qr_top_k": "many"}))
    # ... and refuses to build one under speculative decoding.
    front_end.vllm_config.speculative_config = object()
    with pytest.raises(UnsupportedEngineError, match="speculative decoding"):
        wrapped(front_end)  # type: ignore[arg-type]


@pytest.mark.parametrize("config", [SPECULATIVE, POOLING], ids=["speculative", "pooling"])
def test_processor_built_in_an_unsupported_mode(
    config: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Model Runner V2 builds entry-point processors even under speculative decoding.
    # Stamped like every engine configuration a front end builds (qr_vllm._stamp).
    engine = SimpleNamespace(
        **vars(config),
        parallel_config=SimpleNamespace(tensor_parallel_size=1),
        additional_config=stamp({}),
    )
    with pytest.raises(UnsupportedEngineError):
        QRSamplingLogitsProcessor(engine, torch.device("cpu"), False)  # type: ignore[arg-type]
    monkeypatch.setenv("QR_ENABLED", "false")
    engine.additional_config = stamp({})
    processor = QRSamplingLogitsProcessor(engine, torch.device("cpu"), False)  # type: ignore[arg-type]
    processor.close()
