"""OTLP logs and traces in piper: decoding stored ``ExportLogsServiceRequest``s and
``ExportTraceServiceRequest``s into rows.

    python benchmarks/otlp.py [--records 20000] [--repeat 5]

Baselines in the same run: protobuf's own ``MessageToDict`` over the same request (the generic
way to make a request into Python values, before any table exists), and, for logs, piper's
NDJSON decoder over the same records written as NDJSON lines (what the records cost in the
cheapest format). The median of ``--repeat`` passes each; merges the figures into
benchmarks/results/latest.json under "otlp_logs" and "otlp_traces".
"""

from __future__ import annotations

from bytefreezer.memory import prefer_arrow_pool

prefer_arrow_pool()  # Arrow's pool as the `bytefreezer` command chooses it, before pyarrow loads

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from bytefreezer.pipelines.decode import decode_ndjson
from bytefreezer.pipelines.otlp_logs import decode_otlp_logs
from bytefreezer.pipelines.otlp_traces import decode_otlp_traces

sys.path.insert(0, str(Path(__file__).parent))
from common import median_seconds, merge_results

START_NS = 1_767_225_600_000_000_000


def _attribute(key: str, value: Any) -> KeyValue:
    kind = "int_value" if isinstance(value, int) else "string_value"
    return KeyValue(key=key, value=AnyValue(**{kind: value}))


def request(records: int) -> ExportLogsServiceRequest:
    """A request as an SDK sends it: one resource and scope, records with a text body, two
    attributes and trace context."""
    logs = [
        LogRecord(
            time_unix_nano=START_NS + i * 1_000_000,
            observed_time_unix_nano=START_NS + i * 1_000_000 + 500,
            severity_number=9,
            severity_text="INFO",
            body=AnyValue(string_value=f"GET /api/items/{i % 997} served in {i % 100} ms"),
            attributes=[_attribute("http.method", "GET"), _attribute("http.status", 200 + i % 5)],
            trace_id=i.to_bytes(16, "big"),
            span_id=(i * 7).to_bytes(8, "big"),
        )
        for i in range(records)
    ]
    resource = Resource(attributes=[_attribute("service.name", "api")])
    scope = ScopeLogs(log_records=logs)
    return ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(resource=resource, scope_logs=[scope])]
    )


def spans_request(spans: int) -> ExportTraceServiceRequest:
    """Spans as an SDK sends them: one resource and scope, a server span with three attributes
    and an event every tenth span, the rest client spans under it."""
    items = []
    for i in range(spans):
        root = i % 10 == 0
        items.append(
            Span(
                trace_id=(i // 10).to_bytes(16, "big"),
                span_id=(i + 1).to_bytes(8, "big"),
                parent_span_id=b"" if root else (i - i % 10 + 1).to_bytes(8, "big"),
                name="GET /api/items" if root else f"SELECT items {i % 10}",
                kind=Span.SPAN_KIND_SERVER if root else Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=START_NS + i * 1_000_000,
                end_time_unix_nano=START_NS + i * 1_000_000 + 250_000,
                attributes=[
                    _attribute("http.method", "GET"),
                    _attribute("http.status", 200 + i % 5),
                    _attribute("db.system", "postgresql"),
                ],
                events=[Span.Event(time_unix_nano=START_NS + i * 1_000_000, name="cache miss")]
                if root
                else [],
            )
        )
    resource = Resource(attributes=[_attribute("service.name", "api")])
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=items)])]
    )


def as_ndjson(records: int) -> bytes:
    """The same records as NDJSON lines, as piper's OTLP rows hold them."""
    return b"\n".join(
        orjson.dumps(
            {
                "timestamp": START_NS + i * 1_000_000,
                "observed_timestamp": START_NS + i * 1_000_000 + 500,
                "severity_text": "INFO",
                "severity_number": 9,
                "body": f"GET /api/items/{i % 997} served in {i % 100} ms",
                "attributes": {"http.method": "GET", "http.status": 200 + i % 5},
                "resource": {"service.name": "api"},
                "trace_id": i.to_bytes(16, "big").hex(),
                "span_id": (i * 7).to_bytes(8, "big").hex(),
            }
        )
        for i in range(records)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    data = request(args.records).SerializeToString()
    lines = as_ndjson(args.records)
    decoded = decode_otlp_logs(data)
    assert decoded.table.num_rows == args.records

    def message_to_dict() -> object:
        parsed = ExportLogsServiceRequest()
        parsed.ParseFromString(data)
        return MessageToDict(parsed)

    ours = median_seconds(lambda: decode_otlp_logs(data), args.repeat)
    generic = median_seconds(message_to_dict, args.repeat)
    ndjson = median_seconds(lambda: decode_ndjson(lines), args.repeat)
    figures = {
        "records": args.records,
        "request_mb": round(len(data) / 1e6, 2),
        "records_per_s": round(args.records / ours),
        "message_to_dict_records_per_s": round(args.records / generic),
        "ratio": round(generic / ours, 2),
        "ndjson_records_per_s": round(args.records / ndjson),
        "ndjson_ratio": round(ndjson / ours, 3),
    }
    print(
        f"OTLP logs, {args.records:,} records ({figures['request_mb']} MB of protobuf): "
        f"{figures['records_per_s']:,} rec/s; MessageToDict alone "
        f"{figures['message_to_dict_records_per_s']:,} rec/s ({figures['ratio']}x); the same "
        f"records as NDJSON {figures['ndjson_records_per_s']:,} rec/s "
        f"(OTLP at {figures['ndjson_ratio']}x of it)"
    )
    spans = spans_request(args.records).SerializeToString()
    assert decode_otlp_traces(spans).table.num_rows == args.records

    def spans_to_dict() -> object:
        return MessageToDict(ExportTraceServiceRequest.FromString(spans))

    ours_spans = median_seconds(lambda: decode_otlp_traces(spans), args.repeat)
    generic_spans = median_seconds(spans_to_dict, args.repeat)
    traces = {
        "spans": args.records,
        "request_mb": round(len(spans) / 1e6, 2),
        "spans_per_s": round(args.records / ours_spans),
        "message_to_dict_spans_per_s": round(args.records / generic_spans),
        "ratio": round(generic_spans / ours_spans, 2),
    }
    print(
        f"OTLP traces, {args.records:,} spans ({traces['request_mb']} MB of protobuf): "
        f"{traces['spans_per_s']:,} spans/s; MessageToDict alone "
        f"{traces['message_to_dict_spans_per_s']:,} spans/s ({traces['ratio']}x)"
    )
    merge_results({"otlp_logs": figures, "otlp_traces": traces})


if __name__ == "__main__":
    main()
