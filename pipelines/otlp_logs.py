"""OTLP log records as rows: what the receiver stored from ``/otlp/{tenant}/{dataset}/v1/logs``
(binary ``ExportLogsServiceRequest``s, one a gzip member) decoded for piper.

One row per log record:

* ``timestamp``: the record's time, or its observed time when it has none, ``timestamp[us, UTC]``
  (the dataset's default ``timestamp_field`` partitions by it); ``observed_timestamp``;
* ``severity_text``, ``severity_number``, ``body`` (text as text; a map or list as an object or
  list; bytes in base64), ``event_name``;
* ``attributes`` and ``resource`` (the resource's attributes, ``service.name`` among them) as
  objects, their keys as sent (``attributes."http.method"`` in a condition);
* ``scope_name``, ``scope_version``, ``trace_id`` and ``span_id`` in hex, ``flags``.

Empty fields are null, as a missing field of a JSON record is.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from bytefreezer.pipelines.decode import Decoded
from bytefreezer.transforms.tables import values_column

MAX_NANOS = (1 << 63) - 1  # later than 2262 is no time a timestamp column holds
_COLUMNS = (
    "timestamp",
    "observed_timestamp",
    "severity_text",
    "severity_number",
    "body",
    "event_name",
    "attributes",
    "resource",
    "scope_name",
    "scope_version",
    "trace_id",
    "span_id",
    "flags",
)
TIME = pa.timestamp("us", tz="UTC")
# Columns of one type whatever the records hold (the rest are typed by their values).
_TYPES = {
    "timestamp": TIME,
    "observed_timestamp": TIME,
    "severity_text": pa.string(),
    "severity_number": pa.int64(),
    "event_name": pa.string(),
    "scope_name": pa.string(),
    "scope_version": pa.string(),
    "trace_id": pa.string(),
    "span_id": pa.string(),
    "flags": pa.int64(),
}


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
    seconds, rest = divmod(nanos, 10**9)
    moment = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{moment}.{rest:09d}Z"


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


def decode_otlp_logs(data: bytes) -> Decoded:
    """The log records of one binary ``ExportLogsServiceRequest``; ``ValueError`` when it is
    not one (the receiver checked it, so the object is damaged: it is set aside whole)."""
    request = ExportLogsServiceRequest()
    try:
        request.ParseFromString(data)
    except DecodeError as exc:
        raise ValueError(f"not an OTLP ExportLogsServiceRequest: {exc}") from None
    columns: dict[str, list[Any]] = {name: [] for name in _COLUMNS}
    (
        times,
        observed_times,
        severity_texts,
        severity_numbers,
        bodies,
        event_names,
        attribute_maps,
        resources,
        scope_names,
        scope_versions,
        trace_ids,
        span_ids,
        flags,
    ) = columns.values()
    for resource_logs in request.resource_logs:
        resource = attributes(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            logs = scope_logs.log_records
            scope = scope_logs.scope
            resources.extend([resource] * len(logs))
            scope_names.extend([scope.name or None] * len(logs))
            scope_versions.extend([scope.version or None] * len(logs))
            for record in logs:
                observed = record.observed_time_unix_nano
                nanos = record.time_unix_nano or observed
                times.append(nanos // 1000 if 0 < nanos <= MAX_NANOS else None)
                observed_times.append(observed // 1000 if 0 < observed <= MAX_NANOS else None)
                severity_texts.append(record.severity_text or None)
                severity_numbers.append(record.severity_number or None)
                bodies.append(any_value(record.body) if record.HasField("body") else None)
                event_names.append(record.event_name or None)
                attribute_maps.append(attributes(record.attributes) if record.attributes else None)
                trace_ids.append(record.trace_id.hex() or None)
                span_ids.append(record.span_id.hex() or None)
                flags.append(record.flags or None)
    return Decoded(columns_table(columns, _TYPES), [], len(times))
