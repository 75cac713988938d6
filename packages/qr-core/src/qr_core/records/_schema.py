"""The per-token research record, its JSON form and the configuration hash."""

from __future__ import annotations

import hashlib
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Final

from qr_core.records._errors import RecordError

__all__ = ["SCHEMA_VERSION", "TokenSamplingRecord", "config_hash"]

SCHEMA_VERSION: Final = 1
"""Version of the :class:`TokenSamplingRecord` layout; bumped on any field change."""


@dataclass(frozen=True, slots=True)
class TokenSamplingRecord:
    """Everything needed to account for one sampled token.

    Timestamps are wall-clock nanoseconds since the Unix epoch (``time.time_ns``),
    so records from different processes and machines can be put on one time line.
    """

    request_id: str
    """Engine request id."""
    request_tag: str | None
    """Tag the client passed as ``qr_request_tag`` (for example ``"experiment"``)."""
    token_index: int
    """Position of the token within its request's output, from 0."""
    logits_ready_ns: int
    """When the logits for this token existed."""
    entropy_requested_ns: int
    """When entropy for this token was requested (after ``logits_ready_ns``)."""
    entropy_generated_ns: int
    """When the entropy server says it generated the bytes."""
    entropy_received_ns: int
    """When the bytes arrived."""
    entropy_source: str
    """Name of the source that actually delivered the bytes."""
    device_id: str
    """Device id reported by the source (empty when it has none)."""
    sequence_id: int | None
    """Request/response sequence id of the transport, when it has one."""
    fallback: bool
    """True when the bytes came from the fallback source."""
    fallback_reason: str | None
    """Why the fallback was used (``None`` when ``fallback`` is false)."""
    sample_count: int
    """Number of entropy bytes consumed for this token."""
    raw_sha256: str
    """SHA-256 hex digest of the raw entropy bytes."""
    raw_bytes_hex: str | None
    """The raw bytes in hex when ``QR_RECORD_RAW_BYTES`` is on, else ``None``."""
    amplifier: str
    """Signal amplifier name."""
    sample_mean: float
    """Mean of the raw byte values."""
    z_score: float
    """Standardised sample mean; N(0, 1) under the null hypothesis."""
    u: float
    """Uniform variate derived from ``z_score``; U(0, 1) under the null hypothesis."""
    temperature_strategy: str
    """Temperature strategy name."""
    temperature: float
    """Temperature applied to this token's distribution."""
    shannon_entropy: float
    """Shannon entropy (nats) of the untempered softmax of the logits, before filtering."""
    token_id: int
    """The selected token id."""
    token_rank: int
    """Rank of the selected token among the candidates (0 = most probable)."""
    token_prob: float
    """Probability of the selected token after filtering and renormalisation."""
    num_candidates: int
    """Number of candidates left after top-k / top-p."""
    top_k: int
    """Top-k in effect (``<= 0`` = disabled)."""
    top_p: float
    """Top-p in effect (``1.0`` = disabled)."""
    config_hash: str
    """:func:`config_hash` of the effective sampling configuration."""
    schema_version: int = SCHEMA_VERSION
    """Layout version; :data:`SCHEMA_VERSION` for records made by this code."""

    def to_json_dict(self) -> dict[str, object]:
        """Return the record as a JSON-ready dict (every field, in declaration order)."""
        return {name: getattr(self, name) for name in _FIELD_NAMES}

    @classmethod
    def from_json_dict(cls, d: Mapping[str, object]) -> TokenSamplingRecord:
        """Build a record from :meth:`to_json_dict` output, strictly.

        Args:
            d: Mapping with exactly the record's keys.

        Returns:
            The record.

        Raises:
            RecordError: A key is unknown or missing, ``schema_version`` is not
                :data:`SCHEMA_VERSION`, or a value has the wrong type.
        """
        keys = set(d)
        unknown = sorted(keys - _FIELD_SET)
        missing = sorted(_FIELD_SET - keys)
        if unknown or missing:
            raise RecordError(
                f"record keys do not match schema version {SCHEMA_VERSION}: "
                f"unknown={unknown}, missing={missing}"
            )
        version = d["schema_version"]
        if version != SCHEMA_VERSION or isinstance(version, bool):
            raise RecordError(
                f"schema_version={version!r} is not supported; expected {SCHEMA_VERSION}"
            )
        values: dict[str, object] = {}
        for name, (kind, optional) in _FIELD_TYPES.items():
            value = d[name]
            if value is None and optional:
                values[name] = None
            elif kind is float and type(value) in (int, float):
                values[name] = float(value)  # type: ignore[arg-type]
            elif type(value) is kind:
                values[name] = value
            else:
                allowed = kind.__name__ + (" or null" if optional else "")
                raise RecordError(
                    f"record field {name!r} must be {allowed}, got {type(value).__name__}"
                    f" ({value!r:.40})"
                )
        return cls(**values)  # type: ignore[arg-type]


def _field_types() -> dict[str, tuple[type, bool]]:
    hints = typing.get_type_hints(TokenSamplingRecord)
    table: dict[str, tuple[type, bool]] = {}
    for f in fields(TokenSamplingRecord):
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = bool(typing.get_args(hint)) and len(args) == 1
        table[f.name] = (args[0] if optional else hint, optional)
    return table


_FIELD_TYPES: Final = _field_types()
_FIELD_NAMES: Final = tuple(_FIELD_TYPES)
_FIELD_SET: Final = frozenset(_FIELD_NAMES)


def config_hash(settings: Mapping[str, object]) -> str:
    """Return the SHA-256 hex digest of ``settings`` as canonical JSON.

    Canonical means sorted keys at every level, no whitespace, ASCII only, so the
    hash is identical in every process and on every machine for equal settings.
    A researcher can publish the hash before an experiment (pre-registration) and
    ``qr-analyze --expect-config-hash`` checks every record against it.

    Args:
        settings: JSON-serialisable mapping (str, int, float, bool, None, lists and
            nested mappings). NaN and infinities are refused.

    Returns:
        64 lowercase hex characters.

    Raises:
        RecordError: A value is not JSON-serialisable or is not finite.
    """
    try:
        text = json.dumps(
            settings, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        )
    except (TypeError, ValueError) as exc:
        raise RecordError(f"settings cannot be hashed as canonical JSON: {exc}") from exc
    return hashlib.sha256(text.encode("ascii")).hexdigest()
