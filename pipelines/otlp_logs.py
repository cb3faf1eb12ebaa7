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
from typing import Any

import pyarrow as pa
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from bytefreezer.pipelines.decode import Decoded
from bytefreezer.transforms.tables import rows_to_table

_MAX_NANOS = (1 << 63) - 1  # later than 2262 is no time a timestamp column holds


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


def decode_otlp_logs(data: bytes) -> Decoded:
    """The log records of one binary ``ExportLogsServiceRequest``; ``ValueError`` when it is
    not one (the receiver checked it, so the object is damaged: it is set aside whole)."""
    request = ExportLogsServiceRequest()
    try:
        request.ParseFromString(data)
    except DecodeError as exc:
        raise ValueError(f"not an OTLP ExportLogsServiceRequest: {exc}") from None
    rows: list[dict[str, Any]] = []
    times: dict[str, list[int | None]] = {"timestamp": [], "observed_timestamp": []}
    for resource_logs in request.resource_logs:
        resource = attributes(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            scope = scope_logs.scope
            for record in scope_logs.log_records:
                observed = record.observed_time_unix_nano
                for name, nanos in (
                    ("timestamp", record.time_unix_nano or observed),
                    ("observed_timestamp", observed),
                ):
                    times[name].append(nanos // 1000 if 0 < nanos <= _MAX_NANOS else None)
                row = {
                    "severity_text": record.severity_text or None,
                    "severity_number": record.severity_number or None,
                    "body": any_value(record.body) if record.HasField("body") else None,
                    "event_name": record.event_name or None,
                    "attributes": attributes(record.attributes),
                    "resource": resource,
                    "scope_name": scope.name or None,
                    "scope_version": scope.version or None,
                    "trace_id": record.trace_id.hex() or None,
                    "span_id": record.span_id.hex() or None,
                    "flags": record.flags or None,
                }
                rows.append({k: v for k, v in row.items() if v is not None})
    table = rows_to_table(rows)
    for position, (name, micros) in enumerate(times.items()):
        if any(m is not None for m in micros):
            column = pa.array(micros, pa.timestamp("us", tz="UTC"))
            table = table.add_column(min(position, table.num_columns), name, column)
    return Decoded(table, [], len(rows))
