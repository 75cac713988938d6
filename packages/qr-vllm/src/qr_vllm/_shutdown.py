"""Close the processors' record sinks when vLLM stops an engine, on every backend.

A processor flushes, and seals, its record file in :meth:`close`, which it
also registers with ``atexit``. That is enough where the worker process ends
normally (vLLM's ``mp`` and ``uni`` executors), not on Ray: Ray ends its actors
with ``ray.kill``, and ``atexit`` never runs in a killed actor. So the last
records can be lost and the files stay unsealed. vLLM's own worker-shutdown
hook does not help there: ``Executor.shutdown`` sends ``collective_rpc("shutdown")``
to the workers (v1/executor/abstract.py:327-329), but both Ray executors override
it with ``ray.kill`` of their actors (v1/executor/ray_executor.py:114-128,
v1/executor/ray_executor_v2.py:556-582). Two hooks close the processors first:

* ``EngineCore.shutdown`` (v1/engine/core.py:824-840), which every engine runs
  in its own process when it stops (``run_engine_core``'s ``finally``, the Ray
  engine actor's ``run``, the in-process client): before its executor shuts
  down, every worker closes its processors (:func:`close_processors`, sent with
  ``collective_rpc``, which every executor supports);
* ``CoreEngineActorManager.shutdown`` (v1/engine/utils.py:1104-1111): the front
  end ends data-parallel engines on Ray with ``ray.kill``, so their
  ``EngineCore.shutdown`` never runs. First, each engine actor gets SIGTERM,
  which Ray turns into ``SystemExit`` in the actor's busy loop; the actor's
  ``run`` then ends through ``EngineCore.shutdown`` (core.py:2655-2666), the
  first hook, and the front end waits for it (bounded). vLLM's kill follows,
  as before. (When Ray loads an actor class it sets a wrapper of each method
  on the class itself, ray/util/tracing/tracing_helper.py, before the actor's
  ``__init__`` loads this plugin: the subclasses of ``EngineCore`` that hold
  their own ``shutdown`` are wrapped too.)

Every step is bounded in time and may fail without stopping the shutdown (a
warning says what could not be closed).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["close_processors", "install", "track"]

logger = logging.getLogger(__name__)

_CLOSE_TIMEOUT_S = 5.0  # the close of every worker's processors (one RPC)
_STOP_TIMEOUT_S = 10.0  # data-parallel engines on Ray: their own shutdown, after SIGTERM
_WRAPPED = "_qr_vllm_close"
_CORE = "vllm.v1.engine.core"


class _Closable(Protocol):
    def close(self) -> None: ...


_open: weakref.WeakSet[_Closable] = weakref.WeakSet()
_hooks: weakref.WeakSet[Callable[..., Any]] = weakref.WeakSet()  # the wrappers installed here
_lock = threading.Lock()


def track(processor: _Closable) -> None:
    """Have :func:`close_processors` close ``processor`` (held weakly)."""
    with _lock:
        _open.add(processor)


def close_processors(worker: object = None) -> int:
    """Close every tracked processor of this process (``collective_rpc`` target).

    Args:
        worker: The vLLM worker the RPC runs on (unused).

    Returns:
        How many processors were closed.
    """
    with _lock:
        processors = list(_open)
        _open.clear()
    for processor in processors:
        processor.close()
    return len(processors)


def install(*, import_engine: bool = False) -> None:
    """Hook the engine's shutdown (see the module docstring). Idempotent.

    Args:
        import_engine: Import vLLM's engine modules if no one has yet. The
            general plugin runs in every vLLM process and only hooks an engine
            already imported (the engine's own processes import it before their
            plugins load); the front end asks for the import when it builds the
            engine configuration, right before it starts the engine.
    """
    if _CORE not in sys.modules and not import_engine:
        return
    from vllm.v1.engine import core, utils

    # Ray sets a wrapper of every method on an actor's class when it loads it, before
    # the actor's __init__ runs this plugin (the engine actors of data parallelism):
    # the subclasses that hold their own shutdown are wrapped too.
    todo: list[type] = [core.EngineCore]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls is core.EngineCore or "shutdown" in vars(cls):
            _wrap(cls, "shutdown", _closing_engine_shutdown)
    _wrap(utils.CoreEngineActorManager, "shutdown", _gentle_actor_shutdown)


def _wrap(cls: type, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    original = vars(cls).get(name)
    if original is None:  # pragma: no cover - only a vLLM other than the pinned one
        logger.warning("qr-vllm: vLLM has no %s.%s; records may stay unsealed", cls.__name__, name)
        return
    if original in _hooks:
        return
    # Known by identity, not by a marker attribute: Ray's tracing wrapper copies a
    # function's attributes (functools.wraps) onto its own. Only the docstring is
    # copied here: with vLLM's module and qualified name, cloudpickle would send
    # this wrapper by reference, and an actor would unpickle vLLM's original.
    wrapped = functools.wraps(original, assigned=("__doc__",), updated=())(make(original))
    _hooks.add(wrapped)
    setattr(cls, name, wrapped)


def _closing_engine_shutdown(original: Callable[..., Any]) -> Callable[..., Any]:
    def shutdown(self: Any, *args: Any, **kwargs: Any) -> Any:
        _close_in_workers(self)
        return original(self, *args, **kwargs)

    return shutdown


def _close_in_workers(engine_core: Any) -> None:
    executor = getattr(engine_core, "model_executor", None)
    if executor is None or getattr(engine_core, _WRAPPED, False):
        return
    setattr(engine_core, _WRAPPED, True)  # once per engine
    try:
        closed = executor.collective_rpc(close_processors, timeout=_CLOSE_TIMEOUT_S)
    except Exception as exc:
        logger.warning(
            "qr-vllm: could not close the record files in the engine's workers before it "
            "stopped (%s: %s); records already written are kept, a file may stay unsealed",
            type(exc).__name__,
            exc,
        )
        return
    logger.info("qr-vllm: closed the processors of the engine's workers (%s)", closed)


def _gentle_actor_shutdown(original: Callable[..., Any]) -> Callable[..., Any]:
    def shutdown(self: Any, timeout: float | None = None) -> Any:
        if not getattr(self, _WRAPPED, False):
            setattr(self, _WRAPPED, True)
            _stop_engine_actors(self)
        return original(self, timeout)

    return shutdown


def _stop_engine_actors(manager: Any) -> None:
    """SIGTERM each data-parallel engine actor, and wait until its ``run`` has ended."""
    import ray
    from ray._private import state
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # The liveness monitor must not take these exits for failures (vLLM's own
    # shutdown sets this first too).
    manager.manager_stopped.set()
    refs = list(manager.get_run_refs())
    here = ray.get_runtime_context().get_node_id()
    for actor in [*manager.local_engine_actors, *manager.remote_engine_actors]:
        try:
            info = state.actors(actor._actor_id.hex())
            pid, node = int(info["Pid"]), str(info["Address"]["NodeID"])
            logger.info("qr-vllm: asking data-parallel engine pid %d to stop", pid)
            if node == here:
                os.kill(pid, signal.SIGTERM)
            else:
                strategy = NodeAffinitySchedulingStrategy(node_id=node, soft=False)
                ray.remote(num_cpus=0)(_terminate).options(scheduling_strategy=strategy).remote(pid)
        except Exception as exc:
            logger.warning(
                "qr-vllm: could not ask a data-parallel engine to stop before vLLM kills it "
                "(%s: %s); its record file may stay unsealed",
                type(exc).__name__,
                exc,
            )
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=_STOP_TIMEOUT_S)


def _terminate(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
