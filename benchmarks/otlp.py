"""OTLP logs in piper: decoding stored ``ExportLogsServiceRequest``s into rows.

    python benchmarks/otlp.py [--records 20000] [--repeat 5]

Baselines in the same run: protobuf's own ``MessageToDict`` over the same request (the generic
way to make a request into Python values, before any table exists), and piper's NDJSON decoder
over the same records written as NDJSON lines (what the records cost in the cheapest format).
The median of ``--repeat`` passes each; merges the figures into benchmarks/results/latest.json under
"otlp_logs".
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
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from bytefreezer.pipelines.decode import decode_ndjson
from bytefreezer.pipelines.otlp_logs import decode_otlp_logs

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
    merge_results({"otlp_logs": figures})


if __name__ == "__main__":
    main()
