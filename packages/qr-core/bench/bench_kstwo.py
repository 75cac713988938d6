"""Cost and accuracy of the finite-n KS p-value: where ``qr_core.analysis`` stops calling ``kstwo``.

For each n, at the D whose limit-law p-value is p, times ``scipy.stats.kstwo.sf(D, n)``
(median and minimum of ``--repeat`` calls; the n and p cells take turns, one call
each, so a slow spell of a shared machine falls on all of them alike), then prints
the relative error of Kolmogorov's limit law and of Vrbik's corrected argument
against ``kstwo`` at the same D. kstwo's cost depends on p: for n > 140 and
``n D^2 < 2.2`` (p above about 0.025) it takes a fast series, below that the exact
one-sided Smirnov sum, whose cost grows linearly in n. The cut-off printed last is
the largest n of the grid up to which the worst cell stays under ``--budget-ms``, by the
minima (the cost of a call on an otherwise idle machine) and by the medians (as the
machine is loaded now); ``KS_EXACT_MAX_N`` in ``qr_core/analysis/_ks.py`` is set from
the minima.

Usage: ``python packages/qr-core/bench/bench_kstwo.py [--repeat N] [--budget-ms MS]``
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import scipy  # type: ignore[import-untyped]
from scipy import special, stats

NS = (1_000, 2_000, 3_000, 4_000, 5_000, 6_000, 8_000, 10_000, 20_000)
PS = (0.5, 0.1, 0.05, 0.02, 0.01, 0.001, 1e-6)
ACCURACY_NS = (1_001, 2_001, 3_001, 4_001, 5_001, 10_000, 20_000, 100_000)
ACCURACY_PS = (0.5, 0.1, 0.05, 0.01, 0.001, 1e-4, 1e-6)


def vrbik(d: float, n: int) -> float:
    """Kolmogorov's limit at Vrbik's (2018) corrected argument."""
    t = math.sqrt(n) * d
    return float(special.kolmogorov(t + 1.0 / (6.0 * math.sqrt(n)) + (t - 1.0) / (4.0 * n)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9, help="timed calls per cell (9)")
    parser.add_argument("--budget-ms", type=float, default=10.0, help="cost allowed per call (10)")
    args = parser.parse_args()
    print(
        f"scipy {scipy.__version__}, {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    cells = [(n, p, float(stats.kstwobign.isf(p)) / math.sqrt(n)) for n in NS for p in PS]
    times: dict[tuple[int, float], list[float]] = {(n, p): [] for n, p, _ in cells}
    for _ in range(args.repeat):
        for n, p, d in cells:
            t0 = time.perf_counter()
            stats.kstwo.sf(d, n)
            times[n, p].append(1e3 * (time.perf_counter() - t0))
    print(f"\nkstwo.sf ms per call, median / min of {args.repeat}, at the D whose limit p is p")
    print(f"{'n':>8} " + " ".join(f"{'p=' + format(p, 'g'):>13}" for p in PS) + f" {'worst':>13}")
    cutoff = {"median": 0, "min": 0}
    within = {"median": True, "min": True}
    for n in NS:
        medians = [statistics.median(times[n, p]) for p in PS]
        minima = [min(times[n, p]) for p in PS]
        row = " ".join(f"{m:6.2f} /{low:5.2f}" for m, low in zip(medians, minima, strict=True))
        print(f"{n:>8} {row} {max(medians):6.2f} /{max(minima):5.2f}")
        for kind, worst in (("median", max(medians)), ("min", max(minima))):
            within[kind] = within[kind] and worst < args.budget_ms
            cutoff[kind] = n if within[kind] else cutoff[kind]
    print("\nrelative error against kstwo at the D whose limit p is p: limit law | Vrbik")
    print(f"{'n':>8} " + " ".join(f"{'p=' + format(p, 'g'):>21}" for p in ACCURACY_PS))
    for n in ACCURACY_NS:
        cols = []
        for p in ACCURACY_PS:
            d = float(stats.kstwobign.isf(p)) / math.sqrt(n)
            exact = float(stats.kstwo.sf(d, n))
            limit = float(special.kolmogorov(math.sqrt(n) * d))
            cols.append(f"{(limit - exact) / exact:+9.2e} |{(vrbik(d, n) - exact) / exact:+9.2e}")
        print(f"{n:>8} " + " ".join(cols))
    print(
        f"\ncut-off: kstwo up to n = {cutoff['min']:,} by the minima (the cost without "
        f"other load), {cutoff['median']:,} by the medians (this machine as loaded now); "
        f"worst cell under {args.budget_ms:g} ms"
    )


if __name__ == "__main__":
    main()
