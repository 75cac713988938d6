"""The systemd unit's command line, expanded from the shipped environment file, as a process."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

SYSTEMD = Path(__file__).resolve().parents[1] / "systemd"
Spawn = Callable[..., Any]


def _env_file() -> dict[str, str]:
    values = {}
    for line in (SYSTEMD / "qr-entropy-server.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value
    return values


def _directive(name: str) -> list[str]:
    unit = (SYSTEMD / "qr-entropy-server.service").read_text()
    return [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(f"{name}=")]


def _exec_start(env: dict[str, str]) -> list[str]:
    """ExecStart as systemd expands it: ``${VAR}`` is one word, ``$VAR`` splits on blanks."""
    words = []
    for word in shlex.split(_directive("ExecStart")[0]):
        braced = re.fullmatch(r"\$\{(\w+)\}", word)
        bare = re.fullmatch(r"\$(\w+)", word)
        if braced:
            words.append(env.get(braced[1], ""))
        elif bare:
            words.extend(env.get(bare[1], "").split())
        else:
            words.append(word)
    return words


def test_the_env_file_is_required_and_config_errors_do_not_restart() -> None:
    assert _directive("EnvironmentFile") == ["/etc/default/qr-entropy-server"]
    assert _directive("RestartPreventExitStatus") == ["2"]


def test_the_shipped_env_file_serves_loopback_without_a_key(spawn: Spawn) -> None:
    env = _env_file()
    assert env["QR_SERVER_ADDRESS"] == "127.0.0.1:50051"
    assert "QR_SERVER_API_KEY" not in env  # documented, commented: set-but-empty is an error
    argv = _exec_start({**env, "QR_SERVER_ADDRESS": "127.0.0.1:0"})
    assert argv[0] == "/usr/local/bin/qr-entropy-server"
    server = spawn(*argv[1:])
    assert server.address.startswith("127.0.0.1:")
    assert server.stop() == 0
    assert server.stderr == ""  # nothing to warn about


def test_without_the_env_file_the_command_names_the_empty_argument(
    run_cli: Callable[..., Any],
) -> None:
    done = run_cli(*_exec_start({})[1:])
    assert done.returncode == 2
    assert "argument --backend: empty value" in done.stderr
