"""A range check the protobuf runtime does not make: ``bytes_needed`` must fit int32.

The runtime parses an int32 field from a 64-bit varint and keeps the low 32
bits, so ``bytes_needed = 2**32 + 5`` arrives as 5 without a word. This scans
the request's wire bytes for field 1 and reports the value a sender meant
when it lies outside int32. Anything it cannot follow is left to the real
parser, which rejects malformed input itself.
"""

from __future__ import annotations

__all__ = ["INT32_MAX", "INT32_MIN", "out_of_range_bytes_needed"]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
_BYTES_NEEDED = 1  # field number in entropy_service.proto


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode a varint at ``pos``; return (value, next position). IndexError if cut short."""
    value = 0
    shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise IndexError("varint longer than 10 bytes")


def out_of_range_bytes_needed(payload: bytes) -> int | None:
    """The first ``bytes_needed`` in ``payload`` outside int32, as a signed 64-bit value.

    Returns:
        The value, or None when every occurrence fits (or the bytes are not
        well-formed enough to tell).
    """
    pos = 0
    try:
        while pos < len(payload):
            key, pos = _varint(payload, pos)
            field, wire_type = key >> 3, key & 7
            if wire_type == 0:
                value, pos = _varint(payload, pos)
                if field == _BYTES_NEEDED:
                    value &= (1 << 64) - 1
                    signed = value - (1 << 64) if value >= 1 << 63 else value
                    if not INT32_MIN <= signed <= INT32_MAX:
                        return signed
            elif wire_type == 1:
                pos += 8
            elif wire_type == 2:
                length, pos = _varint(payload, pos)
                pos += length
            elif wire_type == 5:
                pos += 4
            else:
                return None
    except IndexError:
        return None
    return None
