"""Per-request overrides validated against a model's own field declarations."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from qr_entropy._exceptions import ConfigError
from qr_entropy.settings._fields import env_var_name, explain_validation

__all__ = ["apply_overrides"]

M = TypeVar("M", bound=BaseModel)


def apply_overrides(
    base: M,
    overrides: Mapping[str, object],
    *,
    prefix: str = "qr_",
    forbidden: Collection[str] = (),
    also_allowed: Collection[str] = (),
) -> M:
    """Return a copy of ``base`` with per-request overrides applied and validated.

    Only keys starting with ``prefix`` are considered; others belong to someone
    else and are ignored. The rest of each key must name a field of ``base``'s
    model. Values arrive as vLLM delivers them (str, int, float; booleans as
    0/1 or "true"/"false") and are validated by the model's own declaration, in
    pydantic's lax mode: nothing is clipped or silently changed.

    Args:
        base: The settings in force (typically read from the environment).
        overrides: The request's extra arguments, e.g. ``SamplingParams.extra_args``.
        prefix: Prefix marking the keys meant for ``base``'s model.
        forbidden: Field names that may only be set through environment
            variables (e.g. ``EntropyConfig.model_fields``).
        also_allowed: Keys (with the prefix) that the caller handles itself,
            e.g. qr-vllm's ``qr_entropy_source``: skipped here, and listed among
            the allowed keys when a key is unknown.

    Returns:
        ``base`` itself when no key applies, else a new validated instance.

    Raises:
        ConfigError: A key names a forbidden field, names no field, or carries
            a value the field does not accept. The message names the key and
            the allowed keys or values; secret values are never echoed.
    """
    model = type(base)
    fields = model.model_fields
    blocked = set(forbidden)
    updates: dict[str, object] = {}
    for key, value in overrides.items():
        if not isinstance(key, str) or not key.startswith(prefix) or key in also_allowed:
            continue
        name = key[len(prefix) :]
        if name in blocked:
            raise ConfigError(
                f"{key!r} cannot be overridden per request: it is an infrastructure "
                f"setting, set only via the environment variable {env_var_name(name)}"
            )
        if name not in fields:
            allowed = ", ".join(
                [prefix + n for n in fields if n not in blocked]
                + [k for k in also_allowed if k.startswith(prefix)]
            )
            raise ConfigError(f"unknown per-request key {key!r}; allowed keys: {allowed}")
        updates[name] = value
    if not updates:
        return base
    try:
        return model.model_validate({**base.model_dump(), **updates})
    except ValidationError as exc:
        raise ConfigError(
            explain_validation(exc, model, updates, prefix=prefix, group="overrides")
        ) from None
