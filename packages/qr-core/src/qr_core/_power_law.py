"""Power-law temperatures: ``T = clip(base * (H / ln V) ** exponent, min, max)`` per row.

Both built-in strategies are power laws (:class:`~qr_core.PowerLaw`), so rows of any
mix of them, with any parameters, are computed in the same operations.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from qr_core._arrays import check_logits, device_of, to_row_param
from qr_core._entropy import shannon_entropy
from qr_core._errors import QRCoreError
from qr_core._temperature import BatchTemperatureResult

__all__ = ["apply_power_law", "power_law_temperatures"]

Array = Any


def apply_power_law(
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
    t = apply_power_law(xp, h, vocab, base, exp, lo, hi)
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
