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
    analyze_validated,
    check_config_hashes,
    compare,
)
from qr_core.records._errors import ConfigHashError, MissingExtraError, RecordError
from qr_core.records._figures import write_figures
from qr_core.records._jsonl import JsonlFileSink
from qr_core.records._layout import rotated_segments, writer_file, writer_files
from qr_core.records._plan import Plan, plan_tokens, power
from qr_core.records._reader import RecordFile, read_records
from qr_core.records._schema import (
    READABLE_SCHEMA_VERSIONS,
    SCHEMA_VERSION,
    TokenSamplingRecord,
    config_hash,
)
from qr_core.records._serial import (
    AutocorrelationResult,
    RunsResult,
    WalkResult,
    lag1_autocorrelation,
    runs_test,
    walk_band_constant,
    walk_excursion,
)
from qr_core.records._sinks import LogSink, RecordSink, RingBufferSink
from qr_core.records._stats import (
    BayesFactorResult,
    ChiSquareResult,
    EffectSizeResult,
    KSResult,
    StoufferResult,
    WelchResult,
    bayes_factor_normal,
    chi_square_uniform,
    effect_size,
    ks_uniform,
    network_variance,
    normal_two_sided_p,
    stouffer,
    welch,
)
from qr_core.records._synthetic import simulate_records
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
    "AnalysisReport",
    "AutocorrelationResult",
    "BayesFactorResult",
    "ChiSquareResult",
    "ConfigHashError",
    "EffectSizeResult",
    "GroupComparison",
    "GroupStats",
    "IncompleteRequest",
    "InvalidRecordsError",
    "JsonlFileSink",
    "KSResult",
    "LogSink",
    "MissingExtraError",
    "Plan",
    "Problem",
    "RecordError",
    "RecordFile",
    "RecordSink",
    "RingBufferSink",
    "RunsResult",
    "StoufferResult",
    "TokenSamplingRecord",
    "Validation",
    "WalkResult",
    "WelchResult",
    "analyze",
    "analyze_validated",
    "bayes_factor_normal",
    "check_config_hashes",
    "chi_square_uniform",
    "compare",
    "config_hash",
    "effect_size",
    "ks_uniform",
    "lag1_autocorrelation",
    "network_variance",
    "normal_two_sided_p",
    "plan_tokens",
    "power",
    "read_records",
    "require_finite",
    "rotated_segments",
    "runs_test",
    "simulate_records",
    "stouffer",
    "validate",
    "walk_band_constant",
    "walk_excursion",
    "welch",
    "write_figures",
    "writer_file",
    "writer_files",
]
