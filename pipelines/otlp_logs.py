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

from typing import Any

import pyarrow as pa
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from bytefreezer.pipelines.decode import Decoded
from bytefreezer.pipelines.otlp_common import (
    TIME,
    any_value,
    attributes,
    columns_table,
    micros,
    parse_request,
)

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


def decode_otlp_logs(data: bytes) -> Decoded:
    """The log records of one binary ``ExportLogsServiceRequest``; ``ValueError`` when it is
    not one (the receiver checked it, so the object is damaged: it is set aside whole)."""
    request = parse_request(ExportLogsServiceRequest, data)
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
                times.append(micros(nanos))
                observed_times.append(micros(observed))
                severity_texts.append(record.severity_text or None)
                severity_numbers.append(record.severity_number or None)
                bodies.append(any_value(record.body) if record.HasField("body") else None)
                event_names.append(record.event_name or None)
                attribute_maps.append(attributes(record.attributes) if record.attributes else None)
                trace_ids.append(record.trace_id.hex() or None)
                span_ids.append(record.span_id.hex() or None)
                flags.append(record.flags or None)
    return Decoded(columns_table(columns, _TYPES), [], len(times))
