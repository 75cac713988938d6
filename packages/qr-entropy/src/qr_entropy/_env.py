"""Reading ``QR_*`` variables: errors that name the variable, and typos that are not silent.

:class:`QRSettings` is the base of every qr-sampler settings class (qr-entropy's
and qr-vllm's). Two things it adds to pydantic-settings:

- A value read from the environment or ``.env`` that its field refuses raises
  :class:`SettingsError`, naming the variable the user set (``QR_TOP_P``, not
  ``top_p``), the value (never a secret's) and what is allowed.
- A ``QR_*`` variable (or ``.env`` entry) that no settings class reads is
  logged once, as a warning naming the closest valid variable. Packages declare
  the modules of their settings classes in the entry-point group
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
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from qr_entropy._exceptions import ConfigError
from qr_entropy._fields import describe_allowed, env_var_name, is_secret, shown

__all__ = ["SETTINGS_GROUP", "QRSettings", "SettingsError", "warn_unknown_variables"]

logger = logging.getLogger(__name__)

SETTINGS_GROUP = "qr_sampler.settings"
"""Entry-point group naming the modules that define ``QRSettings`` subclasses."""

# Variables read outside any settings class: the entropy server's own
# (``QR_SERVER_*``, ``QR_HARDWARE_DEVICE``) and the tiny test model's cache.
_READ_ELSEWHERE_PREFIXES = ("QR_SERVER_",)
_READ_ELSEWHERE = frozenset({"QR_HARDWARE_DEVICE", "QR_TINY_MODEL_CACHE"})


class SettingsError(ConfigError, ValidationError):
    """Settings that cannot work, refused when they are built.

    A :class:`ConfigError` whose message names each environment variable, its
    value and the allowed values; also a pydantic ``ValidationError`` (same
    ``errors()``), for callers that catch that.
    """

    _message: str

    def __str__(self) -> str:
        return self._message


def _settings_error(
    model: type[BaseSettings], exc: ValidationError, passed: Mapping[str, object]
) -> ValidationError:
    """Re-word ``exc``: errors of values read from the environment name their variable."""
    prefix = str(model.model_config.get("env_prefix", ""))
    problems: list[str] = []
    details: list[Any] = []
    from_env = False
    for error in exc.errors(include_url=False):
        loc = error.get("loc", ())
        name = loc[0] if loc else None
        if not isinstance(name, str) or name not in model.model_fields:
            problems.append(str(error["msg"]))
            continue
        field = model.model_fields[name]
        value = "<secret>" if is_secret(field) else shown(error.get("input"))
        where = name if name in passed else env_var_name(name, prefix)
        from_env = from_env or name not in passed
        what = "" if name in passed else f" (setting {name})"
        text = (
            f"{where}={value}{what} is invalid ({error['msg']}); allowed: {describe_allowed(field)}"
        )
        problems.append(text)
        details.append(
            {"type": "value_error", "loc": loc, "input": value, "ctx": {"error": ValueError(text)}}
        )
    if not from_env:
        return exc  # built from arguments (per-request overrides): their callers word it
    refused = SettingsError.from_exception_data(model.__name__, details)
    refused._message = "; ".join(problems)
    return refused


class QRSettings(BaseSettings):
    """Base of the ``QR_*`` settings classes (see the module docstring).

    Raises:
        SettingsError: A value from the environment or ``.env`` is refused.
    """

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _settings_error(type(self), exc, values) from None
        warn_unknown_variables()


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
