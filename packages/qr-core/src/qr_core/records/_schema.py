"""The per-token research record, its JSON form and the configuration hash."""

from __future__ import annotations

import hashlib
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Final

from qr_core.records._errors import RecordError

__all__ = ["READABLE_SCHEMA_VERSIONS", "SCHEMA_VERSION", "TokenSamplingRecord", "config_hash"]

SCHEMA_VERSION: Final = 3
"""Version of the :class:`TokenSamplingRecord` layout; bumped on any field change."""

READABLE_SCHEMA_VERSIONS: Final = (1, 2, 3)
"""Layouts :meth:`TokenSamplingRecord.from_json_dict` still reads.

Version 1 lacks the fields added in version 2 (``arm`` through ``discarded``); a
version-1 record reads with their version-1 meaning: no arm, no calibration,
``u_transform="phi"`` (u was ``Phi(z)``), no writer id, not discarded. Versions 1
and 2 lack the fields added in version 3 (see ``_V3_DEFAULTS``), which read with
their defaults (no pre-registration, no calibration figures).
"""


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
    entropy_generated_ns: int | None
    """When the entropy server says it generated the bytes; ``None`` when the
    server's response layout carries no generation time (never invented)."""
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
    """The amplifier's standardised statistic (the signal); about N(0, 1) under the null."""
    u: float
    """Uniform variate made from the statistic (see ``u_transform``); U(0, 1) under the null."""
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
    arm: str | None = None
    """Name of the experiment arm (named source instance, ``qr_entropy_source``) that
    was asked for this token's entropy; ``None`` when the engine has a single source."""
    calibration_sha256: str | None = None
    """SHA-256 of the device calibration the amplifier standardised against
    (``QR_CALIBRATION_PATH``); ``None`` when uncalibrated."""
    calibration_blocks: int | None = None
    """B, the blocks the calibration was measured from; ``None`` when uncalibrated or
    not recorded (versions 1 and 2). (Version 3, as the five fields below: what the
    analysis needs to put the calibration's own error into every statistic.)"""
    calibration_mean: float | None = None
    """The calibrated mean of the amplifier's statistic S (units of S)."""
    calibration_std: float | None = None
    """The calibrated standard deviation of S (units of S)."""
    calibration_mean_se_z: float | None = None
    """Standard error of the calibrated mean over the calibrated sd (``1/sqrt(B)``)."""
    calibration_std_se_z: float | None = None
    """Standard error of the calibrated sd over the calibrated sd (about ``1/sqrt(2B)``)."""
    calibration_cov_z: float | None = None
    """Covariance of the calibrated mean and sd over the calibrated sd squared."""
    u_transform: str = "randomized_pit"
    """How ``u`` was made from the statistic: ``"randomized_pit"`` (exactly uniform
    under the null) or ``"phi"`` (``Phi(z)``, on a lattice; version-1 records)."""
    writer_id: str | None = None
    """Stable id of the process that wrote the record (host, pid, DP rank, engine
    index); ``None`` in version-1 records."""
    discarded: bool = False
    """True when vLLM did not emit this token (a partial-prefill or recomputed row):
    its entropy is accounted for, but it is no output token and no statistic uses it."""
    preregistration_sha256: str | None = None
    """SHA-256 of the pre-registered plan file (``QR_PREREGISTRATION_PATH``) the
    experiment runs under; ``None`` when not pre-registered. (Version 3.)"""
    entropy_read_started_ns: int | None = None
    """When the entropy server's fresh read of these bytes began (its response's
    ``read_started_ns``): after the request arrived, as the server's device backend
    first discarded what its device had buffered; with ``entropy_requested_ns`` it
    shows that no byte was read before the engine asked for it (docs/records.md).
    ``None`` when the server does not say (a local source, a fallback, an older
    server): never invented. (Version 3.)"""
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

        Version-1 records (see :data:`READABLE_SCHEMA_VERSIONS`) are read too; the
        fields they lack take their version-1 meaning and ``schema_version`` stays 1.

        Raises:
            RecordError: A key is unknown or missing, ``schema_version`` is not one
                of :data:`READABLE_SCHEMA_VERSIONS`, or a value has the wrong type.
        """
        version = d.get("schema_version", SCHEMA_VERSION)
        if version not in READABLE_SCHEMA_VERSIONS or type(version) is not int:
            raise RecordError(
                f"schema_version={version!r} is not supported; expected one of "
                f"{list(READABLE_SCHEMA_VERSIONS)}"
            )
        absent = _ABSENT_BEFORE.get(version, {})
        expected = _FIELD_SET - absent.keys()
        keys = set(d)
        unknown = sorted(keys - expected)
        missing = sorted(expected - keys)
        if unknown or missing:
            raise RecordError(
                f"record keys do not match schema version {version}: "
                f"unknown={unknown}, missing={missing}"
            )
        values: dict[str, object] = {}
        for name, (kind, optional) in _FIELD_TYPES.items():
            if name not in expected:
                values[name] = absent[name]
                continue
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
_V1_DEFAULTS: Final[dict[str, object]] = {
    "arm": None,
    "calibration_sha256": None,
    "u_transform": "phi",
    "writer_id": None,
    "discarded": False,
}
_V3_DEFAULTS: Final[dict[str, object]] = {
    "calibration_blocks": None,
    "calibration_mean": None,
    "calibration_std": None,
    "calibration_mean_se_z": None,
    "calibration_std_se_z": None,
    "calibration_cov_z": None,
    "preregistration_sha256": None,
    "entropy_read_started_ns": None,
}
"""Fields added in version 3, with the value they take in a version-1 or -2 record."""
_ABSENT_BEFORE: Final[dict[int, dict[str, object]]] = {
    1: {**_V1_DEFAULTS, **_V3_DEFAULTS},
    2: dict(_V3_DEFAULTS),
}
"""Per older version: the fields its records lack and the value each reads with."""


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
