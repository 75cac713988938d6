"""Records bound to their calibrations: the figures they carry, the files given, and the
refusals that keep a calibration's error in every statistic.

Rules (``docs/records.md``, "Calibrated arms"):

1. Records of one ``calibration_sha256`` carry identical calibration figures, with
   ``calibration_mean_se_z * sqrt(calibration_blocks) = 1`` (true by construction).
2. Records with a ``calibration_sha256`` but no figures (schema 1 and 2) need the
   calibration file: its recomputed sha256 must equal theirs. Without it the analysis
   stops, unless the caller takes those tokens as exact on purpose.
3. A calibration file given must be one the records name (a file swapped after the run
   has another sha256 and is refused, naming both hashes) and, where the records carry
   figures, agree with them.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence

from qr_core._calibration import Calibration
from qr_core.analysis._calibrated import CalibrationUncertainty
from qr_core.analysis._errors import CalibrationError
from qr_core.records._schema import TokenSamplingRecord
from qr_core.records._validate import CALIBRATION_FIGURES

__all__ = ["resolve_calibrations"]

_FIGURES = ("calibration_blocks", *CALIBRATION_FIGURES)


def _figures(record: TokenSamplingRecord) -> tuple[object, ...]:
    return tuple(getattr(record, name) for name in _FIGURES)


def resolve_calibrations(
    records: Sequence[TokenSamplingRecord],
    files: Sequence[Calibration] = (),
    *,
    assume_exact: bool = False,
) -> dict[str, CalibrationUncertainty | None]:
    """Each ``calibration_sha256`` of ``records`` with its error.

    Args:
        records: The tokens.
        files: Calibration files (loaded with ``qr_core.load_calibration``, which
            verifies each file's own hash) for records that lack the figures.
        assume_exact: Take tokens whose calibration is neither in their records nor
            in ``files`` as exact (``None``) instead of refusing them.

    Raises:
        CalibrationError: The rules above are broken; the message names the sha256,
            the field or both hashes.
    """
    seen: dict[str, tuple[object, ...] | None] = {}
    tokens: collections.Counter[str] = collections.Counter()
    first: dict[str, TokenSamplingRecord] = {}
    for r in records:
        sha = r.calibration_sha256
        if sha is None:
            continue
        tokens[sha] += 1
        figures = _figures(r) if r.calibration_blocks is not None else None
        if sha not in seen or seen[sha] is None:
            seen[sha] = figures
            if figures is not None:
                first[sha] = r
        elif figures is not None and figures != seen[sha]:
            changed = next(
                n for n, a, b in zip(_FIGURES, figures, seen[sha] or (), strict=True) if a != b
            )
            raise CalibrationError(
                f"records of calibration {sha[:12]} disagree on {changed}: "
                f"{getattr(first[sha], changed)!r} and {getattr(r, changed)!r}"
            )
    out: dict[str, CalibrationUncertainty | None] = {}
    for sha, record in first.items():
        cal = CalibrationUncertainty.from_record(record)
        assert cal is not None
        if abs(cal.mean_se_z * math.sqrt(cal.blocks) - 1.0) > 1e-9:
            raise CalibrationError(
                f"records of calibration {sha[:12]}: calibration_mean_se_z "
                f"{cal.mean_se_z!r} is not 1/sqrt(calibration_blocks) = "
                f"{1.0 / math.sqrt(cal.blocks)!r}"
            )
        out[sha] = cal
    for f in files:
        if f.sha256 not in tokens:
            named = ", ".join(s[:12] for s in tokens) or "none"
            raise CalibrationError(
                f"calibration file {f.sha256[:12]} is not the calibration of these records "
                f"(they name {named}): a different or swapped file; refused"
            )
        from_file = CalibrationUncertainty.of(f)
        recorded = out.get(f.sha256)
        if recorded is not None and not _same(recorded, from_file, first[f.sha256], f):
            raise CalibrationError(
                f"calibration file {f.sha256[:12]} does not match the figures its records "
                f"carry (blocks {recorded.blocks} vs {from_file.blocks}); refused"
            )
        out[f.sha256] = recorded or from_file
    missing = [sha for sha in tokens if sha not in out]
    if missing and not assume_exact:
        listed = "; ".join(f"{sha[:12]} ({tokens[sha]} tokens)" for sha in missing)
        raise CalibrationError(
            f"records name calibrations whose figures they do not carry (written before "
            f"schema 3): {listed}. Give the calibration file (qr-analyze --calibration "
            f"FILE), or take them as exact on purpose (--assume-exact-calibration), "
            f"which leaves the calibration's error out of every statistic"
        )
    out.update(dict.fromkeys(missing))
    return out


def _same(
    recorded: CalibrationUncertainty,
    from_file: CalibrationUncertainty,
    record: TokenSamplingRecord,
    calibration: Calibration,
) -> bool:
    close = math.isclose
    return (
        recorded.blocks == from_file.blocks
        and close(recorded.mean_se_z, from_file.mean_se_z, rel_tol=1e-9)
        and close(recorded.std_se_z, from_file.std_se_z, rel_tol=1e-9)
        and close(recorded.cov_z, from_file.cov_z, rel_tol=1e-9, abs_tol=1e-15)
        and close(float(record.calibration_mean or 0.0), calibration.mean, rel_tol=1e-12)
        and close(float(record.calibration_std or 0.0), calibration.std, rel_tol=1e-12)
    )
