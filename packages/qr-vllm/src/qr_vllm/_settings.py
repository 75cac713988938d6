"""Settings of the adapter, declared once and read from ``QR_*`` variables.

Two declarations live here:

* :class:`SamplingSettings`: everything a request may override with a
  ``qr_<field>`` key (the sampling fields of the specification, the logging
  level, diagnostic mode, a request tag and the opt-out switch). Defaults
  come from :class:`qr_core.SamplingConfig`, never restated.
* :class:`RecordSettings`: where the per-token research records go. These
  are infrastructure settings, like :class:`qr_entropy.EntropyConfig`, and
  may not be overridden per request.
* :class:`EngineSettings`: the engine's Prometheus endpoint and its start-up
  checks of the entropy sources (infrastructure too).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from qr_core import SAMPLING_BOUNDS, SamplingConfig, build_amplifier, build_temperature_strategy
from qr_entropy.settings import QR_SETTINGS_CONFIG, QRSettings

__all__ = ["EngineSettings", "LogLevel", "RecordSettings", "SamplingSettings"]

LogLevel = Literal["none", "summary", "full"]

_CORE = SamplingConfig()

# Fields of SamplingSettings that qr_core.SamplingConfig also declares; the
# rest (log_level, diagnostic_mode, request_tag, enabled) belong to the adapter.
CORE_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SamplingConfig))


def _core(name: str, **extra: Any) -> Any:
    """A field whose default and bounds come from qr-core's one declaration."""
    bounds = SAMPLING_BOUNDS.get(name)
    limits = bounds.as_field_kwargs() if bounds else {}
    return Field(default=getattr(_CORE, name), **limits, **extra)


class SamplingSettings(QRSettings):
    """How each token is sampled; every field is overridable per request.

    Environment variable ``QR_<FIELD>`` sets the server-wide default and the
    request key ``qr_<field>`` (in ``SamplingParams.extra_args`` or the HTTP
    body's ``"vllm_xargs"``) overrides it for one request.
    """

    model_config = QR_SETTINGS_CONFIG

    signal_amplifier_type: str = _core(
        "signal_amplifier_type",
        min_length=1,
        description="Signal amplifier that turns the entropy bytes into u.",
    )
    sample_count: int = _core(
        "sample_count",
        description="Entropy bytes fetched per token.",
    )
    population_mean: float = _core(
        "population_mean",
        description="Null-hypothesis mean of the byte values.",
    )
    population_std: float = _core(
        "population_std",
        description="Null-hypothesis standard deviation of the byte values.",
    )
    uniform_clamp_epsilon: float = _core(
        "uniform_clamp_epsilon",
        description="u is clamped to (epsilon, 1 - epsilon).",
    )
    temperature_strategy: str = _core(
        "temperature_strategy",
        min_length=1,
        description="Temperature strategy: `fixed` or `edt` (or a registered name).",
    )
    fixed_temperature: float = _core(
        "fixed_temperature",
        description="Temperature of the `fixed` strategy.",
    )
    edt_base_temp: float = _core("edt_base_temp", description="Base coefficient of `edt`.")
    edt_exponent: float = _core("edt_exponent", description="Power-law exponent of `edt`.")
    edt_min_temp: float = _core("edt_min_temp", description="Temperature floor of `edt`.")
    edt_max_temp: float = _core("edt_max_temp", description="Temperature ceiling of `edt`.")
    top_k: int = _core("top_k", description="Top-k filter (`<= 0` disables).")
    top_p: float = _core("top_p", description="Nucleus threshold (`1.0` disables).")
    log_level: LogLevel = Field(
        default="summary", description="Per-token log lines: `none`, `summary` or `full`."
    )
    diagnostic_mode: bool = Field(
        default=False,
        description="Keep this request's records in the processor's bounded in-memory buffer.",
    )
    request_tag: str = Field(
        default="",
        max_length=256,
        description="Free text copied into every record of the request (empty: none).",
    )
    enabled: bool = Field(
        default=True,
        description="`false` hands the request to vLLM's own sampling (no entropy, no records).",
    )

    @model_validator(mode="after")
    def _check_components(self) -> SamplingSettings:
        if self.edt_min_temp > self.edt_max_temp:
            raise ValueError(
                f"edt_min_temp={self.edt_min_temp} must be <= edt_max_temp={self.edt_max_temp}"
            )
        # Names are resolved by qr_core's registries, which know the allowed values.
        core = self.to_core()
        build_amplifier(core)
        build_temperature_strategy(core)
        return self

    def to_core(self) -> SamplingConfig:
        """Return the :class:`qr_core.SamplingConfig` these settings describe."""
        values: dict[str, Any] = {name: getattr(self, name) for name in CORE_FIELDS}
        return SamplingConfig(**values)


class RecordSettings(QRSettings):
    """Where per-token records go. Infrastructure: not overridable per request."""

    model_config = QR_SETTINGS_CONFIG

    record_path: str = Field(
        default="",
        description="JSON Lines file that receives every record (empty: no file).",
    )
    record_max_bytes: int = Field(
        default=100 * 2**20,
        gt=0,
        description="Rotate the record file before it grows past this many bytes.",
    )
    record_raw_bytes: bool = Field(
        default=False,
        description="Also store each token's raw entropy bytes (hex) in its record.",
    )
    record_queue_size: int = Field(
        default=10_000,
        ge=1,
        description="Records that may wait for the file writer before sampling blocks.",
    )
    record_flush_interval_s: float = Field(
        default=1.0,
        gt=0.0,
        description="Longest time a record stays in memory before it is flushed to the file.",
    )
    diagnostic_buffer_size: int = Field(
        default=10_000,
        ge=1,
        description="Capacity of the in-memory buffer used by `diagnostic_mode` requests.",
    )
    preregistration_path: str = Field(
        default="",
        description="Pre-registered plan file (JSON, `qr-analyze plan --write`): its SHA-256 "
        "goes into every record and its config hash; the engine refuses to start when it is "
        "missing or invalid (empty: not pre-registered).",
    )


_HOST_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


class EngineSettings(QRSettings):
    """The engine's metrics endpoint and start-up checks. Infrastructure: not per request."""

    model_config = QR_SETTINGS_CONFIG

    metrics_port: int = Field(
        default=9464,
        ge=0,
        le=65535,
        description="Prometheus endpoint of the engine's qr_* metrics: data-parallel rank r "
        "serves http://QR_METRICS_ADDRESS:(port + r)/metrics (0: no endpoint).",
    )
    metrics_address: str = Field(
        default="127.0.0.1",
        description="Interface the metrics endpoint binds: an IP address or a host name "
        "(`127.0.0.1`: this host only; `0.0.0.0`: every interface, as in a container).",
    )
    require_sources_at_start: bool = Field(
        default=False,
        description="Refuse to start when an entropy server is down at start-up (default: "
        "start with a warning; a server that refuses the configuration is always refused).",
    )

    @field_validator("metrics_address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not _HOST_NAME.fullmatch(value):
                raise ValueError(
                    f"{value!r} is neither an IP address nor a host name; allowed: an IPv4 or "
                    "IPv6 address (127.0.0.1, 0.0.0.0, ::) or a host name (localhost)"
                ) from None
        return value
