"""``EntropyConfig``: the infrastructure settings, read from ``QR_*`` variables.

Everything is refused when the settings load, not at the first call: every time
and size has an upper bound the code supports (a deadline of at most a day:
gRPC and the watchdog's waits overflow far above that), the API key and its
header must be what gRPC metadata can carry, and the TLS files must hold what
their names say (:mod:`qr_entropy._tls_files`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from qr_entropy._response_layout import parse_layout
from qr_entropy._tls_files import check_ca_file, check_certificate_file, check_key_file
from qr_entropy.settings import QR_SETTINGS_CONFIG, QRSettings

__all__ = ["MAX_TIMEOUT_MS", "EntropyConfig", "FallbackMode", "GrpcMode"]

MAX_TIMEOUT_MS = 86_400_000.0
"""The longest time setting, one day in milliseconds."""
_MAX_TIMEOUT_S = MAX_TIMEOUT_MS / 1000.0
_HEADER_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")

GrpcMode = Literal["unary", "server_streaming", "bidi_streaming"]
FallbackMode = Literal["error", "system", "mock_uniform"]


class EntropyConfig(QRSettings):
    """Where entropy comes from and how the transport behaves.

    Each field is read from the environment variable ``QR_<FIELD NAME IN UPPER
    CASE>`` or from a ``.env`` file in the working directory; environment
    variables win over ``.env``. Other ``QR_*`` variables (owned by other
    packages) are ignored. None of these fields may be overridden per request.
    """

    model_config = QR_SETTINGS_CONFIG

    entropy_source_type: str = Field(
        default="system",
        min_length=1,
        description="Primary entropy source: a registered name (see `qr-entropy sources`).",
    )
    grpc_server_address: str = Field(
        default="localhost:50051",
        min_length=1,
        description="gRPC entropy server address: `host:port` or `unix:///path`.",
    )
    grpc_timeout_ms: float = Field(
        default=5000.0,
        gt=0,
        le=MAX_TIMEOUT_MS,
        description="Ceiling of the per-call gRPC deadline, in milliseconds (at most a day).",
    )
    grpc_retry_count: int = Field(
        default=2,
        ge=0,
        le=100,
        description="Retry attempts after a failed gRPC call.",
    )
    grpc_mode: GrpcMode = Field(
        default="unary",
        description="gRPC transport mode.",
    )
    grpc_method_path: str = Field(
        default="/qr_entropy.EntropyService/GetEntropy",
        min_length=1,
        description="Full method path of the unary RPC.",
    )
    grpc_stream_method_path: str = Field(
        default="/qr_entropy.EntropyService/StreamEntropy",
        description="Full method path of the streaming RPC (empty disables streaming).",
    )
    grpc_api_key: SecretStr = Field(
        default=SecretStr(""),
        description=(
            "API key sent as gRPC metadata (empty: no authentication): printable ASCII, "
            "no control characters. Never logged."
        ),
    )
    grpc_api_key_header: str = Field(
        default="api-key",
        min_length=1,
        description=(
            "gRPC metadata header that carries the API key: lower-case letters, digits, "
            "`-`, `_`, `.`; not ending in `-bin`, not starting with `grpc-`."
        ),
    )
    grpc_tls: bool = Field(
        default=False,
        description="Use TLS for the gRPC channel.",
    )
    grpc_tls_ca_file: str = Field(
        default="",
        description=(
            "PEM file of the CA that signed the server certificate (empty: system roots); "
            "must hold a certificate."
        ),
    )
    grpc_tls_cert_file: str = Field(
        default="",
        description=(
            "PEM client certificate for mutual TLS (empty: no client certificate); "
            "must hold a certificate."
        ),
    )
    grpc_tls_key_file: str = Field(
        default="",
        description=(
            "PEM private key of the client certificate: unencrypted, and the key of "
            "`grpc_tls_cert_file`."
        ),
    )
    grpc_tls_server_name: str = Field(
        default="",
        description="Host name checked in the server certificate (empty: from the address).",
    )
    fallback_mode: FallbackMode = Field(
        default="system",
        description="What happens when the primary source is unavailable.",
    )
    cb_window_size: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="Rolling latency window size for the P99 computation.",
    )
    cb_min_timeout_ms: float = Field(
        default=5.0,
        gt=0,
        le=MAX_TIMEOUT_MS,
        description="Minimum adaptive timeout in milliseconds.",
    )
    cb_timeout_multiplier: float = Field(
        default=1.5,
        ge=1,
        le=1000,
        description="Multiplier applied to the P99 latency for the adaptive timeout.",
    )
    cb_recovery_window_s: float = Field(
        default=10.0,
        gt=0,
        le=_MAX_TIMEOUT_S,
        description="Seconds before a half-open retry after the circuit opens.",
    )
    cb_max_consecutive_failures: int = Field(
        default=3,
        ge=1,
        le=1_000_000,
        description="Consecutive failures before the circuit breaker opens.",
    )
    mock_uniform_seed: int | None = Field(
        default=None,
        ge=0,
        description="Seed of the `mock_uniform` source (unset: seeded from the OS).",
    )
    mock_uniform_bias: float = Field(
        default=0.0,
        ge=-127.5,
        le=127.5,
        description="Per-byte mean shift of the `mock_uniform` source (mean = 127.5 + bias).",
    )
    sham_latency_ms: float = Field(
        default=0.0,
        ge=0,
        le=MAX_TIMEOUT_MS,
        description="Simulated latency of the `sham` source, in milliseconds.",
    )
    calibration_path: str = Field(
        default="",
        description=(
            "Device calibration JSON written by `qr-entropy calibrate` (empty: none); the "
            "amplifier standardises against it and `qr-entropy check` tests drift from it. "
            "`QR_SOURCES` arms never inherit it: an arm sets its own `calibration_path`."
        ),
    )
    grpc_max_request_bytes: int = Field(
        default=1_048_576,
        ge=1,
        # gRPC message lengths are int32: the reply (bytes + framing) must stay below 2 GiB.
        le=1 << 30,
        description="Largest byte count per gRPC request; larger fetches are split.",
    )
    grpc_response_layout: str = Field(
        default="qr_entropy",
        min_length=1,
        description=(
            "Which response field holds what: `qr_entropy`, `qrng`, `bytes_only`, or a map "
            "such as `data=1,sequence_id=2,timestamp_us=3,device_id=4`."
        ),
    )

    @field_validator("grpc_response_layout")
    @classmethod
    def _check_layout(cls, value: str) -> str:
        parse_layout(value)
        return value

    @field_validator("grpc_api_key")
    @classmethod
    def _check_key(cls, value: SecretStr) -> SecretStr:
        # Never echo the key: say what is wrong with it.
        if not all(" " <= ch <= "~" for ch in value.get_secret_value()):
            raise ValueError(
                "the key holds a control character (a newline?) or a character outside "
                "printable ASCII 0x20-0x7e, which gRPC metadata cannot carry"
            )
        return value

    @field_validator("grpc_api_key_header")
    @classmethod
    def _check_header(cls, value: str) -> str:
        if not set(value) <= _HEADER_CHARACTERS:
            bad = sorted({repr(ch) for ch in value if ch not in _HEADER_CHARACTERS})
            raise ValueError(
                f"gRPC metadata keys are lower-case letters, digits, '-', '_' and '.'; "
                f"found {', '.join(bad)}"
            )
        if value.endswith("-bin") or value.startswith("grpc-"):
            raise ValueError("'-bin' (binary) and 'grpc-' (reserved) keys cannot carry it")
        return value

    @field_validator("grpc_tls_ca_file")
    @classmethod
    def _check_ca(cls, value: str) -> str:
        if value:
            check_ca_file(value)
        return value

    @field_validator("grpc_tls_cert_file")
    @classmethod
    def _check_certificate(cls, value: str) -> str:
        if value:
            check_certificate_file(value)
        return value

    @field_validator("grpc_tls_key_file")
    @classmethod
    def _check_key_file(cls, value: str, info: ValidationInfo) -> str:
        if value:
            check_key_file(value, info.data.get("grpc_tls_cert_file") or None)
        return value
