"""``timing_noise``: CPU timing jitter, conditioned with SHA-512 (experimental).

How the bytes are formed, per call and nothing in advance:

1. Raw samples: ``d[i] = t[i+1] - t[i]`` where ``t`` are consecutive
   ``time.perf_counter_ns()`` readings taken in a tight Python loop. The
   workload between two readings is one interpreter loop iteration and one
   clock read; the variation of ``d`` comes from caches, branch predictors,
   interrupts, frequency scaling and other processes on the machine.
2. Health test and sizing: for each burst of raw samples (up to
   :data:`SAMPLES_PER_BURST`) the most-common-value min-entropy estimate ``H``
   (NIST SP 800-90B, section 6.3.1, which assumes independent samples) is
   computed. Below :data:`MIN_ENTROPY_PER_SAMPLE` the call raises
   :class:`EntropyUnavailableError` (a stuck or coarse clock). Otherwise each
   output block conditions ``k = max(1024, ceil(ENTROPY_MARGIN * 512 / H))``
   raw samples, so every 512-bit block carries at least twice as many
   estimated bits as it outputs.
3. Conditioning: each output block of 64 bytes is the SHA-512 digest of its
   ``k`` raw samples encoded as little-endian int64; the last block is
   truncated to the bytes requested.

Because of step 3, statistical tests on the output say little about the
entropy of the raw jitter; the estimate in step 2 (reported by
``health_check``) and the figures in the README are what describe the physics.
"""

from __future__ import annotations

import hashlib
import math
import time

import numpy as np

from qr_entropy._exceptions import EntropyUnavailableError
from qr_entropy._registry import register_entropy_source
from qr_entropy._source import EntropySource, check_byte_count

__all__ = [
    "ENTROPY_MARGIN",
    "MIN_ENTROPY_PER_SAMPLE",
    "MIN_SAMPLES_PER_BLOCK",
    "SAMPLES_PER_BURST",
    "TimingNoiseSource",
    "min_entropy_mcv",
    "raw_timing_deltas",
]

MIN_SAMPLES_PER_BLOCK = 1024
"""Fewest raw samples hashed into one 64-byte output block."""
SAMPLES_PER_BURST = 65_536
"""Most raw samples collected, and health-tested together, at a time."""
ENTROPY_MARGIN = 2.0
"""Estimated raw bits conditioned per output bit."""
MIN_ENTROPY_PER_SAMPLE = 0.125
"""Estimated min-entropy per raw sample (bits) below which a fetch fails: the block size
would exceed 8192 samples."""
_BLOCK_BYTES = hashlib.sha512().digest_size
_BLOCK_BITS = 8 * _BLOCK_BYTES
# z for the one-sided 99% upper confidence bound used by SP 800-90B.
_Z_99 = 2.576


def raw_timing_deltas(count: int) -> np.ndarray:
    """Collect ``count`` raw timing samples (consecutive ``perf_counter_ns`` deltas).

    Args:
        count: Number of samples, ``count >= 1``.

    Returns:
        int64 array of ``count`` deltas in nanoseconds.
    """
    clock = time.perf_counter_ns
    readings = [clock() for _ in range(count + 1)]
    return np.diff(np.asarray(readings, dtype=np.int64))


def min_entropy_mcv(samples: np.ndarray) -> float:
    """Most-common-value min-entropy estimate in bits per sample (SP 800-90B 6.3.1).

    Uses the 99% upper confidence bound on the most common value's
    probability; valid for independent, identically distributed samples and
    an overestimate for correlated ones.

    Args:
        samples: 1-D integer array with at least two samples.

    Returns:
        ``-log2(p_upper)``, between 0 and ``log2(len(samples))``.
    """
    n = samples.size
    _, counts = np.unique(samples, return_counts=True)
    p = float(counts.max()) / n
    p_upper = min(1.0, p + _Z_99 * math.sqrt(p * (1.0 - p) / (n - 1)))
    return -math.log2(p_upper)


@register_entropy_source("timing_noise")
class TimingNoiseSource(EntropySource):
    """CPU timing jitter, health-tested and SHA-512 conditioned (experimental).

    See the module docstring for exactly how the bytes are formed.
    """

    def __init__(self) -> None:
        self._last_min_entropy: float | None = None
        self._last_samples_per_block: int | None = None

    @property
    def name(self) -> str:
        """``"timing_noise"``."""
        return "timing_noise"

    @property
    def is_available(self) -> bool:
        """Always ``True``; a failing health test raises at fetch time instead."""
        return True

    @property
    def device_id(self) -> str:
        """``"perf_counter_ns-jitter/sha512"``."""
        return "perf_counter_ns-jitter/sha512"

    def get_random_bytes(self, n: int) -> bytes:
        """Collect fresh timing jitter and condition it into ``n`` bytes.

        Raises:
            ByteCountError: ``n`` is not a positive integer.
            EntropyUnavailableError: The raw samples fail the min-entropy health test.
        """
        check_byte_count(n)
        out = bytearray()
        while len(out) < n:
            blocks_left = -(-(n - len(out)) // _BLOCK_BYTES)
            raw = raw_timing_deltas(min(SAMPLES_PER_BURST, blocks_left * MIN_SAMPLES_PER_BLOCK))
            estimate = min_entropy_mcv(raw)
            self._last_min_entropy = estimate
            if estimate < MIN_ENTROPY_PER_SAMPLE:
                raise EntropyUnavailableError(
                    f"timing_noise health test failed: estimated min-entropy {estimate:.3f} "
                    f"bits per raw sample < required {MIN_ENTROPY_PER_SAMPLE}"
                )
            per_block = max(
                MIN_SAMPLES_PER_BLOCK, math.ceil(ENTROPY_MARGIN * _BLOCK_BITS / estimate)
            )
            self._last_samples_per_block = per_block
            if raw.size < per_block:
                raw = np.concatenate([raw, raw_timing_deltas(per_block - raw.size)])
            blocks = min(raw.size // per_block, blocks_left)
            encoded = raw[: blocks * per_block].astype("<i8").reshape(blocks, per_block)
            for row in encoded:
                out += hashlib.sha512(row.tobytes()).digest()
        return bytes(out[:n])

    def health_check(self) -> dict[str, object]:
        """Name, health, and the latest burst's min-entropy estimate and block size."""
        return {
            **super().health_check(),
            "min_entropy_per_sample": self._last_min_entropy,
            "samples_per_block": self._last_samples_per_block,
            "required_min_entropy_per_sample": MIN_ENTROPY_PER_SAMPLE,
        }

    def close(self) -> None:
        """Nothing to release."""
