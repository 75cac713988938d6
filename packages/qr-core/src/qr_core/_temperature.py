"""The temperature strategy interface, its results and its registry.

A strategy chooses a sampling temperature per row of logits. Strategies work on any
array-API namespace (numpy, torch on CPU or CUDA) and return arrays in the namespace
and on the device of the logits. The built-in strategies are
:mod:`qr_core._temperature_builtins`; rows of power-law strategies with different
parameters are computed together by :mod:`qr_core._power_law`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar

from qr_core._arrays import check_logits, device_of
from qr_core._config import SamplingConfig
from qr_core._entropy import shannon_entropy
from qr_core._registry import Registry

__all__ = [
    "BatchTemperatureResult",
    "PowerLaw",
    "TemperatureResult",
    "TemperatureStrategy",
    "available_temperature_strategies",
    "build_temperature_strategy",
    "register_temperature_strategy",
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


@dataclass(frozen=True)
class PowerLaw:
    """``T = clip(base_temp * clip(H / ln V, 0, 1) ** exponent, min_temp, max_temp)``.

    ``H`` is the row's Shannon entropy in nats, ``V`` the vocabulary size
    (``H / ln V`` is 0 for ``V = 1``). EDT is one; a fixed temperature ``t`` is
    ``PowerLaw(t, 0, t, t)``.
    """

    base_temp: float
    """Coefficient, finite and ``>= 0`` (0 with ``min_temp = 0`` gives T = 0: greedy)."""
    exponent: float
    """Power of the normalised entropy, finite and ``>= 0`` (0: no entropy needed)."""
    min_temp: float
    """Lower clamp, finite and ``>= 0``."""
    max_temp: float
    """Upper clamp, finite and ``>= min_temp``."""


class TemperatureStrategy(ABC):
    """Chooses a sampling temperature per row of logits."""

    name: ClassVar[str]
    uses_entropy: ClassVar[bool] = True
    """Whether the temperatures depend on the entropy (see :meth:`compute_batch`)."""

    @classmethod
    @abstractmethod
    def from_config(cls, config: SamplingConfig) -> Self:
        """Build the strategy from a :class:`SamplingConfig`."""

    @abstractmethod
    def _temperatures(self, xp: Any, entropy: Array, vocab_size: int) -> Array:
        """Return ``(B,)`` float64 temperatures given the per-row entropy."""

    def power_law(self) -> PowerLaw | None:
        """The strategy as a :class:`PowerLaw`, if it is one (default: None).

        Rows of power-law strategies with different parameters are computed
        together by :func:`power_law_temperatures`, in the same operations
        whatever their mix.
        """
        return None

    def compute_batch(
        self, logits: Array, *, entropy: bool = True, defer_checks: bool = False
    ) -> BatchTemperatureResult:
        """Temperatures and entropies for ``(B, V)`` logits, without a host copy.

        Args:
            logits: ``(B, V)`` real floating array (numpy or torch).
            entropy: Whether the caller needs the entropy. With ``False`` and a
                strategy whose temperatures do not depend on it
                (``uses_entropy = False``, such as ``fixed``), the entropy pass
                over the logits is skipped and ``shannon_entropy`` is all NaN;
                the rows are then validated by the selection instead.
            defer_checks: See :func:`shannon_entropy`.

        Raises:
            QRCoreError: For a wrong dtype/shape or a row that cannot be sampled.
        """
        xp, x = check_logits(logits, 2)
        if entropy or self.uses_entropy:
            h = shannon_entropy(x, defer_checks=defer_checks)
        else:
            h = xp.full((x.shape[0],), math.nan, dtype=xp.float64, device=device_of(x))
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
