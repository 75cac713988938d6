"""Protobuf wire format for just the fields the client needs.

The client never imports generated stubs, so any server whose request has the
byte count in field 1 and whose response has the bytes in field 1 works
(``qr_entropy.EntropyService``, ``qrng.QuantumRNG``, ...). Request: field 1
``bytes_needed`` (varint), field 2 ``sequence_id`` (varint). Response: field 1
``data`` (bytes), 2 ``sequence_id``, 3 ``generation_timestamp_ns`` (varints),
4 ``device_id`` (UTF-8 string). Unknown fields are skipped; anything that does
not parse raises :class:`WireFormatError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from qr_entropy.grpc._errors import WireFormatError

__all__ = ["WireResponse", "decode_response", "encode_request"]

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_U64 = 1 << 64
_MAX_VARINT_BYTES = 10


@dataclass(frozen=True, slots=True)
class WireResponse:
    """The fields of one decoded response; absent fields have proto3 defaults."""

    data: bytes
    sequence_id: int
    generation_timestamp_ns: int
    device_id: str


def _varint(value: int) -> bytes:
    # Negative int32/int64 values are sent as 10-byte two's complement, like protobuf.
    value &= _U64 - 1
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_request(bytes_needed: int, sequence_id: int) -> bytes:
    """Serialise a request: field 1 ``bytes_needed``, field 2 ``sequence_id``.

    Zero values are omitted, as proto3 does.
    """
    out = b""
    if bytes_needed:
        out += b"\x08" + _varint(bytes_needed)
    if sequence_id:
        out += b"\x10" + _varint(sequence_id)
    return out


def _read_varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    end = len(buf)
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= end:
            raise WireFormatError(f"truncated varint at byte {pos}")
        byte = buf[pos + i]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & (_U64 - 1), pos + i + 1
        shift += 7
    raise WireFormatError(f"varint longer than {_MAX_VARINT_BYTES} bytes at byte {pos}")


def _signed64(value: int) -> int:
    return value - _U64 if value >= 1 << 63 else value


def decode_response(payload: bytes) -> WireResponse:
    """Parse a response message.

    Args:
        payload: The serialised message as received.

    Returns:
        Its fields. A repeated scalar field keeps its last value, as protobuf does.

    Raises:
        WireFormatError: truncated data, an unknown wire type, a known field with
            the wrong wire type, or a ``device_id`` that is not UTF-8.
    """
    buf = memoryview(payload)
    end = len(buf)
    pos = 0
    data = b""
    sequence_id = 0
    generated_ns = 0
    device_id = ""
    while pos < end:
        key, pos = _read_varint(buf, pos)
        field, wire_type = key >> 3, key & 7
        if field == 0:
            raise WireFormatError(f"field number 0 at byte {pos}")
        if wire_type == _VARINT:
            value, pos = _read_varint(buf, pos)
            if field == 2:
                sequence_id = _signed64(value)
            elif field == 3:
                generated_ns = _signed64(value)
            elif field in (1, 4):
                raise WireFormatError(f"field {field} is a varint, expected length-delimited")
        elif wire_type == _LEN:
            length, pos = _read_varint(buf, pos)
            stop = pos + length
            if stop > end:
                raise WireFormatError(
                    f"field {field} declares {length} bytes, only {end - pos} remain"
                )
            if field == 1:
                data = bytes(buf[pos:stop])
            elif field == 4:
                try:
                    device_id = str(buf[pos:stop], "utf-8")
                except UnicodeDecodeError as exc:
                    raise WireFormatError("field 4 (device_id) is not UTF-8") from exc
            elif field in (2, 3):
                raise WireFormatError(f"field {field} is length-delimited, expected a varint")
            pos = stop
        elif wire_type in (_I64, _I32):
            if field in (1, 2, 3, 4):
                raise WireFormatError(f"field {field} has fixed-width wire type {wire_type}")
            pos += 8 if wire_type == _I64 else 4
            if pos > end:
                raise WireFormatError(f"truncated fixed-width field {field}")
        else:
            raise WireFormatError(f"unsupported wire type {wire_type} for field {field}")
    return WireResponse(data, sequence_id, generated_ns, device_id)
