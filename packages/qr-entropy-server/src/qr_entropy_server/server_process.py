"""A ``qr-entropy-server`` child process, started and awaited by its ready line.

For tests, benchmarks and supervisors that run the real command rather than an
in-process :class:`~qr_entropy_server.EntropyServer`::

    with start_server_process("--address", "127.0.0.1:0") as server:
        ...  # connect to server.address

The command prints ``qr-entropy-server listening on ADDRESS`` once it serves
(:data:`~qr_entropy_server.cli.READY_PREFIX`); that line, not a fixed wait, is
the readiness signal. Its output (stdout and stderr, in order) is kept, and
optionally copied to a log file, by a thread that reads it to the end, so the
process never blocks on a full pipe.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from .cli import READY_PREFIX

__all__ = ["ServerProcess", "ServerProcessError", "start_server_process"]

# A hang guard, not a timing: a healthy start takes about a second, and much
# longer only on a machine whose cores are all busy.
READY_LIMIT_S = 120.0


class ServerProcessError(RuntimeError):
    """The server process exited, or said nothing ready, before it served."""


class ServerProcess:
    """A running ``qr-entropy-server`` that has printed its ready line."""

    def __init__(
        self,
        proc: subprocess.Popen[str],
        address: str,
        lines: list[str],
        reader: threading.Thread,
    ) -> None:
        self.proc = proc
        self.address = address
        """The address the server printed: ``HOST:PORT`` or ``unix://PATH``."""
        self._lines = lines
        self._reader = reader

    def output(self) -> str:
        """What the process has printed so far (stdout and stderr, interleaved)."""
        return "".join(self._lines)

    def stop(self, sig: int = signal.SIGTERM, limit_s: float = 60.0) -> int:
        """Send ``sig`` and wait for the exit; kill it after ``limit_s`` (a hang guard).

        Afterwards :meth:`output` holds everything the process printed.

        Returns:
            The exit status (negative: the signal that ended it).
        """
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            status = self.proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            status = self.proc.wait()
        self._reader.join(timeout=limit_s)  # to the end of the output
        return status

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_server_process(
    *flags: str,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    limit_s: float = READY_LIMIT_S,
) -> ServerProcess:
    """Run ``python -m qr_entropy_server *flags`` and wait for its ready line.

    Args:
        flags: the command's flags (``--address``, ``--backend``, ...).
        env: variables added to this process's environment (``QR_SERVER_API_KEY``).
        log: a file to which all of the process's output is copied as it comes.
        limit_s: how long to wait for the ready line before giving up.

    Raises:
        ServerProcessError: the process exited, or printed no ready line within
            ``limit_s``; the message holds its output.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "qr_entropy_server", *flags],
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    found: list[str] = []
    settled = threading.Event()  # the ready line came, or the output ended

    def read_output() -> None:
        assert proc.stdout is not None
        with open(log or os.devnull, "w") as copy:
            for line in proc.stdout:
                lines.append(line)
                copy.write(line)
                copy.flush()
                if not found and line.startswith(READY_PREFIX):
                    found.append(line[len(READY_PREFIX) :].strip())
                    settled.set()
        settled.set()

    reader = threading.Thread(target=read_output, name="qr-entropy-server output", daemon=True)
    reader.start()
    settled.wait(limit_s)
    if not found:
        proc.kill()
        proc.wait()
        reader.join(timeout=10)  # the rest of the output
        raise ServerProcessError(
            f"qr-entropy-server {' '.join(flags)} was not ready "
            f"(exit status {proc.returncode}):\n{''.join(lines)}"
        )
    return ServerProcess(proc, found[0], lines, reader)
