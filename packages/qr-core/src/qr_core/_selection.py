"""Token selection: the public entry points, validation and result types.

Semantics (one order throughout: probability descending, then token id
ascending; probability is the weight of step 2 as computed):

1. ``temperature <= 0``: greedy, the lowest id among the maximal logits; rank 0,
   probability 1.0, one candidate.
2. Weights ``w = exp((logit - max) / T)``, computed in float32 (as vLLM's own
   sampler does) for float32, float16 and bfloat16 logits and in float64 for
   float64 logits: the logits and their row max are cast to that dtype, the
   difference is divided by ``T`` in that dtype, and the namespace's ``exp`` is
   applied. Both engines compute these same weights; tokens with equal weights
   (equal logits, or distinct logits that round to one float32 weight) are
   ordered by id.
3. Top-k keeps the first k tokens in the order (``k <= 0`` or ``k >= V`` keeps all).
4. Top-p keeps the shortest prefix whose cumulative weight ``C_j`` satisfies
   ``C_j >= p * C_kept`` (``p == 1`` keeps all kept tokens).
5. The token is the first candidate with ``C_j > u * C_n``, where ``C_n`` is the
   cumulative weight of the last candidate: the CDF accumulated in float64 and
   normalised by its own last value. For u ~ U(0, 1) each candidate is chosen with
   exactly its renormalised probability ``w_j / C_n``; u near 0 picks rank 0.

``num_candidates`` counts the kept tokens (including any of weight 0, such as
``-inf`` logits, that a top-k without top-p keeps); ``token_rank`` is the 0-based
position of the token in the order; ``token_prob`` is ``w_j / C_n``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import array_api_compat
import numpy as np

from qr_core._arrays import check_logits, device_of, row_max, to_row_param
from qr_core._errors import QRCoreError
from qr_core._select_generic import select_sorted
from qr_core._select_numpy import select_buckets

__all__ = [
    "BatchSelectionResult",
    "Engine",
    "SelectionResult",
    "select_token",
    "select_tokens",
]

Array = Any

Engine = Literal["auto", "host", "device"]
"""Which selection engine runs: see :func:`select_tokens`."""
_ENGINES = ("auto", "host", "device")

# Bits of BatchSelectionResult.invalid, in the order the checks report them.
_BAD_U, _BAD_T, _BAD_P, _NAN_ROW, _POSINF_ROW, _NEGINF_ROW = (1 << i for i in range(6))


@dataclass(frozen=True)
class SelectionResult:
    """The token chosen for one row."""

    token_id: int
    """Vocabulary index of the chosen token."""
    token_rank: int
    """0-based position of the token in the order (probability desc, id asc)."""
    token_prob: float
    """Renormalised probability of the token among the candidates."""
    num_candidates: int
    """Tokens kept after top-k and top-p (1 for greedy)."""


@dataclass(frozen=True)
class BatchSelectionResult:
    """Tokens chosen for a batch: ``(B,)`` arrays in the logits' namespace and device."""

    token_id: Array
    """int64."""
    token_rank: Array
    """int64."""
    token_prob: Array
    """float64; NaN on the rows that :attr:`invalid` flags."""
    num_candidates: Array
    """int64."""
    invalid: Array | None = None
    """``(B,)`` int32, 0 where the row's input was valid, or None.

    Set only by ``defer_checks=True`` on the device engine: the checks that need
    the values of device arrays are then not read back (no host sync) but
    returned here. A nonzero row's token is a valid id chosen from invalid input;
    call :meth:`raise_if_invalid` before trusting the batch. None means every
    input was checked before selecting.
    """
    _checked: tuple[Array, ...] | None = field(default=None, repr=False, compare=False)
    """``(u, temperature, top_p, row max)`` on the device, for the deferred error message."""

    def raise_if_invalid(self, invalid: Array | None = None) -> None:
        """Raise the error the selection deferred, if any (one host copy).

        Args:
            invalid: :attr:`invalid` already copied to the host (for example
                with the other per-row values, in one asynchronous copy); by
                default :attr:`invalid` is read here, which waits for the device.

        Raises:
            QRCoreError: Naming the argument and the first bad row, exactly as
                an immediate check would.
        """
        codes = self.invalid if invalid is None else invalid
        if codes is None or self._checked is None:
            return
        host = _numpy(codes)
        if host.any():
            _raise_first(host, self._checked)


def _numpy(a: Array) -> np.ndarray[Any, Any]:
    """A host copy of ``a`` (a read of device memory waits for the device)."""
    if array_api_compat.is_torch_array(a):
        a = a.detach().cpu()
    return np.asarray(a)


def _invalid_codes(xp: Any, m: Array, u: Array, t: Array, p: Array) -> Array:
    """Per-row bit codes of every value check, computed on the arrays' device."""
    # One row of flags per check, in the order of the bits; the bits are made
    # on the device (arange, not a host list: that would be an upload).
    flags = xp.stack(
        [
            ~((u > 0) & (u < 1)),
            ~xp.isfinite(t),
            ~((p > 0) & (p <= 1)),
            xp.isnan(m),
            m == float("inf"),
            m == float("-inf"),
        ]
    )
    bits = 2 ** xp.arange(flags.shape[0], dtype=xp.int32, device=device_of(m))
    return xp.sum(xp.astype(flags, xp.int32) * bits[:, None], axis=0, dtype=xp.int32)


def _raise_first(codes: np.ndarray[Any, Any], checked: tuple[Array, ...]) -> None:
    """Raise for the first failing check (u, temperature, top_p, logits), first row."""
    u, t, p, _ = checked
    for bit in (_BAD_U, _BAD_T, _BAD_P, _NAN_ROW | _POSINF_ROW | _NEGINF_ROW):
        rows = np.flatnonzero(codes & bit)
        if not rows.size:
            continue
        row = int(rows[0])
        if bit == _BAD_U:
            raise QRCoreError(
                f"u must lie in the open interval (0, 1), got {_value(u, row)} (row {row})"
            )
        if bit == _BAD_T:
            raise QRCoreError(f"temperature must be finite, got {_value(t, row)} (row {row})")
        if bit == _BAD_P:
            raise QRCoreError(f"top_p must lie in (0, 1], got {_value(p, row)} (row {row})")
        code = int(codes[row])
        if code & _NAN_ROW:
            what = "contains NaN"
        elif code & _POSINF_ROW:
            what = "contains +inf"
        else:
            what = "is all -inf (no token can be sampled)"
        raise QRCoreError(f"logits row {row} {what}")


def _value(values: Array, row: int) -> str:
    return repr(float(_numpy(values[row : row + 1])[0]))


def _check_params(xp: Any, u: Array, t: Array, p: Array) -> None:
    if bool(xp.any(~((u > 0) & (u < 1)))):
        raise QRCoreError(
            f"u must lie in the open interval (0, 1), got {_first_bad(xp, u, (u > 0) & (u < 1))}"
        )
    if bool(xp.any(~xp.isfinite(t))):
        raise QRCoreError(f"temperature must be finite, got {_first_bad(xp, t, xp.isfinite(t))}")
    if bool(xp.any(~((p > 0) & (p <= 1)))):
        raise QRCoreError(f"top_p must lie in (0, 1], got {_first_bad(xp, p, (p > 0) & (p <= 1))}")


def _first_bad(xp: Any, values: Array, ok: Array) -> str:
    row = int(xp.argmax(xp.astype(~ok, xp.int32)))
    return f"{float(values[row])!r} (row {row})"


def select_tokens(
    logits: Array,
    u: object,
    *,
    temperature: object,
    top_k: object,
    top_p: object,
    engine: Engine = "auto",
    defer_checks: bool = False,
) -> BatchSelectionResult:
    """Select one token per row of a ``(B, V)`` batch in whole-array operations.

    Host-memory input (numpy, CPU torch through a zero-copy view) uses a bucket
    engine that sorts only the few tokens near each threshold; device input (torch
    on CUDA) uses a stable sort on its own device. Both give the same tokens (up to
    float64 summation order) when they compute the same float32 weights; numpy's
    and torch's float32 ``exp`` differ by a few ulp, so across libraries tokens
    may differ where u lies within about 1e-6 of a CDF boundary.

    The device engine's work is the same whole-array operations whatever ``B``
    and however the per-row parameters differ. It reads nothing back to the host
    except, without ``defer_checks``, one flag for the value checks (a host
    sync). Pass the four parameters as ``(B,)`` arrays already on the logits'
    device (or Python scalars, filled in on the device); any other array is
    copied there.

    Args:
        logits: ``(B, V)`` real floating numpy array or torch tensor.
        u: Uniform values in (0, 1), scalar or ``(B,)``.
        temperature: Scalar or ``(B,)``; ``<= 0`` means greedy.
        top_k: int or ``(B,)`` integer array; ``<= 0`` disables.
        top_p: Scalar or ``(B,)`` in (0, 1]; 1 disables.
        engine: ``"auto"``: the bucket engine for host memory, else the device
            engine. ``"host"``: the bucket engine (host memory only).
            ``"device"``: the sort engine in the logits' own namespace and
            device, also for CPU tensors, so that the GPU path can be run and
            its operations counted on a machine without a GPU.
        defer_checks: With the device engine, do not read the value checks
            back: they come back in :attr:`BatchSelectionResult.invalid` for
            the caller to check with
            :meth:`~BatchSelectionResult.raise_if_invalid` (for example when it
            reads the per-row results for its records). The bucket engine
            checks at once either way (host memory has no sync to save).

    Returns:
        The chosen tokens as ``(B,)`` arrays in the namespace and on the device of
        ``logits``.

    Raises:
        QRCoreError: Naming the argument: wrong dtype or shape, a logits row with
            NaN, +inf or only -inf, u outside (0, 1), a non-finite temperature, a
            non-integer top_k, top_p outside (0, 1], an unknown engine or
            ``engine="host"`` for device memory.
    """
    xp, x = check_logits(logits, 2)
    if engine not in _ENGINES:
        raise QRCoreError(f"engine must be one of 'auto', 'host', 'device', got {engine!r}")
    rows = x.shape[0]
    dev = device_of(x)
    u_a = to_row_param(xp, u, "u", rows, dev)
    t_a = to_row_param(xp, temperature, "temperature", rows, dev)
    k_a = to_row_param(xp, top_k, "top_k", rows, dev, integer=True)
    p_a = to_row_param(xp, top_p, "top_p", rows, dev)
    host = None if engine == "device" else _host_view(xp, x)
    if host is None and engine == "host":
        raise QRCoreError(
            f"engine 'host' needs logits in host memory (numpy or a CPU tensor), got device {dev}"
        )
    if rows == 0:
        empty_i = xp.zeros((0,), dtype=xp.int64, device=dev)
        return BatchSelectionResult(
            empty_i, empty_i, xp.zeros((0,), dtype=xp.float64, device=dev), empty_i
        )
    if host is None:
        return _select_on_device(xp, x, u_a, t_a, k_a, p_a, defer_checks)
    _check_params(xp, u_a, t_a, p_a)
    # Host memory: one numpy reduction validates the rows (torch's CPU reduction
    # can cost milliseconds in thread wake-ups on a busy machine).
    m = row_max(array_api_compat.array_namespace(host), host)
    if host is x:
        return BatchSelectionResult(*select_buckets(np.ascontiguousarray(x), m, u_a, t_a, k_a, p_a))
    u_h, t_h, k_h, p_h = (np.from_dlpack(a) for a in (u_a, t_a, k_a, p_a))
    out = select_buckets(np.ascontiguousarray(host), m, u_h, t_h, k_h, p_h)
    return BatchSelectionResult(*(xp.asarray(a, device=dev) for a in out))


def _select_on_device(
    xp: Any, x: Array, u: Array, t: Array, k: Array, p: Array, defer: bool
) -> BatchSelectionResult:
    """The sort engine; all value checks in one device array of codes.

    Invalid input cannot make the engine index out of bounds (every index it
    takes is clamped to the row), so with ``defer`` the bad rows are selected
    like the others and only flagged.
    """
    m = xp.max(x, axis=1)
    codes = _invalid_codes(xp, m, u, t, p)
    checked = (u, t, p, m)
    if not defer:
        if bool(xp.any(codes != 0)):  # the one host sync of an immediate check
            _raise_first(_numpy(codes), checked)
        return BatchSelectionResult(*select_sorted(xp, x, m, u, t, k, p))
    token, rank, prob, n = select_sorted(xp, x, m, u, t, k, p)
    prob = xp.where(codes == 0, prob, xp.full_like(prob, float("nan")))
    return BatchSelectionResult(token, rank, prob, n, codes, checked)


def _host_view(xp: Any, x: Array) -> Any:
    """A numpy view of host-memory logits (numpy, CPU torch), else None.

    CPU tensors share their memory with the view (DLPack), so the bucket engine
    serves them without a copy; a CPU dtype numpy lacks (bfloat16) is widened to
    float32 first, which is exact. Device tensors take the sort engine on their
    own device.
    """
    if array_api_compat.is_numpy_array(x):
        return x
    if not array_api_compat.is_torch_array(x) or x.device.type != "cpu" or x.requires_grad:
        return None
    try:
        return np.from_dlpack(x)
    except (TypeError, BufferError, RuntimeError):
        pass
    try:
        return np.from_dlpack(xp.astype(x, xp.float32))
    except (TypeError, BufferError, RuntimeError):
        return None


def select_token(
    logits: Array,
    u: float,
    *,
    temperature: float,
    top_k: int,
    top_p: float,
) -> SelectionResult:
    """Select one token from a ``(V,)`` row of logits.

    Same semantics and errors as :func:`select_tokens`.
    """
    _, x = check_logits(logits, 1)
    batch = select_tokens(x[None, :], u, temperature=temperature, top_k=top_k, top_p=top_p)
    return SelectionResult(
        token_id=int(batch.token_id[0]),
        token_rank=int(batch.token_rank[0]),
        token_prob=float(batch.token_prob[0]),
        num_candidates=int(batch.num_candidates[0]),
    )
