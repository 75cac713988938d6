"""The record files ``qr-analyze`` is given: each read once, validated together."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from qr_core.analysis._errors import AnalysisError
from qr_core.records._reader import RecordFile, segments_of
from qr_core.records._validate import Validation, validate

__all__ = ["LOGGER", "distinct", "file_json", "validated"]

LOGGER = logging.getLogger("qr_core.records")
"""The logger ``qr-analyze`` reports on: the records' own (the reader warns on it)."""


def distinct(paths: Sequence[str]) -> list[str]:
    """Drop arguments already covered by another one (``records.jsonl*`` globs).

    Raises:
        AnalysisError: Two arguments share some but not all record segments.
    """
    sets = [frozenset(p.resolve() for p in segments_of(path)) for path in paths]
    kept: list[int] = []
    for i, own in enumerate(sets):
        covering = next(
            (
                j
                for j, other in enumerate(sets)
                if j != i and own <= other and (own < other or j < i)
            ),
            None,
        )
        if covering is not None:
            LOGGER.info("%s is read as part of %s", paths[i], paths[covering])
            continue
        kept.append(i)
    for pos, i in enumerate(kept):
        for j in kept[pos + 1 :]:
            if sets[i] & sets[j]:
                raise AnalysisError(f"{paths[i]} and {paths[j]} share record segments")
    return [paths[i] for i in kept]


def validated(files: Sequence[RecordFile]) -> Validation:
    """Validate all files' records together (duplicates can span files); lines the
    reader already refused come first among the problems."""
    records = [r for f in files for r in f.records]
    where = [w for f in files for w in f.where]
    checked = validate(records, where)
    unread = tuple(p for f in files for p in f.invalid)
    return dataclasses.replace(checked, problems=unread + checked.problems)


def file_json(f: RecordFile) -> dict[str, object]:
    """What ``--json`` says about one file argument."""
    return {
        "path": str(f.path),
        "segments": [str(s) for s in f.segments],
        "records": len(f.records),
        "truncated_lines": list(f.truncated_lines),
    }
