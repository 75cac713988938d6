"""The hand-written wire code against the generated stubs: responses and requests.

The server encodes responses and parses the usual request without the
generated classes (to save per-request work); these tests hold both to what
the generated ``EntropyResponse`` / ``EntropyRequest`` make of the same bytes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Callable

import grpc
import pytest
from google.protobuf.message import DecodeError

from qr_entropy_server import EntropyServer
from qr_entropy_server._pool import BackendPool
from qr_entropy_server._ratelog import RateLimitedLog
from qr_entropy_server._service import EntropyServicer, ServiceLimits
from qr_entropy_server._wire import (
    INT32_MAX,
    INT32_MIN,
    ResponseEncoder,
    out_of_range_bytes_needed,
    parse_request,
)
from qr_entropy_server.proto import entropy_service_pb2 as pb2
from qr_entropy_server.proto import entropy_service_pb2_grpc as pb2_grpc

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
SEQUENCE_IDS = [0, 1, -1, 127, 128, INT64_MIN, INT64_MAX]
STAMPS = [0, 1, time.time_ns(), INT64_MAX, -5]
DEVICE_IDS = ["", "urandom@host", "Gerät-ß✓ 量子"]
DATA = [b"", b"\x00", b"\xff" * 20_480, bytes(range(256)) * 4096]  # the last is 1 MiB


def test_encoded_responses_equal_the_stubs_serialisation_and_parse_back() -> None:
    for device_id in DEVICE_IDS:
        # One encoder for every case, as in the server: no field leaks into the next.
        encoder = ResponseEncoder(device_id)
        cases = itertools.product(DATA, SEQUENCE_IDS, STAMPS, STAMPS[:3])
        for data, sequence_id, stamped, started in cases:
            wire = encoder.encode(data, sequence_id, stamped, started)
            expected = pb2.EntropyResponse(
                data=data,
                sequence_id=sequence_id,
                generation_timestamp_ns=stamped,
                device_id=device_id,
                read_started_ns=started,
            )
            assert wire == expected.SerializeToString(), (len(data), sequence_id, stamped)
            parsed = pb2.EntropyResponse.FromString(wire)
            assert (
                parsed.data,
                parsed.sequence_id,
                parsed.generation_timestamp_ns,
                parsed.device_id,
                parsed.read_started_ns,
            ) == (data, sequence_id, stamped, device_id, started)


def test_a_response_without_field_5_reads_as_before() -> None:
    """Field 5 is new: an old peer's bytes parse with it 0, and 0 leaves it off the wire."""
    old = ResponseEncoder("dev").encode(b"abc", 7, 123)
    assert (
        old
        == pb2.EntropyResponse(
            data=b"abc", sequence_id=7, generation_timestamp_ns=123, device_id="dev"
        ).SerializeToString()
    )
    assert pb2.EntropyResponse.FromString(old).read_started_ns == 0


def _stub_view(payload: bytes) -> tuple[int, int] | str:
    """What the generated parser plus the int32 scan make of ``payload``."""
    try:
        request = pb2.EntropyRequest.FromString(payload)
    except DecodeError:
        return "malformed"
    if out_of_range_bytes_needed(payload) is not None:
        return "out of range"
    return request.bytes_needed, request.sequence_id


@pytest.mark.parametrize(
    ("bytes_needed", "sequence_id"),
    [
        (20_480, 7),
        (1, 0),
        (0, 0),
        (0, 5),
        (INT32_MAX, INT64_MAX),
        (INT32_MIN, INT64_MIN),
        (-1, -1),
    ],
)
def test_the_usual_requests_are_read_by_hand_as_the_stubs_read_them(
    bytes_needed: int, sequence_id: int
) -> None:
    payload = pb2.EntropyRequest(
        bytes_needed=bytes_needed, sequence_id=sequence_id
    ).SerializeToString()
    assert parse_request(payload) == (bytes_needed, sequence_id) == _stub_view(payload)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\x08\x80\x00\x10\x80\x80\x00", (0, 0)),  # varints longer than needed
        (b"\x10" + b"\xff" * 9 + b"\x7f", (0, -1)),  # bits above 64 are dropped
        (b"\x08\x05\x10\x01\x08\x07\x10\x02", (7, 2)),  # repeated: the last wins
        (b"", (0, 0)),
    ],
)
def test_odd_but_valid_requests_are_read_as_the_stubs_read_them(
    payload: bytes, expected: tuple[int, int]
) -> None:
    assert parse_request(payload) == expected == _stub_view(payload)


@pytest.mark.parametrize(
    "payload",
    [
        b"\x08\x85\x80\x80\x80\x10",  # 2**32 + 5: the runtime would keep 5
        b"\x08\x80\x80\x80\x80\x08",  # 2**31
        b"\x08\xff\xff\xff\xff\xef\xff\xff\xff\xff\x01",  # -(2**31) - 1
        b"\x08\x80",  # cut short
        b"\x08" + b"\xff" * 10 + b"\x01",  # varint of 11 bytes
        b"\x18\x01",  # a field the request does not have
        b"\x0a\x01\x00",  # field 1 with another wire type
        b"\x88\x00\x05",  # field 1's key written in two bytes
        b"\x08\x05\x00",  # field number 0
    ],
)
def test_anything_unusual_is_left_to_the_generated_parser(payload: bytes) -> None:
    assert parse_request(payload) is None


def test_the_hand_reader_never_disagrees_with_the_stubs_on_random_requests() -> None:
    """2,000 seeded random byte strings built from request-like pieces.

    Deterministic (seed 12), so no false failures: wherever the hand reader
    answers, the generated parser must give the same two values and the range
    scan must find nothing; it must answer every canonical in-range request.
    """
    rng = random.Random(12)
    pieces = [b"\x08", b"\x10", b"\x18", b"\x00", b"\x80", b"\xff", b"\x01", b"\x7f", b"\x0a"]
    answered = 0
    for _ in range(2_000):
        payload = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
        fast = parse_request(payload)
        if fast is not None:
            answered += 1
            assert fast == _stub_view(payload), payload.hex()
    assert answered > 50  # the corpus reaches the hand reader's answers, not only refusals
    for _ in range(2_000):
        canonical = pb2.EntropyRequest(
            bytes_needed=rng.randint(INT32_MIN, INT32_MAX),
            sequence_id=rng.randint(INT64_MIN, INT64_MAX),
        ).SerializeToString()
        assert parse_request(canonical) == _stub_view(canonical), canonical.hex()


def test_a_real_server_echoes_extreme_sequence_ids_on_both_methods(
    start_server: Callable[..., EntropyServer],
    channel_to: Callable[[EntropyServer], grpc.Channel],
) -> None:
    stub = pb2_grpc.EntropyServiceStub(channel_to(start_server()))
    ids = [0, -1, INT64_MIN, INT64_MAX]
    for sequence_id in ids:
        reply = stub.GetEntropy(pb2.EntropyRequest(bytes_needed=3, sequence_id=sequence_id))
        assert (len(reply.data), reply.sequence_id) == (3, sequence_id)
        assert reply.device_id.startswith("urandom@")
    replies = list(
        stub.StreamEntropy(iter([pb2.EntropyRequest(bytes_needed=1, sequence_id=s) for s in ids]))
    )
    assert [r.sequence_id for r in replies] == ids
    assert all(len(r.data) == 1 and r.generation_timestamp_ns > 0 for r in replies)


class _Flaky:
    """Fails while ``failing`` is set; never blocks, so it runs on the loop."""

    never_blocks = True
    device_id = "flaky"

    def __init__(self) -> None:
        self.failing = False

    def generate(self, n: int) -> bytes:
        if self.failing:
            raise OSError("device unplugged")
        return bytes(n)

    def close(self) -> None:
        pass


def test_backend_health_is_reported_on_each_change_only() -> None:
    backend = _Flaky()
    pool = BackendPool(backend, 1)
    reported: list[bool] = []
    servicer = EntropyServicer(
        pool,
        backend.device_id,
        ServiceLimits(max_bytes=64, max_streams=1, stream_idle_timeout_s=None, backend_timeout_s=5),
        RateLimitedLog(logging.getLogger("test-wire-health")),
        reported.append,
    )

    async def outcomes() -> list[bool]:
        results = []
        for failing in (False, False, True, True, False, False):
            backend.failing = failing
            results.append(await servicer.probe())
        return results

    try:
        assert asyncio.run(outcomes()) == [True, True, False, False, True, True]
    finally:
        pool.shutdown()
    assert reported == [True, False, True]
