"""Which records can be right: value rules, duplicates, incomplete requests.

Three layers use these rules. The sinks refuse to write a non-finite number
(:func:`require_finite`); the reader refuses a line whose values are impossible
(:func:`value_problems`); the analysis refuses duplicated tokens and reports requests
with missing tokens (:func:`validate`). Every problem names where it was found
(``file:line`` when the record came from a file).
"""

from __future__ import annotations

import collections
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from qr_core.records._errors import RecordError
from qr_core.records._schema import _FIELD_TYPES, TokenSamplingRecord

__all__ = [
    "IncompleteRequest",
    "InvalidRecordsError",
    "Problem",
    "Validation",
    "require_finite",
    "validate",
    "value_problems",
]

FLOAT_FIELDS: Final = tuple(
    name for name, (kind, optional) in _FIELD_TYPES.items() if kind is float and not optional
)
"""The record's float fields that always hold a number; every one must be finite."""

OPTIONAL_FLOAT_FIELDS: Final = tuple(
    name for name, (kind, optional) in _FIELD_TYPES.items() if kind is float and optional
)
"""The record's float fields that may be ``None``; finite where they hold a number."""

CALIBRATION_FIGURES: Final = (
    "calibration_mean",
    "calibration_std",
    "calibration_mean_se_z",
    "calibration_std_se_z",
    "calibration_cov_z",
)
"""The calibration's figures a record carries beside ``calibration_blocks`` (version 3):
all of them or none, and only with a ``calibration_sha256``."""

_FLOATS: Final = operator.attrgetter(*FLOAT_FIELDS)
_FIGURES: Final = operator.attrgetter(*CALIBRATION_FIGURES)
_NO_FIGURES: Final = (None,) * len(CALIBRATION_FIGURES)

U_TRANSFORMS: Final = ("randomized_pit", "phi")
"""Allowed values of ``u_transform``."""

SHOWN_PROBLEMS: Final = 5
"""How many problems an :class:`InvalidRecordsError` message lists."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One record that cannot be right."""

    where: str
    """``file:line`` of the record, or ``record N`` (0-based) for records given in memory."""
    message: str
    """What is wrong: the field, the value found and what is allowed."""

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True, slots=True)
class IncompleteRequest:
    """A request whose kept records do not cover token indexes ``0 .. max``."""

    request_id: str
    """The request."""
    tokens: int
    """Kept (not discarded) records of the request."""
    missing: tuple[int, ...]
    """The missing token indexes, ascending (at most the first 10)."""
    missing_count: int
    """How many token indexes are missing in all."""


@dataclass(frozen=True, slots=True)
class Validation:
    """Outcome of :func:`validate`."""

    tokens: tuple[TokenSamplingRecord, ...]
    """Valid, kept records in input order: what statistics use. Discarded records and
    every record with a problem are left out."""
    discarded: int
    """Valid records with ``discarded=true`` (entropy drawn, but no output token)."""
    problems: tuple[Problem, ...]
    """Invalid records (impossible values, duplicates), in input order."""
    incomplete: tuple[IncompleteRequest, ...]
    """Requests with gaps in their token indexes, sorted by request id."""


class InvalidRecordsError(RecordError):
    """Records with impossible values or duplicates; ``problems`` lists them all."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        shown = "; ".join(str(p) for p in self.problems[:SHOWN_PROBLEMS])
        more = len(self.problems) - SHOWN_PROBLEMS
        tail = f"; ... and {more} more" if more > 0 else ""
        super().__init__(f"{len(self.problems)} invalid record(s): {shown}{tail}")


def require_finite(record: TokenSamplingRecord) -> None:
    """Refuse a record holding NaN or an infinity (JSON has no such numbers).

    Raises:
        RecordError: Names the first non-finite field, its value and the request.
    """
    # One addition tests all fields at once on the common path; the loop only runs
    # to name the culprit (or when finite values overflowed the sum).
    if math.isfinite(sum(_FLOATS(record))) and _figures_finite(record):
        return
    for name in FLOAT_FIELDS + OPTIONAL_FLOAT_FIELDS:
        value = getattr(record, name)
        if value is not None and not math.isfinite(value):
            raise RecordError(
                f"record field {name!r} is {value!r}; records hold finite numbers only "
                f"(request {record.request_id!r}, token {record.token_index})"
            )


def _figures_finite(r: TokenSamplingRecord) -> bool:
    figures = _FIGURES(r)
    return figures == _NO_FIGURES or (None not in figures and math.isfinite(sum(figures)))


def _calibration_problems(r: TokenSamplingRecord) -> list[str]:
    """The calibration fields: all figures with B, or none; only with a sha256."""
    figures = _FIGURES(r)
    if r.calibration_blocks is None and figures == _NO_FIGURES:
        return []
    if r.calibration_blocks is None or None in figures:
        given = [n for n, v in zip(CALIBRATION_FIGURES, figures, strict=True) if v is not None]
        return [
            f"calibration fields come all together or not at all: calibration_blocks is "
            f"{r.calibration_blocks!r} and {given or 'none'} of {list(CALIBRATION_FIGURES)} "
            "are set"
        ]
    found = []
    if r.calibration_sha256 is None:
        found.append("calibration figures without a calibration_sha256")
    if r.calibration_blocks < 2:
        found.append(f"calibration_blocks is {r.calibration_blocks}, must be >= 2")
    for name in ("calibration_std", "calibration_mean_se_z", "calibration_std_se_z"):
        value = getattr(r, name)
        if math.isfinite(value) and not value > 0:
            found.append(f"{name} is {value!r}, must be > 0")
    return found


def value_problems(record: TokenSamplingRecord) -> list[str]:
    """Return what is impossible about one record's values (empty when nothing is)."""
    r = record
    # Fast path for the valid record (the comparisons are False for NaN).
    if (
        0.0 < r.u < 1.0
        and 0.0 < r.token_prob <= 1.0
        and 0 <= r.token_rank < r.num_candidates
        and r.sample_count >= 1
        and r.token_index >= 0
        and r.u_transform in U_TRANSFORMS
        and math.isfinite(sum(_FLOATS(r)))
        and (r.calibration_blocks is None and _FIGURES(r) == _NO_FIGURES)
    ):
        return []
    found = [
        f"{name} is {value!r}, must be finite"
        for name in FLOAT_FIELDS + OPTIONAL_FLOAT_FIELDS
        if (value := getattr(record, name)) is not None and not math.isfinite(value)
    ]
    found += _calibration_problems(record)
    if math.isfinite(record.u) and not 0.0 < record.u < 1.0:
        found.append(f"u is {record.u!r}, must lie in (0, 1)")
    if math.isfinite(record.token_prob) and not 0.0 < record.token_prob <= 1.0:
        found.append(f"token_prob is {record.token_prob!r}, must lie in (0, 1]")
    if not 0 <= record.token_rank < record.num_candidates:
        found.append(
            f"token_rank is {record.token_rank}, must be >= 0 and below "
            f"num_candidates ({record.num_candidates})"
        )
    if record.token_index < 0:
        found.append(f"token_index is {record.token_index}, must be >= 0")
    if record.sample_count < 1:
        found.append(f"sample_count is {record.sample_count}, must be >= 1")
    if record.u_transform not in U_TRANSFORMS:
        found.append(f"u_transform is {record.u_transform!r}, must be one of {list(U_TRANSFORMS)}")
    return found


def validate(
    records: Sequence[TokenSamplingRecord], where: Sequence[str] | None = None
) -> Validation:
    """Check every record and the set of records.

    A record is a problem when :func:`value_problems` finds something, or when it
    repeats the key (``request_id``, ``token_index``, ``config_hash``) of an earlier
    kept record: the first is kept, every repeat is a problem. Discarded records
    (``discarded=true``) are no tokens: they are counted, not checked for duplicates
    and not used by statistics.

    Args:
        records: The records, in file order.
        where: ``file:line`` of each record; default ``record N``.

    Returns:
        The kept tokens, the problems and the incomplete requests.
    """
    if where is not None and len(where) != len(records):
        raise RecordError(f"where has {len(where)} entries for {len(records)} records")
    tokens: list[TokenSamplingRecord] = []
    problems: list[Problem] = []
    first_seen: dict[tuple[str, int, str], str] = {}
    discarded = 0
    for i, record in enumerate(records):
        location = where[i] if where is not None else f"record {i}"
        found = value_problems(record)
        if found:
            problems.append(Problem(location, "; ".join(found)))
            continue
        if record.discarded:
            discarded += 1
            continue
        key = (record.request_id, record.token_index, record.config_hash)
        earlier = first_seen.get(key)
        if earlier is not None:
            problems.append(
                Problem(
                    location,
                    f"duplicate of {earlier} (request_id {record.request_id!r}, "
                    f"token_index {record.token_index}, config_hash {record.config_hash[:12]})",
                )
            )
            continue
        first_seen[key] = location
        tokens.append(record)
    return Validation(tuple(tokens), discarded, tuple(problems), incomplete_requests(tokens))


def incomplete_requests(tokens: Sequence[TokenSamplingRecord]) -> tuple[IncompleteRequest, ...]:
    """Requests whose token indexes have gaps (``0 .. max`` not all present)."""
    indexes: dict[str, set[int]] = collections.defaultdict(set)
    for r in tokens:
        indexes[r.request_id].add(r.token_index)
    out = []
    for request_id in sorted(indexes):
        seen = indexes[request_id]
        top = max(seen)
        if len(seen) == top + 1:
            continue  # indexes are distinct and >= 0, so this means 0 .. top
        missing = [i for i in range(top + 1) if i not in seen]
        out.append(IncompleteRequest(request_id, len(seen), tuple(missing[:10]), len(missing)))
    return tuple(out)
