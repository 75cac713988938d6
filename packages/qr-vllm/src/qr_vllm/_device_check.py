"""The engine refuses a calibration made on another device (issue 24).

A calibration describes the device whose ``device_id`` its source reported while the
blocks were drawn (and that source type). The engine can know the device only once
the source has answered, so the check runs on the **start-up probe** (one fetch per
source, before any request: :meth:`qr_entropy.ArmSources.probe`): not at processor
construction without a fetch (no device id yet), and not on a request's first fetch
(a configuration error would then fail a user's request mid-serving instead of the
start). :func:`refuse_other_devices` is the check; whoever runs the start-up probe
calls it with the probe's results. An arm whose server is unreachable at start cannot
be checked then: it is named in the returned tuple (and logged) and checked on its
first fetch by :class:`FirstFetchCheck`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from qr_core import Calibration
from qr_entropy import ArmSources, EntropyFetch, ProbeResult
from qr_vllm._errors import QRParamsError

__all__ = ["FirstFetchCheck", "refuse_other_devices", "start_up_device_check"]

logger = logging.getLogger(__name__)


def _where(arm: str | None) -> str:
    return "QR_CALIBRATION_PATH" if arm is None else f"QR_SOURCES: arm {arm!r}: calibration_path"


def refuse_other_devices(
    calibrations: Mapping[str | None, Calibration],
    probes: Mapping[str | None, ProbeResult],
) -> tuple[str | None, ...]:
    """Refuse any arm's calibration whose device differs from the one its source reports.

    Args:
        calibrations: The calibration of each calibrated arm (``None``: the default source).
        probes: The start-up probe's result per arm (``ArmSources.probe()``).

    Returns:
        The calibrated arms that could not be checked (unreachable at start, or not
        probed): check them on their first fetch.

    Raises:
        QRParamsError: An arm's calibration was made on another device or source type;
            the message names the arm and both device ids.
    """
    unchecked: list[str | None] = []
    for arm, calibration in calibrations.items():
        probe = probes.get(arm)
        if probe is None or not probe.reachable:
            unchecked.append(arm)
            continue
        why = calibration.device_mismatch(probe.device_id, probe.source)
        if why is not None:
            raise QRParamsError(f"{_where(arm)}: {why}")
    if unchecked:
        logger.warning(
            "calibrated arm(s) %s unreachable at start: their device is checked against "
            "the calibration on the first fetch",
            ", ".join("(default)" if a is None else repr(a) for a in unchecked),
        )
    return tuple(unchecked)


class FirstFetchCheck:
    """The same check on the first fetch of each arm the start-up probe could not reach.

    Fetches from the fallback source are skipped (they are not the calibrated device).
    """

    def __init__(
        self, calibrations: Mapping[str | None, Calibration], arms: tuple[str | None, ...]
    ) -> None:
        self._calibrations = {a: calibrations[a] for a in arms if a in calibrations}
        self._lock = threading.Lock()

    @property
    def pending(self) -> bool:
        """Whether an arm still waits for its check (cheap: read on every step)."""
        return bool(self._calibrations)

    def check(self, arm: str | None, fetch: EntropyFetch) -> None:
        """Check ``arm``'s calibration against ``fetch`` once (no-op when done).

        Raises:
            QRParamsError: As :func:`refuse_other_devices`.
        """
        if fetch.fallback:
            return
        with self._lock:
            calibration = self._calibrations.pop(arm, None)
        if calibration is None:
            return
        why = calibration.device_mismatch(fetch.device_id, fetch.source)
        if why is not None:
            raise QRParamsError(f"{_where(arm)}: {why}")


def start_up_device_check(
    sources: ArmSources | None,
    calibrations: Mapping[str | None, Calibration],
    probes: Mapping[str | None, ProbeResult] | None = None,
) -> FirstFetchCheck:
    """Probe the sources once when an arm is calibrated and check their devices.

    Args:
        sources: The rank's sources (``None``: this rank fetches nothing).
        calibrations: The calibration of each calibrated arm.
        probes: The start-up probe's results when it already ran (the processor's
            :func:`qr_vllm._start_probe.probe_sources`); ``None``: probe here.

    Returns:
        The check for the arms the probe could not reach (nothing pending when every
        calibrated arm was checked, or none is calibrated, or this rank fetches nothing).

    Raises:
        QRParamsError: As :func:`refuse_other_devices`.
    """
    if sources is None or not calibrations:
        return FirstFetchCheck(calibrations, ())
    found = sources.probe() if probes is None else probes
    return FirstFetchCheck(calibrations, refuse_other_devices(calibrations, found))
