"""Array-namespace helpers shared by temperature and selection code.

Everything here works on any array-API namespace that array-api-compat wraps
(numpy, torch on CPU or CUDA) and keeps arrays on their device.
"""

from __future__ import annotations

from typing import Any

import array_api_compat

from qr_core._errors import QRCoreError

__all__ = ["check_logits", "device_of", "namespace_of", "row_max", "to_row_param"]

Array = Any


def namespace_of(x: object, name: str) -> Any:
    """Return the array-API namespace of ``x``.

    Raises:
        QRCoreError: If ``x`` is not an array of a supported library.
    """
    try:
        return array_api_compat.array_namespace(x)
    except TypeError as exc:
        raise QRCoreError(
            f"{name} must be a numpy array or torch tensor, got {type(x).__name__}"
        ) from exc


def device_of(x: Array) -> Any:
    """The device of ``x`` (``"cpu"`` for numpy)."""
    return array_api_compat.device(x)


def check_logits(x: object, ndim: int, name: str = "logits") -> tuple[Any, Array]:
    """Validate dtype and shape of logits; return ``(namespace, x)``.

    Raises:
        QRCoreError: If ``x`` is not a real floating array with ``ndim``
            dimensions, or has no column or (for 2-D) no row.
    """
    xp = namespace_of(x, name)
    arr: Array = x
    if not xp.isdtype(arr.dtype, "real floating"):
        raise QRCoreError(f"{name} must have a real floating dtype, got {arr.dtype}")
    if arr.ndim != ndim:
        want = "(V,)" if ndim == 1 else "(B, V)"
        raise QRCoreError(f"{name} must have shape {want}, got shape {tuple(arr.shape)}")
    if arr.shape[-1] < 1:
        raise QRCoreError(f"{name} must have at least one column (vocabulary size >= 1)")
    return xp, arr


def row_max(xp: Any, x: Array, name: str = "logits") -> Array:
    """Row maxima of a ``(B, V)`` array, rejecting rows that cannot be sampled.

    The maximum propagates NaN and is +inf or -inf exactly when a row holds +inf
    or is all -inf, so one reduction both validates and feeds the softmax.

    Raises:
        QRCoreError: Naming the first bad row and what is wrong with it.
    """
    m = xp.max(x, axis=1)
    bad = ~xp.isfinite(m)
    if bool(xp.any(bad)):
        row = int(xp.argmax(xp.astype(bad, xp.int32)))
        value = float(m[row])
        if value != value:
            what = "contains NaN"
        elif value > 0:
            what = "contains +inf"
        else:
            what = "is all -inf (no token can be sampled)"
        raise QRCoreError(f"{name} row {row} {what}")
    return m


def to_row_param(
    xp: Any, value: object, name: str, rows: int, device: Any, *, integer: bool = False
) -> Array:
    """Broadcast a scalar or ``(rows,)`` array to a ``(rows,)`` array on ``device``.

    Floats become float64, integers int64. A Python scalar is filled in on the
    device (a blocking host-to-device copy of it would wait for the device's
    queue: a host sync); an array already on ``device`` with the target dtype is
    used as it is, without a copy.

    Raises:
        QRCoreError: If ``value`` has a wrong type, dtype or shape.
    """
    if isinstance(value, bool):
        raise QRCoreError(f"{name} must be {'an int' if integer else 'a number'}, got bool")
    if isinstance(value, float | int):
        # A Python scalar would become torch's default float32; keep all its digits.
        if integer and not isinstance(value, int):
            raise QRCoreError(f"{name} must be an int, got {value!r}")
        dtype = xp.int64 if isinstance(value, int) else xp.float64
        return xp.full((rows,), value, dtype=dtype, device=device)
    try:
        arr = xp.asarray(value, device=device)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise QRCoreError(
            f"{name} must be a number or a 1-D array, got {type(value).__name__}"
        ) from exc
    if integer:
        if not xp.isdtype(arr.dtype, "integral") or xp.isdtype(arr.dtype, "bool"):
            raise QRCoreError(f"{name} must be an int or an integer array, got dtype {arr.dtype}")
        arr = xp.astype(arr, xp.int64, copy=False)
    else:
        if not xp.isdtype(arr.dtype, ("real floating", "integral")) or xp.isdtype(
            arr.dtype, "bool"
        ):
            raise QRCoreError(f"{name} must be a real number or real array, got dtype {arr.dtype}")
        arr = xp.astype(arr, xp.float64, copy=False)
    if arr.ndim == 0:
        return xp.broadcast_to(arr, (rows,))
    if arr.ndim != 1 or arr.shape[0] != rows:
        raise QRCoreError(
            f"{name} must be a scalar or have shape ({rows},), got shape {tuple(arr.shape)}"
        )
    return arr
