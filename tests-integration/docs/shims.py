"""The commands a documented block finds first on its PATH.

``hatch``: ``hatch run X`` is run as the command hatch would run, in the
current environment; the doc test creates no hatch environment. Scripts are
read from ``hatch.toml`` (their ``{args}`` and ``{root}`` filled in, its
``env-vars`` applied as hatch applies them); ``generate``, i.e. ``python -m
qr_vllm.demo``, goes to the engine worker (``engine_worker.py``). A script
that is the suite itself, a long benchmark, or an environment of its own is
refused, as is anything that would change the machine (``pip install``,
``sudo``, ``docker``...): such a block needs a marker, and the refusal says so.

Usage (the runner writes one executable per name): ``python shims.py NAME ARGS``.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

__all__ = ["REFUSED_COMMANDS", "REFUSED_SCRIPTS", "demo_request", "main"]

ROOT = Path(__file__).resolve().parents[2]
REFUSED_EXIT = 97
"""Exit status of a refused command: the block needs a marker."""

REFUSED_SCRIPTS = {
    "test": "the whole test suite (.ci/run runs it)",
    "test-unit": "half of the test suite",
    "test-integration": "half of the test suite",
    "test-under-load": "the test suite under load",
    "quality": "the code-quality gate (.ci/run runs it)",
    "types:check": "mypy over every package (the quality gate runs it)",
    "lint:fix": "it rewrites the sources",
}
"""``hatch run`` scripts the doc test does not run, and why."""

REFUSED_COMMANDS = {
    "pip": "it would change the test environment",
    "pip3": "it would change the test environment",
    "sudo": "it needs root",
    "docker": "it needs docker",
    "systemctl": "it needs systemd",
    "useradd": "it changes the machine's users",
    "usermod": "it changes the machine's users",
    "git": "it changes a repository",
    "twine": "it uploads to a package index",
    "vllm": "`vllm serve` runs until it is stopped",
    "pytest": "tests of the suite: the suite runs them itself (name them in covered-by)",
}
"""Commands the doc test does not run, and why."""


def _refuse(what: str, why: str) -> int:
    print(
        f"doctest: `{what}` is not run by the doc test ({why}); "
        "give the block a doctest marker (see tests-integration/docs/blocks.py)",
        file=sys.stderr,
    )
    return REFUSED_EXIT


def demo_request(argv: list[str]) -> int:
    """Run ``python -m qr_vllm.demo ARGV`` in the engine worker, on this process's stdio."""
    payload = {"kind": "demo", "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}
    return worker_request(os.environ["DOCTEST_ENGINE_SOCKET"], payload, 1, 2)


def worker_request(path: str, payload: dict[str, object], out: int, err: int) -> int:
    """Send one request to the engine worker; return its exit status."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.connect(path)
        data = json.dumps(payload).encode() + b"\n"
        socket.send_fds(connection, [data[:4096]], [out, err])
        connection.sendall(data[4096:])
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = connection.recv(4096)
            if not chunk:
                print("doctest: the engine worker died", file=sys.stderr)
                return 1
            reply += chunk
    return int(json.loads(reply)["status"])


def _python(argv: list[str]) -> int:
    if argv[:2] == ["-m", "pip"] and len(argv) > 2 and argv[2] in ("install", "uninstall"):
        return _refuse(f"python -m pip {argv[2]}", REFUSED_COMMANDS["pip"])
    if argv[:2] == ["-m", "qr_vllm.demo"]:
        return demo_request(argv[2:])
    os.execv(sys.executable, [sys.executable, *argv])
    return 1  # not reached


def _project_root() -> Path:
    """The project ``hatch`` would find: the nearest folder up from here with a hatch.toml."""
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / "hatch.toml").is_file():
            return folder
    return ROOT


def _run_line(line: str, args: list[str]) -> int:
    command = line.replace("{args}", shlex.join(args)).replace("{root}", str(_project_root()))
    words = shlex.split(command)
    if words[:3] == ["python", "-m", "qr_vllm.demo"]:
        return demo_request(words[3:])
    return subprocess.call(command, shell=True)


def _hatch(argv: list[str]) -> int:
    if argv[:1] != ["run"] or len(argv) < 2:
        return _refuse("hatch " + shlex.join(argv), "only `hatch run` is run")
    target, args = argv[1], argv[2:]
    envs = tomllib.loads((_project_root() / "hatch.toml").read_text())["envs"]
    # hatch sets its env-vars over the caller's (HF_HUB_OFFLINE=1 ...).
    os.environ.update(envs["default"].get("env-vars", {}))
    env_name, _, script = target.rpartition(":")
    if target in REFUSED_SCRIPTS:
        return _refuse(f"hatch run {target}", REFUSED_SCRIPTS[target])
    if env_name == "bench":
        return _refuse(f"hatch run {target}", "the benchmarks take minutes")
    if env_name and env_name not in ("default", "lint"):
        return _refuse(f"hatch run {target}", f"an environment of its own ({env_name!r})")
    scripts = envs[env_name or "default"].get("scripts", {})
    if env_name and script not in scripts:
        return _refuse(f"hatch run {target}", f"no script {script!r} in [envs.{env_name}]")
    if script not in scripts:
        # Not a script: a command in the environment (python, qr-analyze...).
        if target == "python":
            return _python(args)
        if target in REFUSED_COMMANDS:
            return _refuse(f"hatch run {target}", REFUSED_COMMANDS[target])
        return subprocess.call([target, *args])
    for line in _expand(scripts, script):
        status = _run_line(line, args)
        if status:
            return status
    return 0


def _expand(scripts: dict[str, object], name: str) -> list[str]:
    """A script's command lines, other scripts expanded; ``cpu-vllm`` left out (it repairs
    a fresh environment, and this one is the suite's)."""
    body = scripts[name]
    lines = body if isinstance(body, list) else [body]
    out: list[str] = []
    for line in lines:
        assert isinstance(line, str)
        if line in scripts:
            if line != "cpu-vllm":
                out += _expand(scripts, line)
        else:
            out.append(line)
    return out


def main(argv: list[str]) -> int:
    """``NAME ARGS``: run the shim NAME."""
    name, args = argv[0], argv[1:]
    if name == "hatch":
        return _hatch(args)
    if name in ("python", "python3"):
        return _python(args)
    return _refuse(shlex.join([name, *args]), REFUSED_COMMANDS[name])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
