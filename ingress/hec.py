"""Splunk HTTP Event Collector (HEC) in: what Splunk forwarders' HEC outputs, Vector's and Fluent
Bit's `splunk` sinks and the OpenTelemetry Collector's `splunkhec` exporter send, taken on the
receiver's webhook port at HEC's own paths (`/services/collector/event`, `/services/collector/raw`,
`/services/collector/health`, `/services/collector/ack`).

The token (`Authorization: Splunk <key>`, or `Bearer`) is a bytefreezer ingest key: a dataset key
sends to its dataset; a tenant key sends to the dataset its events' `index` names (one per
request). Events become NDJSON records: an object event's fields as columns, any other event as
`event`; `fields` (HEC's indexed fields) as columns; `time` as `timestamp` (RFC 3339), and `host`,
`source`, `sourcetype` and `index` as they came, none of them over a field of the event's own.
Answers are HEC's: `{"text": "Success", "code": 0}`, an error's text and code, and an `ackId`
for a request on a channel (`X-Splunk-Request-Channel`): since the answer comes once the data is
durable, every id a client asks `/services/collector/ack` about is acknowledged, by any replica.
"""

from __future__ import annotations

import functools
import json
import math
import threading
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.responses import JSONResponse

from bytefreezer.ingress.bodies import BodyError, decompress

EVENT_PATHS = ("/services/collector/event", "/services/collector/event/1.0", "/services/collector")
RAW_PATHS = ("/services/collector/raw", "/services/collector/raw/1.0")
HEALTH_PATHS = ("/services/collector/health", "/services/collector/health/1.0")
# HEC's codes for the statuses the receiver answers with.
_CODES = {400: 6, 401: 3, 403: 4, 404: 7, 410: 1, 413: 6, 415: 6, 429: 9, 503: 9}
_META = ("host", "source", "sourcetype", "index")


class HecError(BodyError):
    """A request refused with HEC's code besides the HTTP status."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(status, message)
        self.code = code


def token(authorization: str) -> str | None:
    """The key of ``Authorization: Splunk <key>`` (or ``Bearer <key>``)."""
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() in ("splunk", "bearer") and key.strip():
        return key.strip()
    return None


def success(ack_id: int | None = None) -> JSONResponse:
    body: dict[str, Any] = {"text": "Success", "code": 0}
    if ack_id is not None:
        body["ackId"] = ack_id
    return JSONResponse(body)


def error(
    status: int, message: str, code: int | None = None, retry: int | None = None
) -> JSONResponse:
    headers = {"Retry-After": str(retry)} if retry else None
    body = {"text": message, "code": code if code is not None else _CODES.get(status, 8)}
    return JSONResponse(body, status_code=status, headers=headers)


def _events(data: bytes) -> list[Any]:
    """The JSON values of an event body: objects one after another, with or without space or
    newlines between them."""
    # The usual shapes: an event a line, or events one after another ("}{"). Splitting at every
    # "}{" is exact when each piece parses: a "}{" inside a string leaves the piece before it
    # ending in an open string, which no JSON text does (and outside strings "}{" only stands
    # between two values).
    try:
        pieces = data.replace(b"}{", b"}\n{").split(b"\n")
        return [orjson.loads(piece) for piece in pieces if piece.strip()]
    except orjson.JSONDecodeError:
        pass
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise HecError(400, 6, "Invalid data format: the body is not UTF-8") from None
    decoder = json.JSONDecoder()
    values: list[Any] = []
    at = 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return values
        try:
            value, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError as exc:
            raise HecError(
                400, 6, f"Invalid data format: event {len(values)}: {exc.msg} at {exc.pos}"
            ) from None
        values.append(value)


def _time(value: Any, number: int) -> str:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or not 0 <= seconds < 253_402_300_800:
        raise HecError(
            400, 6, f"Invalid data format: event {number}: time {value!r} is not epoch seconds"
        )
    fraction, whole = math.modf(seconds)
    micros = round(fraction * 1e6)  # to the nearest, halves to even, as datetime rounds
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    return f"{_second(int(whole))}.{micros:06d}Z"


@functools.lru_cache(maxsize=4096)
def _second(seconds: int) -> str:
    """A time's text to the second (an event body's events mostly share a few)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def event_records(data: bytes) -> tuple[list[dict[str, Any]], set[str]]:
    """The records of an event body, and the indexes its events name."""
    records, indexes = [], set()
    for number, event in enumerate(_events(data)):
        if not isinstance(event, dict):
            raise HecError(400, 6, f"Invalid data format: event {number} is not an object")
        if "event" not in event:
            raise HecError(400, 12, f"Event field is required (event {number})")
        body = event["event"]
        if body is None or body == "" or body == {}:
            raise HecError(400, 13, f"Event field cannot be blank (event {number})")
        fields = event.get("fields")
        if fields is not None and not isinstance(fields, dict):
            raise HecError(400, 15, f"Error in handling indexed fields (event {number})")
        record: dict[str, Any] = dict(fields or {})
        if isinstance(body, dict):
            record.update(body)
        else:
            record["event"] = body
        for name in _META:
            if event.get(name) is not None:
                record.setdefault(name, event[name])
        if event.get("time") is not None:
            record.setdefault("timestamp", _time(event["time"], number))
        if isinstance(event.get("index"), str):
            indexes.add(event["index"])
        records.append(record)
    if not records:
        raise HecError(400, 5, "No data")
    return records, indexes


def raw_records(data: bytes, params: dict[str, str]) -> list[dict[str, Any]]:
    """The records of a raw body: a line each, with the query's host, source, sourcetype and
    index."""
    meta = {name: params[name] for name in _META if params.get(name)}
    if params.get("time"):
        meta["timestamp"] = _time(params["time"], 0)
    text = data.decode("utf-8", "replace")
    records = [{"event": line.rstrip("\r"), **meta} for line in text.split("\n") if line.strip()]
    if not records:
        raise HecError(400, 5, "No data")
    return records


def read(raw: bytes, encoding: str, limit: int) -> bytes:
    """The body as sent, decompressed (HEC clients gzip); ``HecError`` for an empty one."""
    if not raw:
        raise HecError(400, 5, "No data")
    return decompress(raw, encoding, limit)


class Channels:
    """The ack ids handed out per HEC channel."""

    def __init__(self) -> None:
        self._next: dict[str, int] = {}
        self._lock = threading.Lock()

    def next_id(self, channel: str) -> int:
        with self._lock:
            if len(self._next) >= 100_000 and channel not in self._next:
                self._next.clear()  # a bound on channels remembered; ids restart at 0
            number = self._next.get(channel, 0)
            self._next[channel] = number + 1
            return number
