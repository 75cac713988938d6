"""The JSON Lines sink across process death: SIGKILL, SIGTERM and interpreter exit.

Each test runs ``helpers/writer.py`` in a real child process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qr_core.analysis.cli import EXIT_OK, main
from qr_core.records import read_records, verify_chain

WRITER = Path(__file__).parent / "helpers" / "writer.py"
_DEADLINE_S = 60.0  # generous: two shared cores; these are liveness bounds, not timings


def _start(path: Path, mode: str, n: int) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, str(WRITER), str(path), mode, str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    return child


def _complete_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _wait_for(condition: object, what: str) -> None:
    deadline = time.monotonic() + _DEADLINE_S
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


def test_sigkilled_writer_leaves_a_readable_prefix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "r.jsonl"
    child = _start(path, "flood", 200)
    try:
        # Never closed, yet flushed: the flush interval alone puts them on disk.
        _wait_for(lambda: _complete_lines(path) >= 200, "the first 200 records on disk")
        size = path.stat().st_size
        os.kill(child.pid, signal.SIGUSR1)
        _wait_for(lambda: path.stat().st_size > size + 200_000, "the flood to reach the file")
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL

    loaded = read_records(path)
    data = path.read_bytes()
    assert len(loaded.records) == data.count(b"\n") > 200
    assert [r.token_index for r in loaded.records] == list(range(len(loaded.records)))
    assert len(loaded.truncated_lines) == (0 if data.endswith(b"\n") else 1)

    # Killed: no seal, which reads as unsealed (a crash), not as tampering.
    report = verify_chain(path)
    assert not report.tampered
    assert [f.kind for f in report.findings] == ["unsealed"]

    assert main([str(path), "--json"]) == EXIT_OK
    assert f'"tokens": {len(loaded.records)}' in capsys.readouterr().out


def test_sigterm_flushes_then_terminates_as_before(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    child = _start(path, "term", 1000)
    child.send_signal(signal.SIGTERM)
    child.wait(_DEADLINE_S)
    assert child.returncode == -signal.SIGTERM
    assert [r.token_index for r in read_records(path).records] == list(range(1000))
    report = verify_chain(path)  # the SIGTERM path seals the series
    assert (report.findings, [s.sealed for s in report.series]) == ((), [True])


def test_sigterm_chains_to_the_previous_handler(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    child = _start(path, "chain", 1000)
    child.send_signal(signal.SIGTERM)
    child.wait(_DEADLINE_S)
    assert child.returncode == 7  # the previous handler ran
    assert len(read_records(path).records) == 1000


def test_sink_made_off_the_main_thread_is_flushed_at_exit(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    out = subprocess.run(
        [sys.executable, str(WRITER), str(path), "thread", "500"],
        capture_output=True,
        text=True,
        timeout=_DEADLINE_S,
        check=True,
    )
    assert out.stdout.strip() == "default"  # no handler could be installed there
    assert len(read_records(path).records) == 500
    assert [s.sealed for s in verify_chain(path).series] == [True]  # sealed at exit
