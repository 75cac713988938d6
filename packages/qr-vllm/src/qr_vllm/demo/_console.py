"""What the demo tells the console beside its output: warnings that matter, usage errors.

Without ``-v`` the demo sends file descriptor 2 (vLLM's, torch's and the
library loggers' messages) to its log file; :func:`show_warnings` brings back
onto the console the warnings a user must see there: every ``qr_entropy``
warning (an unknown ``QR_*`` variable, an entropy source falling back, a
source refusing its configuration) and the errors of ``qr_vllm`` and
``qr_core``, each distinct message once. :func:`check_settings` reads the
``QR_*`` settings before the slow engine start, so that a typo or a bad value
shows at once. :func:`check_hub_model` explains a hub model name that cannot
be loaded offline.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TextIO

from qr_vllm import AdapterConfig
from qr_vllm._errors import QRVllmError

__all__ = [
    "DemoError",
    "check_hub_model",
    "check_settings",
    "log_tail",
    "parse_table",
    "show_warnings",
]

_TRUE = {"1", "true", "yes", "on"}


class DemoError(QRVllmError):
    """The demo cannot run as asked (a setting, a model); the message says what to do."""


class _ConsoleHandler(logging.Handler):
    """Writes each distinct message once, as ``warning: ...`` / ``error: ...``."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(logging.WARNING)
        self._stream = stream
        self._seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name == "qr_entropy" or name.startswith("qr_entropy."):
            return True
        qr = name.split(".")[0] in ("qr_vllm", "qr_core")
        return qr and record.levelno >= logging.ERROR

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if message in self._seen:
                return
            self._seen.add(message)
            kind = "error" if record.levelno >= logging.ERROR else "warning"
            self._stream.write(f"{kind}: {message}\n")
            self._stream.flush()
        except Exception:
            self.handleError(record)


def show_warnings(console: TextIO, *, verbose: bool) -> None:
    """Route warnings: those that matter to ``console``, all of them to the log.

    Args:
        console: The terminal's stream. When it is not ``sys.stderr``, file
            descriptor 2 goes to the log file, which then receives every warning.
        verbose: ``-v``: every warning goes to ``sys.stderr``, the terminal.
    """
    root = logging.getLogger()
    if verbose or console is not sys.stderr:
        everything = logging.StreamHandler(sys.stderr)
        everything.setLevel(logging.WARNING)
        root.addHandler(everything)
    if not verbose:
        root.addHandler(_ConsoleHandler(console))


def check_settings() -> AdapterConfig:
    """Read and validate the ``QR_*`` settings now, before the engine starts.

    An unknown ``QR_*`` variable is logged (and so shown, see :func:`show_warnings`).

    Raises:
        DemoError: A setting is refused; the message names it and the allowed values.
    """
    try:
        return AdapterConfig.from_env()
    except ValueError as exc:  # pydantic's ValidationError and qr-entropy's ConfigError
        raise DemoError(f"the QR_* settings are refused: {exc}") from None


def check_hub_model(model: str) -> None:
    """Explain, before any engine starts, a hub model that cannot be loaded offline.

    ``hatch.toml`` sets ``HF_HUB_OFFLINE=1`` (and ``TRANSFORMERS_OFFLINE=1``) for
    its environment: the tests and the locally built models never need the hub.
    A hub name then loads only when it is already in the local Hugging Face cache.

    Raises:
        DemoError: ``model`` is no local folder, not cached, and the hub is off.
    """
    if Path(model).expanduser().exists():
        return
    offline = [
        name for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
        if os.environ.get(name, "").strip().lower() in _TRUE
    ]  # fmt: skip
    if not offline:
        return
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(model, "config.json"), str):
        return
    raise DemoError(
        f"--model {model!r} is no local folder and not in the Hugging Face cache, and "
        f"downloading is switched off ({', '.join(f'{n}=1' for n in offline)}; hatch.toml "
        "sets HF_HUB_OFFLINE=1 for its environment, so that nothing needs the hub). "
        "Download it once outside that "
        f"setting, e.g. `hatch run env HF_HUB_OFFLINE=0 hf download {model}`, then run "
        "the same command again (it loads from the cache); or give a local folder"
    )


def parse_table(value: str) -> int | None:
    """``--table``: ``all`` (None), ``none`` (0) or ``first:N`` (N rows per prompt).

    Raises:
        argparse.ArgumentTypeError: Any other value.
    """
    if value == "all":
        return None
    if value == "none":
        return 0
    kind, _, count = value.partition(":")
    if kind == "first" and count.isdigit() and int(count) > 0:
        return int(count)
    raise argparse.ArgumentTypeError(
        f"{value!r}: allowed: all, none, or first:N with N >= 1 (rows per prompt)"
    )


def log_tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of the log file (empty when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
