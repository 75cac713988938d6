"""Analysis of token records: statistics, serial tests, planning, figures, ``qr-analyze``.

Import it as ``qr_core.analysis``; it needs the ``qr-core[analysis]`` extra (SciPy for
every p-value, matplotlib for the figures, pyarrow for ``qr-analyze export``), which is
imported only when a test runs, a figure is drawn or a file exported, so importing this
package needs numpy alone. Records themselves (schema, sinks, reader, validation) are
:mod:`qr_core.records`.

The ``qr-analyze`` command (:mod:`qr_core.analysis.cli`) wraps
:func:`~qr_core.records.read_records`, :func:`check_config_hashes`, :func:`analyze` and
:func:`write_figures`. The statistics of a group (:class:`GroupStats`) are declared once
each, with their text columns; the JSON report and the text tables follow them.

Calibrated arms: every statistic takes the calibration's own error
(:class:`CalibrationUncertainty`, from the records' calibration fields or a calibration
file), so that a perfect device keeps each test's error rate however few blocks the
calibration had; :func:`calibration_plan` and :func:`blocks_for_power_loss` size the
calibration, :func:`drift_test` compares calibrations of one device.

Pre-registered experiments: :func:`analyze_as_registered` runs a plan's primary analysis
exactly as registered (planned tokens, interim looks, group-sequential boundaries from
:func:`group_sequential`); ``qr-analyze verify`` checks the records' hash chains.
"""

from qr_core.analysis._binding import resolve_calibrations
from qr_core.analysis._calibrated import CalibrationInput, CalibrationUncertainty
from qr_core.analysis._drift import DriftResult, drift_test
from qr_core.analysis._errors import (
    AnalysisError,
    CalibrationError,
    ConfigHashError,
    MissingExtraError,
)
from qr_core.analysis._export import export_parquet
from qr_core.analysis._figures import write_figures
from qr_core.analysis._groups import CalibrationSummary, GroupStats
from qr_core.analysis._ks import (
    DEFAULT_KS_REPLICATES,
    KS_EXACT_MAX_N,
    KSResult,
    ks_sf,
    ks_uniform,
)
from qr_core.analysis._netvar import NetworkVarianceResult, network_variance
from qr_core.analysis._plan import (
    CalibrationPlan,
    Plan,
    blocks_for_power_loss,
    calibration_plan,
    plan_tokens,
    power,
)
from qr_core.analysis._registered import (
    RegisteredAnalysis,
    RegisteredArm,
    RegisteredLook,
    analyze_as_registered,
    check_preregistration,
)
from qr_core.analysis._report import (
    AnalysisReport,
    GroupComparison,
    analyze,
    analyze_validated,
    check_config_hashes,
    compare,
)
from qr_core.analysis._sequential import (
    SequentialDesign,
    crossing_probabilities,
    group_sequential,
    sequential_tokens,
    spent_alpha,
)
from qr_core.analysis._serial import (
    AutocorrelationResult,
    RunsResult,
    lag1_autocorrelation,
    runs_test,
)
from qr_core.analysis._stats import (
    BayesFactorResult,
    ChiSquareResult,
    EffectSizeResult,
    StoufferResult,
    WelchResult,
    bayes_factor_normal,
    chi_square_uniform,
    effect_size,
    normal_two_sided_p,
    stouffer,
    welch,
)
from qr_core.analysis._synthetic import simulate_records
from qr_core.analysis._walk import WalkResult, walk_band_constant, walk_excursion

__all__ = [
    "DEFAULT_KS_REPLICATES",
    "KS_EXACT_MAX_N",
    "AnalysisError",
    "AnalysisReport",
    "AutocorrelationResult",
    "BayesFactorResult",
    "CalibrationError",
    "CalibrationInput",
    "CalibrationPlan",
    "CalibrationSummary",
    "CalibrationUncertainty",
    "ChiSquareResult",
    "ConfigHashError",
    "DriftResult",
    "EffectSizeResult",
    "GroupComparison",
    "GroupStats",
    "KSResult",
    "MissingExtraError",
    "NetworkVarianceResult",
    "Plan",
    "RegisteredAnalysis",
    "RegisteredArm",
    "RegisteredLook",
    "RunsResult",
    "SequentialDesign",
    "StoufferResult",
    "WalkResult",
    "WelchResult",
    "analyze",
    "analyze_as_registered",
    "analyze_validated",
    "bayes_factor_normal",
    "blocks_for_power_loss",
    "calibration_plan",
    "check_config_hashes",
    "check_preregistration",
    "chi_square_uniform",
    "compare",
    "crossing_probabilities",
    "drift_test",
    "effect_size",
    "export_parquet",
    "group_sequential",
    "ks_sf",
    "ks_uniform",
    "lag1_autocorrelation",
    "network_variance",
    "normal_two_sided_p",
    "plan_tokens",
    "power",
    "resolve_calibrations",
    "runs_test",
    "sequential_tokens",
    "simulate_records",
    "spent_alpha",
    "stouffer",
    "walk_band_constant",
    "walk_excursion",
    "welch",
    "write_figures",
]
