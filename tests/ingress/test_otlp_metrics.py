"""OTLP/HTTP metrics in: the OpenTelemetry SDK's own OTLP metric exporter ships a counter, an
up-down counter, a histogram, an exponential histogram and an observable gauge through the
receiver, piper and packer to Parquet, a row per data point; OTLP/JSON summaries."""

from __future__ import annotations

import json

import httpx
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from bytefreezer.keys import IntakeKey
from tests.ingress.conftest import Receiver


def test_the_sdks_otlp_exporter_ships_metrics_to_parquet(receiver: Receiver) -> None:
    exporter = OTLPMetricExporter(
        endpoint=f"{receiver.url}/otlp/acme/web/v1/metrics",
        headers=receiver.auth(),
        compression=Compression.Gzip,
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": "checkout"}),
        views=[
            View(
                instrument_name="payload.size", aggregation=ExponentialBucketHistogramAggregation()
            )
        ],
    )
    meter = provider.get_meter("shop", "3.0")

    def temperature(options: CallbackOptions) -> list[Observation]:
        return [Observation(21.5, {"room": "a"}), Observation(19.0, {"room": "b"})]

    try:
        orders = meter.create_counter("orders", unit="1", description="orders taken")
        queue = meter.create_up_down_counter("queue.depth")
        latency = meter.create_histogram("latency", unit="ms")
        size = meter.create_histogram("payload.size", unit="By")
        meter.create_observable_gauge("temperature", callbacks=[temperature])
        for n in range(10):
            orders.add(1, {"region": "eu" if n % 2 else "us"})
            latency.record(n * 10.0)
            size.record(2**n)
        queue.add(5)
        queue.add(-2)
    finally:
        provider.shutdown()  # one export: the last collection
    stored = receiver.storage.intake.list("acme/web/")
    assert stored and all(IntakeKey.parse(o.key).hint == "otlp-metrics" for o in stored)

    table = receiver.pack("web")
    assert table is not None
    rows = table.to_pylist()
    by_name: dict[str, list[dict]] = {}
    for row in rows:
        by_name.setdefault(row["name"], []).append(row)
    assert len(by_name["orders"]) == 2  # a point per attribute set
    orders_rows = {r["attributes"]["region"]: r for r in by_name["orders"]}
    assert {k: r["value"] for k, r in orders_rows.items()} == {"eu": 5.0, "us": 5.0}
    eu = orders_rows["eu"]
    assert (eu["type"], eu["temporality"], eu["is_monotonic"]) == ("sum", "cumulative", True)
    assert (eu["unit"], eu["description"]) == ("1", "orders taken")
    assert eu["resource"]["service.name"] == "checkout"
    assert (eu["scope_name"], eu["scope_version"]) == ("shop", "3.0")
    assert eu["timestamp"] >= eu["start_timestamp"]
    (queue_row,) = by_name["queue.depth"]
    assert (queue_row["value"], queue_row["is_monotonic"]) == (3.0, False)
    (hist,) = by_name["latency"]
    assert (hist["type"], hist["count"], hist["sum"]) == ("histogram", 10, 450.0)
    assert (hist["min"], hist["max"]) == (0.0, 90.0)
    assert sum(hist["bucket_counts"]) == 10
    assert len(hist["bucket_counts"]) == len(hist["explicit_bounds"]) + 1
    (expo,) = by_name["payload.size"]
    assert expo["type"] == "exponential_histogram" and expo["count"] == 10
    assert sum(expo["positive_bucket_counts"]) + expo["zero_count"] == 10
    assert expo["scale"] is not None and expo["sum"] == 1023.0
    gauges = {r["attributes"]["room"]: r["value"] for r in by_name["temperature"]}
    assert gauges == {"a": 21.5, "b": 19.0}
    assert {r["type"] for r in by_name["temperature"]} == {"gauge"}


def test_otlp_json_summaries_and_exemplar_ids(receiver: Receiver) -> None:
    point = {
        "timeUnixNano": "1767225600000000000",
        "count": "4",
        "sum": 10.0,
        "quantileValues": [{"quantile": 0.5, "value": 2.0}, {"quantile": 0.99, "value": 4.0}],
        "attributes": [{"key": "route", "value": {"stringValue": "/"}}],
    }
    gauge_point = {
        "timeUnixNano": "1767225600000000000",
        "asInt": "7",
        "exemplars": [
            {
                "asDouble": 1.0,
                "timeUnixNano": "1767225600000000000",
                "traceId": "5b8efff798038103d269b633813fc60c",
                "spanId": "eee19b7ec3c1b174",
            }
        ],
    }
    document = {
        "resourceMetrics": [
            {
                "scopeMetrics": [
                    {
                        "metrics": [
                            {"name": "rpc.duration", "summary": {"dataPoints": [point]}},
                            {"name": "threads", "gauge": {"dataPoints": [gauge_point]}},
                        ]
                    }
                ]
            }
        ]
    }
    response = httpx.post(
        f"{receiver.url}/otlp/acme/web/v1/metrics",
        content=json.dumps(document),
        headers={**receiver.auth(), "Content-Type": "application/json"},
    )
    assert response.status_code == 200 and response.json() == {}
    table = receiver.pack("web")
    assert table is not None
    rows = {r["name"]: r for r in table.to_pylist()}
    summary = rows["rpc.duration"]
    assert (summary["type"], summary["count"], summary["sum"]) == ("summary", 4, 10.0)
    assert summary["quantiles"] == [
        {"quantile": 0.5, "value": 2.0},
        {"quantile": 0.99, "value": 4.0},
    ]
    assert summary["timestamp"].isoformat() == "2026-01-01T00:00:00+00:00"
    assert (rows["threads"]["type"], rows["threads"]["value"]) == ("gauge", 7.0)
