"""Research records: one :class:`TokenSamplingRecord` per sampled token, and its sinks.

Import it as ``qr_core.records`` (``qr_core`` itself does not import this subpackage).
It holds the versioned record schema, the one record builder
(:func:`build_token_records`), the sinks (ring buffer, log, JSON Lines file with
rotation and clean shutdown), the layout of record files, the reader and the
validation rules; numpy and the standard library only. The statistics, figures and the
``qr-analyze`` command are :mod:`qr_core.analysis`.
"""

from qr_core.records._build import build_token_records
from qr_core.records._chain_check import TAMPERING, ChainFinding
from qr_core.records._errors import RecordError
from qr_core.records._jsonl import JsonlFileSink
from qr_core.records._layout import rotated_segments, writer_file, writer_files
from qr_core.records._preregistration import (
    PLAN_FORMAT,
    PRIMARY_STATISTICS,
    SEQUENTIAL_STATISTICS,
    SPENDING_FUNCTIONS,
    Preregistration,
    PreregistrationError,
    StoppingRule,
    load_preregistration,
    parse_preregistration,
    preregistration_bytes,
)
from qr_core.records._reader import RecordFile, read_records
from qr_core.records._rows import (
    AmplifiedRows,
    CalibrationFigures,
    EntropyOrigin,
    SelectedRows,
    TemperedRows,
)
from qr_core.records._schema import (
    READABLE_SCHEMA_VERSIONS,
    SCHEMA_VERSION,
    TokenSamplingRecord,
    config_hash,
)
from qr_core.records._sinks import LOG_SINK_LOGGER, LogSink, RecordSink, RingBufferSink
from qr_core.records._validate import (
    IncompleteRequest,
    InvalidRecordsError,
    Problem,
    Validation,
    require_finite,
    validate,
)
from qr_core.records._verify import ChainReport, ChainSeries, verify_chain

__all__ = [
    "LOG_SINK_LOGGER",
    "PLAN_FORMAT",
    "PRIMARY_STATISTICS",
    "READABLE_SCHEMA_VERSIONS",
    "SCHEMA_VERSION",
    "SEQUENTIAL_STATISTICS",
    "SPENDING_FUNCTIONS",
    "TAMPERING",
    "AmplifiedRows",
    "CalibrationFigures",
    "ChainFinding",
    "ChainReport",
    "ChainSeries",
    "EntropyOrigin",
    "IncompleteRequest",
    "InvalidRecordsError",
    "JsonlFileSink",
    "LogSink",
    "Preregistration",
    "PreregistrationError",
    "Problem",
    "RecordError",
    "RecordFile",
    "RecordSink",
    "RingBufferSink",
    "SelectedRows",
    "StoppingRule",
    "TemperedRows",
    "TokenSamplingRecord",
    "Validation",
    "build_token_records",
    "config_hash",
    "load_preregistration",
    "parse_preregistration",
    "preregistration_bytes",
    "read_records",
    "require_finite",
    "rotated_segments",
    "validate",
    "verify_chain",
    "writer_file",
    "writer_files",
]
