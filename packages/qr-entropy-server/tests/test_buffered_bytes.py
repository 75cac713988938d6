"""``--max-buffered-bytes`` against 200 streams that ask for 1 MiB each and never read.

The server's memory under such clients is measured by
``bench/bench_unread_streams.py`` (figures in the README); here the cap itself:
exactly as many responses are held as fit, every other request is answered
RESOURCE_EXHAUSTED at once, and the server serves again once the clients leave.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
from grpc import aio

from qr_entropy_server.proto import entropy_service_pb2 as pb2
from qr_entropy_server.proto import entropy_service_pb2_grpc as pb2_grpc

Spawn = Callable[..., Any]
MIB = 1 << 20
CAP = 32 * MIB
STREAMS = 200
GUARD_S = 60.0  # hang guard


async def _never_read(address: str) -> tuple[list[grpc.StatusCode], list[str], str]:
    """Open the streams, wait for the refusals, check a unary call, leave; then retry."""
    channels = [aio.insecure_channel(address) for _ in range(4)]
    calls = []
    for i in range(STREAMS):
        call = pb2_grpc.EntropyServiceStub(channels[i % 4]).StreamEntropy()
        await call.write(pb2.EntropyRequest(bytes_needed=MIB, sequence_id=i))
        calls.append(call)
    ended = {asyncio.ensure_future(call.code()): call for call in calls}
    refused = STREAMS - CAP // MIB  # the held ones never end while their clients do not read
    done: set[asyncio.Future[grpc.StatusCode]] = set()
    pending = set(ended)
    async with asyncio.timeout(GUARD_S):
        while len(done) < refused:
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            done |= finished
    codes = [task.result() for task in done]
    details = [str(await ended[task].details()) for task in done]
    async with aio.insecure_channel(address) as channel:
        stub = pb2_grpc.EntropyServiceStub(channel)
        try:
            await stub.GetEntropy(pb2.EntropyRequest(bytes_needed=MIB), timeout=GUARD_S)
            full = "answered"
        except aio.AioRpcError as exc:
            full = str(exc.code())
        for call in calls:  # the clients leave
            call.cancel()
        for task in pending:
            task.cancel()
        for each in channels:
            await each.close()
        # Recovered once gRPC has let go of the held responses: poll for that state.
        async with asyncio.timeout(GUARD_S):
            while True:
                try:
                    reply = await stub.GetEntropy(pb2.EntropyRequest(bytes_needed=MIB))
                except aio.AioRpcError as exc:
                    if exc.code() is not grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                    await asyncio.sleep(0.1)  # a poll interval, not a wait for a time
                    continue
                assert len(reply.data) == MIB
                break
    return codes, details, full


def test_unsent_responses_are_capped_and_the_server_recovers(spawn: Spawn) -> None:
    server = spawn("--address", "127.0.0.1:0", "--max-buffered-bytes", str(CAP))
    codes, details, full = asyncio.run(_never_read(server.address))
    assert codes == [grpc.StatusCode.RESOURCE_EXHAUSTED] * (STREAMS - CAP // MIB)
    assert all(f"--max-buffered-bytes={CAP}" in text for text in details), details[:3]
    assert full == str(grpc.StatusCode.RESOURCE_EXHAUSTED)  # a unary call meets the same cap
    assert server.stop() == 0
    assert "Traceback" not in server.stderr, server.stderr
