"""Shared fixtures of the qr-entropy tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qr_entropy import EntropySource, EntropyUnavailableError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Run every test without inherited QR_* variables and in an empty directory (no .env)."""
    for key in list(os.environ):
        if key.upper().startswith("QR_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


class SwitchableSource(EntropySource):
    """A source whose availability the test switches (faults a real device cannot be told to
    produce on demand). Bytes are real ``os.urandom`` bytes."""

    def __init__(self, name: str = "switchable") -> None:
        self._name = name
        self.up = True
        self.error: Exception | None = None
        self.closed = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def is_available(self) -> bool:
        return self.up

    @property
    def device_id(self) -> str:
        return "switch-0"

    def get_random_bytes(self, n: int) -> bytes:
        if self.error is not None:
            raise self.error
        if not self.up:
            raise EntropyUnavailableError(f"{self._name} is switched off")
        return os.urandom(n)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def switchable() -> SwitchableSource:
    """A primary source the test can take down and bring back."""
    return SwitchableSource()


@pytest.fixture
def unused_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, read, released)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
