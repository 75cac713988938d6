"""How a qr-sampler settings class reads ``QR_*`` variables, and its refusals.

:data:`QR_SETTINGS_CONFIG` and :class:`QRSettings` are shared by the settings
classes of every package (qr-entropy's and qr-vllm's). Two things
:class:`QRSettings` adds to pydantic-settings:

- A value read from the environment or ``.env`` that its field refuses raises
  :class:`SettingsError`, naming the variable the user set (``QR_TOP_P``, not
  ``top_p``), the value (never a secret's) and what is allowed.
- A ``QR_*`` variable (or ``.env`` entry) that no settings class reads is
  logged once, as a warning naming the closest valid variable
  (:func:`~qr_entropy.settings.warn_unknown_variables`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from qr_entropy._exceptions import ConfigError
from qr_entropy.settings._fields import describe_allowed, env_var_name, is_secret, shown
from qr_entropy.settings._unknown import warn_unknown_variables

__all__ = ["QR_SETTINGS_CONFIG", "QRSettings", "SettingsError"]


QR_SETTINGS_CONFIG = SettingsConfigDict(
    env_prefix="QR_",
    env_file=".env",
    env_file_encoding="utf-8",
    extra="ignore",
    frozen=True,
    validate_default=True,
    allow_inf_nan=False,
)
"""How every qr-sampler settings class reads ``QR_*`` variables and ``.env``.

Shared by the settings classes of all packages (qr-vllm's too), so that each
package declares only its own fields and they all read the environment alike;
``extra="ignore"`` lets each class skip the ``QR_*`` variables of the others.
"""


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
