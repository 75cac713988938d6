"""``--backend chardev``: the drain before every read, on a FIFO standing in for a card's FIFO."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from qr_entropy_server import ServerConfigError
from qr_entropy_server._backends import load_backend
from qr_entropy_server._chardev import CharDeviceBackend
from qr_entropy_server._errors import DeviceError
from qr_entropy_server._node import DeviceOptions
from qr_entropy_server.proto import entropy_service_pb2 as pb2
from qr_entropy_server.proto import entropy_service_pb2_grpc as pb2_grpc
from qr_entropy_server.testing import PACKET, WORD, StandInDevice, age_us, decode_words

Spawn = Callable[..., Any]
N = 20_480
GUARD_S = 60.0


def test_stale_bytes_in_the_fifo_are_drained_before_the_read(spawn: Spawn) -> None:
    """The writer fills the FIFO (64 KiB of old words) while nobody reads; none is served."""
    with StandInDevice(fifo=True) as device:
        server = spawn("--backend", "chardev", "--device", device.path, "--address", "127.0.0.1:0")
        with grpc.insecure_channel(server.address) as channel:
            stub = pb2_grpc.EntropyServiceStub(channel)
            stub.GetEntropy(pb2.EntropyRequest(bytes_needed=64), timeout=GUARD_S)
            for idle in (0.2, 2.0):
                time.sleep(idle)  # the FIFO fills up with words made before the request
                sent_us, sent_ns = time.monotonic_ns() // 1000, time.time_ns()
                reply = stub.GetEntropy(pb2.EntropyRequest(bytes_needed=N), timeout=GUARD_S)
                words = decode_words(reply.data)
                assert len(words) * WORD >= 0.9 * N
                stale = [stamp for _, stamp in words if age_us(stamp, sent_us) > 0]
                assert len(set(stale)) <= 1, stale  # one packet in flight at most
                assert len(stale) <= PACKET // WORD
                assert sent_ns <= reply.read_started_ns <= reply.generation_timestamp_ns
                assert reply.device_id == f"chardev:{device.path}"
        assert server.stop() == 0, server.stderr


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A FIFO and a descriptor that holds both of its ends (so it never reports EOF)."""
    path = str(tmp_path / "qrandom0")
    os.mkfifo(path)
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    yield path, fd
    os.close(fd)


def _backend(path: str, **options: Any) -> CharDeviceBackend:
    return CharDeviceBackend(DeviceOptions(path=path, timeout_s=5.0, **options))


def test_the_fill_level_says_how_much_to_drop(fifo: tuple[str, int], tmp_path: Path) -> None:
    path, fd = fifo
    level = tmp_path / "ready_count"
    os.write(fd, b"S" * 4000)  # measured before the request
    level.write_text("1000\n")  # 1,000 32-bit words are waiting, as the card says
    os.write(fd, b"F" * 100)  # arrived after the level was read: fresh
    backend = _backend(path, fill_level=str(level))
    assert backend.generate(100) == b"F" * 100
    backend.close()


def test_without_a_fill_level_the_drain_runs_until_empty(fifo: tuple[str, int]) -> None:
    path, fd = fifo
    backend = _backend(path)
    os.write(fd, b"S" * 60_000)
    backend._fd = backend._open(time.monotonic() + 5)  # opened, as after an earlier call
    dropped, empty = backend.drain(backend._fd, 1 << 20)
    assert (dropped, empty) == (60_000, True)
    backend.close()


def test_past_the_drain_limit_stale_bytes_are_read_and_a_warning_says_so(
    fifo: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    path, fd = fifo
    os.write(fd, b"S" * 10_000)
    backend = _backend(path, drain_limit=4096)
    with caplog.at_level(logging.WARNING):
        assert backend.generate(16) == b"S" * 16
    assert "still not empty after discarding --drain-limit=4096 bytes" in caplog.text
    backend.close()


def test_drain_limit_0_reads_what_is_there(fifo: tuple[str, int]) -> None:
    path, fd = fifo
    os.write(fd, b"abc")
    backend = _backend(path, drain_limit=0)
    assert backend.generate(3) == b"abc"
    backend.close()


def test_a_writer_that_goes_away_is_a_device_error_naming_the_node(tmp_path: Path) -> None:
    path = str(tmp_path / "qrandom0")
    os.mkfifo(path)
    backend = _backend(path)
    writer = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    backend._fd = backend._open(time.monotonic() + 5)
    os.close(writer)
    with pytest.raises(DeviceError, match=rf"chardev {path}: end of file"):
        backend.generate(8)
    assert backend._fd is None  # closed: the next call opens the path again


def test_a_regular_file_is_refused_at_start(tmp_path: Path) -> None:
    pool = tmp_path / "old-bytes.bin"
    pool.write_bytes(os.urandom(1024))
    for spec in ("chardev", "serial"):
        with pytest.raises(ServerConfigError, match="is not a character device"):
            load_backend(spec, DeviceOptions(path=str(pool)))


def test_a_missing_node_is_opened_when_it_appears(tmp_path: Path) -> None:
    path = str(tmp_path / "later")
    backend = _backend(path)
    with pytest.raises(DeviceError, match=rf"chardev {path}: cannot open: ENOENT"):
        backend.generate(8)
    os.mkfifo(path)
    writer = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    try:
        os.write(writer, b"x" * 8)  # drained: it was there before the call
        with pytest.raises(DeviceError, match="stalled: 0 of 8 bytes"):
            CharDeviceBackend(DeviceOptions(path=path, timeout_s=0.2)).generate(8)
    finally:
        os.close(writer)
