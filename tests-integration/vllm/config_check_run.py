"""An engine-core process on another qr configuration than its front end (issue 29).

Run by test_one_configuration.py, one process per scenario (a fresh front
end: its request check reads the settings once per process). The scenario builds
the engine configuration with ``EngineArgs.create_engine_config`` (where the
front end stamps its fingerprint) under the front end's ``QR_*`` environment,
then changes the environment and starts the engine from that configuration:
vLLM's ``mp`` backend spawns the engine-core process with the changed
environment, as a Ray node with other settings would run a worker. The engine
core builds the processor, which compares. Prints one line:
``qr-config-result: {json}``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any

from vllm import SamplingParams
from vllm.engine.arg_utils import EngineArgs
from vllm.v1.engine.llm_engine import LLMEngine

from qr_core import ZScoreMeanAmplifier, register_amplifier
from qr_vllm import QRSamplingLogitsProcessor

RESULT_PREFIX = "qr-config-result: "
ARMS = json.dumps({"sham": {"entropy_source_type": "system"}})
PLUGIN_AMPLIFIER = "front_end_only"


def _install_front_end_only_amplifier() -> None:
    """An amplifier plugin installed where the front end runs, not where the engine does:
    registered in this process, after the start (a spawned engine core re-imports this
    module, not what its functions did)."""

    @register_amplifier(PLUGIN_AMPLIFIER)
    class FrontEndOnlyAmplifier(ZScoreMeanAmplifier):
        pass


def scenario(model: str, front: dict[str, str], engine_env: dict[str, str]) -> dict[str, Any]:
    """Stamp under ``front``, then start the engine under ``engine_env``."""
    os.environ.update(front)
    result: dict[str, Any] = {"start_error": None, "accepted": []}
    t0 = time.monotonic()
    args = EngineArgs(model=model, enforce_eager=True, max_model_len=128, max_num_seqs=4, seed=0)
    config = args.create_engine_config()
    result["stamped"] = "qr_sampler" in config.additional_config
    # What the front end's request check accepts (vLLM calls it on admission).
    for extra in ({"qr_entropy_source": "sham"}, {"qr_signal_amplifier_type": PLUGIN_AMPLIFIER}):
        try:
            QRSamplingLogitsProcessor.validate_params(SamplingParams(extra_args=extra))
            result["accepted"].append(extra)
        except ValueError:
            pass
    for name in front:
        os.environ.pop(name, None)
    os.environ.update(engine_env)
    try:
        engine = LLMEngine.from_vllm_config(config)
    except Exception as exc:
        result["start_error"] = f"{type(exc).__name__}: {exc}"
        result["start_traceback"] = traceback.format_exc()[-3000:]
    else:
        engine.engine_core.shutdown()
    result["wall_s"] = round(time.monotonic() - t0, 1)
    return result


def main() -> int:
    model, records, name = sys.argv[1], sys.argv[2], sys.argv[3]
    both = {"QR_RECORD_PATH": records, "QR_LOG_LEVEL": "none"}  # equal on both sides
    scenarios = {
        # Issue 29's arm case: QR_SOURCES reached the front end only.
        "arm_only_in_front_end": ({**both, "QR_SOURCES": ARMS}, both),
        # An amplifier a request may name (qr_signal_amplifier_type), known to the
        # front end only (the engine core is spawned, not forked: it does not inherit
        # this process's registrations).
        "amplifier_only_in_front_end": (both, {**both, "VLLM_WORKER_MULTIPROC_METHOD": "spawn"}),
    }
    if name not in scenarios:
        raise SystemExit(f"scenario must be one of {sorted(scenarios)}, got {name!r}")
    if name == "amplifier_only_in_front_end":
        _install_front_end_only_amplifier()
    result = scenario(model, *scenarios[name])
    print(RESULT_PREFIX + json.dumps({"scenario": name, **result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
