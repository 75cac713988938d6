"""The exception root of qr-core.

Hierarchy::

    ValueError
    └── QRCoreError              every bad argument, configuration or registry name
        └── RecordError          (qr_core.records) a record, record file or sink is wrong
            ├── InvalidRecordsError   impossible values or duplicates
            └── AnalysisError    (qr_core.analysis) a statistic's or report's input is wrong
                ├── ConfigHashError   records do not match the expected config hash
                └── MissingExtraError the `qr-core[analysis]` extra is missing

For the core itself one class is enough: every error is a caller mistake (a value
outside its allowed range, an unknown registry name, a plugin that fails to load),
and each message names the argument and what it allows, so callers never need to
parse it. The subpackages' classes let a caller tell bad records from bad settings.
"""

from __future__ import annotations

__all__ = ["QRCoreError"]


class QRCoreError(ValueError):
    """A bad argument, configuration value or registry name in qr-core.

    It is a ``ValueError`` so that hosts which translate ``ValueError`` into a
    client error (vLLM answers HTTP 400) do so without knowing qr-core.
    """
