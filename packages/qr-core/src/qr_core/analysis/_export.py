"""Records into data-frame tools: one typed Parquet row per record, every field.

``qr-analyze export --format parquet --output FILE RECORDS...`` writes the records as
read (discarded ones included, with their ``discarded`` column), one column per field
of :class:`~qr_core.records.TokenSamplingRecord` in declaration order, typed from the
field's annotation: ``str`` -> string, ``int`` -> int64, ``float`` -> float64,
``bool`` -> bool; ``X | None`` fields are nullable, the others are not. Records of
schema 1 and 2 carry the later fields with their defaults, as they read. The file's
key-value metadata names the writer and the schema version.

It needs pyarrow (the ``qr-core[analysis]`` extra); reading it back needs nothing of
qr-core (pandas ``read_parquet``, polars ``read_parquet``, DuckDB ``read_parquet``).
"""

from __future__ import annotations

import importlib
import operator
import os
from collections.abc import Sequence
from typing import Any, Final

from qr_core.analysis._errors import MissingExtraError
from qr_core.records._schema import _FIELD_TYPES, SCHEMA_VERSION, TokenSamplingRecord

__all__ = ["EXPORT_FORMATS", "arrow_schema", "export_parquet"]

EXPORT_FORMATS: Final = ("parquet",)
"""Formats ``qr-analyze export`` writes."""


def _pyarrow() -> Any:
    try:
        return importlib.import_module("pyarrow")
    except ImportError as exc:
        raise MissingExtraError(
            "export needs pyarrow; install the extra: pip install 'qr-core[analysis]'"
        ) from exc


def arrow_schema() -> Any:
    """The Arrow schema of a record row (a ``pyarrow.Schema``).

    Raises:
        MissingExtraError: pyarrow is not installed.
    """
    pa = _pyarrow()
    types = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
    return pa.schema(
        [
            pa.field(name, types[kind], nullable=optional)
            for name, (kind, optional) in _FIELD_TYPES.items()
        ],
        metadata={
            "writer": "qr-core qr-analyze export",
            "qr_core.record_schema_version": str(SCHEMA_VERSION),
        },
    )


def export_parquet(records: Sequence[TokenSamplingRecord], path: str | os.PathLike[str]) -> int:
    """Write ``records`` to the Parquet file ``path``, one row each, every field.

    Returns:
        The number of rows written.

    Raises:
        MissingExtraError: pyarrow is not installed.
    """
    pa = _pyarrow()
    parquet = importlib.import_module("pyarrow.parquet")
    schema = arrow_schema()
    columns = [
        pa.array([get(r) for r in records], type=schema.field(name).type)
        for name in _FIELD_TYPES
        for get in (operator.attrgetter(name),)
    ]
    table = pa.Table.from_arrays(columns, schema=schema)
    parquet.write_table(table, os.fspath(path))
    return int(table.num_rows)
