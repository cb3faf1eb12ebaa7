"""OTLP/HTTP traces in: the OpenTelemetry SDK's own OTLP span exporter ships spans through the
receiver, piper and packer to Parquet; OTLP/JSON with hex ids (links too); refusals."""

from __future__ import annotations

import json

import httpx
import pyarrow as pa
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from bytefreezer.keys import IntakeKey
from tests.ingress.conftest import Receiver


def test_the_sdks_otlp_exporter_ships_spans_to_parquet(receiver: Receiver) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    exporter = OTLPSpanExporter(
        endpoint=f"{receiver.url}/otlp/acme/web/v1/traces",
        headers=receiver.auth(),
        compression=Compression.Gzip,
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop.payments", "2.1")
    try:
        with tracer.start_as_current_span("checkout", kind=SpanKind.SERVER) as root:
            root.set_attribute("http.route", "/pay")
            root_context = root.get_span_context()
            for i in range(3):
                with tracer.start_as_current_span(
                    f"charge {i}", kind=SpanKind.CLIENT, links=[Link(root_context, {"why": "x"})]
                ) as child:
                    child.add_event("retry", {"attempt": i})
                    if i == 2:
                        child.set_status(Status(StatusCode.ERROR, "card declined"))
        provider.force_flush()
    finally:
        provider.shutdown()
    stored = receiver.storage.intake.list("acme/web/")
    assert stored and all(IntakeKey.parse(o.key).hint == "otlp-traces" for o in stored)

    table = receiver.pack("web")
    assert table is not None
    assert pa.types.is_timestamp(table.schema.field("timestamp").type)
    rows = {r["name"]: r for r in table.to_pylist()}
    assert set(rows) == {"checkout", "charge 0", "charge 1", "charge 2"}
    root_row = rows["checkout"]
    trace_id = format(root_context.trace_id, "032x")
    assert root_row["trace_id"] == trace_id and root_row["parent_span_id"] is None
    assert root_row["span_id"] == format(root_context.span_id, "016x")
    assert (root_row["kind"], root_row["attributes"]) == ("server", {"http.route": "/pay"})
    assert root_row["resource"]["service.name"] == "checkout"
    assert (root_row["scope_name"], root_row["scope_version"]) == ("shop.payments", "2.1")
    assert root_row["duration_ns"] > 0 and root_row["end_timestamp"] >= root_row["timestamp"]
    for i in range(3):
        child = rows[f"charge {i}"]
        assert child["parent_span_id"] == root_row["span_id"] and child["kind"] == "client"
        assert [(e["name"], e["attributes"]) for e in child["events"]] == [
            ("retry", {"attempt": i})
        ]
        assert child["events"][0]["time"].endswith("Z")
        (link,) = child["links"]
        assert (link["trace_id"], link["span_id"]) == (trace_id, root_row["span_id"])
        assert link["attributes"] == {"why": "x"}
    assert rows["charge 2"]["status_code"] == "error"
    assert rows["charge 2"]["status_message"] == "card declined"
    assert rows["charge 0"]["status_code"] is None


def test_otlp_json_spans_with_hex_ids_and_refusals(receiver: Receiver) -> None:
    span = {
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "parentSpanId": "eee19b7ec3c1b173",
        "name": "GET /",
        "kind": 2,
        "startTimeUnixNano": "1767225600000000000",
        "endTimeUnixNano": "1767225600250000000",
        "links": [{"traceId": "00000000000000000000000000000001", "spanId": "0000000000000002"}],
        "status": {"code": 1},
    }
    document = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    url = f"{receiver.url}/otlp/acme/web/v1/traces"
    response = httpx.post(
        url,
        content=json.dumps(document),
        headers={**receiver.auth(), "Content-Type": "application/json"},
    )
    assert response.status_code == 200 and response.json() == {}
    binary = httpx.post(
        url,
        content=b"\x0a\x02\x0a",
        headers={**receiver.auth(), "Content-Type": "application/x-protobuf"},
    )
    assert binary.status_code == 400 and "ExportTraceServiceRequest" in binary.text
    empty = httpx.post(
        url, content=b"", headers={**receiver.auth(), "Content-Type": "application/x-protobuf"}
    )
    assert empty.status_code == 200
    assert ExportTraceServiceResponse.FromString(empty.content) == ExportTraceServiceResponse()
    text = httpx.post(url, content=b"x", headers={**receiver.auth(), "Content-Type": "text/plain"})
    assert text.status_code == 415
    # the OTLP hints are the OTLP endpoints' own
    plain = httpx.post(
        f"{receiver.url}/acme/web?format=otlp-traces", content=b"{}", headers=receiver.auth()
    )
    assert plain.status_code == 400 and "/v1/traces" in plain.text
    table = receiver.pack("web")
    assert table is not None
    (row,) = table.to_pylist()
    assert (row["trace_id"], row["span_id"]) == (span["traceId"], span["spanId"])
    assert row["parent_span_id"] == "eee19b7ec3c1b173" and row["kind"] == "server"
    assert row["duration_ns"] == 250_000_000 and row["status_code"] == "ok"
    assert row["links"][0]["trace_id"] == "00000000000000000000000000000001"
    assert row["timestamp"].isoformat() == "2026-01-01T00:00:00+00:00"
