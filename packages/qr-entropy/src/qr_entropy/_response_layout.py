"""Response layouts: which field of a gRPC server's response message holds what.

Set by ``QR_GRPC_RESPONSE_LAYOUT``: a preset name or an explicit field map.
Here, below both its users: ``EntropyConfig`` refuses a bad layout when the
settings are read, and the gRPC client decodes each response by it.

- ``qr_entropy`` (default): ``data=1, sequence_id=2, timestamp_ns=3, device_id=4,
  read_started_ns=5, device_bytes_per_second=6`` (``qr_entropy.EntropyService``,
  the reference server; fields 5 and 6 are absent from an older one's responses).
- ``qrng``: ``data=1, timestamp_us=2, device_id=3`` (the public
  ``qrng.QuantumRNG`` service: ``RandomResponse { bytes data = 1; uint64
  timestamp = 2; string device_id = 3; }``, timestamp in epoch microseconds).
- ``bytes_only``: ``data=1``.
- a map such as ``data=1,sequence_id=2,timestamp_us=3,device_id=4`` (roles
  ``read_started_ns`` and ``device_bytes_per_second`` may be mapped too).

Only declared fields are read; the rest of a response is skipped. A layout
without a ``sequence_id`` field cannot detect a stale reply by its echo (the
length check and the stream discipline still hold); one without a timestamp or
device id records them as absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from qr_entropy._exceptions import ConfigError

__all__ = ["LAYOUT_ENV_VAR", "PRESETS", "ResponseLayout", "parse_layout"]

LAYOUT_ENV_VAR = "QR_GRPC_RESPONSE_LAYOUT"
_ROLES = (
    "data",
    "sequence_id",
    "timestamp_ns",
    "timestamp_us",
    "device_id",
    "read_started_ns",
    "device_bytes_per_second",
)
# Protobuf field numbers: 1 .. 2**29 - 1, without the range reserved for the implementation.
_MAX_FIELD = 2**29 - 1
_RESERVED = range(19000, 20000)


@dataclass(frozen=True, slots=True)
class ResponseLayout:
    """Field numbers of one response layout; ``None`` where the layout lacks the field."""

    name: str
    """The preset name, or the map as configured."""
    data: int
    """Field holding the random bytes (length-delimited)."""
    sequence_id: int | None = None
    """Field echoing the request's ``sequence_id`` (varint)."""
    timestamp: int | None = None
    """Field holding the generation time (varint)."""
    timestamp_scale_ns: int = 1
    """Nanoseconds per unit of ``timestamp`` (1 for ns, 1000 for us)."""
    device_id: int | None = None
    """Field holding the device id (UTF-8 string)."""
    read_started: int | None = None
    """Field holding when the server's fresh read began, epoch ns (varint)."""
    device_rate: int | None = None
    """Field holding the device's measured rate, bytes per second (varint)."""
    roles: Mapping[int, str] = field(init=False, repr=False, compare=False)
    """Each declared field number and the role it plays (one lookup per field
    when decoding, on the fetch's critical path)."""

    def __post_init__(self) -> None:
        stamp = "timestamp_ns" if self.timestamp_scale_ns == 1 else "timestamp_us"
        declared = (
            (self.data, "data"),
            (self.sequence_id, "sequence_id"),
            (self.timestamp, stamp),
            (self.device_id, "device_id"),
            (self.read_started, "read_started_ns"),
            (self.device_rate, "device_bytes_per_second"),
        )
        roles: dict[int, str] = {}
        for number, role in declared:
            if number is not None:
                roles.setdefault(number, role)
        object.__setattr__(self, "roles", roles)  # frozen: set once, here


PRESETS: dict[str, ResponseLayout] = {
    "qr_entropy": ResponseLayout(
        "qr_entropy",
        data=1,
        sequence_id=2,
        timestamp=3,
        device_id=4,
        read_started=5,
        device_rate=6,
    ),
    "qrng": ResponseLayout("qrng", data=1, timestamp=2, timestamp_scale_ns=1000, device_id=3),
    "bytes_only": ResponseLayout("bytes_only", data=1),
}

_ALLOWED = (
    f"one of {', '.join(repr(p) for p in PRESETS)}, or a map such as "
    "'data=1,sequence_id=2,timestamp_us=3,device_id=4' (roles: " + ", ".join(_ROLES) + ")"
)


def _refuse(text: str, why: str) -> ConfigError:
    return ConfigError(f"{LAYOUT_ENV_VAR}={text!r}: {why}; allowed: {_ALLOWED}")


def parse_layout(text: str) -> ResponseLayout:
    """Return the layout ``text`` names or spells out.

    Raises:
        ConfigError: an unknown preset, an unknown role, a bad or repeated field
            number, no ``data`` field, or both timestamp units; the message names
            ``QR_GRPC_RESPONSE_LAYOUT`` and the allowed values.
    """
    spec = text.strip()
    preset = PRESETS.get(spec)
    if preset is not None:
        return preset
    if "=" not in spec:
        raise _refuse(text, "unknown layout")
    numbers: dict[str, int] = {}
    for item in spec.split(","):
        role, sep, number = (part.strip() for part in item.partition("="))
        if not sep or role not in _ROLES:
            raise _refuse(text, f"unknown role {role!r}")
        if role in numbers:
            raise _refuse(text, f"role {role!r} given twice")
        if not number.isdigit() or not 1 <= int(number) <= _MAX_FIELD or int(number) in _RESERVED:
            raise _refuse(
                text, f"{role}={number!r}: field numbers are 1..{_MAX_FIELD}, not 19000-19999"
            )
        if int(number) in numbers.values():
            raise _refuse(text, f"field {number} given to two roles")
        numbers[role] = int(number)
    if "data" not in numbers:
        raise _refuse(text, "no 'data' field")
    if "timestamp_ns" in numbers and "timestamp_us" in numbers:
        raise _refuse(text, "give timestamp_ns or timestamp_us, not both")
    micro = "timestamp_us" in numbers
    return ResponseLayout(
        name=",".join(f"{role}={n}" for role, n in numbers.items()),
        data=numbers["data"],
        sequence_id=numbers.get("sequence_id"),
        timestamp=numbers.get("timestamp_us" if micro else "timestamp_ns"),
        timestamp_scale_ns=1000 if micro else 1,
        device_id=numbers.get("device_id"),
        read_started=numbers.get("read_started_ns"),
        device_rate=numbers.get("device_bytes_per_second"),
    )
