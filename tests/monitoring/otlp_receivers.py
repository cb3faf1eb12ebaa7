"""Real OTLP receivers on 127.0.0.1, built on the opentelemetry-proto service definitions."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.helpers import free_port, serve_app


class Collected:
    """Everything pushed to a receiver."""

    def __init__(self) -> None:
        self.metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.traces: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()

    def points(self, name: str) -> list[tuple[dict[str, Any], float]]:
        """Every data point of metric ``name``: (attributes, value)."""
        out = []
        with self.lock:
            requests = list(self.metrics)
        for request in requests:
            for resource in request.resource_metrics:
                for scope in resource.scope_metrics:
                    for metric in scope.metrics:
                        if metric.name != name:
                            continue
                        kind = metric.WhichOneof("data")
                        data = getattr(metric, kind)
                        for point in data.data_points:
                            attributes = {a.key: a.value.string_value for a in point.attributes}
                            if kind == "histogram":
                                value = float(point.count)
                            else:
                                value = (
                                    point.as_double
                                    if point.HasField("as_double")
                                    else float(point.as_int)
                                )
                            out.append((attributes, value))
        return out

    def total(self, name: str, **match: str) -> float:
        """A cumulative counter's latest total over the attribute sets that match."""
        latest: dict[tuple[tuple[str, Any], ...], float] = {}
        for attributes, value in self.points(name):
            if all(attributes.get(k) == v for k, v in match.items()):
                latest[tuple(sorted(attributes.items()))] = value
        return sum(latest.values())

    def resource_attributes(self) -> list[dict[str, str]]:
        with self.lock:
            requests = list(self.metrics)
        return [
            {a.key: a.value.string_value for a in resource.resource.attributes}
            for request in requests
            for resource in request.resource_metrics
        ]

    def spans(self) -> list[Any]:
        with self.lock:
            requests = list(self.traces)
        return [
            span
            for request in requests
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, collected: Collected) -> None:
        self.collected = collected

    def Export(self, request: Any, context: Any) -> Any:
        with self.collected.lock:
            self.collected.metrics.append(request)
            self.collected.headers.append(dict(context.invocation_metadata()))
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, collected: Collected) -> None:
        self.collected = collected

    def Export(self, request: Any, context: Any) -> Any:
        with self.collected.lock:
            self.collected.traces.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


@contextmanager
def grpc_receiver() -> Iterator[tuple[str, Collected]]:
    """An OTLP/gRPC receiver; yields its endpoint (host:port) and what it collected."""
    collected = Collected()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(collected), server)
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(collected), server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        yield f"127.0.0.1:{port}", collected
    finally:
        server.stop(grace=1)


@contextmanager
def http_receiver() -> Iterator[tuple[str, Collected]]:
    """An OTLP/HTTP (protobuf) receiver; yields its base URL and what it collected."""
    collected = Collected()

    async def metrics(request: Request) -> Response:
        message = metrics_service_pb2.ExportMetricsServiceRequest()
        message.ParseFromString(await request.body())
        with collected.lock:
            collected.metrics.append(message)
            collected.headers.append(dict(request.headers))
        body = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
        return Response(body, media_type="application/x-protobuf")

    async def traces(request: Request) -> Response:
        message = trace_service_pb2.ExportTraceServiceRequest()
        message.ParseFromString(await request.body())
        with collected.lock:
            collected.traces.append(message)
        body = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        return Response(body, media_type="application/x-protobuf")

    app = Starlette(
        routes=[
            Route("/v1/metrics", metrics, methods=["POST"]),
            Route("/v1/traces", traces, methods=["POST"]),
        ]
    )
    with serve_app(app) as url:
        yield url, collected
