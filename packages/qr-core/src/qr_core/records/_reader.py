"""Reading JSON Lines record files: rotated segments and every writer's series included."""

from __future__ import annotations

import heapq
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from qr_core.records._chain import CHAIN_KEY, SEAL_KEY
from qr_core.records._errors import RecordError
from qr_core.records._layout import rotated_segments, writer_files
from qr_core.records._schema import TokenSamplingRecord
from qr_core.records._validate import InvalidRecordsError, Problem, value_problems

__all__ = ["RecordFile", "read_records", "segments_of"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RecordFile:
    """The records read for one path given by the user."""

    path: Path
    """The path as given."""
    segments: tuple[Path, ...]
    """Files actually read: series after series (``path``'s own first, then each
    writer's by name), each oldest first (rotated segments, then its live file)."""
    records: tuple[TokenSamplingRecord, ...]
    """Every complete record: each series in file order, the series merged into one
    time line by ``logits_ready_ns``."""
    truncated_lines: tuple[str, ...]
    """``"file:line"`` of each partial last line that was skipped (a killed writer)."""
    where: tuple[str, ...] = ()
    """``"file:line"`` of each of ``records``."""
    invalid: tuple[Problem, ...] = ()
    """Complete lines that are no valid record, in file order (only with
    ``skip_invalid=True``; otherwise they raise)."""


def read_records(path: str | os.PathLike[str], *, skip_invalid: bool = False) -> RecordFile:
    """Read a record set: a live file with its rotated segments, and every writer's
    series under it as a base (see :func:`segments_of`), merged in time order.

    A final line without its newline is what a killed writer leaves behind: it is
    skipped with a WARNING and everything before it is kept. Seal lines are skipped
    and each line's hash-chain envelope is set aside (the chain is checked by
    :func:`~qr_core.records.verify_chain`, not here). Any other line that is
    no valid record (not JSON, wrong keys or types, or impossible values: see
    :func:`~qr_core.records._validate.value_problems`) is an error.

    Args:
        path: A live record file (its ``path.N`` segments are read first) or a
            single segment.
        skip_invalid: Leave invalid lines out and list them in ``invalid``
            instead of raising.

    Returns:
        The records and what was read.

    Raises:
        RecordError: A file is missing or cannot be read.
        InvalidRecordsError: Some complete lines are no valid records and
            ``skip_invalid`` is false (the message names the first few by file
            and line, and gives their count).
    """
    given = Path(path)
    all_series = _series_of(given)
    segments = [segment for series in all_series for segment in series]
    truncated: list[str] = []
    invalid: list[Problem] = []
    parts: list[list[tuple[TokenSamplingRecord, str]]] = []
    for series in all_series:
        own: list[TokenSamplingRecord] = []
        own_where: list[str] = []
        for segment in series:
            _read_segment(segment, own, truncated, own_where, invalid)
        parts.append(list(zip(own, own_where, strict=True)))
    # Several writers: one time line. Each series keeps its own order (a merge,
    # not a sort), so a clock step inside one writer cannot reorder its records.
    merged = list(heapq.merge(*parts, key=lambda pair: pair[0].logits_ready_ns))
    records = [record for record, _ in merged]
    where = [location for _, location in merged]
    if invalid and not skip_invalid:
        raise InvalidRecordsError(invalid)
    return RecordFile(
        given, tuple(segments), tuple(records), tuple(truncated), tuple(where), tuple(invalid)
    )


def segments_of(path: str | os.PathLike[str]) -> list[Path]:
    """Return the files :func:`read_records` reads for ``path``.

    These are the series of ``path`` itself (``path.1``, ``path.2``, ..., then
    ``path``) and of every writer that wrote under it as a base
    (``<stem>.<writer><suffix>.N`` ..., then ``<stem>.<writer><suffix>``; see
    :func:`~qr_core.records.writer_files`), one series after another, each oldest
    first.

    Raises:
        RecordError: No file of any series exists, or a series lacks a segment
            between two it has (records were lost); the message names the files.
    """
    return [segment for series in _series_of(Path(path)) for segment in series]


def _series_of(given: Path) -> list[list[Path]]:
    found = [_one_series(live) for live in [given, *writer_files(given)]]
    series = [s for s in found if s]
    if not series:
        raise RecordError(f"record file {str(given)!r} does not exist")
    return series


def _one_series(live: Path) -> list[Path]:
    segments = rotated_segments(live)
    numbers = [int(p.name.rsplit(".", 1)[1]) for p in segments]
    if numbers:
        lost = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
        if lost:
            names = ", ".join(f"{live.name}.{n}" for n in lost[:5])
            more = f" and {len(lost) - 5} more" if len(lost) > 5 else ""
            raise RecordError(
                f"record series {str(live)!r} lacks segment(s) {names}{more} between "
                f"{segments[0].name} and {segments[-1].name}: records were lost; read the "
                "remaining segments one by one to analyse what is left"
            )
        if numbers[0] > 1:
            _logger.warning(
                "record series %s starts at segment %d: the older ones were deleted "
                "(backup_count) or are missing",
                live,
                numbers[0],
            )
    if live.exists():
        segments.append(live)
    return segments


def _read_segment(
    path: Path,
    out: list[TokenSamplingRecord],
    truncated: list[str],
    where: list[str],
    invalid: list[Problem],
) -> None:
    try:
        with path.open("rb") as f:
            lines: Iterable[bytes] = f.readlines()
    except OSError as exc:
        raise RecordError(f"cannot read record file {str(path)!r}: {exc}") from exc
    for number, raw in enumerate(lines, start=1):
        if not raw.endswith(b"\n"):
            cut = f"{path}:{number}"
            _logger.warning("skipping partial last line %s (left by an interrupted writer)", cut)
            truncated.append(cut)
            break
        if not raw.strip():
            continue
        location = f"{path}:{number}"
        try:
            # Python's parser accepts NaN and Infinity (no JSON); value_problems then
            # names the field that holds one.
            data = json.loads(raw)
        except ValueError as exc:
            invalid.append(Problem(location, f"not valid JSON ({exc})"))
            continue
        if not isinstance(data, dict):
            invalid.append(Problem(location, f"expected a JSON object, got {type(data).__name__}"))
            continue
        if SEAL_KEY in data and len(data) == 1:
            continue  # the end of a chained series, no record
        data.pop(CHAIN_KEY, None)
        try:
            record = TokenSamplingRecord.from_json_dict(data)
        except RecordError as exc:
            invalid.append(Problem(location, str(exc)))
            continue
        found = value_problems(record)
        if found:
            invalid.append(Problem(location, "; ".join(found)))
            continue
        out.append(record)
        where.append(location)
