"""The ``qr-entropy`` command: ``check``, ``calibrate``, ``sources`` and ``settings``.

Exit status of ``check``: 0 when every test passes at ``--alpha``, 1 when a
test fails, 2 when the source cannot be built or a fetch fails (and for
usage errors). With ``QR_CALIBRATION_PATH`` set, ``check`` tests drift from the
calibration instead of the ideal null. ``calibrate`` exits 0, or 2 on an error.
``--arm NAME`` (both commands) uses one experiment arm of ``QR_SOURCES``: the
arm's settings over the top-level ones, as the engine builds the arm, and for
``check`` the arm's own ``calibration_path`` (arms never inherit
``QR_CALIBRATION_PATH``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from qr_core import Calibration, QRCoreError, load_calibration
from qr_entropy._arms import load_sources
from qr_entropy._calibrate import AmplifierSettings, run_calibration
from qr_entropy._check import run_check
from qr_entropy._check_text import render_check
from qr_entropy._config import EntropyConfig
from qr_entropy._device_binding import (
    blocks_for_tokens,
    check_output,
    drawing_estimate,
    refuse_conflicting_settings,
    write_calibration,
)
from qr_entropy._exceptions import ConfigError, QREntropyError
from qr_entropy._registry import available_sources
from qr_entropy.settings import settings_table

__all__ = ["main"]

EXIT_OK = 0
EXIT_TEST_FAILED = 1
EXIT_ERROR = 2


# The most bytes one fetch may ask for: what one gRPC request may carry
# (QR_GRPC_MAX_REQUEST_BYTES's bound) and far more than any token needs.
MAX_CHECK_BYTES = 1 << 30


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (and exit status 2), not the usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def _byte_count(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_CHECK_BYTES:
        raise argparse.ArgumentTypeError(f"must be <= {MAX_CHECK_BYTES}, got {value}")
    return value


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
    parser = _Parser(
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
    _add_source_or_arm(check, "test")
    check.add_argument(
        "--bytes",
        type=_byte_count,
        default=None,
        help="bytes per fetch (default 20480, or the sample_count of the calibration)",
    )
    check.add_argument(
        "--samples", type=_at_least_two, default=100, help="number of fetches (default 100)"
    )
    check.add_argument(
        "--alpha", type=_alpha, default=0.01, help="significance level per test (default 0.01)"
    )
    check.add_argument("--json", action="store_true", help="print one JSON object")
    _add_calibrate(commands)
    commands.add_parser("sources", help="list the available source names")
    commands.add_parser("settings", help="print the QR_* settings of qr-entropy as Markdown")
    return parser


def _add_calibrate(commands: Any) -> None:
    calibrate = commands.add_parser(
        "calibrate",
        help="measure the configured device's statistic and write a calibration file",
        description="Draws blocks of QR_SAMPLE_COUNT bytes (one fetch each) from the "
        "configured source (QR_* settings, no fallback) and writes the mean and standard "
        "deviation of QR_SIGNAL_AMPLIFIER_TYPE's statistic with their standard errors and "
        "covariance, the byte histogram, the bit bias, the lag-1 autocorrelation, the time "
        "span, the device binding (the device_id the source reported, source type, address, "
        "sample_count, amplifier) and the SHA-256 of the content, as JSON. Point "
        "QR_CALIBRATION_PATH at the file. Standard error of the calibrated mean, in units of "
        "z: 1/sqrt(blocks): 1,000 blocks 0.032, 10,000 0.010, 100,000 0.0032. --for-tokens T "
        "asks for the blocks an experiment of T tokens per arm needs (B >= 11.93 T for one "
        "calibrated arm at the defaults: at most 2 points of power lost) and says how long "
        "drawing takes at the rate measured in the first seconds. Run it before and after a "
        "run, into two files, and compare them with qr-analyze drift.",
    )
    size = calibrate.add_mutually_exclusive_group(required=True)
    size.add_argument("--blocks", type=_at_least_four, help="blocks to draw")
    size.add_argument(
        "--for-tokens",
        type=_positive_int,
        metavar="T",
        help="draw the blocks the plan asks for, for T tokens per arm",
    )
    calibrate.add_argument("--output", required=True, help="calibration file to write")
    calibrate.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    _add_source_or_arm(calibrate, "calibrate")
    calibrate.add_argument(
        "--amplifier", help="amplifier to calibrate (default: QR_SIGNAL_AMPLIFIER_TYPE)"
    )
    calibrate.add_argument(
        "--sample-count", type=_positive_int, help="bytes per block (default: QR_SAMPLE_COUNT)"
    )
    plan = calibrate.add_argument_group("the plan behind --for-tokens")
    plan.add_argument(
        "--calibrated-arms",
        type=int,
        choices=(1, 2),
        default=1,
        help="arms with their own calibration (1: against an exact or same-calibration "
        "control; 2: two calibrated arms)",
    )
    plan.add_argument(
        "--max-power-loss",
        type=float,
        default=0.02,
        help="points of power the calibration may cost (0.02)",
    )
    plan.add_argument("--alpha", type=_alpha, default=0.01, help="the plan's level (0.01)")
    plan.add_argument("--power", type=_alpha, default=0.8, help="the plan's power (0.8)")


def _add_source_or_arm(command: argparse.ArgumentParser, verb: str) -> None:
    which = command.add_mutually_exclusive_group()
    which.add_argument("--source", help="source name (default: QR_ENTROPY_SOURCE_TYPE)")
    which.add_argument(
        "--arm",
        metavar="NAME",
        help=f"{verb} this experiment arm of QR_SOURCES (its settings over the top-level "
        "ones; check: its own calibration_path, never QR_CALIBRATION_PATH)",
    )


def _entropy_config(arm: str | None) -> EntropyConfig:
    """The top-level settings, or those of the arm ``arm`` of ``QR_SOURCES``.

    Raises:
        ConfigError: ``QR_SOURCES`` is invalid, or names no arm ``arm`` (the
            message lists the configured arms).
    """
    config = EntropyConfig()
    if arm is None:
        return config
    arms = load_sources(config)
    if arm not in arms:
        configured = ", ".join(repr(a) for a in arms) or "none (QR_SOURCES is unset)"
        raise ConfigError(f"--arm {arm!r} is not an arm of QR_SOURCES; configured: {configured}")
    return arms[arm]


def _calibration(config: EntropyConfig, arm: str | None) -> Calibration | None:
    """The calibration ``check`` tests drift from: the arm's, or ``QR_CALIBRATION_PATH``'s."""
    if not config.calibration_path:
        return None
    try:
        return load_calibration(config.calibration_path)
    except QRCoreError as exc:
        where = f"QR_SOURCES: arm {arm!r}: calibration_path" if arm else "QR_CALIBRATION_PATH"
        raise ConfigError(f"{where}: {exc}") from None


def _at_least_four(text: str) -> int:
    value = int(text)
    if value < 4:
        raise argparse.ArgumentTypeError(f"must be >= 4 (a standard error needs them), got {value}")
    return value


def _progress_printer() -> Callable[[int, int], None] | None:
    if not sys.stderr.isatty():
        return None
    last = [-1]

    def show(done: int, total: int) -> None:
        percent = 100 * done // total
        if percent != last[0] or done == total:
            last[0] = percent
            end = "\n" if done == total else ""
            print(f"\rcalibrate: {done}/{total} blocks ({percent}%)", end=end, file=sys.stderr)

    return show


def _calibrate(args: argparse.Namespace) -> int:
    def estimate(done: int, seconds: float) -> None:
        if args.for_tokens is not None and seconds > 0:
            rate = done * sample_count / seconds
            print(f"calibrate: {drawing_estimate(blocks, sample_count, rate)}", flush=True)

    try:
        settings = AmplifierSettings()
        sample_count = args.sample_count or settings.sample_count
        blocks = args.blocks
        if args.for_tokens is not None:
            blocks = blocks_for_tokens(
                args.for_tokens,
                calibrated_arms=args.calibrated_arms,
                max_power_loss=args.max_power_loss,
                alpha=args.alpha,
                power=args.power,
            )
            print(
                f"calibrate: {args.for_tokens:,} tokens per arm, {args.calibrated_arms} "
                f"calibrated arm(s), at most {100 * args.max_power_loss:g} points of power "
                f"{args.power:g} at alpha {args.alpha:g} lost: {blocks:,} blocks "
                f"(B/T = {blocks / args.for_tokens:.3g})",
                flush=True,
            )
        output = check_output(args.output, force=args.force)
        calibration = run_calibration(
            _entropy_config(args.arm),
            blocks=blocks,
            amplifier=args.amplifier or settings.signal_amplifier_type,
            sample_count=sample_count,
            source_name=args.source,
            progress=_progress_printer(),
            on_rate=estimate,
        )
        write_calibration(calibration, output)
    except (QREntropyError, ValueError, OSError) as exc:
        print(f"qr-entropy calibrate: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    c = calibration
    offset = (c.mean - c.null_mean) / c.null_std
    print(
        f"wrote {args.output}: {c.blocks} blocks x {c.sample_count} bytes from "
        f"{c.source_type} (device {c.device_id or '-'}) in {c.duration_s:.1f} s\n"
        f"{c.statistic} over {c.statistic_bytes} bytes: mean {c.mean:.3f} +- {c.mean_se:.3f} "
        f"(null {c.null_mean:.1f}, offset {offset:+.3f} in z), std {c.std:.3f} +- "
        f"{c.std_se:.3f} (null {c.null_std:.3f})\n"
        f"bit bias {c.bit_bias:+.6f}, lag-1 autocorrelation {c.lag1_autocorrelation:+.4f}\n"
        f"sha256 {c.sha256}"
    )
    return EXIT_OK


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
    if args.command == "calibrate":
        return _calibrate(args)
    if args.source is not None and not args.source.strip():
        # An empty name would silently mean the configured source.
        print(
            "qr-entropy check: --source is empty; give one of: " + ", ".join(available_sources()),
            file=sys.stderr,
        )
        return EXIT_ERROR
    try:
        config = _entropy_config(args.arm)
        calibration = _calibration(config, args.arm)
        settings = AmplifierSettings()
        where = (
            f"QR_SOURCES: arm {args.arm!r}: calibration_path"
            if args.arm
            else ("QR_CALIBRATION_PATH")
        )
        if calibration is not None:
            refuse_conflicting_settings(
                calibration,
                explicit=set(settings.model_fields_set),
                amplifier=settings.signal_amplifier_type,
                sample_count=settings.sample_count,
                where=f"{where} ({calibration.sha256[:12]})",
            )
        default_bytes = 20480 if calibration is None else calibration.sample_count
        report = run_check(
            config,
            source_name=args.source,
            bytes_per_fetch=args.bytes or default_bytes,
            fetches=args.samples,
            alpha=args.alpha,
            calibration=calibration,
            sample_count=settings.sample_count,
            calibration_where=where,
        )
    except (QREntropyError, ValueError) as exc:
        print(f"qr-entropy check: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(
        json.dumps(report.to_dict(), indent=2, default=str) if args.json else render_check(report)
    )
    return EXIT_OK if report.passed else EXIT_TEST_FAILED


if __name__ == "__main__":
    sys.exit(main())
