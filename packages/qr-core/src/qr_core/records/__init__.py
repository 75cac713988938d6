"""Research records: one :class:`TokenSamplingRecord` per sampled token, sinks, analysis.

Import it as ``qr_core.records`` (``qr_core`` itself does not import this subpackage).
The ``qr-analyze`` command (:mod:`qr_core.records.cli`) wraps :func:`read_records`,
:func:`check_config_hashes`, :func:`analyze` and :func:`write_figures`.
"""

from qr_core.records._analysis import (
    AnalysisReport,
    GroupComparison,
    GroupStats,
    analyze,
    check_config_hashes,
    compare,
)
from qr_core.records._errors import ConfigHashError, MissingExtraError, RecordError
from qr_core.records._figures import write_figures
from qr_core.records._jsonl import JsonlFileSink, rotated_segments
from qr_core.records._reader import RecordFile, read_records
from qr_core.records._schema import SCHEMA_VERSION, TokenSamplingRecord, config_hash
from qr_core.records._sinks import LogSink, RecordSink, RingBufferSink
from qr_core.records._stats import KSResult, StoufferResult, WelchResult, ks_uniform
from qr_core.records._synthetic import simulate_records

__all__ = [
    "SCHEMA_VERSION",
    "AnalysisReport",
    "ConfigHashError",
    "GroupComparison",
    "GroupStats",
    "JsonlFileSink",
    "KSResult",
    "LogSink",
    "MissingExtraError",
    "RecordError",
    "RecordFile",
    "RecordSink",
    "RingBufferSink",
    "StoufferResult",
    "TokenSamplingRecord",
    "WelchResult",
    "analyze",
    "check_config_hashes",
    "compare",
    "config_hash",
    "ks_uniform",
    "read_records",
    "rotated_segments",
    "simulate_records",
    "write_figures",
]
