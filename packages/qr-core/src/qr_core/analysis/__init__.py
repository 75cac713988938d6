"""Analysis of token records: statistics, serial tests, planning, figures, ``qr-analyze``.

Import it as ``qr_core.analysis``; it needs the ``qr-core[analysis]`` extra (SciPy for
every p-value, matplotlib for the figures), which is imported only when a test runs or
a figure is drawn, so importing this package needs numpy alone. Records themselves
(schema, sinks, reader, validation) are :mod:`qr_core.records`.

The ``qr-analyze`` command (:mod:`qr_core.analysis.cli`) wraps
:func:`~qr_core.records.read_records`, :func:`check_config_hashes`, :func:`analyze` and
:func:`write_figures`. The statistics of a group (:class:`GroupStats`) are declared once
each, with their text columns; the JSON report and the text tables follow them.
"""

from qr_core.analysis._errors import AnalysisError, ConfigHashError, MissingExtraError
from qr_core.analysis._figures import write_figures
from qr_core.analysis._groups import GroupStats
from qr_core.analysis._plan import Plan, plan_tokens, power
from qr_core.analysis._report import (
    AnalysisReport,
    GroupComparison,
    analyze,
    analyze_validated,
    check_config_hashes,
    compare,
)
from qr_core.analysis._serial import (
    AutocorrelationResult,
    RunsResult,
    WalkResult,
    lag1_autocorrelation,
    runs_test,
    walk_band_constant,
    walk_excursion,
)
from qr_core.analysis._stats import (
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
from qr_core.analysis._synthetic import simulate_records

__all__ = [
    "AnalysisError",
    "AnalysisReport",
    "AutocorrelationResult",
    "BayesFactorResult",
    "ChiSquareResult",
    "ConfigHashError",
    "EffectSizeResult",
    "GroupComparison",
    "GroupStats",
    "KSResult",
    "MissingExtraError",
    "Plan",
    "RunsResult",
    "StoufferResult",
    "WalkResult",
    "WelchResult",
    "analyze",
    "analyze_validated",
    "bayes_factor_normal",
    "check_config_hashes",
    "chi_square_uniform",
    "compare",
    "effect_size",
    "ks_uniform",
    "lag1_autocorrelation",
    "network_variance",
    "normal_two_sided_p",
    "plan_tokens",
    "power",
    "runs_test",
    "simulate_records",
    "stouffer",
    "walk_band_constant",
    "walk_excursion",
    "welch",
    "write_figures",
]
