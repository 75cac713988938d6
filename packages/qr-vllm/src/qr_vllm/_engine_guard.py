"""Refuse, at start, the engine modes in which qr sampling cannot run.

Speculative decoding and pooling models give a logits processor nothing to
decide: draft tokens are accepted by vLLM's rejection sampler, and pooling
models produce no tokens. vLLM 0.32's V1 runner then never builds the
processors of the ``vllm.logits_processors`` group (a warning only) while its
front end still validates every request with them, so without this guard a
request carrying ``qr_*`` keys would be accepted and sampled by vLLM alone.

The processor checks the configuration itself whenever vLLM builds it
(:func:`check_engine`). For the modes in which vLLM does not build it, the
``vllm.general_plugins`` entry point :func:`install` wraps the point where
vLLM's front end builds its request validator from the engine configuration,
before any engine process starts (``LLM(...)`` and ``vllm serve`` alike):

* with ``QR_ENABLED=true`` (the default) the engine fails to start with
  :class:`UnsupportedEngineError` saying why;
* with ``QR_ENABLED=false`` the engine starts with vLLM's own sampling, and a
  request that opts in (``qr_enabled = true``) gets a :class:`QRParamsError`
  (HTTP 400) instead of being sampled without entropy.

The same point probes the entropy sources (:func:`qr_vllm._start_probe.probe_in_front_end`),
so that a server refusing the configuration stops the start before any model load.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qr_vllm._adapter_config import AdapterConfig
from qr_vllm._batch import plan_for_params
from qr_vllm._errors import QRParamsError, UnsupportedEngineError
from qr_vllm._settings import SamplingSettings
from qr_vllm._shutdown import install as install_close
from qr_vllm._stamp import install as install_fingerprint
from qr_vllm._start_probe import probe_in_front_end

if TYPE_CHECKING:
    from vllm import SamplingParams
    from vllm.config import VllmConfig

__all__ = ["check_engine", "install", "unsupported_reason"]

logger = logging.getLogger(__name__)

_WRAPPED = "_qr_vllm_engine_guard"


_SPECULATIVE = (
    "qr sampling cannot run with speculative decoding: draft tokens are accepted or "
    "rejected by vLLM's rejection sampler, which would bypass the entropy-selected token"
)
_POOLING = "qr sampling cannot run for pooling models: they produce no tokens to sample"
_REMEDY = {
    _SPECULATIVE: "start vLLM without --speculative-config",
    _POOLING: "serve a generating model",
}


def unsupported_reason(vllm_config: VllmConfig) -> str | None:
    """Why qr sampling cannot run in this engine, or ``None`` when it can."""
    if getattr(vllm_config, "speculative_config", None) is not None:
        return _SPECULATIVE
    model_config = getattr(vllm_config, "model_config", None)
    if model_config is not None and getattr(model_config, "runner_type", None) == "pooling":
        return _POOLING
    return None


def check_engine(vllm_config: VllmConfig) -> None:
    """Refuse engine modes in which qr sampling cannot run.

    Raises:
        UnsupportedEngineError: Speculative decoding or a pooling model.
    """
    reason = unsupported_reason(vllm_config)
    if reason is not None:
        raise UnsupportedEngineError(
            f"{reason}; {_REMEDY[reason]}, or set QR_ENABLED=false to run this engine "
            "with vLLM's own sampling for every request"
        )


def guard_validator(
    vllm_config: VllmConfig, validate: Callable[[SamplingParams], None]
) -> Callable[[SamplingParams], None]:
    """The front end's request validator for this engine, guarded.

    Args:
        vllm_config: The engine configuration.
        validate: The validator vLLM built (it calls the processor's ``validate_params``).

    Returns:
        ``validate`` itself when qr sampling can run; otherwise a validator
        that refuses every request that would be qr-sampled.

    Raises:
        UnsupportedEngineError: qr sampling cannot run and ``QR_ENABLED`` is true.
    """
    reason = unsupported_reason(vllm_config)
    if reason is None:
        return validate
    base = SamplingSettings()
    if base.enabled:
        check_engine(vllm_config)

    def refuse_qr_requests(params: SamplingParams) -> None:
        if plan_for_params(base, params) is not None:
            raise QRParamsError(f"qr_enabled: {reason}; allowed: false")
        validate(params)

    return refuse_qr_requests


def install() -> None:
    """The ``vllm.general_plugins`` entry point: guard vLLM's front end.

    vLLM calls it once per process, in the front end before it builds the
    request validator. Installing twice is harmless.
    """
    install_fingerprint()  # one qr configuration in every process (_stamp.py)
    install_close()  # records closed when the engine stops, on Ray too (_shutdown.py)
    try:
        from vllm.v1.engine.input_processor import InputProcessor
    except ImportError:  # pragma: no cover - only a vLLM other than the pinned one
        logger.warning("qr-vllm: vLLM has no InputProcessor; the engine-mode guard is off")
        return
    original = getattr(InputProcessor, "_build_logits_processors_params_validator", None)
    if original is None:  # pragma: no cover - only a vLLM other than the pinned one
        logger.warning("qr-vllm: unknown vLLM front end; the engine-mode guard is off")
        return
    if getattr(original, _WRAPPED, False):
        return

    @functools.wraps(original)
    def build_validator(self: Any) -> Callable[[SamplingParams], None]:
        validate = guard_validator(self.vllm_config, original(self))
        if unsupported_reason(self.vllm_config) is None:
            # A server refusing the configuration stops the start before any model load
            # (issue 26: _start_probe.py).
            probe_in_front_end(AdapterConfig.from_env())
        return validate

    setattr(build_validator, _WRAPPED, True)
    InputProcessor._build_logits_processors_params_validator = build_validator  # type: ignore[method-assign]
