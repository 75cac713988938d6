"""File names of a record set: one writer's segment series, and every writer's under a base.

A single writer's series is its live file ``live`` with rotated segments
``live.1``, ``live.2``, ... (numbered upwards: higher is newer). Several writers
share a base path ``<stem><suffix>`` (``records.jsonl``) by each writing the
series ``<stem>.<writer-token><suffix>`` (``records.<token>.jsonl``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final

from qr_core.records._errors import RecordError

__all__ = ["rotated_segments", "writer_file", "writer_files", "writer_token"]


def rotated_segments(path: str | os.PathLike[str]) -> list[Path]:
    """Return the rotated segments of ``path`` (``path.1``, ``path.2``, ...), oldest first.

    The sink numbers segments upwards as it rotates, so a higher number is newer and
    the live file ``path`` itself is the newest of all.
    """
    live = Path(path)
    pattern = re.compile(re.escape(live.name) + r"\.(\d+)")
    found: list[tuple[int, Path]] = []
    if live.parent.is_dir():
        for entry in live.parent.iterdir():
            m = pattern.fullmatch(entry.name)
            if m:
                found.append((int(m.group(1)), entry))
    return [p for _, p in sorted(found)]


_TOKEN_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]")
_TOKEN: Final = r"[A-Za-z0-9_-]*[A-Za-z_-][A-Za-z0-9_-]*"


def writer_token(writer_id: str) -> str:
    """Return the file-name form of ``writer_id``: every character outside
    ``[A-Za-z0-9_-]`` becomes ``_``.

    Raises:
        RecordError: ``writer_id`` is empty or all digits (a token must never be
            mistaken for a segment number).
    """
    token = _TOKEN_UNSAFE.sub("_", writer_id)
    if not re.fullmatch(_TOKEN, token):
        raise RecordError(
            f"writer_id must contain a character other than a digit, got {writer_id!r}"
        )
    return token


def writer_file(base: str | os.PathLike[str], writer_id: str) -> Path:
    """Return the live file of ``writer_id``'s series under ``base``.

    ``rec.jsonl`` with writer id ``host-p12-dp0`` gives ``rec.host-p12-dp0.jsonl``;
    its rotated segments are ``rec.host-p12-dp0.jsonl.1``, ``.2``, ...

    Raises:
        RecordError: ``writer_id`` has no file-name form (see :func:`writer_token`).
    """
    given = Path(base)
    stem, suffix = _split_name(given.name)
    return given.with_name(f"{stem}.{writer_token(writer_id)}{suffix}")


def writer_files(base: str | os.PathLike[str]) -> list[Path]:
    """Return the live file of every writer series found under ``base``, sorted by name.

    A series counts when its live file or any of its segments exists; the returned
    live file itself may be missing (a writer killed in the middle of a rotation).
    """
    given = Path(base)
    stem, suffix = _split_name(given.name)
    pattern = re.compile(
        re.escape(stem) + r"\.(" + _TOKEN + ")" + re.escape(suffix) + r"(?:\.\d+)?"
    )
    found: set[str] = set()
    if given.parent.is_dir():
        for entry in given.parent.iterdir():
            m = pattern.fullmatch(entry.name)
            if m:
                found.add(f"{stem}.{m.group(1)}{suffix}")
    return [given.with_name(name) for name in sorted(found)]


def _split_name(name: str) -> tuple[str, str]:
    stem, dot, ext = name.rpartition(".")
    return (stem, dot + ext) if stem else (name, "")
