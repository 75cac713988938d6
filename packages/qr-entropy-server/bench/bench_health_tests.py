"""Cost and cutoffs of the continuous health tests (repetition count, adaptive proportion).

Prints the cutoffs and the false-alarm bound per block for each declared
min-entropy at ``--max-bytes`` 1 MiB, then the time the tests take per block
of 20,480 bytes (one token) and of 1 MiB, next to ``os.urandom`` for the same
size: best of 5 runs of N blocks each.

Usage: python bench/bench_health_tests.py [--blocks N]
"""

from __future__ import annotations

import argparse
import os
import timeit

from qr_entropy_server._health_tests import DEFAULT_MIN_ENTROPY, ContinuousTests, cutoffs

MIB = 1 << 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=2000)
    args = parser.parse_args()
    print("min-entropy  repetition cutoff  proportion cutoff (of 511)  false alarm per 1 MiB block")
    for h in (1.0, 2.0, 3.0, 4.0, 5.0, DEFAULT_MIN_ENTROPY, 7.0, 7.5, 8.0):
        c = cutoffs(h, MIB)
        print(
            f"{h:11g}  {c.repetition:17d}  {c.proportion:26d}  <= 2^{c.false_alarm_log2:.1f} "
            f"(repetition 2^{c.repetition_log2:.1f}, proportion 2^{c.proportion_log2:.1f})"
        )
    for size, count in ((20_480, args.blocks), (MIB, max(1, args.blocks // 50))):
        tests = ContinuousTests(cutoffs(DEFAULT_MIN_ENTROPY, MIB))
        blocks = [os.urandom(size) for _ in range(16)]
        at = iter(range(1 << 62))

        def check() -> None:
            tests.check(blocks[next(at) % 16])  # noqa: B023 - one loop pass at a time

        tested = min(timeit.repeat(check, number=count, repeat=5)) / count
        drawn = min(timeit.repeat(lambda: os.urandom(size), number=count, repeat=5)) / count  # noqa: B023
        print(
            f"{size:>9,d} bytes: health tests {tested * 1e6:8.1f} us per block "
            f"({tested / size * 1e9:.2f} ns/byte); os.urandom {drawn * 1e6:8.1f} us"
        )


if __name__ == "__main__":
    main()
