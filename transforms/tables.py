"""Arrow helpers shared by transforms: columns by name or dotted path, rows to tables."""

from __future__ import annotations

import io
import json
import re
from typing import Any, TypeAlias

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from bytefreezer.lines import any_line_starts_with

Column: TypeAlias = pa.Array | pa.ChunkedArray

# JSON integers beyond 64 bits (say unsigned 64-bit ids and hashes) are kept exact as
# decimal128(38, 0), which Parquet, DuckDB, Spark and Trino read as DECIMAL(38, 0): pyarrow's
# JSON reader makes them doubles, and with them every other number of the field (digits lost
# silently), and orjson reads those beyond 64 unsigned bits as floats.
EXACT_INTEGER = pa.decimal128(38, 0)
INT64_BOUND = 2.0**63  # doubles from here on were integers pyarrow could not read as int64
# Where orjson's exact integers end: 20 digits, or 19 after a minus (below -2**63 it reads a
# double: -9999999999999999999 became -1e+19).
_LONG_DIGITS = re.compile(rb"\d{20}|-\d{19}")
_LONG_DIGITS_TEXT = re.compile(r"\d{20}|-\d{19}")


def loads_exact(raw: bytes | str) -> Any:
    """One JSON document as Python values (orjson), integers beyond 64 bits kept exact."""
    value = orjson.loads(raw)
    long_digits = _LONG_DIGITS if isinstance(raw, bytes) else _LONG_DIGITS_TEXT
    if len(raw) >= 20 and long_digits.search(raw):  # type: ignore[arg-type]
        return json.loads(raw)  # Python's reader keeps every integer exact
    return value


class NotObjectLines(pa.ArrowInvalid):  # type: ignore[misc]
    """NDJSON with a line that may hold something other than an object: read it line by line."""


def may_hold_non_objects(data: bytes) -> bool:
    """Whether a line of ``data`` starts with ``n`` (``null``) or whitespace (`` null``).

    pyarrow's JSON reader (25.0.1) crashes the process with SIGSEGV on a line of ``null`` that
    starts the data or one of its blocks, and reads one elsewhere as an empty record instead of
    refusing it; other non-objects it refuses. Lines starting with whitespace are suspects too
    (rare, and read correctly line by line)."""
    return any_line_starts_with(data, b"n \t\r")


# How pyarrow's reader says a value is not of the type it was told (25.0.1); any other error is
# the data's. Should the wording change, such objects are read line by line: slower, as exact.
_CONFLICT = re.compile(r"changed from \w+ to \w+|Failed to convert JSON to")


class JsonFields:
    """The types a source's NDJSON fields are read with, learned from its earlier objects, so
    that a later object is parsed once instead of twice. One per source (piper keeps one per
    dataset); threads may share it (a race costs a second parse, nothing else)."""

    def __init__(self) -> None:
        self.schema: pa.Schema | None = None


def read_ndjson(data: bytes, block_size: int, learned: JsonFields | None = None) -> pa.Table:
    """NDJSON through pyarrow's reader (``block_size`` bytes a parallel block), each JSON value
    kept as what it is: text stays text (pyarrow reads text that looks like a time as a
    timestamp, converted to UTC without its offset, naive, and only when it has no fractions of
    a second, so a field's type and text changed from object to object), and integers beyond 64
    bits are ``EXACT_INTEGER`` instead of doubles. Such fields are read again with their types
    given, unless ``learned`` (updated here) already gave them. Raises ``ArrowInvalid`` where a
    field of big integers also holds fractions or integers beyond 38 digits: the callers'
    line-by-line path keeps those exact, as text (``rows_to_table``). Raises ``NotObjectLines``
    before pyarrow sees a line that may not be an object."""
    if may_hold_non_objects(data):
        raise NotObjectLines("a line may hold something other than a JSON object")
    options = pajson.ReadOptions(block_size=block_size)
    given = learned.schema if learned is not None else None
    table = None
    if given is not None:
        try:
            table = _read_json(data, options, given)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            if not _CONFLICT.search(str(exc)):
                raise  # invalid JSON, whatever the types: the callers read it line by line
            given = None  # this object's fields are not what earlier ones were
    if table is None:
        table = _read_json(data, options, None)
    fixes = [
        pa.field(f.name, _changed(f.type, kind))
        for f, column in zip(table.schema, table.columns, strict=True)
        if (kind := _kept_type(f.type, column)) != f.type
    ]
    if fixes:
        given = _with_fields(given, fixes)
        table = _read_json(data, options, given)
    if learned is not None:
        learned.schema = given
    return table


def _read_json(data: bytes, options: pajson.ReadOptions, given: pa.Schema | None) -> pa.Table:
    parse = None if given is None else pajson.ParseOptions(explicit_schema=given)
    return pajson.read_json(io.BytesIO(data), read_options=options, parse_options=parse)


def _with_fields(schema: pa.Schema | None, fields: list[pa.Field]) -> pa.Schema:
    """``schema`` with ``fields`` added; a struct in both gets the fields of both."""
    types = {} if schema is None else {f.name: f.type for f in schema}
    for f in fields:
        old = types.get(f.name)
        if old is not None and pa.types.is_struct(old) and pa.types.is_struct(f.type):
            merged = _with_fields(pa.schema(list(old)), list(f.type))
            types[f.name] = pa.struct(list(merged))
        else:
            types[f.name] = f.type
    return pa.schema(list(types.items()))


def _changed(old: pa.DataType, new: pa.DataType) -> pa.DataType:
    """``new``, or of a struct only the fields that differ from ``old`` (the rest inferred)."""
    if not (pa.types.is_struct(old) and pa.types.is_struct(new)):
        return new
    pairs = zip(old, new, strict=True)
    return pa.struct([n.with_type(_changed(o.type, n.type)) for o, n in pairs if o.type != n.type])


def _kept_type(kind: pa.DataType, values: Column) -> pa.DataType:
    """The type that keeps what pyarrow read as ``kind`` as written: timestamps as text, each
    float64 whose values reach 2**63 (integers pyarrow could not read as int64) as
    ``EXACT_INTEGER``, in structs and lists too."""
    if pa.types.is_timestamp(kind):
        return pa.string()
    if pa.types.is_float64(kind):
        bounds = pc.min_max(values).as_py()
        if bounds["min"] is None:
            return kind
        return EXACT_INTEGER if max(-bounds["min"], bounds["max"]) >= INT64_BOUND else kind
    if pa.types.is_struct(kind):
        fields = [
            f.with_type(_kept_type(f.type, pc.struct_field(values, [i])))
            for i, f in enumerate(kind)
        ]
        return pa.struct(fields)
    if pa.types.is_list(kind):
        return pa.list_(_kept_type(kind.value_type, pc.list_flatten(values)))
    return kind


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


def list_with_values(lists: pa.Array, values: pa.Array, kind: pa.DataType) -> pa.Array:
    """The lists of ``lists`` (a list or large list array, maybe a slice) over ``values``, their
    items rewritten (same length as ``lists.values``), typed ``kind``."""
    # A null list is a null offset: from_arrays refuses a mask with the offsets of a slice.
    nulls = pa.concat_arrays([lists.is_null(), pa.array([False])])
    offsets = pc.if_else(nulls, pa.scalar(None, lists.offsets.type), lists.offsets)
    return type(lists).from_arrays(offsets, values, type=kind)


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
    """A table from Python rows; a field with conflicting types becomes a string column, and
    an object field whose members conflict keeps its other members (as ``unify`` widens
    across objects)."""
    if not rows:
        return pa.table({})
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    if not names:  # only empty objects: keep their count, with no columns
        return pa.table({"_": pa.nulls(len(rows))}).drop_columns(["_"])
    return pa.table({name: values_column([row.get(name) for row in rows]) for name in names})


def values_column(values: list[Any]) -> pa.Array:
    """One column from Python values (None: null), as ``rows_to_table`` makes each: a type
    conflict becomes text, except inside objects, where only the conflicting member does."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    exact = _exact_integers(values)
    if exact is not None:
        return exact
    if all(v is None or isinstance(v, dict) for v in values):
        # Objects whose members conflict: only the conflicting members widen, so a time or a
        # partition field beside them stays readable by its dotted path.
        names: dict[str, None] = {}
        for value in values:
            if value is not None:
                names.update(dict.fromkeys(value))
        members = [
            values_column([None if v is None else v.get(name) for v in values]) for name in names
        ]
        missing = pa.array([v is None for v in values], pa.bool_())
        return pa.StructArray.from_arrays(members, names=list(names), mask=missing)
    return pa.array([None if v is None else stringify(v) for v in values], pa.string())


def _exact_integers(values: list[Any]) -> pa.Array | None:
    """Integers of which some are beyond 64 bits as ``EXACT_INTEGER``; None if any value is not
    an integer or needs more than 38 digits."""
    if all(v is None or (type(v) is int and -(10**38) < v < 10**38) for v in values):
        return pa.array(values, EXACT_INTEGER)
    return None


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
