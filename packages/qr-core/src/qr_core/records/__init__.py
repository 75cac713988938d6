"""Research records: one :class:`TokenSamplingRecord` per sampled token, and its sinks.

Import it as ``qr_core.records`` (``qr_core`` itself does not import this subpackage).
It holds the versioned record schema, the one record builder
(:func:`build_token_records`), the sinks (ring buffer, log, JSON Lines file with
rotation and clean shutdown), the layout of record files, the reader and the
validation rules; numpy and the standard library only. The statistics, figures and the
``qr-analyze`` command are :mod:`qr_core.analysis`.
"""

from qr_core.records._build import (
    AmplifiedRows,
    EntropyOrigin,
    SelectedRows,
    TemperedRows,
    build_token_records,
)
from qr_core.records._errors import RecordError
from qr_core.records._jsonl import JsonlFileSink
from qr_core.records._layout import rotated_segments, writer_file, writer_files
from qr_core.records._reader import RecordFile, read_records
from qr_core.records._schema import (
    READABLE_SCHEMA_VERSIONS,
    SCHEMA_VERSION,
    TokenSamplingRecord,
    config_hash,
)
from qr_core.records._sinks import LogSink, RecordSink, RingBufferSink
from qr_core.records._validate import (
    IncompleteRequest,
    InvalidRecordsError,
    Problem,
    Validation,
    require_finite,
    validate,
)

__all__ = [
    "READABLE_SCHEMA_VERSIONS",
    "SCHEMA_VERSION",
    "AmplifiedRows",
    "EntropyOrigin",
    "IncompleteRequest",
    "InvalidRecordsError",
    "JsonlFileSink",
    "LogSink",
    "Problem",
    "RecordError",
    "RecordFile",
    "RecordSink",
    "RingBufferSink",
    "SelectedRows",
    "TemperedRows",
    "TokenSamplingRecord",
    "Validation",
    "build_token_records",
    "config_hash",
    "read_records",
    "require_finite",
    "rotated_segments",
    "validate",
    "writer_file",
    "writer_files",
]
