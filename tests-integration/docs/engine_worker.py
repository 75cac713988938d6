"""One process that runs the documented Python blocks and demo commands, one at a time.

Importing vLLM takes longer than starting the tiny model's engine, and the
documents hold about ten commands that start an engine. This worker imports
vLLM once (on the first request that needs it) and runs, on request:

* ``demo``: ``python -m qr_vllm.demo ARGS`` (what ``hatch run generate ARGS``
  runs), as :func:`qr_vllm.demo.main`, with the request's environment and
  working directory; each run starts its own engine, as the command does;
* ``python``: a Python block, in a namespace of its own. The engine a block
  asks for (``vllm.LLM(model=...)``, however often) is one engine on the
  suite's tiny model, whatever model and arguments the block names.

Every engine is closed with its request: the next one starts clean.

Requests come over a unix socket (one JSON line, with the caller's stdout and
stderr passed as file descriptors, so output goes straight to the caller);
the reply is one JSON line with the exit status. Usage:
``python engine_worker.py SOCKET TINY_MODEL``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import socket
import sys
import traceback
from collections.abc import Iterator
from typing import Any


def _tiny_llm(real: Any, tiny: str, made: list[Any]) -> Any:
    """A stand-in for ``vllm.LLM``: the block's one engine, on the suite's tiny model."""

    def factory(*args: object, **kwargs: object) -> Any:
        if not made:
            # The documented model and engine arguments are replaced: the tiny
            # model on CPU, eager, in this process.
            made.append(
                real(
                    model=tiny,
                    enforce_eager=True,
                    max_model_len=512,
                    distributed_executor_backend="uni",
                    seed=0,
                )
            )
        return made[0]

    return factory


@contextlib.contextmanager
def _as_caller(request: dict[str, Any], out: int, err: int) -> Iterator[None]:
    """Run with the caller's environment, directory, stdout and stderr; restore all after."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    env = dict(os.environ)
    cwd = os.getcwd()
    handlers = list(logging.getLogger().handlers)
    argv = sys.argv
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, out, err):
            os.close(fd)
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)
        logging.getLogger().handlers[:] = handlers
        sys.argv = argv


def _run_demo(argv: list[str]) -> int:
    from qr_vllm.demo import main

    sys.argv = ["python -m qr_vllm.demo", *argv]
    try:
        return main(argv)
    except SystemExit as exc:
        code = exc.code
        if isinstance(code, str):
            print(code, file=sys.stderr)
            return 1
        return int(code or 0)


def _run_python(code: str, tiny: str) -> int:
    engine = "vllm" in code
    made: list[Any] = []
    if engine:
        import vllm

        real = vllm.LLM
        vllm.LLM = _tiny_llm(real, tiny, made)  # type: ignore[misc]
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    sys.argv = ["-c"]
    try:
        exec(compile(code, "<doc block>", "exec"), {"__name__": "__main__"})
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except BaseException:
        traceback.print_exc()
        return 1
    finally:
        if engine:
            vllm.LLM = real  # type: ignore[misc]
            _close_processors()
    return 0


def _close_processors() -> None:
    """Flush and close what an engine of the last request left open."""
    if "qr_vllm" in sys.modules:
        import qr_vllm

        for processor in qr_vllm.QRSamplingLogitsProcessor.live_instances():
            processor.close()


def main() -> int:
    """Serve requests until the caller sends ``{"kind": "exit"}``."""
    path, tiny = sys.argv[1], sys.argv[2]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)
        print("ready", flush=True)
        while True:
            connection, _ = server.accept()
            with connection:
                message, fds, _, _ = socket.recv_fds(connection, 1 << 16, 2)
                while not message.endswith(b"\n"):
                    chunk = connection.recv(1 << 16)
                    if not chunk:
                        break
                    message += chunk
                request = json.loads(message.decode())
                if request["kind"] == "exit":
                    for fd in fds:
                        os.close(fd)
                    connection.sendall(b'{"status": 0}\n')
                    return 0
                with _as_caller(request, fds[0], fds[1]):
                    try:
                        if request["kind"] == "demo":
                            status = _run_demo(request["argv"])
                        else:
                            status = _run_python(request["code"], tiny)
                    except BaseException:
                        traceback.print_exc()
                        status = 1
                    # Each request's engine goes with it: the next starts clean.
                    _close_processors()
                    gc.collect()
                connection.sendall(json.dumps({"status": status}).encode() + b"\n")


if __name__ == "__main__":
    sys.exit(main())
