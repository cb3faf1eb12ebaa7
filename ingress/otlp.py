"""OTLP/HTTP logs, traces and metrics in: ``POST /otlp/{tenant}/{dataset}/v1/logs``,
``.../v1/traces`` and ``.../v1/metrics``, what an OpenTelemetry Collector's ``otlphttp`` exporter
or an SDK's OTLP exporters send.

The body is an ``ExportLogsServiceRequest`` (``ExportTraceServiceRequest``,
``ExportMetricsServiceRequest``), binary protobuf (``application/x-protobuf``) or OTLP/JSON
(``application/json``, trace and span ids in hex as the OTLP spec has them), gzip or not. The
receiver parses it to refuse what is not one (400) and to count its log records (spans, data
points), and stores it as binary protobuf under the hint ``otlp`` (``otlp-traces``,
``otlp-metrics``): piper turns each log record (span, data point) into a row.
Answers follow OTLP/HTTP: the response in the request's encoding, an error as a ``google.rpc.Status``,
429 and 503 with ``Retry-After`` (exporters retry those).
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from starlette.responses import Response

from bytefreezer.ingress.bodies import Body, BodyError, decompress


@dataclass(frozen=True)
class Signal:
    """One OTLP signal as the receiver takes it."""

    path: str  # "logs": /otlp/{tenant}/{dataset}/v1/logs
    hint: str  # what the stored object is marked with for piper
    request: type[Any]
    response: type[Any]
    records: Callable[[Any], int]  # what piper makes a row of, counted in a request


def _log_records(request: Any) -> int:
    return sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)


def _spans(request: Any) -> int:
    return sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)


def _data_points(request: Any) -> int:
    return sum(
        len(getattr(metric, kind).data_points)
        for r in request.resource_metrics
        for s in r.scope_metrics
        for metric in s.metrics
        if (kind := metric.WhichOneof("data")) is not None
    )


LOGS = Signal("logs", "otlp", ExportLogsServiceRequest, ExportLogsServiceResponse, _log_records)
TRACES = Signal(
    "traces", "otlp-traces", ExportTraceServiceRequest, ExportTraceServiceResponse, _spans
)
METRICS = Signal(
    "metrics",
    "otlp-metrics",
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
    _data_points,
)
SIGNALS = {signal.path: signal for signal in (LOGS, TRACES, METRICS)}
OTLP_HINTS = frozenset(signal.hint for signal in SIGNALS.values())
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# gRPC status codes of the HTTP statuses an OTLP error answers with.
_GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 410: 9, 413: 8, 415: 3, 429: 8, 503: 14}


def wants_json(content_type: str) -> bool:
    """Whether a request (and so its response) is OTLP/JSON rather than binary protobuf."""
    return content_type.split(";", 1)[0].strip().lower() == JSON


def prepare_otlp(
    raw: bytes, encoding: str, content_type: str, limit: int, signal: Signal = LOGS
) -> Body:
    """Decompress and parse an OTLP request of ``signal``; the stored member is its binary
    protobuf, gzip-compressed, and its counts are its log records (spans). ``BodyError``
    400/413/415."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind not in (PROTOBUF, JSON):
        raise BodyError(
            415, f"OTLP {signal.path} are {PROTOBUF} or {JSON}, not {kind or 'unnamed'!r}"
        )
    data = decompress(raw, encoding, limit)
    request = signal.request()
    try:
        if kind == JSON:
            json_format.ParseDict(_ids_as_base64(json.loads(data)), request)
        else:
            request.ParseFromString(data)
    except (DecodeError, json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise BodyError(400, f"not an OTLP {signal.request.__name__}: {exc}") from None
    records = signal.records(request)
    if kind == JSON:
        data = request.SerializeToString()
        member = gzip.compress(data, compresslevel=1)
    elif encoding.strip().lower() in ("gzip", "x-gzip"):
        member = raw  # already gzip: stored as sent
    else:
        member = gzip.compress(data, compresslevel=1)
    return Body(member, records, len(data), records)


_ID_FIELDS = frozenset({"traceId", "spanId", "parentSpanId"})


def _ids_as_base64(document: Any) -> Any:
    """OTLP/JSON writes trace and span ids in hex where protobuf's JSON mapping reads base64:
    every id of the request (of log records, spans, their links, exemplars) is turned."""
    if not isinstance(document, dict):
        raise ValueError("the body is not a JSON object")
    pending: list[Any] = [document]
    while pending:  # shapes other than the spec's are left for the parser to refuse
        item = pending.pop()
        if isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            for name, value in item.items():
                if name in _ID_FIELDS and isinstance(value, str) and value:
                    item[name] = base64.b64encode(bytes.fromhex(value)).decode()
                elif isinstance(value, dict | list):
                    pending.append(value)
    return document


def otlp_success(content_type: str, signal: Signal = LOGS) -> Response:
    """An empty export response of ``signal``: every record accepted."""
    if wants_json(content_type):
        return Response(b"{}", media_type=JSON)
    return Response(signal.response().SerializeToString(), media_type=PROTOBUF)


def otlp_error(
    status: int, message: str, content_type: str, retry_after: int | None = None
) -> Response:
    """An OTLP/HTTP error: a ``google.rpc.Status`` with the message, in the request's encoding."""
    error = status_pb2.Status(code=_GRPC_CODES.get(status, 2), message=message)
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    if wants_json(content_type):
        body = json_format.MessageToJson(error).encode()
        return Response(body, status_code=status, media_type=JSON, headers=headers)
    return Response(
        error.SerializeToString(), status_code=status, media_type=PROTOBUF, headers=headers
    )
