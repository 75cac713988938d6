"""Closing the processors when vLLM stops an engine, without an engine.

The hooks on vLLM's classes are checked with stand-in executors; the real
engines (mp backend, Ray, whose actors are killed) are in tests-integration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from vllm.v1.engine.core import EngineCore
from vllm.v1.engine.utils import CoreEngineActorManager

from qr_vllm._shutdown import close_processors, install, track


class _Processor:
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


class _Executor:
    """Runs ``collective_rpc`` here, as vLLM's executors run it on each worker."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[Callable[..., Any], float | None]] = []
        self.fail = fail

    def collective_rpc(self, method: Callable[..., Any], timeout: float | None = None) -> list[Any]:
        self.calls.append((method, timeout))
        if self.fail:
            raise TimeoutError("RPC call timed out")
        return [method(object())]


class _Engine:
    """What the wrapped ``EngineCore.shutdown`` reads of an engine."""

    def __init__(self, executor: _Executor) -> None:
        self.model_executor = executor
        self.stopped = 0


@pytest.fixture
def hooked(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """``EngineCore.shutdown`` hooked over a stand-in original; restored afterwards."""

    def original(self: _Engine) -> None:
        self.stopped += 1

    monkeypatch.setattr(EngineCore, "shutdown", original)
    monkeypatch.setattr(CoreEngineActorManager, "shutdown", CoreEngineActorManager.shutdown)
    install(import_engine=True)
    return EngineCore.shutdown


def test_tracked_processors_are_closed_once() -> None:
    close_processors()  # those of earlier tests
    processors = [_Processor(), _Processor()]
    for p in processors:
        track(p)
    assert close_processors() == 2
    assert close_processors() == 0
    assert [p.closed for p in processors] == [1, 1]


def test_the_engine_closes_its_workers_processors_before_its_executor_stops(
    hooked: Callable[..., Any],
) -> None:
    close_processors()
    processor = _Processor()
    track(processor)
    engine = _Engine(_Executor())
    hooked(engine)
    assert processor.closed == 1
    assert engine.stopped == 1
    ((method, timeout),) = engine.model_executor.calls
    assert method is close_processors
    assert timeout is not None
    hooked(engine)  # vLLM may call shutdown twice: one close
    assert len(engine.model_executor.calls) == 1
    assert engine.stopped == 2


def test_a_failed_close_is_a_warning_and_the_shutdown_goes_on(
    hooked: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    engine = _Engine(_Executor(fail=True))
    with caplog.at_level(logging.WARNING, logger="qr_vllm._shutdown"):
        hooked(engine)
    assert engine.stopped == 1
    assert "could not close the record files" in caplog.text


def test_install_wraps_once(hooked: Callable[..., Any]) -> None:
    manager_shutdown = CoreEngineActorManager.shutdown
    install(import_engine=True)
    assert EngineCore.shutdown is hooked
    assert CoreEngineActorManager.shutdown is manager_shutdown
