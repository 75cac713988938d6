"""The rows of a step grouped by what shapes their amplifier and temperature strategy.

Rows whose plans share a group key (amplifier, strategy and their parameters)
and whose arms share a calibration are amplified and tempered together. Each
group's components are built once per sampler and cached by the group's key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from qr_core import (
    Calibration,
    SamplingConfig,
    SignalAmplifier,
    TemperatureStrategy,
    build_amplifier,
    build_temperature_strategy,
)
from qr_vllm._batch import Slot
from qr_vllm._step_device import Law

__all__ = ["Group", "GroupParts"]


@dataclass(frozen=True)
class Group:
    """Rows of a step that share amplifier, strategy and calibration."""

    key: tuple[object, ...]
    """``(RequestPlan.group_key, calibration hash or None)``."""
    config: SamplingConfig
    """The rows' sampling configuration."""
    calibration: Calibration | None
    """The rows' arm's calibration, or None."""
    positions: np.ndarray
    """Indices of the rows among the step's rows."""


class GroupParts:
    """Groups a step's rows and builds (once) each group's components.

    Args:
        calibrations: The calibration of each calibrated arm (``None``: the
            default source); an arm absent here is uncalibrated.
    """

    def __init__(self, calibrations: Mapping[str | None, Calibration]) -> None:
        self._calibrations = calibrations
        self._components: dict[tuple[object, ...], tuple[SignalAmplifier, TemperatureStrategy]] = {}
        self._laws: dict[tuple[object, ...], Law | None] = {}

    def groups(self, slots: Sequence[Slot]) -> list[Group]:
        """The step's rows by their plan's group key and their arm's calibration."""
        cals = self._calibrations
        if cals:
            keys = [(s.plan.group_key, _sha(cals.get(s.arm))) for s in slots]
        else:
            keys = [(s.plan.group_key, None) for s in slots]
        first = keys[0]
        if all(k == first for k in keys):
            only = slots[0]
            return [Group(first, only.plan.core, cals.get(only.arm), np.arange(len(slots)))]
        by_key: dict[tuple[object, ...], list[int]] = {}
        owner: dict[tuple[object, ...], Slot] = {}
        for i, (key, s) in enumerate(zip(keys, slots, strict=True)):
            by_key.setdefault(key, []).append(i)
            owner.setdefault(key, s)
        return [
            Group(k, owner[k].plan.core, cals.get(owner[k].arm), np.asarray(v))
            for k, v in by_key.items()
        ]

    def component(self, group: Group) -> tuple[SignalAmplifier, TemperatureStrategy]:
        """The group's amplifier (with its calibration) and temperature strategy."""
        pair = self._components.get(group.key)
        if pair is None:
            pair = (
                build_amplifier(group.config, group.calibration),
                build_temperature_strategy(group.config),
            )
            self._components[group.key] = pair
        return pair

    def law(self, group: Group) -> Law | None:
        """The group's temperature strategy as power-law parameters, or None."""
        if group.key not in self._laws:
            law = self.component(group)[1].power_law()
            self._laws[group.key] = (
                None if law is None else (law.base_temp, law.exponent, law.min_temp, law.max_temp)
            )
        return self._laws[group.key]


def _sha(calibration: Calibration | None) -> str | None:
    return None if calibration is None else calibration.sha256
