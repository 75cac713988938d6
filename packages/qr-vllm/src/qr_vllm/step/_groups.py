"""The rows of a step grouped by what shapes their amplifier and temperature strategy.

Rows whose plans share a group key (amplifier, strategy and their parameters)
and whose arms share a calibration are amplified and tempered together. Each
group carries its components -- the amplifier (with the calibration), the
temperature strategy and that strategy as a :class:`qr_core.PowerLaw` -- built
once per sampler and cached by the group's key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from qr_core import (
    Calibration,
    PowerLaw,
    SamplingConfig,
    SignalAmplifier,
    TemperatureStrategy,
    build_amplifier,
    build_temperature_strategy,
)
from qr_vllm.step._interface import Slot

__all__ = ["Group", "RowGrouper"]


@dataclass(frozen=True)
class Group:
    """Rows of a step that share amplifier, strategy and calibration, with their components."""

    key: tuple[object, ...]
    """``(RequestPlan.group_key, calibration hash or None)``."""
    config: SamplingConfig
    """The rows' sampling configuration."""
    calibration: Calibration | None
    """The rows' arm's calibration, or None."""
    positions: np.ndarray
    """Indices of the rows among the step's rows."""
    amplifier: SignalAmplifier
    """The rows' amplifier, standardising against :attr:`calibration`."""
    strategy: TemperatureStrategy
    """The rows' temperature strategy."""
    law: PowerLaw | None
    """:attr:`strategy` as a power law; ``None`` for a strategy that is none."""


@dataclass(frozen=True)
class _Components:
    amplifier: SignalAmplifier
    strategy: TemperatureStrategy
    law: PowerLaw | None


class RowGrouper:
    """Groups a step's rows and builds (once per key) each group's components.

    Args:
        calibrations: The calibration of each calibrated arm (``None``: the
            default source); an arm absent here is uncalibrated.
    """

    def __init__(self, calibrations: Mapping[str | None, Calibration]) -> None:
        self._calibrations = calibrations
        self._components: dict[tuple[object, ...], _Components] = {}

    def groups(self, slots: Sequence[Slot]) -> list[Group]:
        """The step's rows by their plan's group key and their arm's calibration."""
        cals = self._calibrations
        if cals:
            keys = [(s.plan.group_key, _sha(cals.get(s.arm))) for s in slots]
        else:
            keys = [(s.plan.group_key, None) for s in slots]
        first = keys[0]
        if all(k == first for k in keys):
            return [self._group(first, slots[0], np.arange(len(slots)))]
        by_key: dict[tuple[object, ...], list[int]] = {}
        owner: dict[tuple[object, ...], Slot] = {}
        for i, (key, s) in enumerate(zip(keys, slots, strict=True)):
            by_key.setdefault(key, []).append(i)
            owner.setdefault(key, s)
        return [self._group(k, owner[k], np.asarray(v)) for k, v in by_key.items()]

    def _group(self, key: tuple[object, ...], owner: Slot, positions: np.ndarray) -> Group:
        config = owner.plan.core
        calibration = self._calibrations.get(owner.arm)
        parts = self._components.get(key)
        if parts is None:
            amplifier = build_amplifier(config, calibration)
            strategy = build_temperature_strategy(config)
            parts = _Components(amplifier, strategy, strategy.power_law())
            self._components[key] = parts
        return Group(
            key, config, calibration, positions, parts.amplifier, parts.strategy, parts.law
        )


def _sha(calibration: Calibration | None) -> str | None:
    return None if calibration is None else calibration.sha256
