"""The ``qr-entropy`` command: ``check``, ``sources`` and ``settings``.

Exit status of ``check``: 0 when every test passes at ``--alpha``, 1 when a
test fails, 2 when the source cannot be built or a fetch fails (and for
usage errors).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from qr_entropy._check import CheckReport, run_check
from qr_entropy._config import EntropyConfig
from qr_entropy._exceptions import QREntropyError
from qr_entropy._fields import settings_table
from qr_entropy._registry import available_sources

__all__ = ["main"]

EXIT_OK = 0
EXIT_TEST_FAILED = 1
EXIT_ERROR = 2


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _at_least_two(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be >= 2 (the KS test needs several u), got {value}")
    return value


def _alpha(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qr-entropy", description="Inspect and validate qr-sampler entropy sources."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "check",
        help="draw bytes from a source; print throughput, latency and statistical tests",
        description="Settings come from QR_* environment variables and .env. The source is "
        "tested bare, without fallback. Exit status: 0 all tests pass, 1 a test fails at "
        "--alpha, 2 the source fails.",
    )
    check.add_argument("--source", help="source name (default: QR_ENTROPY_SOURCE_TYPE)")
    check.add_argument(
        "--bytes", type=_positive_int, default=20480, help="bytes per fetch (default 20480)"
    )
    check.add_argument(
        "--samples", type=_at_least_two, default=100, help="number of fetches (default 100)"
    )
    check.add_argument(
        "--alpha", type=_alpha, default=0.01, help="significance level per test (default 0.01)"
    )
    check.add_argument("--json", action="store_true", help="print one JSON object")
    commands.add_parser("sources", help="list the available source names")
    commands.add_parser("settings", help="print the QR_* settings of qr-entropy as Markdown")
    return parser


def _render(report: CheckReport) -> str:
    lat = report.latency_ms
    lines = [
        f"source         {report.source} (device {report.device_id or '-'})",
        f"drawn          {report.fetches} fetches x {report.bytes_per_fetch} bytes "
        f"= {report.total_bytes} bytes in {report.seconds:.3f} s",
        f"throughput     {report.throughput_bytes_per_s / 1e6:.3f} MB/s",
        f"latency/fetch  p50 {lat['p50']:.3f} ms  p90 {lat['p90']:.3f} ms  "
        f"p99 {lat['p99']:.3f} ms  max {lat['max']:.3f} ms",
        f"tests          alpha {report.alpha} each, p-values by "
        f"{'scipy' if report.scipy else 'numpy fallback'}",
    ]
    for test in report.tests:
        verdict = "PASS" if test.passed(report.alpha) else "FAIL"
        lines.append(
            f"  {verdict}  {test.name:<16} stat {test.statistic:>12.4f}  "
            f"p {test.p_value:.4f}  n {test.n}  ({test.detail})"
        )
    lines.append(f"result         {'PASS' if report.passed else 'FAIL'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Args:
        argv: Arguments without the program name; default ``sys.argv[1:]``.

    Returns:
        The exit status.
    """
    args = _parser().parse_args(argv)
    if args.command == "sources":
        print("\n".join(available_sources()))
        return EXIT_OK
    if args.command == "settings":
        print(settings_table(EntropyConfig), end="")
        return EXIT_OK
    try:
        report = run_check(
            EntropyConfig(),
            source_name=args.source,
            bytes_per_fetch=args.bytes,
            fetches=args.samples,
            alpha=args.alpha,
        )
    except (QREntropyError, ValueError) as exc:
        print(f"qr-entropy check: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else _render(report))
    return EXIT_OK if report.passed else EXIT_TEST_FAILED


if __name__ == "__main__":
    sys.exit(main())
