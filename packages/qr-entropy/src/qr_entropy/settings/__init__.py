"""``qr_entropy.settings``: how every qr-sampler package declares and reads ``QR_*`` settings.

The one public home of the settings machinery that qr-entropy and qr-vllm share:

- :data:`QR_SETTINGS_CONFIG` and :class:`QRSettings`: how a settings class reads
  ``QR_*`` variables and ``.env``. A refused value raises :class:`SettingsError`,
  naming the variable; a ``QR_*`` variable that no settings class reads is
  warned about once (:func:`warn_unknown_variables`, entry-point group
  :data:`SETTINGS_GROUP`).
- :func:`apply_overrides`: per-request overrides, validated against the same
  declaration as the environment.
- Plain-language field descriptions (:func:`describe_allowed`,
  :func:`explain_validation`, :func:`env_var_name`, ...), shared by the error
  messages and :func:`settings_table`, so that what an error says and what the
  documentation says come from one declaration.

It lives in qr-entropy because qr-core stays numpy-only (no pydantic), qr-entropy
is the lowest package that already depends on pydantic-settings, and qr-vllm
depends on qr-entropy.

Typical use::

    from pydantic import Field
    from qr_entropy.settings import QR_SETTINGS_CONFIG, QRSettings

    class MySettings(QRSettings):
        model_config = QR_SETTINGS_CONFIG
        my_knob: int = Field(default=3, ge=1, description="Read from QR_MY_KNOB.")
"""

from __future__ import annotations

from qr_entropy.settings._base import QR_SETTINGS_CONFIG, QRSettings, SettingsError
from qr_entropy.settings._fields import (
    describe_allowed,
    env_var_name,
    explain_validation,
    field_default,
    is_secret,
    settings_table,
    shown,
)
from qr_entropy.settings._overrides import apply_overrides
from qr_entropy.settings._unknown import SETTINGS_GROUP, warn_unknown_variables

__all__ = [
    "QR_SETTINGS_CONFIG",
    "SETTINGS_GROUP",
    "QRSettings",
    "SettingsError",
    "apply_overrides",
    "describe_allowed",
    "env_var_name",
    "explain_validation",
    "field_default",
    "is_secret",
    "settings_table",
    "shown",
    "warn_unknown_variables",
]
