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

import numpy as np
import numpy.typing as npt

from qr_core._arrays import check_logits, device_of, row_max, to_row_param
from qr_core._config import SamplingConfig
from qr_core._errors import QRCoreError
from qr_core._registry import Registry
from qr_core._select_generic import weight_dtype
from qr_core._select_numpy import Workspace

__all__ = [
    "BatchTemperatureResult",
    "EDTTemperature",
    "FixedTemperature",
    "PowerLaw",
    "TemperatureResult",
    "TemperatureStrategy",
    "available_temperature_strategies",
    "build_temperature_strategy",
    "power_law_temperatures",
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


def shannon_entropy(logits: Array, *, defer_checks: bool = False) -> Array:
    """Per-row Shannon entropy (nats) of ``softmax(logits)``, accumulated in float64.

    Uses ``H = ln Z - sum(w_i s_i) / Z`` with ``s = logits - max`` and ``w = exp(s)``,
    so no probability is ever taken the logarithm of; ``-inf`` logits contribute 0.
    ``s`` and ``w`` are computed in the dtype of the selection weights (float32 for
    float32, float16 and bfloat16 logits, float64 for float64 logits, see
    :func:`qr_core._select_generic.weight_dtype`); ``Z`` and ``sum(w_i s_i)`` are
    float64 sums. A float64 ``exp`` over the vocabulary costs several times a
    float32 one on CPUs without AVX-512.

    Accuracy for float32 logits, with ``eps = 2**-24``: rounding ``s`` (relative
    ``eps``) moves ``H`` by at most ``eps * E_p[|s| |s - E_p s|]``; the float32 ``exp``
    (under 4 ``eps`` relative; measured 3.6 ``eps`` for numpy, 1.1 for torch on CPU)
    moves ``ln Z`` by ``4 eps`` and ``sum(w s) / Z`` by ``8 eps (H - ln Z)``; the
    float32 products add ``eps (H - ln Z)``.
    So ``|error| <= eps (4 + 9 H + E_p[s^2])`` nats, ``E_p`` the mean under the
    softmax: about 1e-5 nats for ``H = 10`` and ``E_p[s^2] = 60``. Measured on
    N(0, sigma^2) rows of V = 32,000 and 151,936: at most 2e-8 nats, under 1% of
    the bound (the tests check the bound row by row). ``EDTTemperature`` uses
    ``H / ln V``, so this is ~1e-6 relative on a temperature. float64 logits keep
    float64 weights and digits.

    Args:
        logits: ``(B, V)`` real floating array (numpy or torch).
        defer_checks: For torch tensors: do not check the rows (that would read
            a flag back from the device, a host sync); a row with NaN, +inf or
            only -inf then gets a NaN entropy, and :func:`qr_core.select_tokens`
            with ``defer_checks=True`` flags the row. numpy arrays are always
            checked.

    Returns:
        ``(B,)`` float64 entropies in the namespace and on the device of ``logits``.

    Raises:
        QRCoreError: For a wrong dtype/shape or a row with NaN, +inf or only -inf.
    """
    xp, x = check_logits(logits, 2)
    if isinstance(x, np.ndarray):
        return _entropy_numpy(x, row_max(xp, x))
    m = xp.max(x, axis=1) if defer_checks else row_max(xp, x)
    wd = weight_dtype(xp, x.dtype)
    s = xp.astype(x, wd, copy=False) - xp.astype(m, wd, copy=False)[:, None]
    w = xp.exp(s)
    # -inf logits have weight 0; a finite stand-in keeps 0 * s from being NaN.
    s = xp.clip(s, min=float(xp.finfo(wd).min))
    z = xp.sum(w, axis=1, dtype=xp.float64)
    h = xp.log(z) - xp.sum(w * s, axis=1, dtype=xp.float64) / z
    # Rounding can leave -1e-16 for a one-hot row; entropy is never negative.
    return xp.clip(h, min=0.0)


# Logits per block of rows in the numpy entropy: its two weight-dtype scratch
# arrays (2 MiB for float32) stay in cache and are reused across calls instead
# of being page-faulted in afresh.
_ENTROPY_BLOCK = 1 << 18
_ENTROPY_WORKSPACE = Workspace()


def _entropy_numpy(x: npt.NDArray[Any], m: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """:func:`shannon_entropy` for numpy: the same operations, in reused buffers.

    ``0 * -inf`` is NaN, so rows with ``-inf`` logits show up as NaN sums and
    only they are redone with those terms left out. No BLAS call: OpenBLAS's
    worker threads spin after each call and take the CPU from the model's.
    """
    rows, vocab = x.shape
    wd = weight_dtype(np, x.dtype)
    step = max(1, _ENTROPY_BLOCK // vocab)
    m_w = m.astype(wd)[:, None]
    z = np.empty(rows, dtype=np.float64)
    ws = np.empty(rows, dtype=np.float64)
    for a in range(0, rows, step):
        b = min(a + step, rows)
        s = _ENTROPY_WORKSPACE.get("s", (b - a, vocab), wd)
        w = _ENTROPY_WORKSPACE.get("w", (b - a, vocab), wd)
        np.subtract(x[a:b], m_w[a:b], out=s, dtype=wd)
        np.exp(s, out=w)
        w.sum(axis=1, dtype=np.float64, out=z[a:b])
        with np.errstate(invalid="ignore"):  # 0 * -inf, redone below
            np.multiply(w, s, out=s)
        s.sum(axis=1, dtype=np.float64, out=ws[a:b])
        for r in np.flatnonzero(np.isnan(ws[a:b])).tolist():
            finite = w[r] > 0
            s_r = np.subtract(x[a + r, finite], m_w[a + r], dtype=wd)
            ws[a + r] = np.multiply(w[r, finite], s_r).sum(dtype=np.float64)
    h: npt.NDArray[np.float64] = np.log(z) - ws / z
    # Rounding can leave -1e-16 for a one-hot row; entropy is never negative.
    return np.maximum(h, 0.0)


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
        return _power_law(xp, entropy, vocab_size, *full)


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


def _power_law(
    xp: Any, h: Array, vocab: int, base: Array, exp: Array, lo: Array, hi: Array
) -> Array:
    """The power law of ``(B,)`` parameter arrays (arrays both ways: numpy's ``x ** 0.5``
    with a scalar takes a square root that can differ from its ``pow`` by an ulp)."""
    # V = 1: one token, entropy 0, and ln V = 0 must not divide.
    h_norm = xp.clip(h / math.log(vocab), 0.0, 1.0) if vocab > 1 else xp.zeros_like(h)
    return xp.minimum(xp.maximum(base * h_norm**exp, lo), hi)


_LAW_FIELDS = ("base_temp", "exponent", "min_temp", "max_temp")


def power_law_temperatures(
    logits: Array,
    base_temp: object,
    exponent: object,
    min_temp: object,
    max_temp: object,
    *,
    entropy: bool = True,
    defer_checks: bool = False,
) -> BatchTemperatureResult:
    """Temperatures of rows with per-row :class:`PowerLaw` parameters, in one pass.

    Rows of any mix of fixed and EDT strategies take the same operations, so a
    batch's work does not grow with the number of strategies in it (for
    third-party strategies that are no power law, see
    :meth:`TemperatureStrategy.compute_batch`). Results equal each strategy's
    own :meth:`~TemperatureStrategy.compute_batch` bit for bit.

    Args:
        logits: ``(B, V)`` real floating array (numpy or torch).
        base_temp, exponent, min_temp, max_temp: Scalars or ``(B,)`` arrays
            (on the logits' device, to avoid copies).
        entropy: Whether to compute the entropy; without it ``shannon_entropy``
            is NaN, and so is the temperature of every row with ``exponent > 0``
            (which :func:`qr_core.select_tokens` reports as non-finite).
        defer_checks: For torch tensors: check neither the rows (see
            :func:`shannon_entropy`) nor the parameters on the host; a row with
            invalid parameters gets a NaN temperature instead, which
            :func:`qr_core.select_tokens` with ``defer_checks=True`` flags. numpy
            input is always checked.

    Raises:
        QRCoreError: For a wrong dtype/shape, a row that cannot be sampled, or
            a parameter outside its range, naming the parameter and row.
    """
    xp, x = check_logits(logits, 2)
    rows, vocab = x.shape
    dev = device_of(x)
    law = [
        to_row_param(xp, v, n, rows, dev)
        for v, n in zip((base_temp, exponent, min_temp, max_temp), _LAW_FIELDS, strict=True)
    ]
    defer = defer_checks and not isinstance(x, np.ndarray)
    if entropy:
        h = shannon_entropy(x, defer_checks=defer)
    else:
        h = xp.full((rows,), math.nan, dtype=xp.float64, device=dev)
    base, exp, lo, hi = law
    # One (4, B) check instead of four: the same operations, a quarter of the launches.
    stacked = xp.stack(law)
    ok = xp.isfinite(stacked) & (stacked >= 0)
    ordered = hi >= lo
    every = xp.all(ok, axis=0) & ordered
    t = _power_law(xp, h, vocab, base, exp, lo, hi)
    if defer:
        return BatchTemperatureResult(xp.where(every, t, xp.full_like(t, math.nan)), h)
    if not bool(xp.all(every)):  # one host read, only where nothing is deferred
        for i, (name, values) in enumerate(zip(_LAW_FIELDS, law, strict=True)):
            good = ok[i] & ordered if name == "max_temp" else ok[i]
            if not bool(xp.all(good)):
                row = int(xp.argmax(xp.astype(~good, xp.int32)))
                want = "finite and >= min_temp" if name == "max_temp" else "finite and >= 0"
                raise QRCoreError(f"{name} must be {want}, got {float(values[row])!r} (row {row})")
    return BatchTemperatureResult(t, h)
