"""OTLP spans as rows: what the receiver stored from ``/otlp/{tenant}/{dataset}/v1/traces``
(binary ``ExportTraceServiceRequest``s, one a gzip member) decoded for piper.

One row per span:

* ``timestamp``: the span's start, ``timestamp[us, UTC]`` (the dataset's default
  ``timestamp_field`` partitions by it); ``end_timestamp``; ``duration_ns``;
* ``trace_id``, ``span_id``, ``parent_span_id`` in hex (null for a root span), ``trace_state``,
  ``flags``;
* ``name``, ``kind`` (``internal``, ``server``, ``client``, ``producer``, ``consumer``),
  ``status_code`` (``ok``, ``error``; null when unset) and ``status_message``;
* ``attributes`` and ``resource`` (``service.name`` among them) as objects, keys as sent;
* ``events``: a list of ``{time, name, attributes}`` (time as RFC 3339 text to the nanosecond);
  ``links``: a list of ``{trace_id, span_id, trace_state, attributes}``;
* ``scope_name``, ``scope_version``; and the ``dropped_attributes_count``,
  ``dropped_events_count`` and ``dropped_links_count`` the SDK reported, where not zero.

Empty fields are null, as a missing field of a JSON record is.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from bytefreezer.pipelines.decode import Decoded
from bytefreezer.pipelines.otlp_common import (
    MAX_NANOS,
    TIME,
    attributes,
    gather,
    micros,
    nanos_text,
    parse_request,
)

_KINDS = {
    Span.SPAN_KIND_INTERNAL: "internal",
    Span.SPAN_KIND_SERVER: "server",
    Span.SPAN_KIND_CLIENT: "client",
    Span.SPAN_KIND_PRODUCER: "producer",
    Span.SPAN_KIND_CONSUMER: "consumer",
}
_STATUSES = {Status.STATUS_CODE_OK: "ok", Status.STATUS_CODE_ERROR: "error"}
_COLUMNS = (
    "timestamp",
    "end_timestamp",
    "duration_ns",
    "trace_id",
    "span_id",
    "parent_span_id",
    "trace_state",
    "flags",
    "name",
    "kind",
    "status_code",
    "status_message",
    "attributes",
    "events",
    "links",
    "resource",
    "scope_name",
    "scope_version",
    "dropped_attributes_count",
    "dropped_events_count",
    "dropped_links_count",
)
_TYPES = {
    "timestamp": TIME,
    "end_timestamp": TIME,
    "duration_ns": pa.int64(),
    "trace_id": pa.string(),
    "span_id": pa.string(),
    "parent_span_id": pa.string(),
    "trace_state": pa.string(),
    "flags": pa.int64(),
    "name": pa.string(),
    "kind": pa.string(),
    "status_code": pa.string(),
    "status_message": pa.string(),
    "scope_name": pa.string(),
    "scope_version": pa.string(),
    "dropped_attributes_count": pa.int64(),
    "dropped_events_count": pa.int64(),
    "dropped_links_count": pa.int64(),
}


def _span_row(span: Span) -> dict[str, Any]:
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    return {
        "timestamp": micros(start),
        "end_timestamp": micros(end),
        "duration_ns": end - start if start and end >= start and end <= MAX_NANOS else None,
        "trace_id": span.trace_id.hex() or None,
        "span_id": span.span_id.hex() or None,
        "parent_span_id": span.parent_span_id.hex() or None,
        "trace_state": span.trace_state or None,
        "flags": span.flags or None,
        "name": span.name or None,
        "kind": _KINDS.get(span.kind),
        "status_code": _STATUSES.get(span.status.code),
        "status_message": span.status.message or None,
        "attributes": attributes(span.attributes),
        "events": [
            {
                "time": nanos_text(event.time_unix_nano),
                "name": event.name or None,
                "attributes": attributes(event.attributes),
            }
            for event in span.events
        ]
        or None,
        "links": [
            {
                "trace_id": link.trace_id.hex() or None,
                "span_id": link.span_id.hex() or None,
                "trace_state": link.trace_state or None,
                "attributes": attributes(link.attributes),
            }
            for link in span.links
        ]
        or None,
        "dropped_attributes_count": span.dropped_attributes_count or None,
        "dropped_events_count": span.dropped_events_count or None,
        "dropped_links_count": span.dropped_links_count or None,
    }


def decode_otlp_traces(data: bytes) -> Decoded:
    """The spans of one binary ``ExportTraceServiceRequest``; ``ValueError`` when it is not
    one."""
    request = parse_request(ExportTraceServiceRequest, data)
    return gather(
        request.resource_spans,
        lambda resource: resource.scope_spans,
        lambda scope: (_span_row(span) for span in scope.spans),
        _COLUMNS,
        _TYPES,
    )
