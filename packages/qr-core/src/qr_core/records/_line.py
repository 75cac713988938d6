"""The JSON text of a record, as the file sink writes it: fast, and the same as ``json``.

:func:`record_json` returns a record's JSON object without its closing brace (the sink
appends ``}`` or the hash-chain envelope and ``}``). Its text is exactly what
``json.dumps(record.to_json_dict(), separators=(",", ":"))`` writes: keys in
declaration order, strings escaped to ASCII, floats as ``repr``, ``null``, ``true``,
``false``. It is generated once, at import, from the record's field declarations (the
way :mod:`dataclasses` generates ``__init__``), so a new field is written without a
change here; a test compares it with ``json`` on random records. One generated
expression per record instead of a dict and the general encoder takes about half the
time, which pays for the hash chain (see ``docs/records.md``, "Cost").

A value of the declared type takes the fast way; any other (``None``, a numpy scalar,
a wrong type) the general encoder, so the text is always what ``json`` writes (a numpy
scalar as the Python number it holds). A non-finite float raises: the sink refuses
those first, naming the field; this is the backstop.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from json.encoder import encode_basestring_ascii
from typing import Final, cast

from qr_core.records._schema import _FIELD_TYPES, TokenSamplingRecord

__all__ = ["record_json"]


def _json_default(value: object) -> object:
    # numpy scalars slip in easily from array code; store them as plain numbers.
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# allow_nan=False: JSON has no NaN or infinity; the sink refuses them first with the
# field's name, this is the backstop.
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), default=_json_default, allow_nan=False)


def _float(x: float) -> str:
    if not math.isfinite(x):
        raise ValueError(f"{x!r} is no JSON number; records hold finite numbers only")
    return float.__repr__(x)


# Per declared type: the fast text of a value of exactly that type. Any other value
# (None, a numpy scalar, a wrong type) goes to the general encoder, so the text is
# always what json writes.
_FAST: Final[dict[type, str]] = {
    str: "_str({v}) if type({v}) is str",
    int: "int.__repr__({v}) if type({v}) is int",
    float: "_float({v}) if type({v}) is float",
    bool: "('true' if {v} else 'false') if type({v}) is bool",
}


def _expression(name: str, kind: type, optional: bool) -> str:
    if kind not in _FAST:
        raise TypeError(f"record field {name!r} has type {kind.__name__}, which has no JSON form")
    value = f"r.{name}"
    text = "(" + _FAST[kind].format(v=value) + f" else _json({value}))"
    return f"('null' if {value} is None else {text})" if optional else text


def _generate() -> Callable[[TokenSamplingRecord], str]:
    pieces: list[str] = []
    for i, (name, (kind, optional)) in enumerate(_FIELD_TYPES.items()):
        key = ("{" if i == 0 else ",") + json.dumps(name) + ":"
        pieces += [repr(key), _expression(name, kind, optional)]
    source = f"def record_json(r):\n    return ''.join(({', '.join(pieces)}))\n"
    namespace: dict[str, object] = {
        "_str": encode_basestring_ascii,
        "_float": _float,
        "_json": _ENCODER.encode,
    }
    exec(source, namespace)  # the source is built from the field declarations above
    return cast(Callable[[TokenSamplingRecord], str], namespace["record_json"])


record_json: Final = _generate()
"""``record_json(record) -> str``: the record's JSON object, without the closing ``}``."""
