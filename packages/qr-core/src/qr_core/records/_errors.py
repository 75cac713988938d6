"""Exceptions of the records subpackage.

Hierarchy::

    ValueError
    └── QRCoreError            (qr_core: root of every qr-core error)
        └── RecordError        (a record, record file, sink or analysis input is wrong)
            ├── ConfigHashError      (records do not match the expected or one config hash)
            ├── InvalidRecordsError  (impossible values or duplicates; in ``_validate``,
            │                         next to the ``Problem`` entries it carries)
            └── MissingExtraError    (statistics and figures need the `qr-core[analysis]` extra)
"""

from __future__ import annotations

from qr_core._errors import QRCoreError

__all__ = ["ConfigHashError", "MissingExtraError", "RecordError"]


class RecordError(QRCoreError):
    """A record, record file, sink or analysis input is invalid.

    The message names what went wrong: the field or argument, the value found and
    what was allowed.
    """


class ConfigHashError(RecordError):
    """Records do not match the pre-registered configuration hash, or mix several
    configurations where one was required."""


class MissingExtraError(RecordError):
    """An optional dependency is missing; the message names the extra to install."""
