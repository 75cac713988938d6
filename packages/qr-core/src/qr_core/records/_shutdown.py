"""Close every open record sink at interpreter exit and on SIGTERM, once per process.

A sink registers itself when it opens and unregisters when it closes. At exit
(``atexit``) and on SIGTERM every sink still open is closed, so its records reach
the file; SIGTERM then does what it did before the handler was installed.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import weakref
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from qr_core.records._errors import RecordError

__all__ = ["register", "unregister"]

_logger = logging.getLogger(__name__)


class _Sink(Protocol):
    @property
    def path(self) -> Path: ...

    def close(self) -> None: ...


_live_sinks: weakref.WeakSet[_Sink] = weakref.WeakSet()
_registry_lock = threading.Lock()
_atexit_registered = False
_sigterm_installed = False
_previous_sigterm: Any = None
_sigterm_closer: threading.Thread | None = None
_sigterm_closed = threading.Event()


def register(sink: _Sink, install_sigterm_handler: bool) -> None:
    """Close ``sink`` at exit, and on SIGTERM if ``install_sigterm_handler`` (main thread only)."""
    global _atexit_registered, _sigterm_installed, _previous_sigterm
    with _registry_lock:
        _live_sinks.add(sink)
        if not _atexit_registered:
            atexit.register(_close_all)
            _atexit_registered = True
        if not install_sigterm_handler or _sigterm_installed:
            return
        if threading.current_thread() is not threading.main_thread():
            _logger.debug(
                "record sink created outside the main thread: no SIGTERM handler installed; "
                "records are still flushed at interpreter exit"
            )
            return
        previous = signal.getsignal(signal.SIGTERM)
        if previous == signal.SIG_IGN:
            return  # the process ignores SIGTERM, so there is no shutdown to prepare for
        _previous_sigterm = previous
        signal.signal(signal.SIGTERM, _on_sigterm)
        _sigterm_installed = True


def unregister(sink: _Sink) -> None:
    """Forget ``sink`` (it closed)."""
    with _registry_lock:
        _live_sinks.discard(sink)


def _close_all() -> None:
    with _registry_lock:
        sinks = list(_live_sinks)
    for sink in sinks:
        try:
            sink.close()
        except RecordError:
            _logger.exception("closing record sink %s failed", sink.path)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Close every sink, then let SIGTERM do what it did before we were installed.

    Python runs this in the main thread between two bytecodes, possibly while that
    thread holds a sink's lock inside ``write``; joining the writer here could then
    deadlock. So the sinks are closed on a helper thread, which re-sends SIGTERM once
    they are flushed; that second delivery chains to the previous handler.
    """
    global _sigterm_closer
    if _sigterm_closed.is_set():
        _chain_sigterm(signum, frame)
    elif _sigterm_closer is None:
        _sigterm_closer = threading.Thread(
            target=_close_all_then_resend, name="qr-records-sigterm", daemon=False
        )
        _sigterm_closer.start()


def _close_all_then_resend() -> None:
    _close_all()
    _sigterm_closed.set()
    os.kill(os.getpid(), signal.SIGTERM)


def _chain_sigterm(signum: int, frame: FrameType | None) -> None:
    previous = _previous_sigterm
    if callable(previous):
        previous(signum, frame)
    else:
        # Default disposition (or a handler installed outside Python): terminate as
        # the process would have without us.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
