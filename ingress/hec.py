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
import re
import threading
from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
from starlette.responses import JSONResponse

from bytefreezer.ingress.bodies import NOT_DECODED, BodyError, decompress

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
    try:  # the usual shapes (``_pieces``)
        return [orjson.loads(piece) for piece in _pieces(data)]
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


def _pieces(data: bytes) -> list[bytes]:
    """The events of the usual shapes, an event a line or events one after another ("}{"), as
    texts to parse. Splitting at every "}{" is exact when each piece parses: a "}{" inside a
    string leaves the piece before it ending in an open string, which no JSON text does (and
    outside strings "}{" only stands between two values)."""
    return [piece for piece in data.replace(b"}{", b"}\n{").split(b"\n") if piece.strip()]


def _time(value: Any, number: int) -> str:
    try:
        seconds = value if type(value) is float else float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not 0 <= seconds < 253_402_300_800:  # NaN is neither
        raise HecError(
            400, 6, f"Invalid data format: event {number}: time {value!r} is not epoch seconds"
        )
    whole = int(seconds)
    micros = round((seconds - whole) * 1e6)  # to the nearest, halves to even, as datetime rounds
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    return f"{_second(whole)}.{micros:06d}Z"


@functools.lru_cache(maxsize=4096)
def _second(seconds: int) -> str:
    """A time's text to the second (an event body's events mostly share a few)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def event_records(data: bytes) -> tuple[list[bytes], set[str]]:
    """The records of an event body (JSON, a line each), and the indexes its events name."""
    indexes: set[str] = set()
    typed = _typed_events(data)
    if typed is None:  # not the usual shape: value by value, each as a dictionary
        values = _events(data)
        records = [orjson.dumps(_record(value, n, indexes)) for n, value in enumerate(values)]
    else:
        tails: dict[tuple[Any, ...], bytes] = {}  # an event body's events mostly share them
        records = [
            _spliced(event, n, indexes, tails)
            or orjson.dumps(_record(orjson.loads(event.line), n, indexes))
            for n, event in enumerate(typed)
        ]
    if not records:
        raise HecError(400, 5, "No data")
    return records, indexes


class _Event(msgspec.Struct):
    """An event as the usual body's are read: its body kept as sent."""

    event: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    fields: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    time: Any = None
    host: Any = None
    source: Any = None
    sourcetype: Any = None
    index: Any = None
    line: bytes = b""  # the event as sent (not a field of HEC's)


_EVENT = msgspec.json.Decoder(_Event)


class _Own(msgspec.Struct):
    """The keys of an event's metadata an object body (or an event's indexed fields) has of its
    own (it keeps them), and whether indexed fields name an `event` of their own."""

    host: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    source: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    sourcetype: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    index: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    timestamp: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    event: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


_OWN = msgspec.json.Decoder(_Own)
_NONE_OWN = _Own()
# Where an object may have one of them (read for its keys only then)
_OWN_META = re.compile(rb'"(?:host|source|sourcetype|index|timestamp|event)"\s*:')


def _typed_events(data: bytes) -> list[_Event] | None:
    """The events of the usual body (an event a line, or one after another), each read by
    msgspec without building its body; None for any other body (see ``_events``)."""
    try:
        data.decode("utf-8")  # msgspec keeps a body's strings unchecked
        events = []
        for piece in _pieces(data):
            event = _EVENT.decode(piece)
            event.line = piece
            events.append(event)
        return events
    except (UnicodeDecodeError, *NOT_DECODED):
        return None


def _own(text: bytes) -> _Own:
    """Which of ``_Own``'s keys an object's text has (any may be written with escapes)."""
    return _OWN.decode(text) if _OWN_META.search(text) or b"\\u" in text else _NONE_OWN


def _spliced(
    event: _Event, number: int, indexes: set[str], tails: dict[tuple[Any, ...], bytes]
) -> bytes | None:
    """The record of the usual events, spliced from their text as sent: an object body without
    indexed fields (its keys, then the event's metadata and time), and any other body with or
    without them (the fields' keys, then `event`, then metadata and time). None for any other
    event (made by ``_record``, which also tells what is wrong with one). ``tails`` keeps the
    metadata's text by its values, for the body's other events."""
    body = event.event
    if body is msgspec.UNSET:
        return None
    text = bytes(body)
    fields = event.fields
    if text[:1] == b"{":
        if fields is not msgspec.UNSET or not text[1:-1].strip():
            return None
        own = _own(text)
        head = text[:-1]
    elif text == b"null" or text == b'""':  # blank: refused by ``_record``
        return None
    else:
        listed = b"null" if fields is msgspec.UNSET else bytes(fields)
        if listed == b"null" or (listed[:1] == b"{" and not listed[1:-1].strip()):
            own = _NONE_OWN
            head = b'{"event":' + text
        elif listed[:1] == b"{":
            own = _own(listed)
            if own.event is not msgspec.UNSET:  # the body's `event` would replace the field's
                return None
            head = listed[:-1] + b',"event":' + text
        else:
            return None
    meta = (event.host, event.source, event.sourcetype, event.index)
    unset = msgspec.UNSET
    if own is _NONE_OWN or (
        own.host is unset and own.source is unset and own.sourcetype is unset and own.index is unset
    ):  # the body has none of the metadata (a `timestamp` of its own, at most)
        try:
            tail = tails[meta]
        except (KeyError, TypeError):  # TypeError: a list or an object, which cannot be a key
            tail = _tail(meta, _NONE_OWN)
            if all(value is None or type(value) is str for value in meta):
                tails[meta] = tail  # text only: 1, 1.0 and true are equal keys of other texts
    else:
        tail = _tail(meta, own)
    if isinstance(event.index, str):
        indexes.add(event.index)
    if event.time is not None:
        stamp = _time(event.time, number)  # checked even where the body has a timestamp
        if own.timestamp is msgspec.UNSET:
            return b'%s%s,"timestamp":"%s"}' % (head, tail, stamp.encode())
    return head + tail + b"}"


def _tail(meta: tuple[Any, ...], own: _Own) -> bytes:
    """The metadata an event's record gets: each given that its body does not have."""
    return b"".join(
        b',"%s":%s' % (name.encode(), orjson.dumps(value))
        for name, value in zip(_META, meta, strict=True)
        if value is not None and getattr(own, name) is msgspec.UNSET
    )


def _record(event: Any, number: int, indexes: set[str]) -> dict[str, Any]:
    """The record of one event, read as a dictionary."""
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
    return record


def raw_records(data: bytes, params: dict[str, str]) -> list[bytes]:
    """The records of a raw body: a line each, with the query's host, source, sourcetype and
    index."""
    meta = {name: params[name] for name in _META if params.get(name)}
    if params.get("time"):
        meta["timestamp"] = _time(params["time"], 0)
    text = data.decode("utf-8", "replace")
    records = [
        orjson.dumps({"event": line.rstrip("\r"), **meta})
        for line in text.split("\n")
        if line.strip()
    ]
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
