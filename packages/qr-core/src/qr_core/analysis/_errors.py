"""Exceptions of the analysis subpackage.

Hierarchy::

    ValueError
    └── QRCoreError                (qr_core: root of every qr-core error)
        └── RecordError            (qr_core.records: a record, file, sink or input is wrong)
            └── AnalysisError      (a statistic's, report's or plan's input is wrong)
                ├── CalibrationError   (records and calibrations do not belong together)
                ├── ConfigHashError    (records do not match the expected or one config hash)
                └── MissingExtraError  (statistics and figures need the `qr-core[analysis]` extra)

``AnalysisError`` derives from ``RecordError`` because an analysis input is made of
records: a caller that handles bad record files handles bad analysis input too.
"""

from __future__ import annotations

from qr_core.records._errors import RecordError

__all__ = ["AnalysisError", "CalibrationError", "ConfigHashError", "MissingExtraError"]


class AnalysisError(RecordError):
    """An argument of a statistic, report, comparison, figure or plan is out of range.

    The message names the argument, the value found and what was allowed.
    """


class CalibrationError(AnalysisError):
    """Records and calibrations do not belong together: a calibration file that is not
    the records' (swapped), records that disagree on their calibration's figures, or
    calibrated records whose figures are neither recorded nor given."""


class ConfigHashError(AnalysisError):
    """Records do not match the pre-registered configuration hash, or mix several
    configurations where one was required."""


class MissingExtraError(AnalysisError):
    """An optional dependency is missing; the message names the extra to install."""
