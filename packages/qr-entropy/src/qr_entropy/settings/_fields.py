"""Plain-language descriptions of pydantic fields: type, allowed values, env var.

Shared by per-request override errors and the generated settings table, so
that what an error says and what the README says come from one declaration.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel, SecretBytes, SecretStr, ValidationError
from pydantic.fields import FieldInfo

__all__ = [
    "describe_allowed",
    "env_var_name",
    "explain_validation",
    "field_default",
    "is_secret",
    "settings_table",
    "shown",
]

_MAX_VALUE_REPR = 60

_NONE_TYPE = type(None)


def env_var_name(field_name: str, env_prefix: str = "QR_") -> str:
    """Return the environment variable that sets ``field_name``."""
    return f"{env_prefix}{field_name.upper()}"


def _members(annotation: Any) -> tuple[list[Any], bool]:
    """Split an annotation into its non-None members and whether None is allowed."""
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        args = list(get_args(annotation))
        return [a for a in args if a is not _NONE_TYPE], _NONE_TYPE in args
    return [annotation], False


def is_secret(field: FieldInfo) -> bool:
    """Whether the field holds a secret whose value must never be shown."""
    members, _ = _members(field.annotation)
    return any(m in (SecretStr, SecretBytes) for m in members)


def _bounds(metadata: list[Any]) -> list[str]:
    parts: list[str] = []
    for item in metadata:
        if isinstance(item, at.Interval):
            if item.gt is not None:
                parts.append(f"> {item.gt}")
            if item.ge is not None:
                parts.append(f">= {item.ge}")
            if item.lt is not None:
                parts.append(f"< {item.lt}")
            if item.le is not None:
                parts.append(f"<= {item.le}")
        elif isinstance(item, at.Gt) and item.gt is not None:
            parts.append(f"> {item.gt}")
        elif isinstance(item, at.Ge) and item.ge is not None:
            parts.append(f">= {item.ge}")
        elif isinstance(item, at.Lt) and item.lt is not None:
            parts.append(f"< {item.lt}")
        elif isinstance(item, at.Le) and item.le is not None:
            parts.append(f"<= {item.le}")
        elif isinstance(item, at.MinLen) and item.min_length > 0:
            parts.append("non-empty" if item.min_length == 1 else f"length >= {item.min_length}")
        elif isinstance(item, at.MaxLen):
            parts.append(f"length <= {item.max_length}")
    return parts


def _describe_member(member: Any) -> str:
    if get_origin(member) is Literal:
        return "one of " + ", ".join(repr(v) for v in get_args(member))
    if member is bool:
        return "a boolean (true/false or 1/0)"
    if member is int:
        return "an integer"
    if member is float:
        return "a number"
    if member in (str, SecretStr):
        return "a string"
    if get_origin(member) is typing.Annotated:
        inner, *extra = get_args(member)
        text = _describe_member(inner)
        bounds = _bounds(list(extra))
        return f"{text} {', '.join(bounds)}" if bounds else text
    return getattr(member, "__name__", str(member))


def describe_allowed(field: FieldInfo) -> str:
    """Describe the values a field accepts, e.g. ``"a number > 0"``.

    Args:
        field: A pydantic field (``Model.model_fields[name]``).

    Returns:
        The type or choices, the bounds declared on the field, and whether it
        may be left unset.
    """
    members, optional = _members(field.annotation)
    text = " or ".join(_describe_member(m) for m in members)
    bounds = _bounds(list(field.metadata))
    if bounds:
        text = f"{text} {', '.join(bounds)}"
    if optional:
        text += ", or unset"
    return text


def field_default(field: FieldInfo) -> str:
    """Render a field's default for documentation (secrets shown as empty or set)."""
    default = field.get_default(call_default_factory=True)
    if isinstance(default, SecretStr | SecretBytes):
        return "*(empty)*" if not default.get_secret_value() else "*(set)*"
    if default is None:
        return "*(unset)*"
    if default == "":
        return "*(empty)*"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    return f"`{default}`"


def settings_table(model: type[BaseModel], env_prefix: str = "QR_") -> str:
    """Render a model's fields as a Markdown table for documentation.

    Columns: environment variable, default, allowed values, description.

    Args:
        model: A pydantic model or settings class.
        env_prefix: Prefix of the environment variables.

    Returns:
        The table, one line per field, ending with a newline.
    """
    lines = [
        "| Environment variable | Default | Allowed values | Description |",
        "|---|---|---|---|",
    ]
    for name, field in model.model_fields.items():
        description = (field.description or "").replace("|", "\\|")
        allowed = describe_allowed(field).replace("|", "\\|")
        lines.append(
            f"| `{env_var_name(name, env_prefix)}` | {field_default(field)} | {allowed} "
            f"| {description} |"
        )
    return "\n".join(lines) + "\n"


def shown(value: object) -> str:
    """``repr(value)``, cut to 60 characters for an error message."""
    text = repr(value)
    return text if len(text) <= _MAX_VALUE_REPR else text[: _MAX_VALUE_REPR - 3] + "..."


def explain_validation(
    exc: ValidationError,
    model: type[BaseModel],
    values: Mapping[str, object],
    *,
    prefix: str = "",
    group: str | None = None,
) -> str:
    """One message for a failed validation of ``values`` against ``model``.

    Each refused field is named (with ``prefix``), with its value (never a
    secret's) and what is allowed. A problem that belongs to no single given
    field is pydantic's own message, or, with ``group``, says that the given
    fields of that group are inconsistent.
    """
    problems: list[str] = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = error.get("loc", ())
        name = loc[0] if loc else None
        if isinstance(name, str) and name in values:
            field = model.model_fields[name]
            value = "<secret>" if is_secret(field) else shown(values[name])
            problems.append(
                f"{prefix}{name}={value} is invalid ({error['msg']}); "
                f"allowed: {describe_allowed(field)}"
            )
        elif group is not None:
            keys = ", ".join(prefix + n for n in values)
            problems.append(f"{group} {keys} are inconsistent: {error['msg']}")
        else:
            problems.append(f"{error['msg']}")
    return "; ".join(problems)
