"""Verifying record files: every writer's hash chain, its segments and its seal.

:func:`verify_chain` reads a record set the way :func:`~qr_core.records.read_records`
does (every writer's series under a base, each oldest segment first) and checks, line
by line, what the sink's chain (``_chain.py``) promises: each record line carries the
SHA-256 of the one before it in its series and its position, the first line of each
file names its segment, and a cleanly closed series ends with a seal. It needs the
standard library alone (no record is decoded; only the chain envelope is read).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from qr_core.records._chain import is_seal, split_chain
from qr_core.records._chain_check import (
    ChainFinding,
    Entry,
    FindingKind,
    OpenSeries,
    Seal,
    check_series,
)
from qr_core.records._errors import RecordError
from qr_core.records._layout import rotated_segments, writer_files

__all__ = ["ChainReport", "ChainSeries", "verify_chain"]

_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_PREREG: Final = re.compile(rb'"preregistration_sha256":(?:null|"([0-9a-f]{64})")')


@dataclass(frozen=True, slots=True)
class ChainSeries:
    """One writer series as :func:`verify_chain` found it."""

    series: str | None
    """Random id from its start marker (``None`` when the start is missing)."""
    writer_id: str | None
    """Writer id from its start marker."""
    started_ns: int | None
    """Start time from its start marker (wall clock, ns)."""
    records: int
    """Record lines read."""
    sealed: bool
    """Whether it ends with its seal."""
    final_sha256: str | None
    """SHA-256 of its seal line; unsealed: of its last record line."""
    last_record: str | None
    """``file:line`` of its last record line."""
    preregistrations: tuple[str | None, ...]
    """Distinct ``preregistration_sha256`` values of its records, in order met."""


@dataclass(frozen=True, slots=True)
class ChainReport:
    """Outcome of :func:`verify_chain` for one path."""

    path: Path
    """The path as given."""
    files: tuple[Path, ...]
    """The files read."""
    series: tuple[ChainSeries, ...]
    """Each chained series, file series by file series, in file order."""
    findings: tuple[ChainFinding, ...]
    """Everything that is not as a cleanly closed writer leaves it."""
    unchained: int
    """Record lines without a chain outside any chained series (written before schema
    version 3, or with ``chain=False``)."""

    @property
    def tampered(self) -> bool:
        """Whether some finding means the files were changed (see ``TAMPERING``)."""
        return any(f.tampering for f in self.findings)

    @property
    def unsealed(self) -> tuple[ChainFinding, ...]:
        """The ``unsealed`` findings: series without a seal (a crash, or still writing)."""
        return tuple(f for f in self.findings if f.kind == "unsealed")


def verify_chain(path: str | os.PathLike[str]) -> ChainReport:
    """Check the hash chains of a record set (see ``docs/records.md``, "Audit").

    Args:
        path: A live record file or the base of several writers' series, as for
            :func:`~qr_core.records.read_records`.

    Returns:
        The series found and every finding; ``findings`` is empty when every series
        is chained, intact and sealed.

    Raises:
        RecordError: No file of any series exists, or a file cannot be read.
    """
    given = Path(path)
    report_series: list[ChainSeries] = []
    findings: list[ChainFinding] = []
    files_read: list[Path] = []
    unchained = 0
    found_any = False
    for live in [given, *writer_files(given)]:
        segments = rotated_segments(live)
        files = [*segments, live] if live.exists() else segments
        if not files:
            continue
        found_any = True
        files_read.extend(files)
        walk = _Walk(live, files, findings)
        walk.run()
        report_series.extend(walk.summaries)
        unchained += walk.unchained
    if not found_any:
        raise RecordError(f"record file {str(given)!r} does not exist")
    return ChainReport(given, tuple(files_read), tuple(report_series), tuple(findings), unchained)


class _Walk:
    """One file series (a live file and its segments), line by line."""

    def __init__(self, live: Path, files: list[Path], findings: list[ChainFinding]) -> None:
        self.live = live
        self.files = files
        self.findings = findings
        self.summaries: list[ChainSeries] = []
        self.unchained = 0
        self.open: OpenSeries | None = None
        self.segment_checked: set[int] = set()
        numbers = [_number(f, live) for f in files]
        self.numbers = numbers
        self.gap_before = [False] * len(files)
        self._segment_gaps(numbers)

    def _segment_gaps(self, numbers: list[int | None]) -> None:
        expected = 1
        for i, number in enumerate(numbers):
            if number is None:
                continue
            if number > expected:
                self.gap_before[i] = True
                lost = ", ".join(f"{self.live.name}.{k}" for k in range(expected, number)[:5])
                self.findings.append(
                    ChainFinding(
                        "missing-segment",
                        str(self.live.with_name(f"{self.live.name}.{expected}")),
                        f"segment(s) {lost}{' ...' if number - expected > 5 else ''} of "
                        f"{self.live} are missing (before {self.files[i].name})",
                    )
                )
            expected = number + 1
        self.next_number = expected

    def run(self) -> None:
        for index, path in enumerate(self.files):
            try:
                with path.open("rb") as f:
                    lines = f.readlines()
            except OSError as exc:
                raise RecordError(f"cannot read record file {str(path)!r}: {exc}") from exc
            for number, raw in enumerate(lines, start=1):
                where = f"{path}:{number}"
                if not raw.endswith(b"\n"):
                    if self.open is not None:
                        self.open.partial = where
                    break
                self._line(raw, where, index, first=number == 1)
        self._close()
        if self.files[-1] != self.live and self.summaries and not self.summaries[-1].sealed:
            self.findings.append(
                ChainFinding(
                    "missing-segment",
                    str(self.live),
                    f"the live file {self.live.name} is missing: its series ends unsealed "
                    f"in {self.files[-1].name}",
                )
            )

    def _line(self, raw: bytes, where: str, index: int, *, first: bool) -> None:
        if not raw.strip():
            if self.open is not None:
                self._add("inserted", where, "a blank line inside a chained series")
            return
        if is_seal(raw):
            self._seal(raw, where)
            return
        record, envelope = split_chain(raw)
        if envelope is None:
            if self.open is not None:
                self._add("inserted", where, f"a line without a chain inside {self.open.name}")
            else:
                self.unchained += 1
            return
        chain = _envelope(envelope)
        if chain is None:
            self._add("edited", where, "the line's chain envelope is not readable")
            return
        n, prev, seg, start = chain
        if seg is not None and index not in self.segment_checked:
            self.segment_checked.add(index)
            self._check_segment(seg, where, index)
        if start is not None:
            self._close()
            if n != 0 or prev is not None:
                self._add("edited", where, f"a series start at position {n}")
            self.open = OpenSeries(
                str(start.get("series")),
                _str_or_none(start.get("writer_id")),
                _int_or_none(start.get("started_ns")),
            )
        elif self.open is None:
            self.open = OpenSeries(None, None, None)
            if not (first and self.gap_before[index]):
                self._add(
                    "deleted",
                    where,
                    f"the series start and {n} record(s) before this line are missing "
                    f"(it holds position {n})",
                )
        elif self.open.partial is not None:
            self._add(
                "edited",
                self.open.partial,
                f"a line cut short inside {self.open.name}, which goes on at {where}",
            )
            self.open.partial = None
        s = self.open
        s.entries.append(Entry(where, n, prev, hashlib.sha256(raw).hexdigest(), index))
        m = _PREREG.search(record)
        value = m.group(1).decode("ascii") if m is not None and m.group(1) else None
        if value not in s.preregistrations:
            s.preregistrations.append(value)

    def _check_segment(self, seg: int, where: str, index: int) -> None:
        """The segment number a file's first line names (a missing first line shows
        in the positions, so only a number present is checked)."""
        number = self.numbers[index]
        expected = self.next_number if number is None else number
        if seg > expected and number is None:
            self.gap_before[index] = True
            self._add(
                "missing-segment",
                where,
                f"{self.files[index].name} holds segment {seg}, so segment(s) "
                f"{expected}..{seg - 1} of {self.live.name} are missing",
            )
        elif seg != expected:
            self.gap_before[index] = True
            self._add(
                "missing-segment",
                where,
                f"{self.files[index].name} holds segment {seg}, not {expected} "
                "(segments renamed or missing)",
            )

    def _seal(self, raw: bytes, where: str) -> None:
        seal = _parse_seal(raw, where)
        if seal is None:
            self._add("edited", where, "the seal line is not readable")
            return
        if self.open is None:
            self._add("inserted", where, f"a seal of series {seal.series} without its records")
            return
        self.open.seal = seal
        self._close()

    def _close(self) -> None:
        s = self.open
        if s is None:
            return
        self.open = None
        self.findings.extend(check_series(s, self.gap_before))
        last = s.entries[-1] if s.entries else None
        final = s.seal.sha if s.seal is not None else (last.sha if last else None)
        self.summaries.append(
            ChainSeries(
                s.series,
                s.writer_id,
                s.started_ns,
                len(s.entries),
                s.seal is not None,
                final,
                last.where if last else None,
                tuple(s.preregistrations),
            )
        )

    def _add(self, kind: FindingKind, where: str, message: str) -> None:
        self.findings.append(ChainFinding(kind, where, message))


def _number(path: Path, live: Path) -> int | None:
    return None if path == live else int(path.name.rsplit(".", 1)[1])


_Envelope = tuple[int, str | None, int | None, Mapping[str, object] | None]


def _envelope(text: bytes) -> _Envelope | None:
    """``(n, prev, seg, start)`` of a chain envelope, or ``None`` when malformed."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    n, prev, seg, start = data.get("n"), data.get("prev"), data.get("seg"), data.get("start")
    if type(n) is not int or n < 0:
        return None
    if prev is not None and not (isinstance(prev, str) and _HEX64.fullmatch(prev)):
        return None
    if seg is not None and type(seg) is not int:
        return None
    if start is not None and not isinstance(start, dict):
        return None
    return n, prev, seg, start


def _parse_seal(raw: bytes, where: str) -> Seal | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    body = data.get("seal") if isinstance(data, dict) and len(data) == 1 else None
    if not isinstance(body, dict):
        return None
    series, count, last = body.get("series"), body.get("count"), body.get("last_sha256")
    if not isinstance(series, str) or type(count) is not int or count < 0:
        return None
    if last is not None and not isinstance(last, str):
        return None
    return Seal(where, series, count, last, hashlib.sha256(raw).hexdigest())


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int_or_none(value: object) -> int | None:
    return value if type(value) is int else None
