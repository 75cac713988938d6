"""qr-core: signal amplification, temperature strategies and exact token selection.

Pure numpy (torch and other array-API libraries are accepted, never required).
All errors derive from :class:`QRCoreError`, a ``ValueError``.
"""

from qr_core.__about__ import __version__
from qr_core._amplifiers import (
    AmplificationResult,
    BatchAmplificationResult,
    SignalAmplifier,
    ZScoreBitsAmplifier,
    ZScoreMeanAmplifier,
    available_amplifiers,
    build_amplifier,
    register_amplifier,
)
from qr_core._config import POPULATION_STD, SamplingConfig
from qr_core._errors import QRCoreError
from qr_core._normal import normal_cdf
from qr_core._selection import BatchSelectionResult, SelectionResult, select_token, select_tokens
from qr_core._temperature import (
    BatchTemperatureResult,
    EDTTemperature,
    FixedTemperature,
    TemperatureResult,
    TemperatureStrategy,
    available_temperature_strategies,
    build_temperature_strategy,
    register_temperature_strategy,
    shannon_entropy,
)

__all__ = [
    "POPULATION_STD",
    "AmplificationResult",
    "BatchAmplificationResult",
    "BatchSelectionResult",
    "BatchTemperatureResult",
    "EDTTemperature",
    "FixedTemperature",
    "QRCoreError",
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
    "normal_cdf",
    "register_amplifier",
    "register_temperature_strategy",
    "select_token",
    "select_tokens",
    "shannon_entropy",
]
