"""Event-time partitions: each row's time from the dataset's timestamp field, then a path.

Event time is read from a timestamp column (a dotted path names a field inside an object), an
ISO 8601 / RFC 3339 string, or epoch numbers (seconds, milliseconds, microseconds or
nanoseconds, told apart by magnitude). Rows without a readable time use the ingest time of the
object they came in.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from bytefreezer.control.models import ParquetOptions
from bytefreezer.keys import (
    NULL_PARTITION_VALUE,
    escape_partition_value,
    fill_partition_fields,
    partition_fields,
    partition_strftime,
)
from bytefreezer.transforms.builtin.date_parse import parse_iso
from bytefreezer.transforms.condition import duckdb_connection
from bytefreezer.transforms.tables import get_column

TS_TYPE = pa.timestamp("us", tz="UTC")

_TEMPLATES = {
    "hive": "year=%Y/month=%m/day=%d/hour=%H",
    "date": "date=%Y-%m-%d",
    "date_hour": "date=%Y-%m-%d/hour=%H",
}


def _from_numbers(column: pa.ChunkedArray) -> pa.ChunkedArray:
    values = pc.cast(column, pa.float64())
    magnitude = pc.abs(values)
    # Seconds until year ~5138, then ms, us, ns by magnitude.
    scale = pc.case_when(
        pc.make_struct(
            pc.greater(magnitude, 1e17), pc.greater(magnitude, 1e14), pc.greater(magnitude, 1e11)
        ),
        pa.scalar(1e-3),
        pa.scalar(1.0),
        pa.scalar(1e3),
        pa.scalar(1e6),
    )
    scaled = pc.round(pc.multiply(values, scale))
    # A number no time can be (beyond int64 microseconds) has none: that row alone falls back.
    readable = pc.less(pc.abs(scaled), 9.2e18)
    micros = pc.cast(pc.if_else(readable, scaled, pa.scalar(None, pa.float64())), pa.int64())
    return micros.cast(pa.timestamp("us")).cast(TS_TYPE)


def _from_strings(column: pa.ChunkedArray) -> pa.ChunkedArray:
    times = parse_iso(column, "UTC")
    if times.null_count == column.null_count:
        return times
    # Epoch numbers sent as strings (or stringified by a type conflict) still count.
    con = duckdb_connection("UTC")
    con.register("__bf_times", pa.table({"s": column}))
    try:
        numbers = con.sql("SELECT TRY_CAST(s AS DOUBLE) FROM __bf_times").to_arrow_table()
    finally:
        con.unregister("__bf_times")
    return pc.coalesce(times, _from_numbers(numbers.column(0)))


def event_times(table: pa.Table, field: str, ingest_ns: pa.Array | int) -> pa.ChunkedArray:
    """Each row's event time as ``timestamp[us, UTC]``; ingest time where it has none."""
    n = table.num_rows
    if isinstance(ingest_ns, int):
        fallback = pa.chunked_array([pa.array([ingest_ns // 1000] * n, pa.int64())])
    else:
        fallback = pa.chunked_array([pc.divide(ingest_ns, 1000)])
    fallback_ts = fallback.cast(pa.timestamp("us")).cast(TS_TYPE)
    found = get_column(table, field)  # a dotted path names a field inside an object
    if found is None or n == 0:
        return fallback_ts
    column = pa.chunked_array([found]) if isinstance(found, pa.Array) else found
    kind = column.type
    try:
        if pa.types.is_timestamp(kind):
            times = column.cast(pa.timestamp("us", tz=kind.tz or "UTC")).cast(TS_TYPE)
        elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
            times = _from_numbers(column)  # decimal: a field with an integer beyond 64 bits
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            times = _from_strings(column)
        elif pa.types.is_date(kind):
            times = column.cast(pa.timestamp("us")).cast(TS_TYPE)
        else:
            return fallback_ts
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OverflowError):
        return fallback_ts
    return pc.coalesce(times, fallback_ts)


class Partitions(NamedTuple):
    """The partition of each row as a code (``int32``, one per row) into ``names`` (the
    distinct partition directories): sorting and counting integers, not path strings."""

    codes: pa.Array
    names: list[str]

    def paths(self) -> pa.Array:
        """The partition directory of each row."""
        return pa.array(self.names, pa.string()).take(self.codes)


def partitions(
    times: pa.ChunkedArray,
    options: ParquetOptions,
    tenant: str = "",
    dataset: str = "",
    table: pa.Table | None = None,
) -> Partitions | None:
    """The partition of each row, or None when the dataset is not partitioned (a custom
    template's ``{tenant}`` and ``{dataset}`` are the dataset's names, its ``{field:NAME}`` the
    row's value of that field in ``table``)."""
    if options.partitioning == "none":
        return None
    if options.partitioning == "custom":
        template = partition_strftime(options.partition_template, tenant, dataset)
        fields = partition_fields(options.partition_template)
    else:
        template, fields = _TEMPLATES[options.partitioning], []
    if not template:
        return None
    found = _time_partitions(times, template)
    for name in fields:
        found = _with_field(found, _field_values(table, name, len(times)))
    if fields:
        names = [fill_partition_fields(path, values) for path, *values in found.names]
        return Partitions(found.codes, names)
    return Partitions(found.codes, [path for (path,) in found.names])


class _Combined(NamedTuple):
    codes: pa.Array  # int32, one per row, into names
    names: list[tuple[str, ...]]  # the formatted time path, then each field's value so far


def _time_partitions(times: pa.ChunkedArray, template: str) -> _Combined:
    unit = _coarsest_unit(template)
    if unit is None:
        encoded = pc.strftime(times, format=template, locale="C").combine_chunks()
        encoded = encoded.dictionary_encode()
        names: list[tuple[str, ...]] = [(path,) for path in encoded.dictionary.to_pylist()]
        return _Combined(encoded.indices.cast(pa.int32()), names)
    # Format each distinct hour (or day) once instead of every row: a template that names no
    # finer field than that gives every row of the hour the same path.
    floored = pc.floor_temporal(times, unit=unit)
    distinct = pc.unique(floored)
    formatted = pc.strftime(distinct, format=template, locale="C").to_pylist()
    names = [(path,) for path in formatted]
    codes = pc.index_in(floored, value_set=distinct).combine_chunks().cast(pa.int32())
    return _Combined(codes, names)


def _field_values(table: pa.Table | None, name: str, rows: int) -> tuple[pa.Array, list[str]]:
    """Each row's value of field ``name`` as a code into directory names (escaped, once per
    distinct value). A row without the field, or whose value is an object or a list, has
    ``NULL_PARTITION_VALUE``."""
    found = None if table is None else get_column(table, name)
    if isinstance(found, pa.ChunkedArray):
        found = found.combine_chunks()
    if found is not None and pa.types.is_dictionary(found.type):
        found = found.dictionary_decode()
    text: pa.Array | None = None
    if found is not None and not pa.types.is_nested(found.type):
        try:
            text = found.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # bytes that are not UTF-8
            text = None
    if text is None:
        return pa.array([0] * rows, pa.int32()), [NULL_PARTITION_VALUE]
    encoded = text.dictionary_encode(null_encoding="encode")
    escaped = [escape_partition_value(v) for v in encoded.dictionary.to_pylist()]
    names = list(dict.fromkeys(escaped))  # null and "" (or two cut values) may share a name
    remap = pa.array([names.index(e) for e in escaped], pa.int32())
    return remap.take(encoded.indices), names


def _with_field(found: _Combined, field: tuple[pa.Array, list[str]]) -> _Combined:
    codes, names = field
    pairs = pc.add(
        pc.multiply(found.codes.cast(pa.int64()), len(names)), codes.cast(pa.int64())
    ).dictionary_encode()
    combined = [
        (*found.names[pair // len(names)], names[pair % len(names)])
        for pair in pairs.dictionary.to_pylist()
    ]
    return _Combined(pairs.indices.cast(pa.int32()), combined)


def partition_paths(
    times: pa.ChunkedArray,
    options: ParquetOptions,
    tenant: str = "",
    dataset: str = "",
    table: pa.Table | None = None,
) -> pa.Array | None:
    """The partition directory of each row, or None when the dataset is not partitioned."""
    found = partitions(times, options, tenant, dataset, table)
    return None if found is None else found.paths()


_DAY_FIELDS = set("Ymdjy%")
_HOUR_FIELDS = _DAY_FIELDS | {"H"}


def _coarsest_unit(template: str) -> str | None:
    """``day`` or ``hour`` when the template's fields are all that coarse, else None."""
    fields = set(re.findall(r"%(.)", template))
    if fields <= _DAY_FIELDS:
        return "day"
    if fields <= _HOUR_FIELDS:
        return "hour"
    return None
