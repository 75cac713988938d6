"""The warning for a ``QR_*`` variable that no settings class reads: typos are not silent.

A ``QR_*`` variable (or ``.env`` entry) that no settings class reads is logged
once, as a warning naming the closest valid variable. Packages declare the
modules of their settings classes in the entry-point group
``qr_sampler.settings``; the check waits until all of them are imported, so
that one package's variables never look unknown to another's.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
import threading
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path

from pydantic_settings import BaseSettings

from qr_entropy.settings._fields import env_var_name

__all__ = ["SETTINGS_GROUP", "warn_unknown_variables"]

logger = logging.getLogger(__name__)

SETTINGS_GROUP = "qr_sampler.settings"
"""Entry-point group naming the modules that define ``QRSettings`` subclasses."""

# Variables read outside any settings class: the entropy server's own
# (``QR_SERVER_*``, ``QR_HARDWARE_DEVICE``) and the tiny test model's cache.
_READ_ELSEWHERE_PREFIXES = ("QR_SERVER_",)
_READ_ELSEWHERE = frozenset({"QR_HARDWARE_DEVICE", "QR_TINY_MODEL_CACHE"})

_lock = threading.Lock()
_warned: set[str] = set()
_settings_modules: list[str] | None = None
_checked: frozenset[str] | None = None


def _all_settings() -> list[type[BaseSettings]]:
    """Every settings class defined so far (``QRSettings`` or not) that reads ``QR_*``."""
    found: list[type[BaseSettings]] = []
    todo: list[type[BaseSettings]] = [BaseSettings]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if str(sub.model_config.get("env_prefix", "")).upper() == "QR_":
                found.append(sub)
    return found


def _dotenv_names(path: Path) -> set[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return set()
    names: set[str] = set()
    for line in lines:
        key, sep, _ = line.strip().removeprefix("export ").partition("=")
        if sep and not key.startswith("#"):
            names.add(key.strip().upper())
    return names


def warn_unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """Log one warning per ``QR_*`` variable that no settings class reads.

    Each names the closest valid variable. Does nothing until every module of
    the ``qr_sampler.settings`` entry-point group is imported.

    Args:
        environ: The environment (default ``os.environ``); ``.env`` in the
            working directory is read too.

    Returns:
        The unknown variables found by this call (empty when deferred).
    """
    global _settings_modules, _checked
    if _settings_modules is None:
        _settings_modules = sorted({ep.module for ep in entry_points(group=SETTINGS_GROUP)})
    if any(module not in sys.modules for module in _settings_modules):
        return []
    env = os.environ if environ is None else environ
    given = {k.upper() for k in env if k.upper().startswith("QR_")}
    given |= {k for k in _dotenv_names(Path(".env")) if k.startswith("QR_")}
    # Settings are built per request too: check each set of names once.
    key = frozenset(given)
    if key == _checked:
        return []
    _checked = key
    known = {
        env_var_name(name, str(cls.model_config.get("env_prefix", "")))
        for cls in _all_settings()
        for name in cls.model_fields
    }
    unknown = sorted(
        name
        for name in given - known - _READ_ELSEWHERE
        if not name.startswith(_READ_ELSEWHERE_PREFIXES)
    )
    with _lock:
        new = [name for name in unknown if name not in _warned]
        _warned.update(new)
    for name in new:
        closest = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.0)
        logger.warning(
            "%s is set but no qr-sampler setting reads it; did you mean %s? "
            "(see `qr-entropy settings`)",
            name,
            closest[0] if closest else "one of the documented QR_* variables",
        )
    return new
