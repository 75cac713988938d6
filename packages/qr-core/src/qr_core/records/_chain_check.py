"""What is wrong with one hash-chained series: the checks behind :func:`verify_chain`.

A series is read as a list of :class:`Entry` (one per record line, in file order)
plus its seal, if any. :func:`check_series` then names each problem by its kind:

* ``inserted``: a second line claims a position another line already holds (the one
  the chain links to is kept, the other named);
* ``reordered``: a line is out of order (the lines outside the longest run of
  increasing positions are named: one for two neighbours swapped, two for two far
  apart);
* ``deleted``: positions are missing (named with the line after the gap); where the
  gap falls on a missing segment, ``missing-segment`` instead;
* ``edited``: two neighbours in order whose link does not hold (the earlier line's
  SHA-256 is not the one the later line carries), or a last record the seal does not
  match;
* ``unsealed``: no seal; the last intact record is named (a crash, or a run still
  writing), which is not tampering.
"""

from __future__ import annotations

import bisect
import collections
import itertools
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = [
    "TAMPERING",
    "ChainFinding",
    "Entry",
    "FindingKind",
    "OpenSeries",
    "Seal",
    "check_series",
]

FindingKind = Literal[
    "deleted", "inserted", "reordered", "edited", "missing-segment", "unsealed", "unchained"
]

TAMPERING: Final[frozenset[str]] = frozenset(
    {"deleted", "inserted", "reordered", "edited", "missing-segment"}
)
"""Finding kinds that mean the files are not as the writer left them. ``unsealed`` (a
series without a seal: a crash, or a writer still running) and ``unchained`` (lines
written without a chain, before schema version 3) are not among them."""


@dataclass(frozen=True, slots=True)
class ChainFinding:
    """One thing :func:`~qr_core.records.verify_chain` found."""

    kind: FindingKind
    """``deleted``, ``inserted``, ``reordered``, ``edited``, ``missing-segment``
    (tampering: see :data:`TAMPERING`), ``unsealed`` or ``unchained``."""
    where: str
    """``file:line`` of the line concerned (or the missing file's name)."""
    message: str
    """What was found, naming the series and positions."""

    @property
    def tampering(self) -> bool:
        """Whether this finding means the record files were changed."""
        return self.kind in TAMPERING

    def __str__(self) -> str:
        return f"{self.where}: {self.kind}: {self.message}"


@dataclass(frozen=True, slots=True)
class Entry:
    """One chained record line."""

    where: str
    """``file:line``."""
    n: int
    """Position the line claims in its series."""
    prev: str | None
    """SHA-256 of the previous line, as this line carries it."""
    sha: str
    """SHA-256 of this line."""
    file_index: int
    """Index of its file in the series' list of files."""


@dataclass(frozen=True, slots=True)
class Seal:
    """A seal line."""

    where: str
    """``file:line``."""
    series: str
    """Series id the seal names."""
    count: int
    """Records the writer chained."""
    last_sha256: str | None
    """SHA-256 of the last record line."""
    sha: str
    """SHA-256 of the seal line: the series' final hash."""


@dataclass(slots=True)
class OpenSeries:
    """A series being read."""

    series: str | None
    """Its id from the start marker; ``None`` when the start is missing."""
    writer_id: str | None
    """Writer id from the start marker."""
    started_ns: int | None
    """Start time from the start marker."""
    entries: list[Entry] = field(default_factory=list)
    """Its record lines, in file order."""
    seal: Seal | None = None
    """Its seal, once read."""
    partial: str | None = None
    """``file:line`` of a line cut short while the series was open."""
    preregistrations: list[str | None] = field(default_factory=list)
    """Distinct ``preregistration_sha256`` values of its records, in order met."""

    @property
    def name(self) -> str:
        """How messages name the series."""
        writer = f" (writer {self.writer_id})" if self.writer_id is not None else ""
        return f"series {self.series or '(start missing)'}{writer}"


def check_series(s: OpenSeries, gap_before: list[bool]) -> list[ChainFinding]:
    """Name every problem of the series ``s``.

    Args:
        s: The series, fully read.
        gap_before: Per file index: whether segments are missing right before it.
    """
    found: list[ChainFinding] = []
    kept = _drop_intruders(s, found)
    ordered = _in_order(s, kept, found)
    _missing(s, ordered, gap_before, found)
    _links(s, ordered, found)
    if s.seal is not None:
        _seal(s, ordered, found)
    elif s.entries:
        last = s.entries[-1]
        cut = f"; the line after it, {s.partial}, was cut short" if s.partial else ""
        found.append(
            ChainFinding(
                "unsealed",
                last.where,
                f"{s.name} has no seal: its last intact record is this line "
                f"(position {last.n}){cut}; the writer crashed or is still writing",
            )
        )
    return found


def _drop_intruders(s: OpenSeries, found: list[ChainFinding]) -> list[Entry]:
    """Keep one line per position: the one the chain links, else the first."""
    by_n: dict[int, list[Entry]] = collections.defaultdict(list)
    for e in s.entries:
        by_n[e.n].append(e)
    intruders: set[int] = set()
    for n, lines in by_n.items():
        if len(lines) < 2:
            continue
        after = {e.prev for e in by_n.get(n + 1, [])}
        before = {e.sha for e in by_n.get(n - 1, [])}
        linked = [e for e in lines if e.sha in after] or [e for e in lines if e.prev in before]
        keep = linked[0] if linked else lines[0]
        for e in lines:
            if e is not keep:
                intruders.add(id(e))
                found.append(
                    ChainFinding(
                        "inserted",
                        e.where,
                        f"a second line at position {n} of {s.name}; the chained one is "
                        f"{keep.where}",
                    )
                )
    return [e for e in s.entries if id(e) not in intruders]


def _in_order(s: OpenSeries, kept: list[Entry], found: list[ChainFinding]) -> list[Entry]:
    """The longest run of increasing positions; every other line is out of order."""
    tails: list[int] = []  # tails[k]: n of the smallest tail of an increasing run of k + 1
    tail_at: list[int] = []  # index in kept of that tail
    back = [-1] * len(kept)
    for i, e in enumerate(kept):
        k = bisect.bisect_left(tails, e.n)
        if k == len(tails):
            tails.append(e.n)
            tail_at.append(i)
        else:
            tails[k] = e.n
            tail_at[k] = i
        back[i] = tail_at[k - 1] if k > 0 else -1
    run: list[int] = []
    i = tail_at[-1] if tail_at else -1
    while i >= 0:
        run.append(i)
        i = back[i]
    run.reverse()
    in_run = set(run)
    for i, e in enumerate(kept):
        if i not in in_run:
            before = kept[i - 1].n if i > 0 else None
            follows = f" (it follows position {before})" if before is not None else ""
            found.append(
                ChainFinding(
                    "reordered", e.where, f"position {e.n} of {s.name} is out of order{follows}"
                )
            )
    return [kept[i] for i in run]


def _missing(
    s: OpenSeries, ordered: list[Entry], gap_before: list[bool], found: list[ChainFinding]
) -> None:
    if not ordered:
        return
    first = 0 if s.series is not None else ordered[0].n
    end = s.seal.count if s.seal is not None else ordered[-1].n + 1
    present = {e.n for e in s.entries}
    lows = [e.n for e in ordered]
    a = first
    while a < end:
        if a in present:
            a += 1
            continue
        b = a
        while b + 1 < end and b + 1 not in present:
            b += 1
        span = f"position {a}" if a == b else f"positions {a}..{b}"
        k = bisect.bisect_right(lows, b)
        if k == len(ordered):
            where = s.seal.where if s.seal is not None else ordered[-1].where
            found.append(
                ChainFinding(
                    "deleted",
                    where,
                    f"the last {b - a + 1} record(s) of {s.name} ({span}) are missing "
                    "before its seal",
                )
            )
        else:
            nxt = ordered[k]
            prev_file = ordered[k - 1].file_index if k > 0 else -1
            on_gap = any(gap_before[j] for j in range(prev_file + 1, nxt.file_index + 1))
            kind: Literal["missing-segment", "deleted"] = "missing-segment" if on_gap else "deleted"
            found.append(
                ChainFinding(
                    kind,
                    nxt.where,
                    f"{b - a + 1} record(s) of {s.name} ({span}) are missing before this line"
                    + (" (they were in a missing segment)" if on_gap else ""),
                )
            )
        a = b + 1


def _links(s: OpenSeries, ordered: list[Entry], found: list[ChainFinding]) -> None:
    for before, after in itertools.pairwise(ordered):
        if after.n == before.n + 1 and after.prev != before.sha:
            found.append(
                ChainFinding(
                    "edited",
                    before.where,
                    f"position {before.n} of {s.name} is not the line that was chained: its "
                    f"SHA-256 differs from the one {after.where} (position {after.n}) carries",
                )
            )


def _seal(s: OpenSeries, ordered: list[Entry], found: list[ChainFinding]) -> None:
    seal = s.seal
    assert seal is not None
    if s.series is not None and seal.series != s.series:
        found.append(
            ChainFinding(
                "inserted", seal.where, f"the seal names series {seal.series}, not {s.name}"
            )
        )
    beyond = [e for e in s.entries if e.n >= seal.count]
    for e in beyond:
        found.append(
            ChainFinding(
                "inserted",
                e.where,
                f"position {e.n} of {s.name} lies beyond the {seal.count} records its seal counts",
            )
        )
    if ordered and ordered[-1].n == seal.count - 1 and ordered[-1].sha != seal.last_sha256:
        found.append(
            ChainFinding(
                "edited",
                ordered[-1].where,
                f"the last record of {s.name} is not the line that was sealed: its SHA-256 "
                f"differs from the seal's ({seal.where})",
            )
        )
