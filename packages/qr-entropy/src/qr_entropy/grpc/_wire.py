"""Protobuf wire format for just the fields the client needs.

The client never imports generated stubs, so any server whose request has the
byte count in field 1 works (``qr_entropy.EntropyService``, ``qrng.QuantumRNG``,
...). Request: field 1 ``bytes_needed`` (varint), field 2 ``sequence_id``
(varint; a server that does not know it skips it). Response: the fields a
:class:`~qr_entropy._response_layout.ResponseLayout` declares; other fields are
skipped; anything that does not parse raises :class:`WireFormatError`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from qr_entropy._response_layout import PRESETS, ResponseLayout
from qr_entropy.grpc._errors import LayoutMismatchError, WireFormatError

__all__ = ["WireResponse", "decode_response", "encode_request"]

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_U64 = 1 << 64
_MAX_VARINT_BYTES = 10
QR_ENTROPY = PRESETS["qr_entropy"]


@dataclass(frozen=True, slots=True)
class WireResponse:
    """The fields of one decoded response."""

    data: bytes
    """The random bytes (empty when absent)."""
    sequence_id: int
    """The echoed ``sequence_id``; 0 when absent (not echoed)."""
    generated_ns: int | None
    """Generation time in epoch nanoseconds; ``None`` when absent."""
    device_id: str
    """The device id; "" when absent."""
    read_started_ns: int | None = None
    """When the server's fresh read began, epoch nanoseconds; ``None`` when absent."""
    device_bytes_per_second: int | None = None
    """The server's measured device rate, bytes per second; ``None`` when absent."""


def _varint(value: int) -> bytes:
    # Negative int32/int64 values are sent as 10-byte two's complement, like protobuf.
    value &= _U64 - 1
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@functools.lru_cache(maxsize=64)
def _bytes_needed_field(bytes_needed: int) -> bytes:
    # A source asks for the same few sizes over and over.
    return b"\x08" + _varint(bytes_needed) if bytes_needed else b""


def encode_request(bytes_needed: int, sequence_id: int) -> bytes:
    """Serialise a request: field 1 ``bytes_needed``, field 2 ``sequence_id``.

    Zero values are omitted, as proto3 does.
    """
    head = _bytes_needed_field(bytes_needed)
    return head + b"\x10" + _varint(sequence_id) if sequence_id else head


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    # One slice, then a plain loop: no bounds check per byte.
    for byte in buf[pos : pos + _MAX_VARINT_BYTES]:
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result & (_U64 - 1), pos + shift // 7
    if pos + _MAX_VARINT_BYTES > len(buf):
        raise WireFormatError(f"truncated varint at byte {pos}")
    raise WireFormatError(f"varint longer than {_MAX_VARINT_BYTES} bytes at byte {pos}")


def _signed64(value: int) -> int:
    return value - _U64 if value >= 1 << 63 else value


_WIRE_NAMES = {_VARINT: "a varint", _I64: "fixed64", _LEN: "length-delimited", _I32: "fixed32"}


def _wrong_type(
    layout: ResponseLayout, field: int, role: str, wire_type: int
) -> LayoutMismatchError:
    expected = "length-delimited" if role in ("data", "device_id") else "a varint"
    return LayoutMismatchError(
        f"field {field} ({role}) of response layout {layout.name!r} arrived as "
        f"{_WIRE_NAMES[wire_type]}, expected {expected} (QR_GRPC_RESPONSE_LAYOUT)"
    )


def decode_response(payload: bytes, layout: ResponseLayout = QR_ENTROPY) -> WireResponse:
    """Parse a response message, reading only the fields ``layout`` declares.

    Args:
        payload: The serialised message as received.
        layout: Which field holds what (``QR_GRPC_RESPONSE_LAYOUT``).

    Returns:
        Its fields; a field the layout lacks, or that the server left at its
        proto3 default (0, empty), is absent: ``sequence_id`` 0, ``generated_ns``,
        ``read_started_ns`` and ``device_bytes_per_second`` ``None``,
        ``device_id`` "". A repeated scalar field keeps its last value, as
        protobuf does.

    Raises:
        LayoutMismatchError: a declared field with another wire type (naming
            the field, the layout and what arrived).
        WireFormatError: truncated data, an unknown wire type, or a
            ``device_id`` that is not UTF-8.
    """
    buf = bytes(payload)  # a no-op for the bytes grpc hands over
    end = len(buf)
    pos = 0
    data = b""
    sequence_id = 0
    timestamp = 0
    device_id = ""
    read_started = 0
    rate = 0
    roles = layout.roles
    # One-byte varints (every tag, most values) are read inline: this runs once per
    # fetch on the caller's critical path, where each Python call counts.
    while pos < end:
        key = buf[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = _read_varint(buf, pos)
        field, wire_type = key >> 3, key & 7
        if field == 0:
            raise WireFormatError(f"field number 0 at byte {pos}")
        role = roles.get(field)
        if wire_type == _VARINT:
            if pos < end and buf[pos] < 0x80:
                value = buf[pos]
                pos += 1
            else:
                value, pos = _read_varint(buf, pos)
            if role == "sequence_id":
                sequence_id = _signed64(value)
            elif role is not None and role.startswith("timestamp"):
                timestamp = _signed64(value)
            elif role == "read_started_ns":
                read_started = _signed64(value)
            elif role == "device_bytes_per_second":
                rate = _signed64(value)
            elif role is not None:
                raise _wrong_type(layout, field, role, wire_type)
        elif wire_type == _LEN:
            length = buf[pos] if pos < end else 0x80  # past the end: the slow path raises
            if length < 0x80:
                pos += 1
            else:
                length, pos = _read_varint(buf, pos)
            stop = pos + length
            if stop > end:
                raise WireFormatError(
                    f"field {field} declares {length} bytes, only {end - pos} remain"
                )
            if role == "data":
                data = buf[pos:stop]  # one copy, straight from the message
            elif role == "device_id":
                try:
                    device_id = str(buf[pos:stop], "utf-8")
                except UnicodeDecodeError as exc:
                    raise WireFormatError(
                        f"field {field} (device_id) of response layout {layout.name!r} is not UTF-8"
                    ) from exc
            elif role is not None:
                raise _wrong_type(layout, field, role, wire_type)
            pos = stop
        elif wire_type in (_I64, _I32):
            if role is not None:
                raise _wrong_type(layout, field, role, wire_type)
            pos += 8 if wire_type == _I64 else 4
            if pos > end:
                raise WireFormatError(f"truncated fixed-width field {field}")
        else:
            raise WireFormatError(f"unsupported wire type {wire_type} for field {field}")
    generated_ns = timestamp * layout.timestamp_scale_ns if timestamp else None
    return WireResponse(
        data,
        sequence_id,
        generated_ns,
        device_id,
        read_started or None,
        rate if rate > 0 else None,
    )
