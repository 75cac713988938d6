"""The built-in temperature strategies: ``fixed`` and ``edt`` (entropy-dependent)."""

from __future__ import annotations

import math
from typing import Any, ClassVar, Self

from qr_core._arrays import device_of
from qr_core._config import SamplingConfig
from qr_core._errors import QRCoreError
from qr_core._power_law import apply_power_law
from qr_core._temperature import (
    PowerLaw,
    TemperatureStrategy,
    register_temperature_strategy,
)

__all__ = ["EDTTemperature", "FixedTemperature"]

Array = Any


def _check_nonnegative(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise QRCoreError(f"{name} must be a real number, got {type(value).__name__}")
    if not (math.isfinite(value) and value >= 0):
        raise QRCoreError(f"{name} must be finite and >= 0, got {value!r}")
    return float(value)


@register_temperature_strategy("fixed")
class FixedTemperature(TemperatureStrategy):
    """The same temperature for every row.

    Args:
        temperature: Finite, ``>= 0`` (0 means greedy).
    """

    uses_entropy: ClassVar[bool] = False

    def __init__(self, temperature: float = 0.7) -> None:
        self.temperature = _check_nonnegative(temperature, "temperature")

    @classmethod
    def from_config(cls, config: SamplingConfig) -> Self:
        """Build from ``fixed_temperature``."""
        return cls(config.fixed_temperature)

    def power_law(self) -> PowerLaw:
        """``base = min_temp = max_temp = temperature``, ``exponent = 0``."""
        t = self.temperature
        return PowerLaw(base_temp=t, exponent=0.0, min_temp=t, max_temp=t)

    def _temperatures(self, xp: Any, entropy: Array, vocab_size: int) -> Array:
        return xp.full(entropy.shape, self.temperature, dtype=xp.float64, device=device_of(entropy))


@register_temperature_strategy("edt")
class EDTTemperature(TemperatureStrategy):
    """Entropy-dependent temperature.

    ``H_norm = H / ln(V)``, ``T = base_temp * H_norm ** exponent``, clamped to
    ``[min_temp, max_temp]``. Confident rows (low entropy) get low temperatures.
    For ``V == 1`` the entropy is 0 and so is ``H_norm``.

    Args:
        base_temp: Coefficient, finite and ``> 0``.
        exponent: Power-law exponent, finite and ``>= 0``.
        min_temp: Lower clamp, finite, ``>= 0``.
        max_temp: Upper clamp, finite, ``>= min_temp``.
    """

    def __init__(
        self,
        base_temp: float = 0.8,
        exponent: float = 0.5,
        min_temp: float = 0.1,
        max_temp: float = 2.0,
    ) -> None:
        self.base_temp = _check_nonnegative(base_temp, "base_temp")
        if self.base_temp == 0:
            raise QRCoreError("base_temp must be > 0, got 0")
        self.exponent = _check_nonnegative(exponent, "exponent")
        self.min_temp = _check_nonnegative(min_temp, "min_temp")
        self.max_temp = _check_nonnegative(max_temp, "max_temp")
        if self.max_temp < self.min_temp:
            raise QRCoreError(
                f"max_temp must be >= min_temp, got max_temp={max_temp!r} < min_temp={min_temp!r}"
            )

    @classmethod
    def from_config(cls, config: SamplingConfig) -> Self:
        """Build from ``edt_base_temp``, ``edt_exponent``, ``edt_min_temp``, ``edt_max_temp``."""
        return cls(
            config.edt_base_temp, config.edt_exponent, config.edt_min_temp, config.edt_max_temp
        )

    def power_law(self) -> PowerLaw:
        """The strategy's own four parameters."""
        return PowerLaw(self.base_temp, self.exponent, self.min_temp, self.max_temp)

    def _temperatures(self, xp: Any, entropy: Array, vocab_size: int) -> Array:
        dev = device_of(entropy)
        law = (self.base_temp, self.exponent, self.min_temp, self.max_temp)
        full = (xp.full(entropy.shape, v, dtype=xp.float64, device=dev) for v in law)
        return apply_power_law(xp, entropy, vocab_size, *full)
