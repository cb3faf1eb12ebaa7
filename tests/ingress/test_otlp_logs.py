"""OTLP/HTTP logs in: the OpenTelemetry SDK's own OTLP log exporter ships logs through the
receiver, piper and packer to Parquet; OTLP/JSON with hex ids; refusals as google.rpc.Status."""

from __future__ import annotations

import base64
import gzip
import json
import logging
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from bytefreezer.keys import IntakeKey
from bytefreezer.pipelines.otlp_logs import decode_otlp_logs
from tests.ingress.conftest import Receiver

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def pack(receiver: Receiver) -> pa.Table:
    table = receiver.pack("web")
    assert table is not None
    return table


def test_the_sdks_otlp_exporter_ships_logs_to_parquet(receiver: Receiver) -> None:
    provider = LoggerProvider(resource=Resource.create({"service.name": "checkout"}))
    exporter = OTLPLogExporter(
        endpoint=f"{receiver.url}/otlp/acme/web/v1/logs",
        headers=receiver.auth(),
        compression=Compression.Gzip,
    )
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    log = logging.getLogger("shop.payments")
    log.propagate = False
    log.setLevel(logging.INFO)
    handler = LoggingHandler(logger_provider=provider)
    log.addHandler(handler)
    tracer = TracerProvider().get_tracer("shop")
    try:
        with tracer.start_as_current_span("charge") as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
            for i in range(5):
                log.warning("payment %d failed", i, extra={"order.id": f"o-{i}", "amount": 2.5 * i})
        log.info("all done")
        provider.force_flush()
    finally:
        log.removeHandler(handler)
        provider.shutdown()
    stored = receiver.storage.intake.list("acme/web/")
    assert stored and all(IntakeKey.parse(o.key).hint == "otlp" for o in stored)

    table = pack(receiver)
    assert pa.types.is_timestamp(table.schema.field("timestamp").type)
    rows = sorted(table.to_pylist(), key=lambda r: r["timestamp"])
    assert [r["body"] for r in rows] == [f"payment {i} failed" for i in range(5)] + ["all done"]
    assert [r["severity_text"] for r in rows] == ["WARN"] * 5 + ["INFO"]
    assert rows[3]["attributes"]["order.id"] == "o-3" and rows[3]["attributes"]["amount"] == 7.5
    assert {r["resource"]["service.name"] for r in rows} == {"checkout"}
    assert {r["scope_name"] for r in rows} == {"shop.payments"}
    assert [r["trace_id"] for r in rows[:5]] == [trace_id] * 5 and rows[5].get("trace_id") is None


def test_otlp_json_with_hex_ids_is_read_as_the_spec_writes_it(receiver: Receiver) -> None:
    document = {
        "resourceLogs": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]
                },
                "scopeLogs": [
                    {
                        "scope": {"name": "app", "version": "1.2"},
                        "logRecords": [
                            {
                                "timeUnixNano": "1767225600000000000",
                                "severityNumber": 17,
                                "severityText": "ERROR",
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "body": {"stringValue": "upstream timed out"},
                                "attributes": [
                                    {"key": "retries", "value": {"intValue": "3"}},
                                    {"key": "ok", "value": {"boolValue": False}},
                                ],
                            }
                        ],
                    }
                ],
            }
        ]
    }
    response = httpx.post(
        f"{receiver.url}/otlp/acme/web/v1/logs",
        content=json.dumps(document),
        headers={**receiver.auth(), "Content-Type": "application/json"},
    )
    assert response.status_code == 200 and response.json() == {}
    (row,) = pack(receiver).to_pylist()
    assert row["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert row["span_id"] == "eee19b7ec3c1b174"
    assert row["timestamp"].isoformat() == "2026-01-01T00:00:00+00:00"
    assert (row["severity_number"], row["severity_text"]) == (17, "ERROR")
    assert row["attributes"] == {"retries": 3, "ok": False}
    assert (row["scope_name"], row["scope_version"]) == ("app", "1.2")
    part = receiver.settings.data_dir / "destination" / "acme" / "web" / "year=2026"
    assert part.exists()  # partitioned by the record's own time


def one_record(**fields: object) -> bytes:
    request = ExportLogsServiceRequest(
        resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[LogRecord(**fields)])])]  # type: ignore[arg-type]
    )
    return request.SerializeToString()


def status_of(response: httpx.Response) -> status_pb2.Status:
    status = status_pb2.Status()
    status.ParseFromString(response.content)
    return status


def test_refusals_answer_with_a_status_and_store_nothing(receiver: Receiver) -> None:
    url = f"{receiver.url}/otlp/acme/web/v1/logs"
    garbage = httpx.post(
        url, content=b"\xff\xfe not protobuf", headers={**receiver.auth(), **PROTOBUF}
    )
    assert garbage.status_code == 400
    assert garbage.headers["content-type"] == "application/x-protobuf"
    assert "not an OTLP ExportLogsServiceRequest" in status_of(garbage).message
    assert status_of(garbage).code == 3  # INVALID_ARGUMENT
    text = httpx.post(
        url, content=b"hello", headers={**receiver.auth(), "Content-Type": "text/plain"}
    )
    assert text.status_code == 415
    anonymous = httpx.post(url, content=one_record(severity_text="x"), headers=PROTOBUF)
    assert anonymous.status_code == 401 and status_of(anonymous).message
    elsewhere = httpx.post(
        f"{receiver.url}/otlp/other/web/v1/logs",
        content=one_record(severity_text="x"),
        headers={**receiver.auth(), **PROTOBUF},
    )
    assert elsewhere.status_code == 403
    bad_json = httpx.post(
        url,
        content=b'{"resourceLogs": 5}',
        headers={**receiver.auth(), "Content-Type": "application/json"},
    )
    assert bad_json.status_code == 400 and "message" in bad_json.json()
    # OTLP protobuf posted to the line endpoints as if it were OTLP: refused with where to post.
    misrouted = httpx.post(
        f"{receiver.url}/acme/web",
        content=one_record(severity_text="x"),
        headers={**receiver.auth(), "X-Proxy-Data-Hint": "otlp"},
    )
    assert misrouted.status_code == 400 and "/otlp/acme/web/v1/logs" in misrouted.json()["error"]
    empty = httpx.post(
        url,
        content=ExportLogsServiceRequest().SerializeToString(),
        headers={**receiver.auth(), **PROTOBUF},
    )
    assert empty.status_code == 200
    assert receiver.storage.intake.list("acme/web/") == []


def test_a_gzip_body_over_the_decompressed_cap_is_refused(receiver: Receiver) -> None:
    big = one_record(body=AnyValue(string_value="x" * 2_000_000))
    response = httpx.post(
        f"{receiver.url}/otlp/acme/web/v1/logs",
        content=gzip.compress(big),
        headers={**receiver.auth(), **PROTOBUF, "Content-Encoding": "gzip"},
    )
    assert response.status_code == 413


def test_values_of_every_kind_become_json_values() -> None:
    nested = AnyValue(
        kvlist_value=KeyValueList(
            values=[
                KeyValue(
                    key="list",
                    value=AnyValue(
                        array_value=ArrayValue(
                            values=[
                                AnyValue(int_value=1),
                                AnyValue(double_value=1.5),
                                AnyValue(bool_value=True),
                            ]
                        )
                    ),
                ),
                KeyValue(key="raw", value=AnyValue(bytes_value=b"\x00\x01")),
                KeyValue(key="empty", value=AnyValue()),
            ]
        )
    )
    observed_only = one_record(observed_time_unix_nano=1_767_225_600_000_000_000, body=nested)
    decoded = decode_otlp_logs(observed_only)
    (row,) = decoded.table.to_pylist()
    # A list of a number and a bool widens as JSON lists do (bool + number: the number).
    assert row["body"] == {"list": [1.0, 1.5, 1.0], "raw": "AAE=", "empty": None}
    assert base64.b64decode(row["body"]["raw"]) == b"\x00\x01"
    assert row["timestamp"] == row["observed_timestamp"]
    assert row["timestamp"].isoformat() == "2026-01-01T00:00:00+00:00"
    with pytest.raises(ValueError, match="not an OTLP"):
        decode_otlp_logs(b"\xff\xfe junk")
    # A record with nothing in it still counts, as a row without fields (piper letters it).
    assert decode_otlp_logs(one_record()).lines == 1


def test_the_receiver_documents_the_endpoint(tmp_path: Path) -> None:
    from bytefreezer.ingress.openapi import receiver_openapi

    paths = receiver_openapi()["paths"]
    assert "/otlp/{tenant}/{dataset}/v1/logs" in paths
