"""Exceptions of the records subpackage.

Hierarchy::

    ValueError
    └── QRCoreError            (qr_core: root of every qr-core error)
        └── RecordError        (a record, record file, sink or analysis input is wrong)
            ├── InvalidRecordsError  (impossible values or duplicates; in ``_validate``,
            │                         next to the ``Problem`` entries it carries)
            ├── PreregistrationError (a plan file is missing or invalid; in
            │                         ``_preregistration``)
            └── AnalysisError        (qr_core.analysis: a statistic's or report's input
                                      is wrong; its subclasses are drawn in
                                      ``qr_core.analysis._errors``)
"""

from __future__ import annotations

from qr_core._errors import QRCoreError

__all__ = ["RecordError"]


class RecordError(QRCoreError):
    """A record, record file, sink or analysis input is invalid.

    The message names what went wrong: the field or argument, the value found and
    what was allowed.
    """
