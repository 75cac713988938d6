"""Prints how long the doc test's blocks took (``test_docs.py``): it must stay cheap."""

from __future__ import annotations

import sys

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    module = sys.modules.get("test_docs") or next(
        (m for name, m in sys.modules.items() if name.endswith("docs.test_docs")), None
    )
    durations = getattr(module, "DURATION", [])
    if durations:
        terminalreporter.write_line(
            f"doc test: the documented blocks ran in {sum(durations):.1f} s (one engine worker)"
        )
