"""The sampling defaults, declared once for every package."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from qr_core._errors import QRCoreError

__all__ = ["POPULATION_STD", "SamplingConfig"]

POPULATION_STD: float = math.sqrt((256**2 - 1) / 12)
"""Exact standard deviation of a byte uniform on {0, ..., 255}: 73.90027...

The continuous-uniform value 73.612 (= 255 / sqrt(12)) is wrong for bytes: with it
the z-score of unbiased bytes has variance 1.0074 and u is not uniform.
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
        if not isinstance(self.sample_count, int) or self.sample_count < 1:
            raise QRCoreError(f"sample_count must be an int >= 1, got {self.sample_count!r}")
        if not isinstance(self.top_k, int):
            raise QRCoreError(f"top_k must be an int (<= 0 disables), got {self.top_k!r}")
        checks = [
            ("population_std", self.population_std > 0, "> 0"),
            ("uniform_clamp_epsilon", 0 < self.uniform_clamp_epsilon < 0.5, "in (0, 0.5)"),
            ("fixed_temperature", self.fixed_temperature >= 0, ">= 0"),
            ("edt_base_temp", self.edt_base_temp > 0, "> 0"),
            ("edt_exponent", self.edt_exponent >= 0, ">= 0"),
            ("edt_min_temp", self.edt_min_temp >= 0, ">= 0"),
            ("edt_max_temp", self.edt_max_temp >= self.edt_min_temp, ">= edt_min_temp"),
            ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise QRCoreError(f"{name} must be {allowed}, got {getattr(self, name)!r}")
