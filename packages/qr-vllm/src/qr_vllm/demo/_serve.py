"""``python -m qr_vllm.demo --serve``: ``vllm serve`` with the processor, and what to try.

vLLM's output goes to the demo's log file unless ``-v`` is given. The demo
waits until the server lists the model (``GET /v1/models``, which answers
only once the engine is ready) and then prints, last, a ``curl`` command to
try. Ctrl-C (SIGINT) or SIGTERM stops the server: the demo forwards SIGINT to
it, vLLM's clean shutdown, and waits for it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TextIO

from qr_vllm.demo._console import log_tail

__all__ = ["serve"]

_POLL_S = 0.5


def _lists_model(port: int, model: str) -> bool:
    """Whether a server on ``port`` answers ``/v1/models`` with ``model``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as reply:
            listed = json.load(reply).get("data", [])
    except (OSError, ValueError):  # not listening yet, starting, or not a vLLM server
        return False
    return any(isinstance(m, dict) and m.get("id") == model for m in listed)


def _hint(model: str, port: int) -> str:
    return (
        "Then try:\n"
        f"  curl http://127.0.0.1:{port}/v1/chat/completions \\\n"
        "    -H 'Content-Type: application/json' \\\n"
        f'    -d \'{{"model": "{model}", "messages": [{{"role": "user", "content": '
        '"Tell me about the sea."}], "max_tokens": 48, '
        '"vllm_xargs": {"qr_top_k": 20, "qr_request_tag": "demo"}}\''
    )


def serve(
    model: str,
    *,
    max_model_len: int | None,
    port: int,
    log_path: Path | None,
    say: Callable[[str], None],
    console: TextIO,
) -> int:
    """Run ``vllm serve`` until it is stopped.

    Args:
        model: The model to serve.
        max_model_len: For the two models built locally: eager mode and this
            context length (``None``: vLLM's defaults).
        port: The port on 127.0.0.1.
        log_path: Where vLLM's output goes (``None``: the terminal, ``-v``).
        say: Prints a progress line.
        console: The terminal, for errors.

    Returns:
        The exit status: 0 when stopped by Ctrl-C or SIGTERM, else the server's.
    """
    vllm_cmd = shutil.which("vllm", path=str(Path(sys.executable).parent)) or shutil.which("vllm")
    if vllm_cmd is None:
        print("error: the `vllm` command is not installed", file=console, flush=True)
        return 2
    argv = [vllm_cmd, "serve", model, "--host", "127.0.0.1", "--port", str(port)]
    if max_model_len is not None:
        argv += ["--enforce-eager", "--max-model-len", str(max_model_len)]
    say("Starting: " + " ".join(argv))
    where = "here" if log_path is None else f"to {log_path} (-v shows it here)"
    say(f"vLLM's output goes {where}; waiting until the server lists the model ...")
    record_path = os.environ.get("QR_RECORD_PATH")
    if record_path:
        say(
            f"records: under QR_RECORD_PATH={record_path}, each engine process writes its own "
            "series, records.<host>-p<pid>-dp<N>.jsonl; `qr-analyze` reads them all "
            "from the base path"
        )
    log = None if log_path is None else log_path.open("wb")
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        server.send_signal(signal.SIGINT)

    # A session of its own: Ctrl-C reaches the demo only, which forwards one SIGINT
    # (a second would cut vLLM's clean shutdown short).
    server = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT if log else None, start_new_session=True
    )
    previous = signal.signal(signal.SIGTERM, stop)
    started = time.perf_counter()
    try:
        while not _lists_model(port, model):
            if server.poll() is not None or stopping:
                break
            time.sleep(_POLL_S)
        else:
            say(f"Server ready in {time.perf_counter() - started:.1f} s; Ctrl-C stops it.")
            say(_hint(model, port))
        code = server.wait()
    except KeyboardInterrupt:
        stopping = True
        server.send_signal(signal.SIGINT)
        code = server.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if log is not None:
            log.close()
    if stopping:
        return 0
    print(f"error: vllm serve exited with status {code}", file=console)
    if log_path is not None:
        print(f"last lines of {log_path} (rerun with -v to see all):", file=console)
        print(log_tail(log_path), file=console, flush=True)
    return code or 1
