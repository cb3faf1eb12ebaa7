"""Arrow helpers shared by transforms: columns by name or dotted path, rows to tables."""

from __future__ import annotations

import json
from typing import Any, TypeAlias

import orjson
import pyarrow as pa
import pyarrow.compute as pc

Column: TypeAlias = pa.Array | pa.ChunkedArray


def stringify(value: Any) -> str:
    """A scalar as text, nested values as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # also beyond 64 bits, which orjson refuses
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:  # a nested integer beyond 64 bits
        return json.dumps(value, default=str, separators=(",", ":"))


def drop_column(table: pa.Table, name: str) -> pa.Table:
    """``table`` without column ``name`` (unchanged when absent)."""
    index = table.schema.get_field_index(name)
    return table if index < 0 else table.remove_column(index)


def set_column(table: pa.Table, name: str, values: Column) -> pa.Table:
    """``table`` with column ``name`` replaced by (or appended as) ``values``."""
    index = table.schema.get_field_index(name)
    if index < 0:
        return table.append_column(name, values)
    return table.set_column(index, name, values)


def get_column(table: pa.Table, path: str) -> Column | None:
    """The column called ``path``, or the struct field it names with dots; None when absent."""
    if path in table.column_names:
        found: Column = table.column(path)
        return found
    head, _, rest = path.partition(".")
    if not rest or head not in table.column_names:
        return None
    column: Column = table.column(head)
    for part in rest.split("."):
        kind = column.type
        if not pa.types.is_struct(kind) or kind.get_field_index(part) < 0:
            return None
        column = pc.struct_field(column, part)
    return column


def string_values(column: Column) -> pa.ChunkedArray:
    """``column`` as strings (nested values as JSON)."""
    if isinstance(column, pa.Array):
        column = pa.chunked_array([column])
    if pa.types.is_string(column.type):
        return column
    if pa.types.is_large_string(column.type):
        return column.cast(pa.string())
    if pa.types.is_nested(column.type) or pa.types.is_binary(column.type):
        values = [None if v is None else stringify(v) for v in column.to_pylist()]
        return pa.chunked_array([pa.array(values, pa.string())])
    try:
        return column.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        values = [None if v is None else stringify(v) for v in column.to_pylist()]
        return pa.chunked_array([pa.array(values, pa.string())])


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """A table from Python rows; a field with conflicting types becomes a string column."""
    if not rows:
        return pa.table({})
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    if not names:  # only empty objects: keep their count, with no columns
        return pa.table({"_": pa.nulls(len(rows))}).drop_columns(["_"])
    columns: dict[str, pa.Array] = {}
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            columns[name] = pa.array(
                [None if v is None else stringify(v) for v in values], pa.string()
            )
    return pa.table(columns)


def with_columns(
    table: pa.Table, columns: dict[str, Column], *, overwrite: bool = True
) -> pa.Table:
    """``table`` with several columns set (existing ones kept unless ``overwrite``)."""
    for name, values in columns.items():
        if not overwrite and name in table.column_names:
            continue
        table = set_column(table, name, values)
    return table


def mask_from_indices(n: int, indices: set[int] | list[int]) -> pa.BooleanArray:
    """A boolean mask of length ``n`` true at ``indices``."""
    chosen = set(indices)
    return pa.array([i in chosen for i in range(n)], pa.bool_())


def stable_hash(column: Column) -> pa.ChunkedArray:
    """A 64-bit hash of each value's text, the same in every process and run (null → 0)."""
    import hashlib

    strings = string_values(column)
    encoded = strings.dictionary_encode().combine_chunks()
    hashes = [
        int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "big")
        for v in encoded.dictionary.to_pylist()
    ]
    values = pa.array(hashes, pa.uint64()).take(encoded.indices)
    return pa.chunked_array([pc.fill_null(values, 0)])
