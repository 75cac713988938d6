"""Rate-limited warnings: one line per kind per interval, with the count of repeats."""

from __future__ import annotations

import logging

import pytest

from qr_entropy_server._ratelog import RateLimitedLog


def test_one_line_per_kind_per_interval_then_the_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    log = RateLimitedLog(logging.getLogger("ratelog-test"), interval_s=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="ratelog-test"):
        for _ in range(5):
            log.warning("a", "kind a failed: %s", "x")
        log.warning("b", "kind b failed")
        now[0] = 59.9
        log.warning("a", "kind a failed: %s", "y")  # still inside the interval
        now[0] = 60.0
        log.warning("a", "kind a failed: %s", "z")
        log.warning("b", "kind b failed")
        log.flush()
    assert [r.getMessage() for r in caplog.records] == [
        "kind a failed: x",
        "kind b failed",
        "kind a failed: z [5 more since the last such line]",
        "kind b failed",
    ]
    assert all(r.exc_info is None for r in caplog.records)


def test_tracebacks_only_at_debug_and_flush_reports_pending(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("ratelog-debug")
    log = RateLimitedLog(logger, interval_s=60.0, clock=lambda: 0.0)
    error = OSError("gone")
    with caplog.at_level(logging.WARNING, logger="ratelog-debug"):
        log.warning("e", "failed", exc=error)
    assert caplog.records[-1].exc_info is None
    with caplog.at_level(logging.DEBUG, logger="ratelog-debug"):
        log.warning("f", "failed", exc=error)
        log.warning("f", "failed", exc=error)
        log.flush()
    assert caplog.records[-2].exc_info is not None
    assert caplog.records[-1].getMessage() == "1 more f warnings were suppressed"
