"""The client's hand-rolled protobuf codec against the generated messages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qr_entropy import ConfigError
from qr_entropy._response_layout import PRESETS, parse_layout
from qr_entropy.grpc import WireFormatError
from qr_entropy.grpc._wire import decode_response, encode_request

# The generated messages ship with qr-entropy-server only (never with the client).
pb2 = pytest.importorskip("qr_entropy_server.proto.entropy_service_pb2")

INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@given(bytes_needed=INT32, sequence_id=INT64)
def test_request_encoding_is_what_protobuf_parses(bytes_needed: int, sequence_id: int) -> None:
    parsed = pb2.EntropyRequest.FromString(encode_request(bytes_needed, sequence_id))
    assert parsed.bytes_needed == bytes_needed
    assert parsed.sequence_id == sequence_id


@given(bytes_needed=INT32, sequence_id=INT64)
def test_request_encoding_is_byte_identical_to_protobuf(
    bytes_needed: int, sequence_id: int
) -> None:
    expected = pb2.EntropyRequest(bytes_needed=bytes_needed, sequence_id=sequence_id)
    assert encode_request(bytes_needed, sequence_id) == expected.SerializeToString()


@given(data=st.binary(max_size=3000), seq=INT64, ts=INT64, device=st.text(max_size=40))
def test_response_decoding_matches_protobuf(data: bytes, seq: int, ts: int, device: str) -> None:
    message = pb2.EntropyResponse(
        data=data, sequence_id=seq, generation_timestamp_ns=ts, device_id=device
    )
    decoded = decode_response(message.SerializeToString())
    assert (decoded.data, decoded.sequence_id) == (data, seq)
    # proto3 cannot tell 0 from absent: no timestamp is recorded as None, never as 0.
    assert (decoded.generated_ns, decoded.device_id) == (ts or None, device)


def test_unknown_fields_of_every_wire_type_are_skipped() -> None:
    known = pb2.EntropyResponse(data=b"\x01\x02\x03", sequence_id=7).SerializeToString()
    unknown = (
        b"\x48\x96\x01"  # field 9, varint 150
        b"\x51"
        + bytes(8)  # field 10, fixed64
        + b"\x5a\x02hi"  # field 11, length-delimited
        + b"\x65"
        + bytes(4)  # field 12, fixed32
    )
    decoded = decode_response(unknown + known + unknown)
    assert decoded.data == b"\x01\x02\x03"
    assert decoded.sequence_id == 7


@given(started=INT64, rate=st.integers(min_value=0, max_value=2**63 - 1))
def test_fields_5_and_6_decode_as_protobuf_reads_them(started: int, rate: int) -> None:
    message = pb2.EntropyResponse(
        data=b"abc", sequence_id=3, read_started_ns=started, device_bytes_per_second=rate
    )
    decoded = decode_response(message.SerializeToString())
    assert decoded.data == b"abc"
    # 0 is proto3's "absent": an older server's response, never recorded as 0.
    assert decoded.read_started_ns == (started or None)
    assert decoded.device_bytes_per_second == (rate or None)


def test_a_response_of_an_older_server_has_neither_field() -> None:
    old = pb2.EntropyResponse(data=b"ab", sequence_id=1, generation_timestamp_ns=5)
    decoded = decode_response(old.SerializeToString())
    assert (decoded.read_started_ns, decoded.device_bytes_per_second) == (None, None)


def test_a_client_that_does_not_know_fields_5_and_6_skips_them() -> None:
    # An older client reads the fields it declares only, as bytes_only and qrng do here.
    new = pb2.EntropyResponse(data=b"xy", read_started_ns=9, device_bytes_per_second=44_000_000)
    for layout in ("bytes_only", "qrng"):
        decoded = decode_response(new.SerializeToString(), PRESETS[layout])
        assert decoded.data == b"xy"
        assert decoded.device_bytes_per_second is None
    mapped = parse_layout("data=1,device_bytes_per_second=6,read_started_ns=5")
    decoded = decode_response(new.SerializeToString(), mapped)
    assert (decoded.read_started_ns, decoded.device_bytes_per_second) == (9, 44_000_000)


def test_a_server_with_other_message_names_but_the_same_layout_decodes() -> None:
    # e.g. qrng.QuantumRNG's RandomBytesResponse { bytes random_bytes = 1; }
    assert decode_response(b"\x0a\x04abcd").data == b"abcd"
    assert decode_response(b"").data == b""


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x0a\x05abc", "declares 5 bytes, only 3 remain"),
        (b"\x0a", "truncated varint"),
        (b"\x10" + b"\xff" * 11, "longer than 10 bytes"),
        (b"\x08\x05", "field 1 \\(data\\) of response layout 'qr_entropy' arrived as a varint"),
        (b"\x12\x01x", "field 2 \\(sequence_id\\) .* arrived as length-delimited, expected a"),
        (b"\x22\x02\xff\xfe", "not UTF-8"),
        (b"\x0b", "unsupported wire type 3"),
        (b"\x00\x00", "field number 0"),
        (b"\x39\x00", "truncated fixed-width"),
        (b"\x09" + bytes(8), "field 1 \\(data\\) .* arrived as fixed64"),
    ],
)
def test_malformed_responses_are_rejected(payload: bytes, message: str) -> None:
    with pytest.raises(WireFormatError, match=message):
        decode_response(payload)


@given(st.binary(max_size=64))
def test_garbage_either_decodes_or_raises_wire_format_error(payload: bytes) -> None:
    try:
        decoded = decode_response(payload)
    except WireFormatError:
        return
    assert isinstance(decoded.data, bytes)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes([*out, value])


def _qrng_response(data: bytes, timestamp_us: int, device_id: str) -> bytes:
    """``qrng.RandomResponse { bytes data = 1; uint64 timestamp = 2; string device_id = 3; }``."""
    device = device_id.encode()
    return (
        b"\x0a"
        + _varint(len(data))
        + data
        + b"\x10"
        + _varint(timestamp_us)
        + b"\x1a"
        + _varint(len(device))
        + device
    )


def test_qrng_layout_reads_microseconds_and_has_no_sequence_echo() -> None:
    payload = _qrng_response(b"abcd", 1_700_000_000_123_456, "qrng-1")
    decoded = decode_response(payload, PRESETS["qrng"])
    assert decoded.data == b"abcd"
    assert decoded.generated_ns == 1_700_000_000_123_456_000
    assert decoded.device_id == "qrng-1"
    assert decoded.sequence_id == 0  # the timestamp in field 2 is not taken for an echo


def test_the_issue_case_a_qrng_reply_under_the_default_layout_names_field_layout_and_type() -> None:
    payload = _qrng_response(b"abcd", 1_700_000_000_123_456, "qrng-1")
    with pytest.raises(WireFormatError) as info:
        decode_response(payload)
    text = str(info.value)
    assert "field 3 (timestamp_ns)" in text
    assert "'qr_entropy'" in text
    assert "arrived as length-delimited" in text


def test_bytes_only_reads_field_1_and_records_the_rest_as_absent() -> None:
    payload = _qrng_response(b"xyz", 5, "dev")
    decoded = decode_response(payload, PRESETS["bytes_only"])
    assert (decoded.data, decoded.sequence_id, decoded.generated_ns, decoded.device_id) == (
        b"xyz",
        0,
        None,
        "",
    )


def test_an_explicit_map_reads_the_fields_it_declares() -> None:
    layout = parse_layout("data=1, sequence_id=2, timestamp_us=3, device_id=4")
    message = b"\x0a\x02hi\x10\x07\x18" + _varint(1_000) + b"\x22\x01d"
    decoded = decode_response(message, layout)
    assert (decoded.data, decoded.sequence_id, decoded.generated_ns, decoded.device_id) == (
        b"hi",
        7,
        1_000_000,
        "d",
    )
    moved = parse_layout("data=5,device_id=1")
    decoded = decode_response(b"\x2a\x02hi\x0a\x01d\x10\x07", moved)
    assert (decoded.data, decoded.device_id, decoded.sequence_id) == (b"hi", "d", 0)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("qrngg", "unknown layout"),
        ("data=1,seq=2", "unknown role 'seq'"),
        ("data=1,data=2", "given twice"),
        ("data=0", "field numbers are"),
        ("data=19500", "field numbers are"),
        ("data=x", "field numbers are"),
        ("data=1,device_id=1", "field 1 given to two roles"),
        ("sequence_id=2", "no 'data' field"),
        ("data=1,timestamp_ns=2,timestamp_us=3", "not both"),
    ],
)
def test_bad_layouts_are_refused_naming_the_variable_and_the_choices(
    text: str, needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_layout(text)
    message = str(info.value)
    assert needle in message
    assert message.startswith(f"QR_GRPC_RESPONSE_LAYOUT={text!r}")
    assert "'qrng'" in message
    assert "timestamp_us" in message
