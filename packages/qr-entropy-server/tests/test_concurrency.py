"""Many streams against one real server process: idle streams, 256 clients, limits.

Each stream is a grpc.aio call from this test process; the server is the
``qr-entropy-server`` command in its own process. Speed is measured by
``benchmarks/bench_server_load.py``, not asserted here: these tests prove that
every call is answered and that limits end calls with the documented status.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qr_entropy_server.proto import entropy_service_pb2 as pb2

Launcher = Callable[..., Any]
STREAM = "/qr_entropy.EntropyService/StreamEntropy"
UNARY = "/qr_entropy.EntropyService/GetEntropy"
# Hang guard for one exchange; a healthy one takes milliseconds.
GUARD_S = 60.0
_Call = aio.StreamStreamCall[pb2.EntropyRequest, pb2.EntropyResponse]


def _streams(channel: aio.Channel) -> Callable[[], _Call]:
    return channel.stream_stream(  # type: ignore[return-value]
        STREAM,
        request_serializer=pb2.EntropyRequest.SerializeToString,
        response_deserializer=pb2.EntropyResponse.FromString,
    )


async def _exchange(call: _Call, n: int, sequence_id: int) -> pb2.EntropyResponse:
    await call.write(pb2.EntropyRequest(bytes_needed=n, sequence_id=sequence_id))
    reply = await asyncio.wait_for(call.read(), GUARD_S)
    assert isinstance(reply, pb2.EntropyResponse), reply
    return reply


@pytest.fixture(scope="module")
def server(launcher: Launcher) -> Iterator[Any]:
    process = launcher("--address", "127.0.0.1:0")
    yield process
    assert process.stop() == 0, process.stderr


def test_a_thousand_idle_streams_leave_unary_and_health_answering(server: Any) -> None:
    async def scenario() -> None:
        async with aio.insecure_channel(server.address) as channel:
            calls = [_streams(channel)() for _ in range(1000)]
            # One answer on each proves the server holds all 1,000 open at once.
            first = await asyncio.gather(*(_exchange(c, 8, i) for i, c in enumerate(calls)))
            assert [r.sequence_id for r in first] == list(range(1000))
            unary = channel.unary_unary(
                UNARY,
                request_serializer=pb2.EntropyRequest.SerializeToString,
                response_deserializer=pb2.EntropyResponse.FromString,
            )
            health = health_pb2_grpc.HealthStub(channel)
            for i in range(20):
                request = pb2.EntropyRequest(bytes_needed=64, sequence_id=i)
                reply = await unary(request, timeout=GUARD_S)
                assert (len(reply.data), reply.sequence_id) == (64, i)
                status = await health.Check(health_pb2.HealthCheckRequest(), timeout=GUARD_S)
                assert status.status == health_pb2.HealthCheckResponse.SERVING
            # Every idle stream is still alive and answers in order.
            again = await asyncio.gather(*(_exchange(c, 16, 5000 + i) for i, c in enumerate(calls)))
            assert all(len(r.data) == 16 for r in again)
            assert [r.sequence_id for r in again] == [5000 + i for i in range(1000)]
            for call in calls:
                await call.done_writing()
            codes = await asyncio.gather(*(c.code() for c in calls))
            assert set(codes) == {grpc.StatusCode.OK}

    asyncio.run(scenario())


def test_256_bidi_clients_are_all_served(server: Any) -> None:
    clients, rounds, size = 256, 4, 20480

    async def client(channel: aio.Channel, index: int) -> list[int]:
        call = _streams(channel)()
        seen = []
        for r in range(rounds):
            reply = await _exchange(call, size, index * rounds + r)
            assert len(reply.data) == size
            seen.append(reply.sequence_id)
        await call.done_writing()
        assert await call.code() is grpc.StatusCode.OK
        return seen

    async def scenario() -> list[list[int]]:
        channels = [aio.insecure_channel(server.address) for _ in range(4)]
        try:
            return await asyncio.gather(*(client(channels[i % 4], i) for i in range(clients)))
        finally:
            for channel in channels:
                await channel.close(None)

    served = asyncio.run(scenario())
    assert served == [[i * rounds + r for r in range(rounds)] for i in range(clients)]


def test_max_streams_refuses_one_more_with_a_message(spawn: Launcher) -> None:
    process = spawn("--address", "127.0.0.1:0", "--max-streams", "3")

    async def scenario() -> None:
        async with aio.insecure_channel(process.address) as channel:
            calls = [_streams(channel)() for _ in range(3)]
            await asyncio.gather(*(_exchange(c, 4, i) for i, c in enumerate(calls)))
            # Refused as it opens, before any request is read.
            extra = _streams(channel)()
            with pytest.raises(aio.AioRpcError) as refused:
                await asyncio.wait_for(extra.read(), GUARD_S)
            assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "3 open streams, its --max-streams limit" in str(refused.value.details())
            # Closing one frees its place.
            await calls[0].done_writing()
            assert await calls[0].code() is grpc.StatusCode.OK
            replacement = _streams(channel)()
            assert (await _exchange(replacement, 4, 10)).sequence_id == 10
            for call in (*calls[1:], replacement):
                await call.done_writing()

    asyncio.run(scenario())
    assert process.stop() == 0


def test_an_idle_stream_is_closed_with_the_reason(spawn: Launcher) -> None:
    process = spawn("--address", "127.0.0.1:0", "--stream-idle-timeout", "0.5")

    async def scenario() -> None:
        async with aio.insecure_channel(process.address) as channel:
            call = _streams(channel)()
            assert (await _exchange(call, 4, 1)).sequence_id == 1
            # Send nothing more: the server ends the stream on its own.
            with pytest.raises(aio.AioRpcError) as closed:
                await asyncio.wait_for(call.read(), GUARD_S)
            assert closed.value.code() is grpc.StatusCode.UNAVAILABLE
            assert "no request for 0.5 s (--stream-idle-timeout)" in str(closed.value.details())

    asyncio.run(scenario())
    assert process.stop() == 0
