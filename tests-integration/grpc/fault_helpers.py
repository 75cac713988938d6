"""What the fault-server tests share: types and the freshness check."""

from __future__ import annotations

from collections.abc import Callable

from qr_entropy import EntropyConfig, EntropyFetch

N = 4096
"""Bytes per fetch in these tests."""
Config = Callable[..., EntropyConfig]
Expected = Callable[[int, int], bytes]


def assert_fresh(fetch: EntropyFetch, expected: Expected) -> None:
    """The bytes are the ones the fault server made for this fetch's own request."""
    assert fetch.sequence_id is not None
    assert fetch.data == expected(fetch.sequence_id, len(fetch.data))
