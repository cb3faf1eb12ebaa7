"""Telemetry: OpenTelemetry metrics (and traces in the OTLP modes) with one reader chosen by
``monitoring.mode``: a Prometheus ``/metrics`` endpoint, an OTLP push over HTTP or gRPC, or none.

Every metric a component emits is declared once in ``METRICS`` (name, kind, unit, labels,
meaning); the README's metric table is generated from it and the dashboard is checked against it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from bytefreezer import __version__
from bytefreezer.settings import MonitoringSettings, Settings

log = logging.getLogger(__name__)
OTHER_TENANT = "_other"


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its OpenTelemetry name, kind, unit, labels and meaning."""

    name: str
    kind: str  # counter | histogram | gauge
    unit: str
    labels: tuple[str, ...]
    description: str

    @property
    def prometheus_names(self) -> tuple[str, ...]:
        """The series names Prometheus shows for it."""
        if self.kind == "counter":
            return (f"{self.name}_total",)
        if self.kind == "histogram":
            return tuple(f"{self.name}_{s}" for s in ("bucket", "sum", "count"))
        return (self.name,)


_C = ("component",)
METRICS: tuple[MetricSpec, ...] = (
    # Every component
    MetricSpec("bytefreezer_records_received", "counter", "1", (*_C, "stage"), "Records taken in."),
    MetricSpec("bytefreezer_records_sent", "counter", "1", (*_C, "stage"), "Records passed on (stored, staged, written)."),
    MetricSpec("bytefreezer_records_dropped", "counter", "1", (*_C, "stage", "transform"), "Records dropped on purpose (filters)."),
    MetricSpec("bytefreezer_records_dead_lettered", "counter", "1", (*_C, "stage", "transform"), "Records sent to the dead-letter output."),
    MetricSpec("bytefreezer_errors", "counter", "1", (*_C, "stage", "error_type"), "Failures, by kind."),
    MetricSpec("bytefreezer_received_bytes", "counter", "By", (*_C, "stage", "encoding"), "Bytes taken in (compressed and decompressed)."),
    MetricSpec("bytefreezer_sent_bytes", "counter", "By", (*_C, "stage"), "Bytes written out."),
    MetricSpec("bytefreezer_stage_duration_seconds", "histogram", "s", (*_C, "stage"), "Time spent in a stage."),
    # Receiver
    MetricSpec("bytefreezer_receiver_requests", "counter", "1", ("status_class",), "Ingest requests by answer (2xx, 4xx, 5xx)."),
    MetricSpec("bytefreezer_receiver_object_bytes", "histogram", "By", (), "Size of each intake object written (group commit)."),
    MetricSpec("bytefreezer_receiver_store_write_seconds", "histogram", "s", (), "Latency of one intake object write."),
    MetricSpec("bytefreezer_receiver_spool_bytes", "gauge", "By", (), "Bytes waiting in the local spool."),
    MetricSpec("bytefreezer_receiver_spool_objects", "gauge", "1", (), "Objects waiting in the local spool."),
    MetricSpec("bytefreezer_receiver_backpressure_rejections", "counter", "1", (), "Requests refused with 429."),
    MetricSpec("bytefreezer_receiver_quota_rejections", "counter", "1", (), "Requests refused with 429 for a tenant past its daily ingest limit (per tenant with `monitoring.tenant_label`)."),
    MetricSpec("bytefreezer_receiver_repeated_requests", "counter", "1", (), "Retries of a request this receiver had stored (a Firehose request id or a proxy's batch id seen before), answered without storing them again."),
    # Piper
    MetricSpec("bytefreezer_piper_objects", "counter", "1", ("result",), "Intake objects processed (done, lease_lost)."),
    MetricSpec("bytefreezer_piper_run_seconds", "histogram", "s", (), "Duration of one pipeline run."),
    MetricSpec("bytefreezer_piper_backlog_objects", "gauge", "1", (), "Intake objects waiting."),
    MetricSpec("bytefreezer_piper_backlog_age_seconds", "gauge", "s", (), "Age of the oldest waiting intake object."),
    MetricSpec("bytefreezer_piper_lease_conflicts", "counter", "1", (), "Objects another worker held when claimed."),
    MetricSpec("bytefreezer_piper_unowned_objects", "gauge", "1", ("reason",), "Intake objects kept, not processed: their dataset is inactive or gone (no_dataset)."),
    MetricSpec("bytefreezer_piper_failing_datasets", "gauge", "1", (), "Datasets whose chain could not run at piper's last try (a GeoIP database missing, say): their objects wait in the intake, tried again with a growing wait (`bytefreezer datasets status`)."),
    # Packer
    MetricSpec("bytefreezer_packer_files", "counter", "1", (), "Parquet files written."),
    MetricSpec("bytefreezer_packer_rows", "counter", "1", (), "Rows written to Parquet."),
    MetricSpec("bytefreezer_packer_bytes", "counter", "By", (), "Parquet bytes written."),
    MetricSpec("bytefreezer_packer_compression_ratio", "histogram", "1", (), "Staged bytes per Parquet byte, per run."),
    MetricSpec("bytefreezer_packer_manifest_recoveries", "counter", "1", (), "Unfinished manifests replayed."),
    MetricSpec("bytefreezer_packer_files_compacted", "counter", "1", (), "Small files merged into larger ones by compaction (datasets with `parquet.compact_after_minutes`)."),
    MetricSpec("bytefreezer_packer_late_staged_discarded", "counter", "1", (), "Staged objects already packed, rewritten late by a piper that lost its lease, deleted unpacked."),
    MetricSpec("bytefreezer_packer_backlog_objects", "gauge", "1", (), "Staged objects waiting."),
    MetricSpec("bytefreezer_packer_unowned_objects", "gauge", "1", (), "Staged objects kept, not packed: their dataset is gone."),
    MetricSpec("bytefreezer_packer_buffered_objects", "gauge", "1", (), "Staged objects waiting for their dataset's buffer to fill or age (packer.buffer_mb, packer.buffer_seconds)."),
    MetricSpec("bytefreezer_packer_failing_datasets", "gauge", "1", (), "Datasets whose last packer run failed (their destination refuses writes, say): their data stays staged, retried with a growing wait (`bytefreezer datasets status`)."),
    MetricSpec("bytefreezer_packer_oldest_staged_seconds", "gauge", "s", (), "Age of the oldest staged object of a dataset that exists, since the receiver stored it."),
    MetricSpec("bytefreezer_packer_run_seconds", "histogram", "s", (), "Duration of one pipeline run."),
)  # fmt: skip
_BY_NAME = {m.name: m for m in METRICS}


def metrics_reference() -> str:
    """A Markdown table of every metric (README)."""
    rows = ["| metric (Prometheus name) | kind | labels | meaning |", "| --- | --- | --- | --- |"]
    for spec in METRICS:
        labels = ", ".join(f"`{label}`" for label in spec.labels) or "-"
        shown = spec.prometheus_names[0] if spec.kind == "counter" else spec.name
        rows.append(f"| `{shown}` | {spec.kind} | {labels} | {spec.description} |")
    return "\n".join(rows) + "\n"


class _Gauges:
    """Last values of gauges, read by observable-gauge callbacks."""

    def __init__(self) -> None:
        self.values: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        self.lock = threading.Lock()

    def set(self, name: str, value: float, attributes: dict[str, str]) -> None:
        with self.lock:
            self.values.setdefault(name, {})[tuple(sorted(attributes.items()))] = value

    def callback(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            with self.lock:
                current = dict(self.values.get(name, {}))
            return [Observation(v, dict(k)) for k, v in current.items()]

        return observe


class Telemetry:
    """Instruments for one process, exported the way ``monitoring`` says."""

    def __init__(
        self, settings: Settings, component: str, *, metrics_port: int | None = None
    ) -> None:
        self.component = component
        self.settings = settings.monitoring
        self._tenants: set[str] = set()
        self._gauges = _Gauges()
        self._server: Any = None
        self.tracer_provider: Any = None
        resource = _resource(settings, component)
        readers = self._readers(self.settings, metrics_port)
        self.provider = MeterProvider(resource=resource, metric_readers=readers, views=_views())
        meter = self.provider.get_meter("bytefreezer", __version__)
        self._instruments: dict[str, Any] = {}
        for spec in METRICS:
            if spec.kind == "counter":
                self._instruments[spec.name] = meter.create_counter(
                    spec.name, spec.unit, spec.description
                )
            elif spec.kind == "histogram":
                self._instruments[spec.name] = meter.create_histogram(
                    spec.name, spec.unit, spec.description
                )
            else:
                meter.create_observable_gauge(
                    spec.name, [self._gauges.callback(spec.name)], spec.unit, spec.description
                )
        if self.settings.mode in ("otlp_http", "otlp_grpc"):
            self.tracer_provider = _tracer_provider(self.settings, resource)

    def _readers(
        self, monitoring: MonitoringSettings, metrics_port: int | None
    ) -> list[MetricReader]:
        mode = monitoring.mode
        if mode == "none":
            return []
        if mode == "prometheus":
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import CollectorRegistry, start_http_server

            registry = CollectorRegistry()
            reader = PrometheusMetricReader(registry=registry)
            port = metrics_port if metrics_port is not None else monitoring.metrics_port
            self._server = start_http_server(port, addr=monitoring.metrics_host, registry=registry)
            log.info("metrics at http://%s:%d/metrics", monitoring.metrics_host, port)
            return [reader]
        interval = monitoring.export_interval_seconds * 1000
        return [
            PeriodicExportingMetricReader(
                _metric_exporter(monitoring), export_interval_millis=interval
            )
        ]

    # Recording -----------------------------------------------------------------------------

    def _attributes(self, name: str, attributes: dict[str, str]) -> dict[str, str]:
        spec = _BY_NAME[name]
        out = dict(attributes)
        if "component" in spec.labels:
            out.setdefault("component", self.component)
        tenant = out.pop("tenant", None)
        if tenant is not None and self.settings.tenant_label:
            if (
                tenant not in self._tenants
                and len(self._tenants) >= self.settings.tenant_label_limit
            ):
                tenant = OTHER_TENANT
            else:
                self._tenants.add(tenant)
            out["tenant"] = tenant
        return out

    def add(self, name: str, value: float = 1, **attributes: str) -> None:
        """Add to a counter."""
        if value:
            self._instruments[name].add(value, self._attributes(name, attributes))

    def record(self, name: str, value: float, **attributes: str) -> None:
        """Record a histogram value."""
        self._instruments[name].record(value, self._attributes(name, attributes))

    def set(self, name: str, value: float, **attributes: str) -> None:
        """Set a gauge."""
        self._gauges.set(name, value, self._attributes(name, attributes))

    def tracer(self) -> Any:
        """A tracer (a no-op one unless an OTLP mode is on)."""
        from opentelemetry import trace

        if self.tracer_provider is None:
            return trace.NoOpTracer()
        return self.tracer_provider.get_tracer("bytefreezer", __version__)

    def flush(self) -> None:
        """Push what is pending (OTLP modes)."""
        self.provider.force_flush()
        if self.tracer_provider is not None:
            self.tracer_provider.force_flush()

    def shutdown(self) -> None:
        """Flush and stop exporting."""
        try:
            self.provider.shutdown()
            if self.tracer_provider is not None:
                self.tracer_provider.shutdown()
        finally:
            if self._server is not None:
                server, thread = self._server
                server.shutdown()
                thread.join(timeout=5)


def _views() -> list[Any]:
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

    seconds = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
    size = tuple(float(4**i * 1024) for i in range(11))  # 1 KiB .. 1 GiB
    ratio = (1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
    views = []
    for spec in METRICS:
        if spec.kind != "histogram":
            continue
        bounds = seconds if spec.unit == "s" else size if spec.unit == "By" else ratio
        views.append(
            View(instrument_name=spec.name, aggregation=ExplicitBucketHistogramAggregation(bounds))
        )
    return views


def _resource(settings: Settings, component: str) -> Resource:
    """Who is reporting: service name, component, version, instance id (the pod hostname)."""
    return Resource.create(
        {
            "service.name": f"bytefreezer-{component}",
            "service.namespace": "bytefreezer",
            "service.version": __version__,
            "service.instance.id": settings.instance_id,
            "bytefreezer.component": component,
        }
    )


def _headers(monitoring: MonitoringSettings) -> dict[str, str]:
    return {k: v.get_secret_value() for k, v in monitoring.headers.items()}


def _metric_exporter(monitoring: MonitoringSettings) -> Any:
    endpoint = monitoring.external_endpoint
    if monitoring.mode == "otlp_grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(
            endpoint=endpoint,
            insecure=monitoring.insecure,
            headers=_headers(monitoring),
            timeout=monitoring.timeout_seconds,
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpExporter,
    )

    return HttpExporter(
        endpoint=endpoint.rstrip("/") + "/v1/metrics",
        headers=_headers(monitoring),
        timeout=monitoring.timeout_seconds,
    )


def _tracer_provider(monitoring: MonitoringSettings, resource: Resource) -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=resource)
    if monitoring.mode == "otlp_grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter: Any = OTLPSpanExporter(
            endpoint=monitoring.external_endpoint,
            insecure=monitoring.insecure,
            headers=_headers(monitoring),
        )
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpSpans,
        )

        exporter = HttpSpans(
            endpoint=monitoring.external_endpoint.rstrip("/") + "/v1/traces",
            headers=_headers(monitoring),
        )
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    return provider


_NULL: Telemetry | None = None


def null_telemetry() -> Telemetry:
    """A telemetry that records into nothing (tests, notebooks)."""
    global _NULL
    if _NULL is None:
        from bytefreezer.settings import load_settings

        _NULL = Telemetry(load_settings(monitoring={"mode": "none"}), "none")
    return _NULL


# Traces across the batch path -------------------------------------------------------------

TRACEPARENT = "traceparent"


def tracer_for(settings: Settings, component: str) -> Any:
    """(tracer, provider) for code running away from the component's Telemetry (Beam workers);
    provider is None and the tracer a no-op unless an OTLP mode is on."""
    from opentelemetry import trace

    monitoring = settings.monitoring
    if monitoring.mode not in ("otlp_http", "otlp_grpc"):
        return trace.NoOpTracer(), None
    resource = _resource(settings, component)
    provider = _tracer_provider(monitoring, resource)
    return provider.get_tracer("bytefreezer", __version__), provider


def inject_traceparent(span: Any) -> dict[str, str]:
    """The W3C ``traceparent`` of ``span`` as a one-entry mapping (empty for no-op spans)."""
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    if span.get_span_context().is_valid:
        TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(span))
    return carrier


def extract_context(traceparent: str | None) -> Any:
    """A parent context from a stored ``traceparent`` (None when there is none)."""
    if not traceparent:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({TRACEPARENT: traceparent})


def span_link(traceparent: str | None) -> Any:
    """A span link to a stored ``traceparent`` (None when there is none)."""
    from opentelemetry import trace

    context = extract_context(traceparent)
    if context is None:
        return None
    span_context = trace.get_current_span(context).get_span_context()
    return trace.Link(span_context) if span_context.is_valid else None
