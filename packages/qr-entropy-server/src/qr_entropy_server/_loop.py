"""The one event loop of every server in this process, in a daemon thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_on_loop", "shared_loop"]

_T = TypeVar("_T")
_loop_lock = threading.Lock()
_shared_loop: asyncio.AbstractEventLoop | None = None


def shared_loop() -> asyncio.AbstractEventLoop:
    """The event loop of every server in this process, started on first use."""
    global _shared_loop
    with _loop_lock:
        if _shared_loop is None:
            _shared_loop = asyncio.new_event_loop()
            threading.Thread(
                target=_shared_loop.run_forever, name="qr-entropy-server-loop", daemon=True
            ).start()
        return _shared_loop


def run_on_loop(coro: Coroutine[Any, Any, _T], timeout_s: float | None = None) -> _T:
    """Run ``coro`` on the shared loop from another thread and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coro, shared_loop()).result(timeout_s)
