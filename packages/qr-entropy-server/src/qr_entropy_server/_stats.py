"""What the server counts while it serves, and the device's measured rate.

:class:`ServerStats` holds plain integers, lists and dicts, updated on the
event loop only (one thread: no locks). Every key exists from the start, so
the metrics endpoint (:mod:`qr_entropy_server._prometheus`), which reads them
from its own thread at scrape time, copies them without ever seeing a dict
grow. Counting one answered request is one method call of a few additions, so
the server counts always, whether anything scrapes it or not.

The device's rate (the entropy budget) is bytes over the time the backend
spent reading them: the self-test at start (:func:`self_test_sizes`) and then
every read that served a request. Reads are summed into a window; once the
window holds :data:`FOLD_READ_NS` of reading, or :data:`FOLD_WALL_NS` of wall
time has passed, it is folded into two decayed sums whose weight halves every
:data:`HALF_LIFE_S` seconds, so the last minute weighs most. Health probes do
not count (their 512 bytes measure the call, not the device). A backend that
serves several reads at once (``thread_safe``) is measured per read, so for
it the figure is a lower bound.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass

import grpc

__all__ = [
    "FOLD_READ_NS",
    "FOLD_WALL_NS",
    "HALF_LIFE_S",
    "HEALTH_TESTS",
    "METHODS",
    "READ_BUCKETS_S",
    "ServerStats",
    "ServerView",
    "self_test_sizes",
]

METHODS = ("GetEntropy", "StreamEntropy")
"""The two methods, in the order of the ``method`` index the servicer passes."""
HEALTH_TESTS = ("repetition_count", "adaptive_proportion")
"""The continuous health tests, as counted (``HealthTestError.test``)."""
READ_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip
"""Upper bounds of the device-read histogram (seconds); one more bucket holds the rest."""
_BUCKETS_NS = tuple(round(b * 1e9) for b in READ_BUCKETS_S)
FOLD_READ_NS = 250_000_000
"""Fold the window into the rate once it holds this much reading (0.25 s)."""
FOLD_WALL_NS = 5_000_000_000
"""... or once this much wall time has passed since the last fold (5 s)."""
HALF_LIFE_S = 30.0
"""The weight of a folded window halves every this many seconds."""
SELF_TEST_READ_S = 0.2
"""The self-test reads until it has spent this long reading (or read its bytes)."""
SELF_TEST_BYTES = 1 << 20
"""... or read this many bytes."""
_SELF_TEST_BLOCK = 20_480  # one token's bytes at the default sample_count


def self_test_sizes(max_bytes: int) -> tuple[int, ...]:
    """The read sizes the self-test goes through, growing from 512 bytes to one token's block.

    The server stops early once it has read :data:`SELF_TEST_READ_S` seconds or
    :data:`SELF_TEST_BYTES` bytes, or when the next read would take more than a
    quarter of ``--backend-timeout`` at the rate seen so far.
    """
    block = min(_SELF_TEST_BLOCK, max_bytes)
    # 512 first: a health probe of that size has just answered within --backend-timeout.
    growing = tuple(n for n in (512, 2048, 8192) if n < block)
    return (*growing, *[block] * (SELF_TEST_BYTES // block))


class ServerStats:
    """Counters of one server; see the module docstring.

    Attributes:
        ok: Requests answered, by method index (:data:`METHODS`).
        refusals: Calls that ended with another status, by ``(method, code name)``.
        bytes_served: Payload bytes of every answered request.
        read_counts: Device reads per histogram bucket (not cumulative; the
            last bucket holds reads above :data:`READ_BUCKETS_S`).
        read_ns: Total time of those reads.
        health_test_failures: Blocks refused, by health test.
        bytes_per_second: The device's measured rate; 0.0 until measured.
        rate: The same, rounded to whole bytes per second (response field 6).
    """

    def __init__(self) -> None:
        self.ok = [0] * len(METHODS)
        self.refusals = {(m, code.name): 0 for m in METHODS for code in grpc.StatusCode}
        self.bytes_served = 0
        self.read_counts = [0] * (len(_BUCKETS_NS) + 1)
        self.read_ns = 0
        self.health_test_failures = dict.fromkeys(HEALTH_TESTS, 0)
        self.bytes_per_second = 0.0
        self.rate = 0
        self._window_bytes = 0
        self._window_ns = 0
        self._folded_at_ns = 0  # wall clock of the last fold; 0: never folded
        self._sum_bytes = 0.0
        self._sum_ns = 0.0

    def answered(self, method: int, n: int, started_ns: int, ended_ns: int) -> None:
        """One request answered with ``n`` bytes read from ``started_ns`` to ``ended_ns``.

        :meth:`read` written out: this runs once per request, on the event loop.
        """
        self.ok[method] += 1
        self.bytes_served += n
        took = ended_ns - started_ns
        if took < 0:
            took = 0
        self.read_counts[bisect.bisect_left(_BUCKETS_NS, took)] += 1
        self.read_ns += took
        self._window_bytes += n
        self._window_ns += took
        if self._window_ns >= FOLD_READ_NS or ended_ns - self._folded_at_ns >= FOLD_WALL_NS:
            self.fold(ended_ns)

    def read(self, n: int, started_ns: int, ended_ns: int) -> None:
        """One device read of ``n`` bytes (wall-clock stamps): histogram and rate."""
        took = ended_ns - started_ns
        if took < 0:  # the wall clock stepped back during the read
            took = 0
        self.read_counts[bisect.bisect_left(_BUCKETS_NS, took)] += 1
        self.read_ns += took
        self._window_bytes += n
        self._window_ns += took
        if self._window_ns >= FOLD_READ_NS or ended_ns - self._folded_at_ns >= FOLD_WALL_NS:
            self.fold(ended_ns)

    def fold(self, now_ns: int) -> None:
        """Fold the window into the decayed sums and update :attr:`bytes_per_second`."""
        if self._folded_at_ns:
            decay = 0.5 ** (max(0, now_ns - self._folded_at_ns) / 1e9 / HALF_LIFE_S)
            self._sum_bytes *= decay
            self._sum_ns *= decay
        self._sum_bytes += self._window_bytes
        self._sum_ns += self._window_ns
        self._window_bytes = self._window_ns = 0
        self._folded_at_ns = now_ns
        if self._sum_ns > 0:
            self.bytes_per_second = self._sum_bytes * 1e9 / self._sum_ns
            self.rate = int(self.bytes_per_second)

    def refused(self, method: int, code: grpc.StatusCode) -> None:
        """A call on ``method`` ended with ``code`` (not OK)."""
        self.refusals[METHODS[method], code.name] += 1

    @property
    def requests(self) -> dict[tuple[str, str], int]:
        """Requests by ``(method, status code name)``: each answered request counts
        under ``OK``; a call that ends with another status counts once under it."""
        counts = dict(self.refusals)
        for method, answered in zip(METHODS, list(self.ok), strict=True):
            counts[method, "OK"] = answered
        return counts

    def health_test_failed(self, test: str) -> None:
        """A block failed health test ``test`` (one of :data:`HEALTH_TESTS`)."""
        if test in self.health_test_failures:
            self.health_test_failures[test] += 1


@dataclass(frozen=True)
class ServerView:
    """What the collector reads from a running server."""

    stats: ServerStats
    """The servicer's counters."""
    healthy: Callable[[], bool]
    """Whether health is SERVING now."""
    streams: Callable[[], int]
    """Open streams now."""
    buffered: Callable[[], int]
    """Bytes held for unsent responses now."""
    device_id: str
    """The backend's device id."""
