"""The repository-wide quality gate: ruff (lint + format) and ``mypy --strict``.

These run inside the test suite so that CI, which runs exactly the README's
test command, enforces them on every submission.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = sorted(str(p) for p in (ROOT / "packages").glob("*/src"))


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.fail(f"{name} is not installed in the test environment")
    return path


def test_ruff_lint_is_clean() -> None:
    result = _run(_tool("ruff"), "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    result = _run(_tool("ruff"), "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_package_ships_py_typed() -> None:
    missing = [d for d in SOURCE_DIRS if not any(Path(d).glob("*/py.typed"))]
    assert not missing, f"packages without py.typed: {missing}"


@pytest.mark.slow
def test_mypy_strict_is_clean() -> None:
    result = _run(sys.executable, "-m", "mypy", "--strict", *SOURCE_DIRS)
    assert result.returncode == 0, result.stdout + result.stderr
