"""The sampling defaults, declared once for every package."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from qr_core._errors import QRCoreError

__all__ = ["MAX_SAMPLE_COUNT", "POPULATION_STD", "SAMPLING_BOUNDS", "Bounds", "SamplingConfig"]

POPULATION_STD: float = math.sqrt((256**2 - 1) / 12)
"""Exact standard deviation of a byte uniform on {0, ..., 255}: 73.90027...

The continuous-uniform value 73.612 (= 255 / sqrt(12)) is wrong for bytes: with it
the z-score of unbiased bytes has variance 1.0074 and u is not uniform.
"""

MAX_SAMPLE_COUNT = 16_777_216
"""Most entropy bytes per token (16 MiB): a bound on memory per batch row."""


@dataclass(frozen=True, slots=True)
class Bounds:
    """The open or closed interval a numeric sampling field must lie in."""

    gt: float | None = None
    """Exclusive lower bound."""
    ge: float | None = None
    """Inclusive lower bound."""
    lt: float | None = None
    """Exclusive upper bound."""
    le: float | None = None
    """Inclusive upper bound."""

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies within the bounds."""
        return not (
            (self.gt is not None and not value > self.gt)
            or (self.ge is not None and not value >= self.ge)
            or (self.lt is not None and not value < self.lt)
            or (self.le is not None and not value <= self.le)
        )

    def describe(self) -> str:
        """The bounds in words, e.g. ``"> 0, <= 1"``."""
        parts = [
            f"{op} {int(bound) if float(bound).is_integer() else bound}"
            for op, bound in ((">", self.gt), (">=", self.ge), ("<", self.lt), ("<=", self.le))
            if bound is not None
        ]
        return ", ".join(parts) or "any value"

    def as_field_kwargs(self) -> dict[str, Any]:
        """The bounds as pydantic ``Field`` keyword arguments (``gt=0`` ...)."""
        names = ("gt", "ge", "lt", "le")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


SAMPLING_BOUNDS: dict[str, Bounds] = {
    "sample_count": Bounds(ge=1, le=MAX_SAMPLE_COUNT),
    "population_mean": Bounds(ge=0.0, le=255.0),
    "population_std": Bounds(gt=0.0),
    "uniform_clamp_epsilon": Bounds(gt=0.0, lt=0.5),
    # A temperature of 0 divides the logits by zero; a strategy that wants
    # greedy decoding is a different strategy.
    "fixed_temperature": Bounds(gt=0.0),
    "edt_base_temp": Bounds(gt=0.0),
    "edt_exponent": Bounds(gt=0.0),
    "edt_min_temp": Bounds(gt=0.0),
    "edt_max_temp": Bounds(gt=0.0),
    "top_p": Bounds(gt=0.0, le=1.0),
}
"""The one declaration of the numeric sampling bounds.

Read by :class:`SamplingConfig` and by the settings classes built on it
(qr-vllm's ``SamplingSettings``), so every entry point refuses the same values.
``top_k`` has no bounds (``<= 0`` disables it); ``edt_max_temp >= edt_min_temp``
is checked across fields.
"""


@dataclass(frozen=True)
class SamplingConfig:
    """Parameters of amplification, temperature and selection.

    qr-vllm's settings (``QR_*`` environment variables, ``qr_*`` request keys) take
    their defaults from this class, so each default lives here only. Construction
    validates every field, so building a config is also how overrides are checked.

    Raises:
        QRCoreError: Naming the first invalid field and its allowed range.
    """

    signal_amplifier_type: str = "zscore_mean"
    """Registry name of the signal amplifier (``zscore_mean`` or ``zscore_bits``)."""

    sample_count: int = 20480
    """Entropy bytes consumed per token (N)."""

    population_mean: float = 127.5
    """Null-hypothesis mean of one byte."""

    population_std: float = POPULATION_STD
    """Null-hypothesis standard deviation of one byte."""

    uniform_clamp_epsilon: float = 1e-10
    """u is clamped to ``(eps, 1 - eps)``."""

    temperature_strategy: str = "fixed"
    """Registry name of the temperature strategy (``fixed`` or ``edt``)."""

    fixed_temperature: float = 0.7
    """Temperature of the ``fixed`` strategy."""

    edt_base_temp: float = 0.8
    """Base coefficient of the ``edt`` strategy."""

    edt_exponent: float = 0.5
    """Power-law exponent of the ``edt`` strategy."""

    edt_min_temp: float = 0.1
    """Lower clamp of the ``edt`` temperature."""

    edt_max_temp: float = 2.0
    """Upper clamp of the ``edt`` temperature."""

    top_k: int = 50
    """Keep the k most probable tokens; ``<= 0`` disables."""

    top_p: float = 0.9
    """Keep the shortest most-probable prefix with mass ``>= top_p``; 1.0 disables."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", "float") and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise QRCoreError(f"{f.name} must be a number, got {value!r}")
            if f.type == "str" and not (isinstance(value, str) and value):
                raise QRCoreError(f"{f.name} must be a non-empty string, got {value!r}")
            if f.type == "float" and not math.isfinite(value):
                raise QRCoreError(f"{f.name} must be finite, got {value!r}")
        for name in ("sample_count", "top_k"):
            if not isinstance(getattr(self, name), int):
                raise QRCoreError(f"{name} must be an int, got {getattr(self, name)!r}")
        for name, bounds in SAMPLING_BOUNDS.items():
            value = getattr(self, name)
            if not bounds.contains(value):
                raise QRCoreError(f"{name} must be {bounds.describe()}, got {value!r}")
        if not self.edt_max_temp >= self.edt_min_temp:
            raise QRCoreError(
                f"edt_max_temp must be >= edt_min_temp ({self.edt_min_temp!r}), "
                f"got {self.edt_max_temp!r}"
            )
