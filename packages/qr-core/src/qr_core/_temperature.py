"""Temperature strategies and the Shannon entropy they always report.

Strategies work on any array-API namespace (numpy, torch on CPU or CUDA) and
return arrays in the namespace and on the device of the logits.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar

from qr_core._arrays import check_logits, device_of, row_max
from qr_core._config import SamplingConfig
from qr_core._errors import QRCoreError
from qr_core._registry import Registry

__all__ = [
    "BatchTemperatureResult",
    "EDTTemperature",
    "FixedTemperature",
    "TemperatureResult",
    "TemperatureStrategy",
    "available_temperature_strategies",
    "build_temperature_strategy",
    "register_temperature_strategy",
    "shannon_entropy",
]

Array = Any


@dataclass(frozen=True)
class TemperatureResult:
    """Temperature for one row of logits."""

    temperature: float
    """The temperature to sample with (``<= 0`` means greedy)."""
    shannon_entropy: float
    """Shannon entropy in nats of the untempered softmax of the logits."""


@dataclass(frozen=True)
class BatchTemperatureResult:
    """Temperatures for a ``(B, V)`` batch, in the logits' namespace and device."""

    temperature: Array
    """Shape ``(B,)``, float64."""
    shannon_entropy: Array
    """Shape ``(B,)``, float64, nats."""


def shannon_entropy(logits: Array) -> Array:
    """Per-row Shannon entropy (nats) of ``softmax(logits)``, in float64.

    Uses ``H = ln Z - sum(e_i s_i) / Z`` with ``s = logits - max`` and ``e = exp(s)``,
    so no probability is ever taken the logarithm of; ``-inf`` logits contribute 0.

    Args:
        logits: ``(B, V)`` real floating array (numpy or torch).

    Raises:
        QRCoreError: For a wrong dtype/shape or a row with NaN, +inf or only -inf.
    """
    xp, x = check_logits(logits, 2)
    m = row_max(xp, x)
    s = xp.astype(x, xp.float64) - xp.astype(m, xp.float64)[:, None]
    finite = xp.isfinite(s)
    s = xp.where(finite, s, xp.zeros_like(s))
    e = xp.where(finite, xp.exp(s), xp.zeros_like(s))
    z = xp.sum(e, axis=1)
    h = xp.log(z) - xp.sum(e * s, axis=1) / z
    # Rounding can leave -1e-16 for a one-hot row; entropy is never negative.
    return xp.maximum(h, xp.zeros_like(h))


class TemperatureStrategy(ABC):
    """Chooses a sampling temperature per row of logits."""

    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def from_config(cls, config: SamplingConfig) -> Self:
        """Build the strategy from a :class:`SamplingConfig`."""

    @abstractmethod
    def _temperatures(self, xp: Any, entropy: Array, vocab_size: int) -> Array:
        """Return ``(B,)`` float64 temperatures given the per-row entropy."""

    def compute_batch(self, logits: Array) -> BatchTemperatureResult:
        """Temperatures and entropies for ``(B, V)`` logits, without a host copy.

        Raises:
            QRCoreError: For a wrong dtype/shape or a row that cannot be sampled.
        """
        xp, x = check_logits(logits, 2)
        h = shannon_entropy(x)
        return BatchTemperatureResult(self._temperatures(xp, h, x.shape[1]), h)

    def compute(self, logits: Array) -> TemperatureResult:
        """Temperature and entropy for one ``(V,)`` row of logits.

        Raises:
            QRCoreError: For a wrong dtype/shape or a row that cannot be sampled.
        """
        _, x = check_logits(logits, 1)
        batch = self.compute_batch(x[None, :])
        return TemperatureResult(float(batch.temperature[0]), float(batch.shannon_entropy[0]))


_STRATEGIES: Registry[TemperatureStrategy] = Registry(
    "temperature strategy", TemperatureStrategy, "qr_sampler.temperature_strategies"
)


_S = TypeVar("_S", bound=type[TemperatureStrategy])


def register_temperature_strategy(name: str) -> Callable[[_S], _S]:
    """Class decorator registering a :class:`TemperatureStrategy` under ``name``.

    The class's ``name`` attribute is set to ``name``. Third-party classes can
    instead be published in the entry-point group (see :func:`build_temperature_strategy`).
    """
    return _STRATEGIES.register(name)


def available_temperature_strategies() -> list[str]:
    """Names of registered strategies and of those in entry-point group
    ``qr_sampler.temperature_strategies``."""
    return _STRATEGIES.names()


def build_temperature_strategy(config: SamplingConfig) -> TemperatureStrategy:
    """Instantiate ``config.temperature_strategy`` from ``config``.

    Raises:
        QRCoreError: If the name is unknown or its entry point fails to load.
    """
    return _STRATEGIES.get(config.temperature_strategy).from_config(config)


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

    def __init__(self, temperature: float = 0.7) -> None:
        self.temperature = _check_nonnegative(temperature, "temperature")

    @classmethod
    def from_config(cls, config: SamplingConfig) -> Self:
        """Build from ``fixed_temperature``."""
        return cls(config.fixed_temperature)

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

    def _temperatures(self, xp: Any, entropy: Array, vocab_size: int) -> Array:
        if vocab_size > 1:
            h_norm = xp.clip(entropy / math.log(vocab_size), 0.0, 1.0)
        else:
            h_norm = xp.zeros_like(entropy)
        t = self.base_temp * h_norm**self.exponent
        return xp.clip(t, self.min_temp, self.max_temp)
