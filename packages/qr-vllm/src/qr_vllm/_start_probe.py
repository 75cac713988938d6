"""Fail closed at start: every entropy source is probed before the engine serves (issue 26).

Each source (the default one and every ``QR_SOURCES`` arm) makes one call to its
server (:meth:`qr_entropy.ArmSources.probe`):

* a server that refuses this configuration (a wrong API key or CA, a host name the
  certificate does not name, a method or response layout it does not speak: a
  :class:`qr_entropy.SourceConfigurationError`) stops the start with a
  :class:`~qr_vllm.SourceRefusedError` naming the arm, the address and the cause;
* a server that is merely down starts the engine with a WARNING (its rows fall
  back as ``QR_FALLBACK_MODE`` allows until it answers), unless
  ``QR_REQUIRE_SOURCES_AT_START=true`` asks to refuse;
* a calibrated arm's answer is its device id, checked against its calibration
  (:mod:`qr_vllm._device_check`).

The probe runs twice, for two reasons:

* **in the front end** (:func:`probe_in_front_end`, from the engine guard, when vLLM
  builds its request validator): before any engine process starts or loads the
  model, so a wrong key refuses in seconds, not after a model load. It runs in a
  short-lived child process that imports qr-entropy alone (about 1 s): on GPUs
  vLLM forks its engine processes from the front end, and grpcio does not support a
  fork after a channel was opened. It is skipped when every source is local
  (``system``, ``mock_uniform``, ``sham``, ``timing_noise``: no server to refuse).
* **in the processor** (:func:`probe_sources`, on the rank that fetches): the
  authoritative check, wherever the processor is built (each data-parallel rank,
  an engine whose front end is not vLLM's), whose results also bind calibrations.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping

from qr_entropy import (
    ArmSources,
    EntropyConfig,
    MockUniformSource,
    ProbeResult,
    QREntropyError,
    ShamEntropySource,
    SourceConfigurationError,
    SystemEntropySource,
    TimingNoiseSource,
    get_source_class,
)
from qr_vllm._adapter_config import AdapterConfig
from qr_vllm._device_check import FirstFetchCheck, refuse_other_devices, start_up_device_check
from qr_vllm._errors import SourceRefusedError

__all__ = ["judge_probes", "probe_in_front_end", "probe_sources", "start_up_checks"]

logger = logging.getLogger(__name__)

_LOCAL = (SystemEntropySource, MockUniformSource, ShamEntropySource, TimingNoiseSource)
_REFUSES = "qr-vllm refuses to start: the entropy server refuses this configuration (no retry"
_REQUIRE = "QR_REQUIRE_SOURCES_AT_START"

# The child of probe_in_front_end: qr-entropy only (no torch, no vLLM), the same
# settings (environment and .env), one line of JSON on stdout.
_CHILD = """
import json
from qr_entropy import ArmSources, EntropyConfig, SourceConfigurationError, load_sources
base = EntropyConfig()
sources = ArmSources.build(base, load_sources(base))
try:
    found = {"results": [
        [arm, r.source, r.reachable, r.address, r.detail, r.device_id]
        for arm, r in sources.probe().items()
    ]}
except SourceConfigurationError as exc:
    found = {"refused": str(exc)}
finally:
    sources.close()
print(json.dumps(found))
"""


def _label(arm: str | None, source: str) -> str:
    return f"QR_SOURCES: arm {arm!r}" if arm is not None else f"QR_ENTROPY_SOURCE_TYPE={source!r}"


def _refusal(text: str, arm: str | None, source: str) -> SourceRefusedError:
    # An arm's message already starts with "QR_SOURCES: arm ...".
    where = "" if arm is not None else f"{_label(None, source)}: "
    return SourceRefusedError(f"{_REFUSES} can fix it): {where}{text}")


def start_up_checks(sources: ArmSources | None, config: AdapterConfig) -> FirstFetchCheck:
    """The processor's start: probe every source, then bind the calibrations to devices.

    Returns:
        The device check of the calibrated arms the probe could not reach.

    Raises:
        SourceRefusedError: As :func:`probe_sources`.
        QRParamsError: A calibrated arm's device differs from its calibration's.
    """
    probes = probe_sources(sources, config)
    return start_up_device_check(sources, config.calibrations, probes)


def probe_sources(
    sources: ArmSources | None, config: AdapterConfig
) -> dict[str | None, ProbeResult]:
    """Probe every source of this rank and judge the answers (:func:`judge_probes`).

    Args:
        sources: The rank's sources; ``None`` on a rank that fetches nothing.
        config: The adapter configuration.

    Returns:
        Each source's probe (``None``: the default source); empty without sources.

    Raises:
        SourceRefusedError: A server refuses the configuration, or one is down while
            ``QR_REQUIRE_SOURCES_AT_START`` is true.
    """
    if sources is None:
        return {}
    try:
        results = sources.probe()
    except SourceConfigurationError as exc:
        raise _refusal(str(exc), exc.arm, config.entropy.entropy_source_type) from exc
    judge_probes(results, config, warn=True)
    return results


def judge_probes(
    results: Mapping[str | None, ProbeResult], config: AdapterConfig, *, warn: bool
) -> None:
    """Start with a warning for each unreachable source, or refuse when the settings ask.

    Args:
        results: The probe of each source.
        config: The adapter configuration (``QR_REQUIRE_SOURCES_AT_START``).
        warn: Log the WARNING for an unreachable source (the front end leaves it to
            the engine, which probes again).

    Raises:
        SourceRefusedError: A source is unreachable and ``QR_REQUIRE_SOURCES_AT_START``
            is true; the message names each such source, its address and the cause.
    """
    down = {arm: r for arm, r in results.items() if not r.reachable}
    for arm, r in results.items():
        if r.reachable:
            logger.info(
                "entropy source %s answered the start-up probe (%s, device %r)",
                _label(arm, r.source),
                r.address or "local",
                r.device_id,
            )
    if not down:
        return
    lines = "; ".join(
        f"{_label(arm, r.source)} at {r.address or '(local)'}: {r.detail or 'no answer'}"
        for arm, r in down.items()
    )
    if config.engine.require_sources_at_start:
        raise SourceRefusedError(
            f"qr-vllm refuses to start: {_REQUIRE}=true and the entropy server is down: "
            f"{lines}. Start the server first, or set {_REQUIRE}=false to start with a warning"
        )
    if warn:
        logger.warning(
            "entropy server down at start-up: %s. Starting anyway: those rows fall back as "
            "QR_FALLBACK_MODE=%r allows until the server answers (set %s=true to refuse to "
            "start instead)",
            lines,
            config.entropy.fallback_mode,
            _REQUIRE,
        )


def probe_in_front_end(config: AdapterConfig) -> None:
    """The front end's probe, in a child process, before any engine process starts.

    Does nothing when every source is local. A child that fails for any other
    reason (it cannot start, it crashes) is logged and left to the engine's probe.

    Raises:
        SourceRefusedError: As :func:`probe_sources`.
        QRParamsError: A reachable calibrated arm reports another device than its
            calibration's (:func:`qr_vllm._device_check.refuse_other_devices`).
    """
    configs: dict[str | None, EntropyConfig] = {None: config.entropy}
    configs.update(config.sources)
    if all(_is_local(c) for c in configs.values()):
        return
    # Each probe is one call bounded by its timeout; the rest is the child's start.
    limit = 60.0 + sum(c.grpc_timeout_ms for c in configs.values()) / 1000.0
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD],
            capture_output=True,
            text=True,
            timeout=limit,
            check=False,
            cwd=os.getcwd(),
        )
        lines = done.stdout.strip().splitlines()
        answer = json.loads(lines[-1]) if done.returncode == 0 and lines else None
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        logger.warning("qr-vllm: the front end's probe of the entropy sources failed: %s", exc)
        return
    if not isinstance(answer, dict):
        logger.warning(
            "qr-vllm: the front end's probe of the entropy sources failed (exit %d): %s; "
            "the engine probes them again when it starts",
            done.returncode,
            done.stderr.strip().splitlines()[-1:] or "",
        )
        return
    if "refused" in answer:
        text = str(answer["refused"])
        arm = next((a for a in config.sources if text.startswith(f"QR_SOURCES: arm {a!r}:")), None)
        raise _refusal(text, arm, config.entropy.entropy_source_type)
    results = {
        arm: ProbeResult(str(source), bool(reachable), str(address), str(detail), str(device))
        for arm, source, reachable, address, detail, device in answer.get("results", [])
    }
    judge_probes(results, config, warn=False)
    # The engine checks unreachable arms on their first fetch; here only the answered ones.
    answered = {
        a: c for a, c in config.calibrations.items() if a in results and results[a].reachable
    }
    refuse_other_devices(answered, results)


def _is_local(config: EntropyConfig) -> bool:
    try:
        return issubclass(get_source_class(config.entropy_source_type), _LOCAL)
    except QREntropyError:  # an unknown name: the engine's own start reports it
        return False
