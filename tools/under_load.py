"""Run pytest while CPU-bound processes keep the machine's cores busy.

Tests whose outcome depends on timing (deadlines, timeouts, recovery after a
restart) must hold on a loaded machine, as CI's or a developer's often is. This
starts ``--burners`` processes (default 2) that each spin on one core
(``python -c "while 1: pass"``), runs pytest with the given arguments in the
same interpreter, and always stops the burners afterwards, whether pytest
passed, failed or was interrupted. The exit status is pytest's.

Usage (see ``hatch.toml``)::

    hatch run test-under-load                      # the whole suite, as `hatch run test`
    hatch run test-under-load tests-integration/grpc -x
    python tools/under_load.py --burners 3 -- packages/qr-entropy/tests
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType

# With no pytest arguments: what `hatch run test` runs.
DEFAULT_ARGS = ("packages", "tests-integration", "--durations=25")
BURN = "while 1: pass"


def _stop(burners: Sequence[subprocess.Popen[bytes]]) -> None:
    for proc in burners:
        if proc.poll() is None:
            proc.kill()
    for proc in burners:
        proc.wait(10)


class _TerminatedError(Exception):
    """SIGTERM arrived (a CI runner stopping the job)."""


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _TerminatedError


def _end(pytest: subprocess.Popen[bytes], interrupt: bool) -> None:
    """Let pytest run its teardowns (the servers the tests started), then make sure it ended."""
    if interrupt:
        pytest.send_signal(signal.SIGINT)  # pytest stops as on Ctrl-C, teardowns included
    try:
        pytest.wait(60)
    except subprocess.TimeoutExpired:
        pytest.kill()
        pytest.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """Start the burners, run pytest with the remaining arguments, stop the burners."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument(
        "--burners", type=int, default=2, help="CPU-bound processes beside the tests (2)"
    )
    args, pytest_args = parser.parse_known_args(argv)
    if pytest_args[:1] == ["--"]:
        pytest_args = pytest_args[1:]
    if args.burners < 0:
        parser.error(f"--burners must be >= 0, got {args.burners}")
    # SIGTERM ends the run as Ctrl-C does: pytest's teardowns, then the burners stopped.
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    # A shell starts a background job with SIGINT ignored, which its children would
    # inherit: with a handler here, pytest starts with SIGINT as usual (KeyboardInterrupt).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    burners: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(args.burners):
            burners.append(subprocess.Popen([sys.executable, "-c", BURN]))
        print(
            f"under load: {args.burners} CPU burner(s) running (pids "
            f"{', '.join(str(p.pid) for p in burners) or '-'})",
            flush=True,
        )
        pytest = subprocess.Popen([sys.executable, "-m", "pytest", *(pytest_args or DEFAULT_ARGS)])
        try:
            return pytest.wait()
        except _TerminatedError:
            _end(pytest, interrupt=True)
            return 143
        except KeyboardInterrupt:
            _end(pytest, interrupt=False)  # Ctrl-C reached pytest too
            return 130
    finally:
        _stop(burners)
        print(f"under load: {len(burners)} CPU burner(s) stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
