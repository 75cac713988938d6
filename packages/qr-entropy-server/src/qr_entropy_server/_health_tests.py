"""Continuous health tests on every served block (NIST SP 800-90B, section 4.4).

Both tests watch the byte stream for the failures a broken noise source shows:
a stuck output (the same byte over and over) and a loss of entropy (one byte
value far more often than the declared min-entropy allows). They run against
a declared min-entropy per byte ``H``: with ``p = 2**-H`` the largest
probability of any byte value, the cutoffs are set so that a source that
delivers at least ``H`` bits per byte (independent samples) raises a false
alarm with probability at most ``2**-30`` per block of up to ``max_block``
bytes, split evenly between the two tests:

- **Repetition count.** ``C`` identical bytes in a row fail. In a block of
  ``N`` bytes, each of the ``N`` positions ends such a run with probability at
  most ``p**(C - 1)``, so ``C`` is the smallest value with
  ``N * p**(C - 1) <= 2**-31``.
- **Adaptive proportion.** The stream is cut into windows of ``W = 512``
  bytes; a window fails when its first byte occurs ``c`` or more times among
  the ``W - 1`` bytes after it (NIST's count ``B`` includes the first byte, so
  NIST's cutoff is ``c + 1``). A block completes at most ``ceil(N / W)``
  windows, so ``c`` is the smallest value with
  ``ceil(N / W) * P(Binomial(W - 1, p) >= c) <= 2**-31``.

Every comparison is exact: ``H`` is rounded down to a multiple of 1/64 (a lower
``H`` only lowers the false-alarm rate), ``p`` is replaced by a rational upper
bound with a 2**64 denominator (the binomial tail grows with ``p``), and the
tail is summed in integers. The bound actually reached is kept in
:class:`Cutoffs` (``false_alarm_log2``).

The tests are continuous across blocks, as the standard has them: the
repetition count carries the end of the previous block, and a window that a
block leaves unfinished is finished by the next one. The bytes a backend
discards between blocks are not seen, which changes nothing for independent
samples and keeps a stuck source failing on every block after the first.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass
from fractions import Fraction

from qr_entropy_server._errors import HealthTestError, ServerConfigError

__all__ = [
    "DEFAULT_MIN_ENTROPY",
    "RECOVERY_BLOCKS",
    "WINDOW",
    "ContinuousTests",
    "Cutoffs",
    "cutoffs",
]

DEFAULT_MIN_ENTROPY = 6.0
"""Declared min-entropy per byte (bits) when ``--min-entropy`` is not given."""
WINDOW = 512
"""Adaptive proportion window (NIST SP 800-90B: 512 for non-binary samples)."""
RECOVERY_BLOCKS = 3
"""After a failure, health stays NOT_SERVING until this many blocks in a row pass."""

_HALF_LOG2 = 31  # each test gets 2**-31: together at most 2**-30 per block
_STEPS = 64  # H is rounded down to a multiple of 1/64
_ONE = 1 << 64  # p is bounded by an integer over 2**64


@dataclass(frozen=True)
class Cutoffs:
    """The cutoffs for one declared min-entropy and largest block."""

    min_entropy: Fraction
    """H actually used: the declared value rounded down to a multiple of 1/64."""
    max_block: int
    """Largest block (bytes) the false-alarm bound holds for (``--max-bytes``)."""
    repetition: int
    """Identical bytes in a row that fail the repetition count test."""
    proportion: int
    """Occurrences of a window's first byte among the next 511 that fail the window."""
    repetition_log2: float
    """log2 of the repetition count test's false-alarm bound per block (<= -31)."""
    proportion_log2: float
    """log2 of the adaptive proportion test's false-alarm bound per block (<= -31)."""
    false_alarm_log2: float
    """log2 of the false-alarm bound per block of ``max_block`` bytes, both tests (<= -30)."""


def _p_numerator(steps: int) -> int:
    """Smallest integer ``x`` with ``x / 2**64 >= 2**(-steps / 64)``."""
    target = 1 << (64 * 64 - steps)  # (x / 2**64)**64 >= 2**-steps  <=>  x**64 >= target
    x: int = math.ceil(2.0 ** (64.0 - steps / 64.0)) + 2
    while x > 1 and pow(x - 1, 64) >= target:
        x -= 1
    while pow(x, 64) < target:
        x += 1
    return min(x, _ONE)


def _repetition_cutoff(steps: int, max_block: int) -> tuple[int, float]:
    """Smallest ``C`` with ``max_block * 2**(-H (C - 1)) <= 2**-31``, and log2 of that bound."""
    k = 1
    # max_block * 2**-(steps k / 64) <= 2**-31  <=>  (max_block * 2**31)**64 <= 2**(steps k)
    lhs = pow(max_block << _HALF_LOG2, _STEPS)
    while lhs > 1 << (steps * k):
        k += 1
    return k + 1, math.log2(max_block) - steps * k / _STEPS


def _upper_tail(n: int, x: int) -> list[int]:
    """``tail[c] * 2**-(64 n) = P(Binomial(n, x / 2**64) >= c)`` for c = 0..n+1, as integers."""
    y = _ONE - x
    terms = [math.comb(n, j) * x**j * y ** (n - j) for j in range(n + 1)]
    tail = [0] * (n + 2)
    for j in range(n, -1, -1):
        tail[j] = tail[j + 1] + terms[j]
    return tail


@functools.lru_cache(maxsize=16)
def cutoffs(min_entropy: float, max_block: int) -> Cutoffs:
    """The cutoffs that keep false alarms at or below 2**-30 per block.

    Args:
        min_entropy: Declared min-entropy per byte in bits, 0 < H <= 8.
        max_block: Largest block in bytes (the server's ``--max-bytes``).

    Raises:
        ServerConfigError: ``min_entropy`` is below 1/64 or above 8 bits.
    """
    steps = math.floor(min_entropy * _STEPS)
    if not 1 <= steps <= 8 * _STEPS or max_block < 1:
        raise ServerConfigError(
            f"--min-entropy must be between 1/64 and 8 bits per byte, got {min_entropy}"
        )
    repetition, rct_bound = _repetition_cutoff(steps, max_block)
    n = WINDOW - 1
    windows = -(-max_block // WINDOW)
    tail = _upper_tail(n, _p_numerator(steps))
    scale = 1 << (64 * n)
    # windows * tail[c] / scale <= 2**-31  <=>  windows * tail[c] * 2**31 <= scale
    proportion = next(c for c in range(n + 2) if (windows * tail[c]) << _HALF_LOG2 <= scale)
    apt_bound = windows * tail[proportion] / scale
    apt_log2 = math.log2(apt_bound) if apt_bound else -math.inf
    return Cutoffs(
        min_entropy=Fraction(steps, _STEPS),
        max_block=max_block,
        repetition=repetition,
        proportion=proportion,
        repetition_log2=rct_bound,
        proportion_log2=apt_log2,
        false_alarm_log2=math.log2(2.0**rct_bound + apt_bound),
    )


class ContinuousTests:
    """The repetition count and adaptive proportion tests over a stream of blocks.

    :meth:`check` is thread-safe (one lock; the work is a few C-level passes
    over the block). State carries from block to block; after a failure the
    failing window restarts, and a stuck byte keeps failing the next blocks.

    Args:
        limits: From :func:`cutoffs`.
    """

    def __init__(self, limits: Cutoffs) -> None:
        self.limits = limits
        self._run_tail = b""  # the last C - 1 bytes seen (fewer at the start)
        self._partial = b""  # an unfinished window's bytes (< WINDOW)
        self._lock = threading.Lock()

    def check(self, block: bytes) -> None:
        """Pass ``block`` through both tests.

        Raises:
            HealthTestError: a test failed; the message names it, the value
                and the cutoff. The block must not be served.
        """
        with self._lock:
            self._repetition(block)
            self._proportion(block)

    def _repetition(self, block: bytes) -> None:
        limit = self.limits.repetition
        keep = limit - 1
        data = self._run_tail + block if self._run_tail else block
        self._run_tail = data[-keep:]
        if len(data) < limit:
            return
        # A run of C equal bytes holds a pair (a, a + 1) with a a multiple of
        # C - 1: compare those pairs at once (XOR of two big integers; a zero
        # byte is an equal pair), then look at the few candidates closely.
        after = data[1::keep]
        width = len(after)
        same = (
            int.from_bytes(data[0::keep][:width], "little") ^ int.from_bytes(after, "little")
        ).to_bytes(width, "little")
        pair = same.find(0)
        while pair >= 0:
            anchor = pair * keep
            value = data[anchor]
            at = data.find(bytes((value,)) * limit, max(0, anchor + 2 - limit), anchor + limit)
            if at >= 0:
                end = at + limit
                while end < len(data) and data[end] == value:
                    end += 1
                raise HealthTestError(
                    f"repetition count: byte 0x{value:02x} {end - at} times in a row "
                    f"(cutoff {limit} at {_bits(self.limits)})",
                    "repetition_count",
                )
            pair = same.find(0, pair + 1)

    def _proportion(self, block: bytes) -> None:
        data = self._partial + block if self._partial else block
        whole = len(data) - len(data) % WINDOW
        self._partial = data[whole:]
        if not whole:
            return
        cutoff = self.limits.proportion
        counts = list(
            map(
                data.count,
                data[0:whole:WINDOW],
                range(1, whole, WINDOW),
                range(WINDOW, whole + 1, WINDOW),
            )
        )
        if max(counts) < cutoff:
            return
        self._partial = b""
        window = next(i for i, count in enumerate(counts) if count >= cutoff)
        raise HealthTestError(
            f"adaptive proportion: byte 0x{data[window * WINDOW]:02x} {counts[window]} more "
            f"times in the {WINDOW - 1} bytes after it (cutoff {cutoff} at {_bits(self.limits)})",
            "adaptive_proportion",
        )


def _bits(limits: Cutoffs) -> str:
    return f"min-entropy {float(limits.min_entropy):g} bits/byte"
