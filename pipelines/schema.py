"""Schema unification across files: integers stay integers, new columns are added, conflicts widen.

Widening rules, applied per column across every table of a run:

* identical types stay as they are; a column absent from a table is null there;
* ``null`` joins anything; integers of any width join to the widest (``int64`` for mixed sign);
* integer with float becomes ``float64``; bool with a number becomes that number;
* integer with decimal (JSON integers beyond 64 bits are ``decimal128(38, 0)``) becomes a
  decimal holding both, decimal with float ``float64``;
* timestamps join to ``timestamp[us, UTC]``; structs merge their fields by the same rules;
* any other conflict (number with string, struct with list, ...) becomes ``string``, with
  nested values written as JSON.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from bytefreezer.transforms.tables import list_with_values, stringify


def _join(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    if a == b:
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    if pa.types.is_boolean(a) and _is_number(b):
        return b
    if pa.types.is_boolean(b) and _is_number(a):
        return a
    if pa.types.is_integer(a) and pa.types.is_integer(b):
        return pa.int64() if a.bit_width < 64 or b.bit_width < 64 else a
    if _is_exact(a) and _is_exact(b) and (pa.types.is_decimal(a) or pa.types.is_decimal(b)):
        return _decimal_join(a, b)
    if _is_number(a) and _is_number(b):
        return pa.float64()
    if pa.types.is_timestamp(a) and pa.types.is_timestamp(b):
        return pa.timestamp("us", tz="UTC")
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        fields: dict[str, pa.DataType] = {f.name: f.type for f in a}
        for f in b:
            fields[f.name] = _join(fields[f.name], f.type) if f.name in fields else f.type
        return pa.struct(list(fields.items()))
    if pa.types.is_list(a) and pa.types.is_list(b):
        return pa.list_(_join(a.value_type, b.value_type))
    return pa.string()


def _is_number(kind: pa.DataType) -> bool:
    return _is_exact(kind) or bool(pa.types.is_floating(kind))


def _is_exact(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_decimal(kind))


def _decimal_join(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    """The decimal holding an integer or decimal ``a`` and ``b`` (an integer: 20 digits);
    ``float64`` beyond 38 digits."""
    scale = max(getattr(a, "scale", 0), getattr(b, "scale", 0))
    digits = max(getattr(k, "precision", 20) - getattr(k, "scale", 0) for k in (a, b))
    if digits + scale > 38:
        return pa.float64()
    return pa.decimal128(digits + scale, scale)


def unified_schema(schemas: list[pa.Schema]) -> pa.Schema:
    """The schema every table of a run is cast to (column order: first appearance)."""
    types: dict[str, pa.DataType] = {}
    for schema in schemas:
        for f in schema:
            types[f.name] = _join(types[f.name], f.type) if f.name in types else f.type
    return pa.schema([pa.field(name, t) for name, t in types.items()])


def _cast(column: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    if column.type == target:
        return column
    return pa.chunked_array([_cast_array(chunk, target) for chunk in column.chunks], target)


def _cast_array(array: pa.Array, target: pa.DataType) -> pa.Array:
    """``array`` as ``target``; structs and lists field by field (Arrow cannot cast a struct
    whose field widened to text: a conflict inside an object failed the packer's run)."""
    kind = array.type
    if kind == target:
        return array
    if pa.types.is_struct(kind) and pa.types.is_struct(target) and target.num_fields:
        children = dict(zip([f.name for f in kind], array.flatten(), strict=True))
        fields = [
            _cast_array(children[f.name], f.type)
            if f.name in children
            else pa.nulls(len(array), f.type)
            for f in target
        ]
        return pa.StructArray.from_arrays(fields, fields=list(target), mask=array.is_null())
    if (pa.types.is_list(kind) and pa.types.is_list(target)) or (
        pa.types.is_large_list(kind) and pa.types.is_large_list(target)
    ):
        return list_with_values(array, _cast_array(array.values, target.value_type), target)
    if pa.types.is_string(target) and (pa.types.is_nested(kind) or pa.types.is_binary(kind)):
        return _as_text(array)
    try:
        return pc.cast(array, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _as_text(array).cast(target)


def _as_text(array: pa.Array) -> pa.Array:
    return pa.array([None if v is None else stringify(v) for v in array.to_pylist()], pa.string())


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast ``table`` to ``schema``, adding absent columns as nulls."""
    columns = []
    for f in schema:
        if f.name in table.column_names:
            columns.append(_cast(table.column(f.name), f.type))
        else:
            columns.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def unify(tables: list[pa.Table]) -> pa.Table:
    """Concatenate tables under their unified schema."""
    schema = unified_schema([t.schema for t in tables])
    return pa.concat_tables([conform(t, schema) for t in tables])
