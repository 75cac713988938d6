"""Fixtures of the qr-entropy-server tests: in-process servers on free ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import pytest

from qr_entropy_server import EntropyServer, ServerOptions, UrandomBackend
from qr_entropy_server._backends import EntropyBackend

ServerFactory = Callable[..., EntropyServer]


@pytest.fixture
def start_server() -> Iterator[ServerFactory]:
    """Start ``EntropyServer(backend, ServerOptions(**options))``; stopped at teardown."""
    servers: list[EntropyServer] = []

    def factory(backend: EntropyBackend | None = None, **options: object) -> EntropyServer:
        options.setdefault("address", "127.0.0.1:0")
        server = EntropyServer(backend or UrandomBackend(), ServerOptions(**options))  # type: ignore[arg-type]
        server.start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop(0)


@pytest.fixture
def channel_to() -> Iterator[Callable[[EntropyServer], grpc.Channel]]:
    """Open an insecure channel to a server; closed at teardown."""
    channels: list[grpc.Channel] = []

    def factory(server: EntropyServer) -> grpc.Channel:
        channel = grpc.insecure_channel(server.address)
        channels.append(channel)
        return channel

    yield factory
    for channel in channels:
        channel.close()
