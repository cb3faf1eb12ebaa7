"""What piper's OTLP decoders share: values and attributes as JSON values, times, a request
parsed, and rows gathered per resource and scope into a table."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import pyarrow as pa
from google.protobuf.message import DecodeError
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from bytefreezer.pipelines.decode import Decoded
from bytefreezer.times import rfc3339_nanos
from bytefreezer.transforms.tables import values_column

MAX_NANOS = (1 << 63) - 1  # later than 2262 is no time a timestamp column holds
TIME = pa.timestamp("us", tz="UTC")
_Request = TypeVar("_Request")


def any_value(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as a JSON value."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind)


def attributes(pairs: Any) -> dict[str, Any] | None:
    """OTLP key-values as an object (None when there are none)."""
    return {pair.key: any_value(pair.value) for pair in pairs} or None


def nanos_text(nanos: int) -> str | None:
    """Nanoseconds since the epoch as RFC 3339 in UTC to the nanosecond (None for 0)."""
    if nanos <= 0:
        return None
    return rfc3339_nanos(*divmod(nanos, 10**9))


def columns_table(columns: dict[str, list[Any]], types: dict[str, pa.DataType]) -> pa.Table:
    """Rows gathered column by column as a table: a column of ``types`` has that type, the
    others are typed by their values; a field no row has is no column."""
    rows = len(next(iter(columns.values()), []))
    arrays = {}
    for name, values in columns.items():
        if any(v is not None for v in values):
            kind = types.get(name)
            arrays[name] = pa.array(values, kind) if kind is not None else values_column(values)
    return pa.table(arrays) if arrays else pa.table({"_": pa.nulls(rows)}).drop_columns(["_"])


def micros(nanos: int) -> int | None:
    """Nanoseconds since the epoch as microseconds, None for 0 or past what a column holds."""
    return nanos // 1000 if 0 < nanos <= MAX_NANOS else None


def parse_request(kind: type[_Request], data: bytes) -> _Request:
    """A binary OTLP request; ``ValueError`` when ``data`` is not one (the receiver checked it,
    so the object is damaged: it is set aside whole)."""
    request = kind()
    try:
        request.ParseFromString(data)  # type: ignore[attr-defined]
    except DecodeError as exc:
        raise ValueError(f"not an OTLP {kind.__name__}: {exc}") from None
    return request


def gather(
    resources: Iterable[Any],
    scoped: Callable[[Any], Iterable[Any]],
    rows_of: Callable[[Any], Iterable[dict[str, Any]]],
    names: tuple[str, ...],
    types: dict[str, pa.DataType],
) -> Decoded:
    """The rows ``rows_of`` makes of each scope's items (``scoped`` gives a resource's scopes),
    each with its ``resource``, ``scope_name`` and ``scope_version``, as a table of the columns
    ``names``."""
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for resource_items in resources:
        resource = attributes(resource_items.resource.attributes)
        for scope_items in scoped(resource_items):
            scope = scope_items.scope
            for row in rows_of(scope_items):
                row.update(
                    resource=resource,
                    scope_name=scope.name or None,
                    scope_version=scope.version or None,
                )
                for name in names:
                    columns[name].append(row.get(name))
    return Decoded(columns_table(columns, types), [], len(columns[names[0]]))
