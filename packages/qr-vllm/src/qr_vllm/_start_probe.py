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
  fork after a channel was opened.
* **in the processor** (:func:`probe_sources`, on the rank that fetches): the
  authoritative check, wherever the processor is built (each data-parallel rank,
  an engine whose front end is not vLLM's), whose results also bind calibrations.

A local source (``system``, ``mock_uniform``, ``sham``, ``timing_noise``) has no
server to refuse anything: it is probed only when calibrated, for its device id
(:func:`to_probe`), so an engine of local sources starts as before.
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

__all__ = ["judge_probes", "probe_in_front_end", "probe_sources", "start_up_checks", "to_probe"]

logger = logging.getLogger(__name__)

_LOCAL = (SystemEntropySource, MockUniformSource, ShamEntropySource, TimingNoiseSource)
_REFUSES = "qr-vllm refuses to start: the entropy server refuses this configuration (no retry"
_REQUIRE = "QR_REQUIRE_SOURCES_AT_START"

# The child of probe_in_front_end: qr-entropy only (no torch, no vLLM), the same
# settings (environment and .env); argv[1] lists the arms to probe (null: the
# default source); one line of JSON on stdout.
_CHILD = """
import json, sys
from qr_entropy import ArmSources, EntropyConfig, SourceConfigurationError, load_sources
base = EntropyConfig()
sources = ArmSources.build(base, load_sources(base))
found = {"results": []}
try:
    for arm in json.loads(sys.argv[1]):
        try:
            r = sources.source(arm).probe()
        except SourceConfigurationError as exc:
            found = {"refused": str(exc), "arm": arm}
            break
        found["results"].append([arm, r.source, r.reachable, r.address, r.detail, r.device_id])
finally:
    sources.close()
print(json.dumps(found))
"""


def _label(arm: str | None, source: str) -> str:
    return f"QR_SOURCES: arm {arm!r}" if arm is not None else f"QR_ENTROPY_SOURCE_TYPE={source!r}"


def _refusal(text: str, arm: str | None, config: AdapterConfig) -> SourceRefusedError:
    where = _label(arm, config.entropy.entropy_source_type)
    return SourceRefusedError(f"{_REFUSES} can fix it): {where}: {text}")


def to_probe(config: AdapterConfig) -> list[str | None]:
    """The sources the start-up probe asks (``None``: the default source), in order.

    Every source with a server; a local one (``system``, ``mock_uniform``, ``sham``,
    ``timing_noise``: nothing to refuse) only when calibrated, for its device id.
    """
    configs: dict[str | None, EntropyConfig] = {None: config.entropy}
    configs.update(config.sources)
    return [arm for arm, c in configs.items() if not _is_local(c) or arm in config.calibrations]


def start_up_checks(sources: ArmSources | None, config: AdapterConfig) -> FirstFetchCheck:
    """The processor's start: probe the sources, then bind the calibrations to devices.

    Returns:
        The device check of the calibrated arms the probe could not reach.

    Raises:
        SourceRefusedError: As :func:`probe_sources`.
        QRParamsError: A calibrated arm's device differs from its calibration's.
        Either way the start is over: ``sources`` are closed first.
    """
    try:
        probes = probe_sources(sources, config)
        return start_up_device_check(sources, config.calibrations, probes)
    except BaseException:
        if sources is not None:
            sources.close()
        raise


def probe_sources(
    sources: ArmSources | None, config: AdapterConfig
) -> dict[str | None, ProbeResult]:
    """Probe this rank's sources (:func:`to_probe`) and judge the answers (:func:`judge_probes`).

    Args:
        sources: The rank's sources; ``None`` on a rank that fetches nothing.
        config: The adapter configuration.

    Returns:
        Each probed source's result (``None``: the default source); empty without sources.

    Raises:
        SourceRefusedError: A server refuses the configuration, or one is down while
            ``QR_REQUIRE_SOURCES_AT_START`` is true.
    """
    if sources is None:
        return {}
    results: dict[str | None, ProbeResult] = {}
    for arm in to_probe(config):
        try:
            results[arm] = sources.source(arm).probe()
        except SourceConfigurationError as exc:
            raise _refusal(str(exc), arm, config) from exc
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

    Does nothing when no source needs a probe (:func:`to_probe`). A child that fails
    (it cannot start, it crashes) is logged and left to the engine's probe.

    Raises:
        SourceRefusedError: As :func:`probe_sources`.
        QRParamsError: A reachable calibrated arm reports another device than its
            calibration's (:func:`qr_vllm._device_check.refuse_other_devices`).
    """
    arms = to_probe(config)
    if not arms:
        return
    configs = [config.entropy if arm is None else config.sources[arm] for arm in arms]
    # Each probe is one call bounded by its timeout; the rest is the child's start.
    limit = 60.0 + sum(c.grpc_timeout_ms for c in configs) / 1000.0
    try:
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(arms)],
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
        arm = answer.get("arm")
        raise _refusal(str(answer["refused"]), arm if arm in config.sources else None, config)
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
