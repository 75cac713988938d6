"""qr-entropy: entropy sources, ``QR_*`` configuration, registry and fallback.

Every source generates its bytes when asked (the just-in-time rule: no pools,
no read-ahead, no caching) and every fetch records where its bytes came from.

Typical use::

    from qr_entropy import EntropyConfig, build_source

    with build_source(EntropyConfig()) as source:
        fetch = source.fetch(20480)  # fetch.data, fetch.source, fetch.fallback, ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qr_entropy.__about__ import __version__
from qr_entropy._arms import ArmSources, SourcesSettings, load_sources, parse_sources
from qr_entropy._build import build_source
from qr_entropy._config import EntropyConfig, FallbackMode, GrpcMode
from qr_entropy._exceptions import (
    ByteCountError,
    ConfigError,
    EntropyUnavailableError,
    QREntropyError,
    RegistryError,
    SourceConfigurationError,
    SourceLoadError,
    UnknownSourceError,
)
from qr_entropy._fallback import CONFIGURATION_REASON, FallbackEntropySource
from qr_entropy._fetch import EntropyFetch
from qr_entropy._mock import MockUniformSource
from qr_entropy._probe import ProbeResult
from qr_entropy._registry import (
    ENTROPY_SOURCES,
    ENTRY_POINT_GROUP,
    available_sources,
    get_source_class,
    register_entropy_source,
)
from qr_entropy._sham import ShamEntropySource
from qr_entropy._source import EntropySource
from qr_entropy._system import SystemEntropySource
from qr_entropy._timing import TimingNoiseSource
from qr_entropy.settings import (
    QR_SETTINGS_CONFIG,
    QRSettings,
    SettingsError,
    apply_overrides,
    settings_table,
)

if TYPE_CHECKING:
    from qr_entropy._calibrate import run_calibration
    from qr_entropy.grpc import QuantumGrpcSource

__all__ = [
    "CONFIGURATION_REASON",
    "ENTROPY_SOURCES",
    "ENTRY_POINT_GROUP",
    "QR_SETTINGS_CONFIG",
    "ArmSources",
    "ByteCountError",
    "ConfigError",
    "EntropyConfig",
    "EntropyFetch",
    "EntropySource",
    "EntropyUnavailableError",
    "FallbackEntropySource",
    "FallbackMode",
    "GrpcMode",
    "MockUniformSource",
    "ProbeResult",
    "QREntropyError",
    "QRSettings",
    "QuantumGrpcSource",
    "RegistryError",
    "SettingsError",
    "ShamEntropySource",
    "SourceConfigurationError",
    "SourceLoadError",
    "SourcesSettings",
    "SystemEntropySource",
    "TimingNoiseSource",
    "UnknownSourceError",
    "__version__",
    "apply_overrides",
    "available_sources",
    "build_source",
    "get_source_class",
    "load_sources",
    "parse_sources",
    "register_entropy_source",
    "run_calibration",
    "settings_table",
]


def __getattr__(name: str) -> object:
    # Imported on first use, for start-up cost only (neither is a circle: both
    # import only modules below this one). grpcio is slow to import and most
    # users never build the gRPC source; the calibration pulls in qr-core's
    # statistics, which only `qr-entropy calibrate` and `check` need.
    if name == "QuantumGrpcSource":
        from qr_entropy.grpc import QuantumGrpcSource

        return QuantumGrpcSource
    if name == "run_calibration":
        from qr_entropy._calibrate import run_calibration

        return run_calibration
    raise AttributeError(f"module 'qr_entropy' has no attribute {name!r}")
