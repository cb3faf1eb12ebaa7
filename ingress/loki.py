"""Grafana Loki's push API in: what Promtail, Grafana Alloy's `loki.write`, Fluent Bit's and
Vector's `loki` outputs and Loki logging libraries send, taken on the receiver's webhook port at
Loki's path, `POST /loki/api/v1/push`, and at `/{tenant}/{dataset}/loki/api/v1/push` (a base URL
`http://receiver:8080/{tenant}/{dataset}` for clients that append Loki's path).

The body is a `PushRequest`: protobuf compressed with snappy (`application/x-protobuf`, what
Promtail and Alloy send) or JSON (`application/json`, gzip or not). Each entry becomes an NDJSON
record: `timestamp` (the entry's time, RFC 3339 to the nanosecond; packer partitions by it),
`message` (the line as sent), `labels` (its stream's labels as an object) and
`structured_metadata` (an object, when the entry has any). The credentials are a bytefreezer
ingest key, as Basic auth's password (Loki clients' `basic_auth`; the user name, Loki's tenant
id, is not used) or a bearer token. At `/loki/api/v1/push` a dataset key sends to its dataset;
the longer path names the tenant and dataset for any ingest key. Loki's answers: 204 once the
entries are durable, a text reason with 4xx, 429 and 503 with `Retry-After`.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import orjson
from google.protobuf import timestamp_pb2

from bytefreezer.ingress import protobuf
from bytefreezer.ingress.bodies import BodyError, decompress, json_list, snappy_or_encoded
from bytefreezer.times import rfc3339_nanos

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def _push_request() -> Any:
    """Loki's ``logproto.PushRequest`` as a protobuf class, from the message layout of Loki's
    ``push.proto`` (its gogoproto options change the Go types, not the wire format)."""
    layout: protobuf.Layout = {
        "LabelPair": [
            ("name", 1, protobuf.STRING, protobuf.OPTIONAL, None),
            ("value", 2, protobuf.STRING, protobuf.OPTIONAL, None),
        ],
        "Entry": [
            ("timestamp", 1, protobuf.MESSAGE, protobuf.OPTIONAL, ".google.protobuf.Timestamp"),
            ("line", 2, protobuf.STRING, protobuf.OPTIONAL, None),
            (
                "structuredMetadata",
                3,
                protobuf.MESSAGE,
                protobuf.REPEATED,
                ".bytefreezer.loki.LabelPair",
            ),
        ],
        "Stream": [
            ("labels", 1, protobuf.STRING, protobuf.OPTIONAL, None),
            ("entries", 2, protobuf.MESSAGE, protobuf.REPEATED, ".bytefreezer.loki.Entry"),
            ("hash", 3, protobuf.UINT64, protobuf.OPTIONAL, None),
        ],
        "PushRequest": [
            ("streams", 1, protobuf.MESSAGE, protobuf.REPEATED, ".bytefreezer.loki.Stream")
        ],
    }
    return protobuf.message_class("bytefreezer.loki", layout, "PushRequest", timestamp_pb2)


PushRequest = _push_request()

_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_.]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def parse_labels(text: str) -> dict[str, str]:
    """A stream's labels as Loki's protobuf carries them: ``{app="web", env="prod"}``."""
    inner = text.strip()
    if not (inner.startswith("{") and inner.endswith("}")):
        raise BodyError(400, f'stream labels {text[:100]!r} are not {{name="value", ...}}')
    inner = inner[1:-1].strip()
    labels: dict[str, str] = {}
    at = 0
    while at < len(inner):
        match = _LABEL.match(inner, at)
        if match is None:
            raise BodyError(
                400, f"stream labels {text[:100]!r}: cannot read at {inner[at : at + 20]!r}"
            )
        value = re.sub(r"\\.", lambda m: _ESCAPES.get(m.group(0), m.group(0)[1]), match.group(2))
        labels[match.group(1)] = value
        at = match.end()
    return labels


class _Records:
    """Records written from a template: the stream's labels encoded once, a second's text once
    (encoding a dictionary per entry took 3.6 µs of the 6 an entry cost)."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self._seconds: dict[int, bytes] = {}

    def second(self, seconds: int) -> bytes:
        """The record's start up to a time's fraction of a second, for a time's ``seconds``."""
        found = self._seconds.get(seconds)
        if found is None:
            if len(self._seconds) > 4096:
                self._seconds.clear()
            text = rfc3339_nanos(seconds, 0)[:-11].encode()
            found = self._seconds[seconds] = b'{"timestamp":"' + text.replace(b"%", b"%%")
        return found

    def add(
        self, seconds: int, nanos: int, line: str, labels: bytes, metadata: dict[str, str]
    ) -> None:
        record = _RECORD % (self.second(seconds), nanos, orjson.dumps(line), labels)
        if metadata:
            record += b',"structured_metadata":' + orjson.dumps(metadata)
        self.lines.append(record + b"}")


_RECORD = b'%s.%09dZ","message":%s,"labels":%s'
# Text as JSON: msgspec's encoder, 0.4 µs a line where orjson.dumps took 4.4 once its outputs
# were kept (as a request's records are)
_TEXT = msgspec.json.Encoder().encode


def push_records(raw: bytes, encoding: str, content_type: str, limit: int) -> list[bytes]:
    """The records of a push request; ``BodyError`` 400 (not a push request), 413, 415."""
    if not raw:
        raise BodyError(400, "empty body")
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == PROTOBUF:
        return _protobuf_records(raw, encoding, limit)
    if kind in (JSON, ""):
        return _json_records(decompress(raw, encoding, limit))
    raise BodyError(415, f"Loki pushes are {PROTOBUF} (snappy) or {JSON}, not {kind!r}")


def _protobuf_records(raw: bytes, encoding: str, limit: int) -> list[bytes]:
    data = snappy_or_encoded(raw, encoding, limit, "a protobuf push")
    request = protobuf.parsed(PushRequest, data, "Loki PushRequest")
    records = _Records()
    lines, second, dumps = records.lines, records.second, _TEXT  # an entry's work, inline
    for stream in request.streams:
        labels = orjson.dumps(parse_labels(stream.labels))
        for entry in stream.entries:
            stamp = entry.timestamp
            record = _RECORD % (second(stamp.seconds), stamp.nanos, dumps(entry.line), labels)
            metadata = entry.structuredMetadata
            if metadata:
                pairs = {pair.name: pair.value for pair in metadata}
                record += b',"structured_metadata":' + dumps(pairs)
            lines.append(record + b"}")
    return lines


def _json_records(data: bytes) -> list[bytes]:
    _, streams = json_list(
        data, "streams", 'JSON push is {"streams": [{"stream": {...}, "values": [...]}]}'
    )
    records = _Records()
    for number, stream in enumerate(streams):
        if not isinstance(stream, dict):
            raise BodyError(400, f"stream {number} is not an object")
        labels = stream.get("stream") or {}
        values = stream.get("values") or []
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise BodyError(400, f"stream {number}: labels are an object of strings")
        if not isinstance(values, list):
            raise BodyError(400, f"stream {number}: values are a list")
        encoded = orjson.dumps(labels)
        for value in values:
            _json_entry(records, number, value, encoded)
    return records.lines


def _json_entry(records: _Records, number: int, value: Any, labels: bytes) -> None:
    shape = f'stream {number}: a value is ["<unix epoch in nanoseconds>", "<line>"(, {{metadata}})]'
    if not isinstance(value, list) or len(value) not in (2, 3):
        raise BodyError(400, shape)
    stamp, line = value[0], value[1]
    metadata = value[2] if len(value) == 3 else {}
    if (
        not isinstance(stamp, str)
        or not (stamp.isascii() and stamp.isdigit())
        or not isinstance(line, str)
    ):
        raise BodyError(400, shape)
    if not isinstance(metadata, dict):
        raise BodyError(400, shape)
    nanoseconds = int(stamp)
    if nanoseconds >= 253_402_300_800 * 10**9:
        raise BodyError(400, f"stream {number}: timestamp {stamp} is past the year 9999")
    seconds, nanos = divmod(nanoseconds, 10**9)
    records.add(seconds, nanos, line, labels, {k: str(v) for k, v in metadata.items()})
