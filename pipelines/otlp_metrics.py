"""OTLP metric data points as rows: what the receiver stored from
``/otlp/{tenant}/{dataset}/v1/metrics`` (binary ``ExportMetricsServiceRequest``s, one a gzip
member) decoded for piper.

One row per data point:

* ``timestamp``: the point's time, ``timestamp[us, UTC]`` (the dataset's default
  ``timestamp_field`` partitions by it); ``start_timestamp``;
* ``name``, ``description``, ``unit``, ``type`` (``gauge``, ``sum``, ``histogram``,
  ``exponential_histogram``, ``summary``), and for sums and histograms ``temporality``
  (``cumulative``, ``delta``) and, for sums, ``is_monotonic``;
* ``value`` (gauges and sums, a double; an integer point as its value); ``count``, ``sum``,
  ``min``, ``max`` (histograms and summaries); ``bucket_counts`` and ``explicit_bounds``
  (histograms); ``scale``, ``zero_count``, ``zero_threshold``, ``positive_offset``,
  ``positive_bucket_counts``, ``negative_offset``, ``negative_bucket_counts`` (exponential
  histograms); ``quantiles`` as a list of ``{quantile, value}`` (summaries);
* ``attributes`` (the point's) and ``resource`` as objects, ``scope_name``, ``scope_version``,
  ``flags``.

Exemplars are not kept. Empty fields are null, as a missing field of a JSON record is.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric

from bytefreezer.pipelines.decode import Decoded
from bytefreezer.pipelines.otlp_common import TIME, attributes, gather, micros, parse_request

_TEMPORALITIES = {
    AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA: "delta",
    AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE: "cumulative",
}
_FLOATS = ("value", "sum", "min", "max", "zero_threshold")
_INTS = ("count", "scale", "zero_count", "positive_offset", "negative_offset", "flags")
_TEXTS = ("name", "description", "unit", "type", "temporality", "scope_name", "scope_version")
_TYPES: dict[str, pa.DataType] = {
    "timestamp": TIME,
    "start_timestamp": TIME,
    "is_monotonic": pa.bool_(),
    "bucket_counts": pa.list_(pa.int64()),
    "explicit_bounds": pa.list_(pa.float64()),
    "positive_bucket_counts": pa.list_(pa.int64()),
    "negative_bucket_counts": pa.list_(pa.int64()),
    **dict.fromkeys(_FLOATS, pa.float64()),
    **dict.fromkeys(_INTS, pa.int64()),
    **dict.fromkeys(_TEXTS, pa.string()),
}
_COLUMNS = (
    "timestamp",
    "start_timestamp",
    "name",
    "description",
    "unit",
    "type",
    "temporality",
    "is_monotonic",
    "value",
    "count",
    "sum",
    "min",
    "max",
    "bucket_counts",
    "explicit_bounds",
    "scale",
    "zero_count",
    "zero_threshold",
    "positive_offset",
    "positive_bucket_counts",
    "negative_offset",
    "negative_bucket_counts",
    "quantiles",
    "attributes",
    "resource",
    "scope_name",
    "scope_version",
    "flags",
)


def _optional(point: Any, name: str) -> Any:
    """An optional field's value (``min``, ``max``, a histogram's ``sum``), None when unset."""
    return getattr(point, name) if point.HasField(name) else None


def _points(metric: Metric) -> list[dict[str, Any]]:
    """The rows of one metric's data points, without its scope and resource."""
    kind = metric.WhichOneof("data")
    if kind is None:
        return []
    data = getattr(metric, kind)
    shared: dict[str, Any] = {
        "name": metric.name or None,
        "description": metric.description or None,
        "unit": metric.unit or None,
        "type": kind,
    }
    if kind in ("sum", "histogram", "exponential_histogram"):
        shared["temporality"] = _TEMPORALITIES.get(data.aggregation_temporality)
    if kind == "sum":
        shared["is_monotonic"] = data.is_monotonic
    rows = []
    for point in data.data_points:
        row = {
            **shared,
            "timestamp": micros(point.time_unix_nano),
            "start_timestamp": micros(point.start_time_unix_nano),
            "attributes": attributes(point.attributes),
            "flags": point.flags or None,
        }
        if kind in ("gauge", "sum"):
            number = point.WhichOneof("value")
            row["value"] = float(getattr(point, number)) if number else None
        elif kind == "summary":
            row.update(count=point.count, sum=point.sum)
            row["quantiles"] = [
                {"quantile": q.quantile, "value": q.value} for q in point.quantile_values
            ] or None
        else:  # histograms
            row.update(
                count=point.count,
                sum=_optional(point, "sum"),
                min=_optional(point, "min"),
                max=_optional(point, "max"),
            )
            if kind == "histogram":
                row["bucket_counts"] = list(point.bucket_counts)
                row["explicit_bounds"] = list(point.explicit_bounds)
            else:
                row.update(
                    scale=point.scale,
                    zero_count=point.zero_count,
                    zero_threshold=point.zero_threshold,
                    positive_offset=point.positive.offset,
                    positive_bucket_counts=list(point.positive.bucket_counts),
                    negative_offset=point.negative.offset,
                    negative_bucket_counts=list(point.negative.bucket_counts),
                )
        rows.append(row)
    return rows


def decode_otlp_metrics(data: bytes) -> Decoded:
    """The data points of one binary ``ExportMetricsServiceRequest``; ``ValueError`` when it is
    not one."""
    request = parse_request(ExportMetricsServiceRequest, data)
    return gather(
        request.resource_metrics,
        lambda resource: resource.scope_metrics,
        lambda scope: (row for metric in scope.metrics for row in _points(metric)),
        _COLUMNS,
        _TYPES,
    )
