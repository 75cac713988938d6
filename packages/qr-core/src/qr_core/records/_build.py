"""The one record builder: the records of a sampling step, from the step's per-row arrays.

Every host that samples with qr-core (qr-vllm's step, the transformers example, a
script of one's own) ends a step with the same arrays: what the amplifier made of
each row's bytes, the temperature and entropy of each row and the token each row
chose. :func:`build_token_records` turns them into one :class:`TokenSamplingRecord`
per row, so that every host writes the same fields the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from qr_core.records._errors import RecordError
from qr_core.records._rows import (
    AmplifiedRows,
    CalibrationFigures,
    EntropyOrigin,
    SelectedRows,
    TemperedRows,
)
from qr_core.records._schema import TokenSamplingRecord

__all__ = ["build_token_records"]


# One value for every row, or one per row.
_Ints = int | Sequence[int] | npt.NDArray[Any]
_Floats = float | Sequence[float] | npt.NDArray[Any]
_Names = str | Sequence[str]
_OptionalNames = str | Sequence[str | None] | None


_CalibrationFields = tuple[str, int, float, float, float, float, float]


def _calibration_fields(c: CalibrationFigures) -> _CalibrationFields:
    """sha256, B, mean, std and the standard errors and covariance in units of std."""
    return (
        c.sha256,
        int(c.blocks),
        float(c.mean),
        float(c.std),
        c.mean_se / c.std,
        c.std_se / c.std,
        c.mean_std_cov / c.std**2,
    )


def build_token_records(
    amplified: AmplifiedRows,
    tempered: TemperedRows,
    selected: SelectedRows,
    *,
    request_id: Sequence[str],
    token_index: _Ints,
    logits_ready_ns: int,
    fetch: EntropyOrigin | Sequence[EntropyOrigin],
    raw: npt.NDArray[np.uint8],
    offsets: npt.ArrayLike | None = None,
    keep_raw: bool = False,
    amplifier: _Names,
    temperature_strategy: _Names,
    u_transform: _Names,
    top_k: _Ints,
    top_p: _Floats,
    config_hash: _Names,
    request_tag: _OptionalNames = None,
    arm: _OptionalNames = None,
    calibration_sha256: _OptionalNames = None,
    calibration: CalibrationFigures | Sequence[CalibrationFigures | None] | None = None,
    writer_id: str | None = None,
    preregistration_sha256: str | None = None,
) -> list[TokenSamplingRecord]:
    """Build one record per row of a sampling step.

    Row ``i`` of every array is record ``i``. Arguments that may be one value or one
    value per row take the one value for every row. Arrays must be in host memory
    (numpy, or anything ``numpy.asarray`` reads without a copy from a device).

    Args:
        amplified: ``u``, ``z_score`` and ``sample_mean`` of each row.
        tempered: ``temperature`` and ``shannon_entropy`` of each row.
        selected: ``token_id``, ``token_rank``, ``token_prob`` and ``num_candidates``.
        request_id: Each row's request id; its length is the number of rows.
        token_index: Each row's position in its request's output.
        logits_ready_ns: When the step's logits existed (wall clock, ns).
        fetch: The fetch that supplied the bytes: one for the step or one per row.
        raw: The entropy bytes, ``(B, N)`` uint8 (N bytes per row), or with
            ``offsets`` all rows' bytes end to end, 1-D.
        offsets: ``(B + 1,)`` row boundaries in a 1-D ``raw`` (rows of any length).
        keep_raw: Put each row's bytes, in hex, into ``raw_bytes_hex``.
        amplifier: Amplifier name(s).
        temperature_strategy: Temperature strategy name(s).
        u_transform: How u was made (``"randomized_pit"`` or ``"phi"``).
        top_k: Top-k in effect.
        top_p: Top-p in effect.
        config_hash: :func:`config_hash` of the configuration in effect.
        request_tag: The client's request tag(s).
        arm: The experiment arm(s).
        calibration_sha256: The hash(es) of the device calibration(s) the amplifier
            used, alone: records without the calibration's figures (the analysis then
            needs the calibration file). Prefer ``calibration``.
        calibration: The device calibration(s) the amplifier used: their hash and the
            figures the analysis needs (B, mean, std, standard errors, covariance).
            With ``calibration_sha256`` too, the hashes must agree row by row.
        writer_id: The process that writes the records.
        preregistration_sha256: SHA-256 of the pre-registered plan the experiment runs
            under (``Preregistration.sha256``); ``None`` when not pre-registered.

    Returns:
        The records, in row order (``raw_sha256`` is the SHA-256 of each row's bytes,
        ``sample_count`` their number).

    Raises:
        RecordError: An array or per-row argument does not have one value per row,
            ``raw`` is not uint8 bytes of that layout, ``sample_mean`` is ``None``,
            or ``calibration`` and ``calibration_sha256`` name different calibrations
            (the message names the argument).
    """
    rows = len(request_id)
    chunks = _row_bytes(raw, offsets, rows)
    if amplified.sample_mean is None:
        raise RecordError(
            "sample_mean is None; records need each row's byte mean (amplify with sample_mean=True)"
        )
    mean, z, u = (
        _column(a, rows, n)
        for a, n in (
            (amplified.sample_mean, "sample_mean"),
            (amplified.z_score, "z_score"),
            (amplified.u, "u"),
        )
    )
    temperature = _column(tempered.temperature, rows, "temperature")
    shannon = _column(tempered.shannon_entropy, rows, "shannon_entropy")
    token = _column(selected.token_id, rows, "token_id")
    rank = _column(selected.token_rank, rows, "token_rank")
    prob = _column(selected.token_prob, rows, "token_prob")
    candidates = _column(selected.num_candidates, rows, "num_candidates")
    fetches = _per_row(fetch, rows, "fetch")
    index = _per_row(token_index, rows, "token_index")
    tags = _per_row(request_tag, rows, "request_tag")
    arms = _per_row(arm, rows, "arm")
    amplifiers = _per_row(amplifier, rows, "amplifier")
    strategies = _per_row(temperature_strategy, rows, "temperature_strategy")
    transforms = _per_row(u_transform, rows, "u_transform")
    ks = _per_row(top_k, rows, "top_k")
    ps = _per_row(top_p, rows, "top_p")
    hashes = _per_row(config_hash, rows, "config_hash")
    calibrations = _calibration_rows(calibration_sha256, calibration, rows)
    records: list[TokenSamplingRecord] = []
    for i in range(rows):
        chunk = chunks[i]
        origin: EntropyOrigin = fetches[i]
        records.append(
            TokenSamplingRecord(
                request_id=request_id[i],
                request_tag=tags[i],
                token_index=int(index[i]),
                logits_ready_ns=logits_ready_ns,
                entropy_requested_ns=origin.requested_ns,
                entropy_generated_ns=origin.generated_ns,
                entropy_read_started_ns=getattr(origin, "read_started_ns", None),
                entropy_received_ns=origin.received_ns,
                entropy_source=origin.source,
                device_id=origin.device_id,
                sequence_id=origin.sequence_id,
                fallback=origin.fallback,
                fallback_reason=origin.fallback_reason,
                sample_count=int(chunk.size),
                raw_sha256=hashlib.sha256(chunk.data).hexdigest(),
                raw_bytes_hex=chunk.tobytes().hex() if keep_raw else None,
                amplifier=amplifiers[i],
                sample_mean=float(mean[i]),
                z_score=float(z[i]),
                u=float(u[i]),
                temperature_strategy=strategies[i],
                temperature=float(temperature[i]),
                shannon_entropy=float(shannon[i]),
                token_id=int(token[i]),
                token_rank=int(rank[i]),
                token_prob=float(prob[i]),
                num_candidates=int(candidates[i]),
                top_k=int(ks[i]),
                top_p=float(ps[i]),
                config_hash=hashes[i],
                arm=arms[i],
                writer_id=writer_id,
                preregistration_sha256=preregistration_sha256,
                u_transform=transforms[i],
                calibration_sha256=calibrations[i][0],
                calibration_blocks=calibrations[i][1],
                calibration_mean=calibrations[i][2],
                calibration_std=calibrations[i][3],
                calibration_mean_se_z=calibrations[i][4],
                calibration_std_se_z=calibrations[i][5],
                calibration_cov_z=calibrations[i][6],
            )
        )
    return records


_CalibrationRow = tuple[
    str | None, int | None, float | None, float | None, float | None, float | None, float | None
]


def _calibration_rows(
    sha256: _OptionalNames, calibration: object, rows: int
) -> list[_CalibrationRow]:
    """Each row's (sha256, B, mean, std, mean_se_z, std_se_z, cov_z), ``None`` where
    uncalibrated; one conversion per distinct calibration, not per row."""
    hashes = _per_row(sha256, rows, "calibration_sha256")
    given = _per_row(calibration, rows, "calibration")
    known: dict[int, _CalibrationFields] = {}
    out: list[_CalibrationRow] = []
    for i in range(rows):
        c = given[i]
        if c is None:
            out.append((hashes[i], None, None, None, None, None, None))
            continue
        fields = known.get(id(c))
        if fields is None:
            fields = known[id(c)] = _calibration_fields(c)
        if hashes[i] is not None and hashes[i] != fields[0]:
            raise RecordError(
                f"calibration_sha256 of row {i} is {hashes[i]!r} but its calibration's "
                f"sha256 is {fields[0]!r}; give one of the two, or the same calibration"
            )
        out.append(fields)
    return out


def _row_bytes(
    raw: npt.NDArray[np.uint8], offsets: npt.ArrayLike | None, rows: int
) -> list[npt.NDArray[np.uint8]]:
    """Each row's bytes as a contiguous 1-D uint8 array."""
    data = np.asarray(raw)
    if data.dtype != np.uint8:
        raise RecordError(f"raw must be uint8 bytes, got dtype {data.dtype}")
    data = np.ascontiguousarray(data)
    if offsets is None:
        if data.ndim != 2 or data.shape[0] != rows:
            raise RecordError(
                f"raw must have shape ({rows}, N) (one row per request_id) without offsets, "
                f"got {data.shape}"
            )
        return list(data)
    bounds = np.asarray(offsets).tolist()
    if data.ndim != 1 or len(bounds) != rows + 1:
        raise RecordError(
            f"with offsets, raw must be 1-D and offsets have {rows + 1} entries "
            f"(one more than request_id), got raw {data.shape} and {len(bounds)} offsets"
        )
    return [data[bounds[i] : bounds[i + 1]] for i in range(rows)]


def _column(values: Any, rows: int, name: str) -> list[Any]:
    """A ``(B,)`` array as a Python list: one conversion per field, not per value."""
    array = np.asarray(values)
    if array.shape != (rows,):
        raise RecordError(
            f"{name} must have shape ({rows},) (one value per request_id), got {array.shape}"
        )
    out: list[Any] = array.tolist()
    return out


def _per_row(value: object, rows: int, name: str) -> list[Any]:
    """One value for every row, or one per row (a sequence or array of ``rows`` values)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if value is None or isinstance(value, str) or not isinstance(value, Sequence):
        return [value] * rows
    if len(value) != rows:
        raise RecordError(
            f"{name} must be one value or {rows} (one per request_id), got {len(value)}"
        )
    return list(value)
