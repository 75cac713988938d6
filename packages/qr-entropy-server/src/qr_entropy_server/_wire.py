"""``EntropyRequest`` and ``EntropyResponse`` on the wire, by hand.

Requests: the protobuf runtime parses an int32 field from a 64-bit varint and
keeps the low 32 bits, so ``bytes_needed = 2**32 + 5`` arrives as 5 without a
word. :func:`out_of_range_bytes_needed` scans the wire bytes for field 1 and
reports the value a sender meant when it lies outside int32.
:func:`overlong_varint` names a varint longer than the 10 bytes a 64-bit value
needs (which runtimes refuse as "corrupt", or read as 0), so the refusal says
which field it was and where.
:func:`parse_request` reads the usual request (fields 1 and 2 as varints,
``bytes_needed`` in range) without the generated class; anything else is left
to the real parser and the scan, which decide as before.

Responses: :class:`ResponseEncoder` joins the payload with its field header
and the other fields, so the 20,480 bytes of a token are copied once on their
way to gRPC instead of twice (into a message object, then out of it). The
output equals ``EntropyResponse.SerializeToString()`` for the same fields
(tests/test_wire.py checks it).
"""

from __future__ import annotations

import functools

from qr_entropy_server.proto import entropy_service_pb2 as pb2

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "ResponseEncoder",
    "out_of_range_bytes_needed",
    "overlong_varint",
    "parse_request",
]

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
_MASK64 = (1 << 64) - 1
_SIGN64 = 1 << 63
_BYTES_NEEDED = 1  # field numbers in entropy_service.proto
# Keys (field number << 3 | wire type) as single bytes.
_BYTES_NEEDED_KEY = 0x08  # request field 1, varint
_SEQUENCE_ID_KEY = 0x10  # request field 2, varint
_DATA_KEY = b"\x0a"  # response field 1, length-delimited
_MAX_VARINT_BYTES = 10
_REQUEST_FIELDS = {1: "bytes_needed", 2: "sequence_id"}


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
                    value &= _MASK64
                    signed = value - (1 << 64) if value >= _SIGN64 else value
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


def _varint_bytes(data: bytes, pos: int) -> int:
    """How many bytes the varint at ``pos`` takes, however many; IndexError if cut short."""
    start = pos
    while data[pos] >= 0x80:
        pos += 1
    return pos + 1 - start


def overlong_varint(payload: bytes) -> str | None:
    """Name the first varint (a key or a value) longer than 10 bytes in ``payload``.

    Returns:
        E.g. ``"field 1 (bytes_needed) is a varint of 11 bytes at byte 1; at most
        10 are allowed"``, or None when there is none before the scan ends (at
        the end, a cut-short value, or a wire type it cannot step over).
    """
    pos = 0
    end = len(payload)
    try:
        while pos < end:
            size = _varint_bytes(payload, pos)
            if size > _MAX_VARINT_BYTES:
                return (
                    f"the field key at byte {pos} is a varint of {size} bytes; "
                    f"at most {_MAX_VARINT_BYTES} are allowed"
                )
            key, pos = _varint(payload, pos)
            field, wire_type = key >> 3, key & 7
            if wire_type in (0, 2):
                size = _varint_bytes(payload, pos)
                if size > _MAX_VARINT_BYTES:
                    name = _REQUEST_FIELDS.get(field, "unknown to EntropyRequest")
                    what = "value" if wire_type == 0 else "length"
                    return (
                        f"field {field} ({name}) has a {what} varint of {size} bytes at byte "
                        f"{pos}; at most {_MAX_VARINT_BYTES} are allowed"
                    )
                value, pos = _varint(payload, pos)
                pos += value if wire_type == 2 else 0
            elif wire_type in (1, 5):
                pos += 8 if wire_type == 1 else 4
            else:
                return None
    except IndexError:
        return None
    return None


def parse_request(payload: bytes) -> tuple[int, int] | None:
    """``(bytes_needed, sequence_id)`` of a request made of fields 1 and 2 only.

    Each field may appear any number of times (the last wins, as in the
    runtime), as a varint of at most 10 bytes; ``bytes_needed`` must fit int32.

    Returns:
        The two values (0 for an absent field), or None for anything else:
        another field or wire type, a longer or cut-short varint, a
        ``bytes_needed`` outside int32. The caller then asks the real parser,
        which accepts, truncates or refuses such input by its own rules.
    """
    bytes_needed = 0
    sequence_id = 0
    end = len(payload)
    pos = 0
    while pos < end:
        key = payload[pos]
        if key != _BYTES_NEEDED_KEY and key != _SEQUENCE_ID_KEY:
            return None
        pos += 1
        value = 0
        shift = 0
        while True:
            if pos == end or shift == 70:
                return None
            byte = payload[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        value &= _MASK64
        if value >= _SIGN64:
            value -= 1 << 64
        if key == _SEQUENCE_ID_KEY:
            sequence_id = value
        elif INT32_MIN <= value <= INT32_MAX:
            bytes_needed = value
        else:
            return None
    return bytes_needed, sequence_id


def _encode_varint(value: int) -> bytes:
    """A non-negative integer as a protobuf varint."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@functools.lru_cache(maxsize=64)
def _data_header(length: int) -> bytes:
    """Key and length of response field 1; a client asks for the same few sizes."""
    return _DATA_KEY + _encode_varint(length)


class ResponseEncoder:
    """Serialises the ``EntropyResponse`` of one server.

    Field 1 (the payload) is framed by hand and joined with the rest, so the
    payload is copied once. Fields 2 to 6 come from one reused message whose
    ``device_id`` is set once: two field writes and the runtime's serialiser
    per response, less work than varints in Python; field 6 (the device's
    rate) is set only when it changes (:meth:`set_rate`). Not thread-safe: the
    servicer encodes on its event loop only.

    Args:
        device_id: Field 4 of every response.
    """

    def __init__(self, device_id: str) -> None:
        self._tail = pb2.EntropyResponse(device_id=device_id)

    def set_rate(self, bytes_per_second: int) -> None:
        """Field 6 of every later response: the device's measured rate (0 leaves it out)."""
        self._tail.device_bytes_per_second = bytes_per_second

    def encode(self, data: bytes, sequence_id: int, stamped_ns: int, started_ns: int = 0) -> bytes:
        """The response's wire bytes, equal to ``SerializeToString()`` of the same fields.

        Args:
            data: Field 1, the random bytes.
            sequence_id: Field 2 (signed 64-bit).
            stamped_ns: Field 3, the generation timestamp: the read ended (signed 64-bit).
            started_ns: Field 5, when the fresh read began (signed 64-bit; 0 leaves it out).
        """
        tail = self._tail
        tail.sequence_id = sequence_id
        tail.generation_timestamp_ns = stamped_ns
        tail.read_started_ns = started_ns
        if not data:  # proto3 leaves an empty field out
            return tail.SerializeToString()
        return b"".join((_data_header(len(data)), data, tail.SerializeToString()))
