"""Reading JSON Lines record files, rotated segments included."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from qr_core.records._errors import RecordError
from qr_core.records._jsonl import rotated_segments
from qr_core.records._schema import TokenSamplingRecord

__all__ = ["RecordFile", "read_records", "segments_of"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RecordFile:
    """The records read for one path given by the user."""

    path: Path
    """The path as given."""
    segments: tuple[Path, ...]
    """Files actually read, oldest first (rotated segments, then ``path``)."""
    records: tuple[TokenSamplingRecord, ...]
    """Every complete record, in file order."""
    truncated_lines: tuple[str, ...]
    """``"file:line"`` of each partial last line that was skipped (a killed writer)."""


def read_records(path: str | os.PathLike[str]) -> RecordFile:
    """Read a record file and, for a live file, its rotated segments before it.

    A final line without its newline is what a killed writer leaves behind: it is
    skipped with a WARNING and everything before it is kept. Any other bad line is
    an error.

    Args:
        path: A live record file (its ``path.N`` segments are read first) or a
            single segment.

    Returns:
        The records and what was read.

    Raises:
        RecordError: A file is missing or a complete line is not a valid record
            (the message names the file and line).
    """
    given = Path(path)
    segments = segments_of(given)
    records: list[TokenSamplingRecord] = []
    truncated: list[str] = []
    for segment in segments:
        _read_segment(segment, records, truncated)
    return RecordFile(given, tuple(segments), tuple(records), tuple(truncated))


def segments_of(path: str | os.PathLike[str]) -> list[Path]:
    """Return the files :func:`read_records` reads for ``path``, oldest first.

    Raises:
        RecordError: Neither ``path`` nor any segment of it exists.
    """
    given = Path(path)
    segments = rotated_segments(given)
    if given.exists():
        segments.append(given)
    elif not segments:
        raise RecordError(f"record file {str(given)!r} does not exist")
    return segments


def _read_segment(path: Path, out: list[TokenSamplingRecord], truncated: list[str]) -> None:
    try:
        with path.open("rb") as f:
            lines: Iterable[bytes] = f.readlines()
    except OSError as exc:
        raise RecordError(f"cannot read record file {str(path)!r}: {exc}") from exc
    for number, raw in enumerate(lines, start=1):
        if not raw.endswith(b"\n"):
            where = f"{path}:{number}"
            _logger.warning("skipping partial last line %s (left by an interrupted writer)", where)
            truncated.append(where)
            break
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise RecordError(f"{path}:{number}: not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise RecordError(f"{path}:{number}: expected a JSON object, got {type(data).__name__}")
        try:
            out.append(TokenSamplingRecord.from_json_dict(data))
        except RecordError as exc:
            raise RecordError(f"{path}:{number}: {exc}") from exc
