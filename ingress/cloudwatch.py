"""Payloads of AWS streams as records: what a Kinesis record or a Firehose record carries. A
CloudWatch Logs subscription message (gzip JSON with `logEvents`, what CloudWatch Logs puts in a
stream) is a record per log event; anything else, gzip'd or not, a record per line (a JSON object
line as it is, other text wrapped). Each record gets the fields of ``meta`` it has none of. The
proxy's `kinesis` input and the receiver's Firehose endpoint both read them here."""

from __future__ import annotations

import gzip
import zlib
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

import orjson

from bytefreezer.ingress.proxy.records import records_with, split_lines
from bytefreezer.lines import BLANK


def payloads_records(payloads: list[bytes], meta: dict[str, str]) -> list[bytes]:
    """The JSON records of many payloads with the same ``meta`` (a Firehose request's): the
    plain ones, most of them, are split into lines together."""
    joined = b"\n".join(payloads)  # blank lines between them make no records
    if _GZIP not in joined and _MESSAGE_TYPE not in joined:  # no payload is anything but lines
        return _lines_records([joined], meta)
    records: list[bytes] = []
    plain: list[bytes] = []
    for payload in payloads:
        if payload[:2] == _GZIP or _MESSAGE_TYPE in payload:
            records += _lines_records(plain, meta) + payload_records(payload, meta)
            plain = []
        else:
            plain.append(payload if payload.endswith(b"\n") else payload + b"\n")
    return records + _lines_records(plain, meta)


def _lines_records(payloads: list[bytes], meta: dict[str, str]) -> list[bytes]:
    if not payloads:
        return []
    lines = split_lines(b"".join(payloads).decode("utf-8", "replace"))
    return records_with([line for line in lines if line.strip(BLANK)], meta)


_GZIP = b"\x1f\x8b"
_MESSAGE_TYPE = b'"messageType"'


def payload_records(data: bytes, meta: dict[str, str]) -> list[bytes]:
    """The JSON records one payload makes."""
    if data[:2] == _GZIP:
        with suppress(OSError, EOFError, zlib.error):  # not gzip after all: its bytes as text
            data = gzip.decompress(data)
    stripped = data.strip()
    if stripped.startswith(b"{") and _MESSAGE_TYPE in stripped:  # parsed only if it may be one
        try:
            message = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            message = None
        if isinstance(message, dict) and message.get("messageType") in (
            "DATA_MESSAGE",
            "CONTROL_MESSAGE",
        ):
            return _cloudwatch_records(message, meta)
    return _lines_records([data], meta)


def _cloudwatch_records(message: dict[str, Any], meta: dict[str, str]) -> list[bytes]:
    """A record per log event of a CloudWatch Logs subscription message; a control message (the
    subscription's check that the stream is reachable) carries no log events and makes none."""
    events = message.get("logEvents") or []
    records = []
    for event in events if isinstance(events, list) else []:
        if not isinstance(event, dict):
            continue
        record = {
            "timestamp": _millis(event.get("timestamp")),
            "message": event.get("message"),
            "id": event.get("id"),
            "log_group": message.get("logGroup"),
            "log_stream": message.get("logStream"),
            "owner": message.get("owner"),
            **meta,
        }
        records.append(orjson.dumps(record))
    return records


def _millis(value: Any) -> str | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    moment = datetime.fromtimestamp(value / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
