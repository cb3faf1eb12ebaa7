"""Prometheus remote write in: what Prometheus's `remote_write`, Grafana Agent and Alloy's
`prometheus.remote_write`, the OpenTelemetry Collector's `prometheusremotewrite` exporter and
Vector's `prometheus_remote_write` sink send, taken on the receiver's webhook port at
`POST /prometheus/api/v1/write` and `/{tenant}/{dataset}/prometheus/api/v1/write`, so metrics
are kept as Parquet beside logs.

The body is a remote-write 1.0 `WriteRequest`, protobuf compressed with snappy. Every sample
becomes a record: `timestamp` (RFC 3339 to the millisecond; packer partitions by it), `metric`
(the series' `__name__`), `labels` (its other labels as an object), `value`, and `kind`
`sample`. A value JSON cannot hold is null, with `value_special` `NaN`, `+Inf`, `-Inf` or
`stale` (Prometheus's staleness marker). A native histogram is a record of kind `histogram`
with the histogram's fields in `histogram`; an exemplar one of kind `exemplar` (`value` and
`exemplar_labels`); a metric family's metadata one of kind `metadata` (`type`, `help`, `unit`,
timed when it arrived). The credentials are a bytefreezer ingest key as a bearer token
(`authorization`) or Basic auth's password (`basic_auth`). Answers: 204 once the records are
durable; a text reason with 4xx (Prometheus drops a batch answered 4xx other than 429, so only a
request that can never be taken is refused), and 429 and 503 with `Retry-After`, which
Prometheus retries.
"""

from __future__ import annotations

import math
import struct
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from google.protobuf.json_format import MessageToDict

from bytefreezer.ingress import protobuf
from bytefreezer.ingress.bodies import BodyError, snappy_or_encoded

PROTOBUF = "application/x-protobuf"
STALE_NAN = 0x7FF0000000000002  # the NaN Prometheus writes as a staleness marker
_METRIC_TYPES = (
    "unknown", "counter", "gauge", "histogram", "gaugehistogram", "summary", "info", "stateset",
)  # fmt: skip


def _write_request() -> Any:
    """``prometheus.WriteRequest`` of remote write 1.0 (Prometheus's ``prompb``), from its
    message layout; enums are their numbers on the wire."""
    p = protobuf
    label = ".bytefreezer.prometheus.Label"
    span = ".bytefreezer.prometheus.BucketSpan"
    layout: protobuf.Layout = {
        "Label": [("name", 1, p.STRING, p.OPTIONAL, None), ("value", 2, p.STRING, p.OPTIONAL, None)],
        "Sample": [("value", 1, p.DOUBLE, p.OPTIONAL, None), ("timestamp", 2, p.INT64, p.OPTIONAL, None)],
        "Exemplar": [
            ("labels", 1, p.MESSAGE, p.REPEATED, label),
            ("value", 2, p.DOUBLE, p.OPTIONAL, None),
            ("timestamp", 3, p.INT64, p.OPTIONAL, None),
        ],
        "BucketSpan": [("offset", 1, p.SINT32, p.OPTIONAL, None), ("length", 2, p.UINT32, p.OPTIONAL, None)],
        "Histogram": [
            ("count_int", 1, p.UINT64, p.OPTIONAL, None),
            ("count_float", 2, p.DOUBLE, p.OPTIONAL, None),
            ("sum", 3, p.DOUBLE, p.OPTIONAL, None),
            ("schema", 4, p.SINT32, p.OPTIONAL, None),
            ("zero_threshold", 5, p.DOUBLE, p.OPTIONAL, None),
            ("zero_count_int", 6, p.UINT64, p.OPTIONAL, None),
            ("zero_count_float", 7, p.DOUBLE, p.OPTIONAL, None),
            ("negative_spans", 8, p.MESSAGE, p.REPEATED, span),
            ("negative_deltas", 9, p.SINT64, p.REPEATED, None),
            ("negative_counts", 10, p.DOUBLE, p.REPEATED, None),
            ("positive_spans", 11, p.MESSAGE, p.REPEATED, span),
            ("positive_deltas", 12, p.SINT64, p.REPEATED, None),
            ("positive_counts", 13, p.DOUBLE, p.REPEATED, None),
            ("reset_hint", 14, p.INT32, p.OPTIONAL, None),
            ("timestamp", 15, p.INT64, p.OPTIONAL, None),
        ],
        "TimeSeries": [
            ("labels", 1, p.MESSAGE, p.REPEATED, label),
            ("samples", 2, p.MESSAGE, p.REPEATED, ".bytefreezer.prometheus.Sample"),
            ("exemplars", 3, p.MESSAGE, p.REPEATED, ".bytefreezer.prometheus.Exemplar"),
            ("histograms", 4, p.MESSAGE, p.REPEATED, ".bytefreezer.prometheus.Histogram"),
        ],
        "MetricMetadata": [
            ("type", 1, p.INT32, p.OPTIONAL, None),
            ("metric_family_name", 2, p.STRING, p.OPTIONAL, None),
            ("help", 4, p.STRING, p.OPTIONAL, None),
            ("unit", 5, p.STRING, p.OPTIONAL, None),
        ],
        "WriteRequest": [
            ("timeseries", 1, p.MESSAGE, p.REPEATED, ".bytefreezer.prometheus.TimeSeries"),
            ("metadata", 3, p.MESSAGE, p.REPEATED, ".bytefreezer.prometheus.MetricMetadata"),
        ],
    }  # fmt: skip
    return protobuf.message_class("bytefreezer.prometheus", layout, "WriteRequest")


WriteRequest = _write_request()


class _Times:
    """Millisecond timestamps as RFC 3339 text, a second's text made once."""

    def __init__(self) -> None:
        self._seconds: dict[int, bytes] = {}

    def __call__(self, millis: int) -> bytes:
        seconds, ms = divmod(millis, 1000)
        text = self._seconds.get(seconds)
        if text is None:
            if len(self._seconds) > 4096:
                self._seconds.clear()
            moment = datetime.fromtimestamp(seconds, UTC)
            text = self._seconds[seconds] = moment.strftime("%Y-%m-%dT%H:%M:%S").encode()
        return b'"%s.%03dZ"' % (text, ms)


def _value(value: float) -> bytes:
    """A sample's value as JSON, with ``value_special`` where JSON has no number for it."""
    if value - value == 0.0:  # finite: Python's shortest text for it, a JSON number
        return b"%r" % value
    if math.isnan(value):
        bits = struct.unpack("<Q", struct.pack("<d", value))[0]
        special = "stale" if bits == STALE_NAN else "NaN"
    else:
        special = "+Inf" if value > 0 else "-Inf"
    return b'null,"value_special":"%s"' % special.encode()


def write_records(raw: bytes, encoding: str, content_type: str, limit: int) -> list[bytes]:
    """The records of a remote-write request; ``BodyError`` 400, 413, 415."""
    if not raw:
        raise BodyError(400, "empty body")
    kind, _, parameters = content_type.partition(";")
    if kind.strip().lower() not in (PROTOBUF, ""):
        raise BodyError(415, f"remote write sends {PROTOBUF}, not {kind.strip()!r}")
    proto = parameters.replace(" ", "").lower()
    if "proto=" in proto and "proto=prometheus.writerequest" not in proto:
        raise BodyError(
            415,
            f"remote write 1.0 (prometheus.WriteRequest) is taken, not {parameters.strip()!r}: "
            "set the remote_write protobuf_message to prometheus.WriteRequest",
        )
    data = snappy_or_encoded(raw, encoding, limit, "a remote-write request")
    request = protobuf.parsed(WriteRequest, data, "remote-write WriteRequest")
    times = _Times()
    records: list[bytes] = []
    for series in request.timeseries:
        labels = {label.name: label.value for label in series.labels}
        name = labels.pop("__name__", "")
        head = b'{"metric":%s,"labels":%s,"timestamp":' % (orjson.dumps(name), orjson.dumps(labels))
        records += [
            b'%s%s,"kind":"sample","value":%s}'
            % (head, times(sample.timestamp), _value(sample.value))
            for sample in series.samples
        ]
        for exemplar in series.exemplars:
            own = orjson.dumps({label.name: label.value for label in exemplar.labels})
            records.append(
                b'%s%s,"kind":"exemplar","exemplar_labels":%s,"value":%s}'
                % (head, times(exemplar.timestamp), own, _value(exemplar.value))
            )
        for histogram in series.histograms:
            fields = MessageToDict(histogram, preserving_proto_field_name=True)
            fields.pop("timestamp", None)
            records.append(
                b'%s%s,"kind":"histogram","histogram":%s}'
                % (head, times(histogram.timestamp), orjson.dumps(fields))
            )
    now = times(int(time.time() * 1000))
    for metadata in request.metadata:
        kind_name = (
            _METRIC_TYPES[metadata.type] if metadata.type < len(_METRIC_TYPES) else "unknown"
        )
        fields = {"type": kind_name, "help": metadata.help, "unit": metadata.unit}
        records.append(
            b'{"metric":%s,"timestamp":%s,"kind":"metadata","metadata":%s}'
            % (orjson.dumps(metadata.metric_family_name), now, orjson.dumps(fields))
        )
    return records
