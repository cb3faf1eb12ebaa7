"""Lines to JSON records: JSON objects pass, syslog is parsed, anything else is wrapped."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from bytefreezer.lines import is_blank, newline_positions, valid_utf8
from bytefreezer.syslog_format import FIELDS, RFC3164, RFC5424

_5424 = re.compile(RFC5424)
_3164 = re.compile(RFC3164)


def now_rfc3339() -> str:
    """The current time, RFC 3339 in UTC."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def split_lines(text: str) -> list[str]:
    """``text`` split at newlines only, a carriage return before one dropped. ``str.splitlines``
    also splits at form feeds, U+0085, U+2028, U+2029 and other separators, which JSON strings
    and log messages may hold: one record became two, each wrapped as raw text."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if "\r" not in text:
        return lines
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def wrap_line(line: str) -> bytes:
    """A JSON object line as it is; anything else as ``{"timestamp": now, "raw": line}``."""
    stripped = line.strip()
    if stripped.startswith("{"):
        try:
            if isinstance(orjson.loads(stripped), dict):
                return stripped.encode()
        except orjson.JSONDecodeError:
            pass
    return orjson.dumps({"timestamp": now_rfc3339(), "raw": line})


def datagram_records(data: bytes) -> list[bytes]:
    """The records of a datagram that holds one JSON document (an `ebpf` input's: eBPF agents
    send an event a datagram, pretty-printed or compact, sometimes padded with NULs): an object
    compacted to one record, or each object of an array. A datagram of JSON object lines is a
    record per line; anything else is one record, ``{"timestamp": now, "raw": text}``."""
    payload = data.strip(b"\x00 \t\r\n")
    if not payload:
        return []
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        lines = [line for line in payload.split(b"\n") if line.strip()]
        try:
            if all(isinstance(orjson.loads(line), dict) for line in lines):
                return [line.strip() for line in lines]  # NDJSON: each line a compact object
        except orjson.JSONDecodeError:
            pass
        value = None
    if isinstance(value, dict):
        return [orjson.dumps(value)]
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return [orjson.dumps(item) for item in value]
    text = payload.decode("utf-8", "replace")
    return [orjson.dumps({"timestamp": now_rfc3339(), "raw": text})]


def records_with(lines: list[str], meta: Mapping[str, Any]) -> list[bytes]:
    """Records of ``lines`` (as ``with_fields``): where each came from (a stream's shard, a
    queue's message, an object, a topic's partition and offset) in the fields of ``meta``
    (text, integers, or objects such as a message's headers)."""
    fields = {name: f"{_quoted(name)}:{_json(value)}" for name, value in meta.items()}
    own = _keys_pattern(tuple(meta))  # one scan of a line finds any of them
    # one scan of them all first: usually no line has a key of its own, and none is searched
    joined = "\n".join(lines)
    newlines = joined.count("\n")
    if not fields or own.search(joined) is not None or newlines != len(lines) - 1:
        return [_record_with(line, meta, fields, own) for line in lines]
    # the usual line, a compact object (`{"` to `}`), is spliced with the same head; no line
    # holds a newline, so neither does a record, and they are encoded together
    head = "{" + ",".join(fields.values()) + ","
    records = "\n".join(
        [
            head + line[1:]
            if line[:2] == '{"' and line[-1:] == "}"
            else _record_with(line, meta, fields, None).decode()
            for line in lines
        ]
    )
    return records.encode().split(b"\n")


@dataclass(frozen=True, slots=True)
class RecordBlock:
    """Records joined by newlines (none after the last), and how many: what an input that
    reads many lines at once spools, without a bytes object a record. Its length is the count,
    as a list of the records would have."""

    data: bytes
    count: int

    def __len__(self) -> int:
        return self.count


def nonblank_lines(data: bytes) -> list[str]:
    """The lines of ``data`` that are not blank, read as UTF-8 with errors replaced (see
    ``split_lines``)."""
    return [line for line in split_lines(data.decode("utf-8", "replace")) if not is_blank(line)]


def lines_records_with(data: bytes, meta: Mapping[str, Any]) -> RecordBlock:
    """``records_with`` of the lines of ``data`` that are not blank, as a block (``data``:
    whole lines as a file holds them, each ending in a newline, read as UTF-8 with errors
    replaced and a carriage return before a newline dropped, as ``split_lines`` splits them).
    The usual read, every line an object (`{"` to `}`) in valid UTF-8 and none with a key of
    ``meta``'s, is spliced as bytes, a few passes over them in C and numpy: decoding, splitting
    and encoding the lines one by one was most of a `file` input's time."""
    view = np.frombuffer(data, np.uint8)
    newlines = newline_positions(view)
    if (
        meta
        and _object_lines(view, newlines)
        and not any(_quoted_key(name) in data for name in meta)
        and valid_utf8(data)
    ):
        # every line starts with `{"` (so none is blank) and ends with `}`: each gets the head
        head = ("{" + ",".join(f"{_quoted(k)}:{_json(v)}" for k, v in meta.items()) + ",").encode()
        spliced = data.replace(b"\n{", b"\n" + head)
        return RecordBlock(head + memoryview(spliced)[1:-1], len(newlines))
    records = records_with(nonblank_lines(data), meta)
    return RecordBlock(b"\n".join(records), len(records))


_OPEN, _CLOSE, _QUOTE = b'{}"'


def _object_lines(view: np.ndarray, newlines: np.ndarray) -> bool:
    """Whether the lines of ``view`` (``newlines``: where each ends, the last at its end) each
    start with `{"` and end with `}`: the bytes around the newlines, looked up at once."""
    if len(view) < 3 or not len(newlines) or newlines[-1] != len(view) - 1:
        return False
    if view[0] != _OPEN or view[1] != _QUOTE or not (view[newlines - 1] == _CLOSE).all():
        return False
    starts = newlines[:-1] + 1
    # every line starts with `{`, so none is empty and a byte follows each `{`
    return bool((view[starts] == _OPEN).all()) and bool((view[starts + 1] == _QUOTE).all())


@functools.lru_cache(maxsize=64)
def _quoted_key(name: str) -> bytes:
    """``name`` between quotes, in bytes: where a line may have a key of its own by that name
    (in more lines than ``_keys_pattern`` finds, which also wants a colon after it; such lines
    take the path that looks at each)."""
    return b'"' + name.encode() + b'"'


def _record_with(
    line: str, meta: Mapping[str, Any], fields: dict[str, str], own: re.Pattern[str] | None
) -> bytes:
    """One record of ``records_with`` (``own``: the pattern of ``meta``'s keys, where a line
    may have one of them)."""
    stripped = line.strip()
    if not (stripped.startswith("{") and stripped.endswith("}")):
        return orjson.dumps({"timestamp": now_rfc3339(), "raw": line, **meta})
    names = fields
    if own is not None and own.search(stripped):
        found = {match.group(1) for match in own.finditer(stripped)}
        names = {name: field for name, field in fields.items() if name not in found}
    if not names:
        return stripped.encode()
    rest = stripped[1:].lstrip()
    head = "{" + ",".join(names.values())
    return (head + (rest if rest.startswith("}") else "," + rest)).encode()


@functools.lru_cache(maxsize=64)
def _keys_pattern(names: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile('"(' + "|".join(re.escape(name) for name in names) + r')"\s*:')


@functools.lru_cache(maxsize=1024)
def _quoted(value: str) -> str:
    return orjson.dumps(value).decode()


def _json(value: Any) -> str:
    if isinstance(value, str):
        return _quoted(value)
    if isinstance(value, int):
        return str(value)
    return orjson.dumps(value).decode()


def with_fields(line: str, meta: dict[str, str]) -> bytes:
    """A line with braces at both ends (a JSON object) with the fields of ``meta`` it has no key
    of put first; anything else as ``{"timestamp": now, "raw": line, **meta}``. The object is
    not parsed here (a parse and an encode took 6.5 µs a line, a quarter of an input's speed):
    one that is not JSON is dead-lettered by piper with the reason, as a bad line from any
    source is."""
    return records_with([line], meta)[0]


def file_record(line: str, path: str) -> bytes:
    """A line a `file` input read, with ``"file": path`` (see ``with_fields``)."""
    return with_fields(line, {"file": path})


def parse_syslog(line: str, mode: str, source_ip: str) -> dict[str, Any]:
    """The syslog fields of one line; unparseable lines keep their text in `message`."""
    line = line.rstrip("\r\n")
    record: dict[str, Any] = dict.fromkeys(FIELDS)
    match = None
    if mode in ("auto", "rfc5424"):
        match = _5424.match(line)
        if match:
            record["rfc"] = "rfc5424"
    if match is None and mode in ("auto", "rfc3164"):
        match = _3164.match(line)
        if match:
            record["rfc"] = "rfc3164"
    if match is None:
        record.update(message=line, timestamp=now_rfc3339())
    else:
        for name, value in match.groupdict().items():
            record[name] = None if value in (None, "", "-") and name != "message" else value
        if record["priority"] is not None:
            priority = int(record["priority"])
            record.update(priority=priority, facility=priority // 8, severity=priority % 8)
        if record["version"] is not None:
            record["version"] = int(record["version"])
    record["source_ip"] = source_ip
    return record


def syslog_record(line: str, mode: str, source_ip: str) -> bytes:
    """One syslog line as a JSON object line."""
    return orjson.dumps(parse_syslog(line, mode, source_ip))
