"""The spec's Approach B plugin, verbatim except for the import path."""

from __future__ import annotations

import os

from qr_entropy import EntropySource, register_entropy_source


class _Hardware:
    """Stands for the user's device driver in the spec's example."""

    def __init__(self) -> None:
        self.connected = True

    def read(self, n: int) -> bytes:
        return os.urandom(n)

    def disconnect(self) -> None:
        self.connected = False


my_hardware = _Hardware()


@register_entropy_source("my_source")
class MyEntropySource(EntropySource):
    @property
    def name(self) -> str:
        return "my_source"

    @property
    def is_available(self) -> bool:
        return True

    def get_random_bytes(self, n: int) -> bytes:
        # Your entropy generation logic here
        return my_hardware.read(n)

    def close(self) -> None:
        my_hardware.disconnect()
