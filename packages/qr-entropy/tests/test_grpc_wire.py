"""The client's hand-rolled protobuf codec against the generated messages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

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
    assert (decoded.generation_timestamp_ns, decoded.device_id) == (ts, device)


def test_unknown_fields_of_every_wire_type_are_skipped() -> None:
    known = pb2.EntropyResponse(data=b"\x01\x02\x03", sequence_id=7).SerializeToString()
    unknown = (
        b"\x28\x96\x01"  # field 5, varint 150
        b"\x31"
        + bytes(8)  # field 6, fixed64
        + b"\x3a\x02hi"  # field 7, length-delimited
        + b"\x45"
        + bytes(4)  # field 8, fixed32
    )
    decoded = decode_response(unknown + known + unknown)
    assert decoded.data == b"\x01\x02\x03"
    assert decoded.sequence_id == 7


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
        (b"\x08\x05", "field 1 is a varint"),
        (b"\x12\x01x", "field 2 is length-delimited"),
        (b"\x22\x02\xff\xfe", "not UTF-8"),
        (b"\x0b", "unsupported wire type 3"),
        (b"\x00\x00", "field number 0"),
        (b"\x39\x00", "truncated fixed-width"),
        (b"\x09" + bytes(8), "fixed-width wire type 1"),
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
