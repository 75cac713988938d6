"""qr-core: signal amplification, temperature strategies and exact token selection.

Pure numpy (torch and other array-API libraries are accepted, never required).
All errors derive from :class:`QRCoreError`, a ``ValueError``.

Subpackages, imported only when asked for: :mod:`qr_core.records` (the per-token
record, its builder, sinks and reader; numpy only), :mod:`qr_core.analysis`
(statistics, figures and the ``qr-analyze`` command; the ``analysis`` extra) and
:mod:`qr_core.testing` (an op and host-sync counter for tests; needs torch).
"""

from qr_core.__about__ import __version__
from qr_core._amplifier_builtins import (
    PhiZScoreBitsAmplifier,
    PhiZScoreMeanAmplifier,
    ZScoreBitsAmplifier,
    ZScoreMeanAmplifier,
)
from qr_core._amplifiers import (
    AmplificationResult,
    BatchAmplificationResult,
    SignalAmplifier,
    available_amplifiers,
    build_amplifier,
    register_amplifier,
)
from qr_core._calibration import (
    CALIBRATION_FORMAT_VERSION,
    READABLE_CALIBRATION_FORMATS,
    Calibration,
    CalibrationBuilder,
    load_calibration,
)
from qr_core._config import (
    MAX_SAMPLE_COUNT,
    POPULATION_STD,
    SAMPLING_BOUNDS,
    Bounds,
    SamplingConfig,
)
from qr_core._entropy import shannon_entropy
from qr_core._errors import QRCoreError
from qr_core._normal import normal_cdf
from qr_core._power_law import power_law_temperatures
from qr_core._registry import Registry, RegistryErrors
from qr_core._selection import (
    BatchSelectionResult,
    Engine,
    SelectionResult,
    select_token,
    select_tokens,
)
from qr_core._temperature import (
    BatchTemperatureResult,
    PowerLaw,
    TemperatureResult,
    TemperatureStrategy,
    available_temperature_strategies,
    build_temperature_strategy,
    register_temperature_strategy,
)
from qr_core._temperature_builtins import EDTTemperature, FixedTemperature

__all__ = [
    "CALIBRATION_FORMAT_VERSION",
    "MAX_SAMPLE_COUNT",
    "POPULATION_STD",
    "READABLE_CALIBRATION_FORMATS",
    "SAMPLING_BOUNDS",
    "AmplificationResult",
    "BatchAmplificationResult",
    "BatchSelectionResult",
    "BatchTemperatureResult",
    "Bounds",
    "Calibration",
    "CalibrationBuilder",
    "EDTTemperature",
    "Engine",
    "FixedTemperature",
    "PhiZScoreBitsAmplifier",
    "PhiZScoreMeanAmplifier",
    "PowerLaw",
    "QRCoreError",
    "Registry",
    "RegistryErrors",
    "SamplingConfig",
    "SelectionResult",
    "SignalAmplifier",
    "TemperatureResult",
    "TemperatureStrategy",
    "ZScoreBitsAmplifier",
    "ZScoreMeanAmplifier",
    "__version__",
    "available_amplifiers",
    "available_temperature_strategies",
    "build_amplifier",
    "build_temperature_strategy",
    "load_calibration",
    "normal_cdf",
    "power_law_temperatures",
    "register_amplifier",
    "register_temperature_strategy",
    "select_token",
    "select_tokens",
    "shannon_entropy",
]
