"""The Fluentd forward protocol (v1) to JSON records: the proxy's `forward` input, where Fluent
Bit's and Fluentd's `forward` outputs (and the fluent-logger libraries) send.

Every mode of the protocol is taken: Message (``[tag, time, record, option?]``), Forward
(``[tag, [[time, record], ...], option?]``), PackedForward (``[tag, bin, option?]``, the
entries as a MessagePack stream) and CompressedPackedForward (the same, gzip'd, option
``compressed: gzip``). Times are integers, floats or the protocol's EventTime (nanoseconds).

One record per entry: the entry's own fields, plus ``tag`` and ``timestamp`` (the event time,
RFC 3339 to the nanosecond) when the record has no field of that name. Binary values are text
when they are UTF-8, base64 otherwise; MessagePack's own timestamps are times like EventTime. An
entry or message that is not what the protocol says (a record that is not a map, a time that is
not a time, a message that is not an array, entries that end inside an entry) is not dropped: it
goes on as a record with ``forward_error`` (the reason) and ``forward_message`` (what came, as
JSON).

PackedForward's entries, the mode Fluent Bit and Fluentd send, are read by msgspec when they are
what those clients send (EventTime or numeric times, maps keyed by text, values JSON holds): the
stream's entries are counted by skipping them, then decoded as one array of typed pairs (msgspec
checks each entry's shape and its keys as it reads them), each EventTime turned into its text and
each record written by orjson as it came. Anything else
in a message (binary values, other extension types, keys that are not text, bad UTF-8, bad
entries) sends the whole message the general way, which gives the same records for what both
read (a property test holds them to it).

A message whose option names a ``chunk`` is acknowledged (``{"ack": chunk}``) only once its
records are in the proxy's spool, fsync'd; a client that gets no ack sends the chunk again.
With a ``shared_key`` the connection starts with the protocol's handshake (HELO, PING, PONG),
and a client that cannot prove the key is told why and disconnected.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import msgpack
import msgspec
import orjson

from bytefreezer.ingress.proxy.records import now_rfc3339
from bytefreezer.times import rfc3339_nanos

EVENT_TIME = 0  # the EventTime extension type: big-endian seconds and nanoseconds
_SECONDS_NANOSECONDS = struct.Struct(">II")  # EventTime's 8 bytes, for both ways of reading it
_ARRAY32 = b"\xdd"  # a MessagePack array of up to 2**32 - 1 items: its count follows, 4 bytes


class ForwardError(Exception):
    """A message that cannot be read as the protocol says; the reason is the message."""


@dataclass(frozen=True)
class EventTime:
    seconds: int
    nanoseconds: int


def _event_time(value: msgpack.ExtType) -> EventTime | None:
    if value.code == EVENT_TIME and len(value.data) == 8:
        return EventTime(*_SECONDS_NANOSECONDS.unpack(value.data))
    return None


def unpacker(max_bytes: int) -> msgpack.Unpacker:
    """A streaming reader of one connection's messages, none larger than ``max_bytes``."""
    # Strings are decoded by the reader, and text that is not UTF-8 (older Fluentd packs
    # PackedForward's binary entries as str) keeps its bytes as surrogate escapes: the entries
    # are encoded back exactly, a record's bad bytes are replaced on the slow path.
    return msgpack.Unpacker(
        raw=False,
        unicode_errors="surrogateescape",
        strict_map_key=False,
        max_buffer_size=max_bytes,
    )


def event_time(value: Any) -> str:
    """An entry's time as RFC 3339 in UTC; ``ForwardError`` when it is not a time."""
    if isinstance(value, msgpack.ExtType):
        value = _event_time(value) or value
    if isinstance(value, msgpack.Timestamp):  # MessagePack's own (extension type -1)
        value = EventTime(value.seconds, value.nanoseconds)
    if isinstance(value, EventTime):
        if value.nanoseconds >= 10**9:
            raise ForwardError(f"EventTime nanoseconds out of range: {value.nanoseconds}")
        return rfc3339_nanos(value.seconds, value.nanoseconds)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ForwardError(f"time is {_kind(value)}, not an integer or EventTime")
    if isinstance(value, float) and not math.isfinite(value):
        raise ForwardError(f"time is {value}")
    nanos = int(value) * 10**9 if isinstance(value, int) else round(value * 1e9)
    seconds, nanoseconds = divmod(nanos, 10**9)
    try:
        return rfc3339_nanos(seconds, nanoseconds)
    except (OverflowError, OSError, ValueError):
        raise ForwardError(f"time {value} is out of range") from None


def _kind(value: Any) -> str:
    """A value's MessagePack type, for reasons."""
    kinds = {str: "a string", bytes: "binary", bool: "a boolean", int: "an integer"}
    kinds[float] = "a float"
    kinds.update({dict: "a map", list: "an array", tuple: "an array", type(None): "nil"})
    return kinds.get(type(value), type(value).__name__)


def _json_value(value: Any) -> Any:
    """A MessagePack value as JSON can hold it."""
    if isinstance(value, dict):
        return {_key(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, msgpack.ExtType):  # a named tuple: before lists
        return _ext_value(value)
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, msgpack.Timestamp):
        return _timestamp_value(value)
    if isinstance(value, str):  # bytes that were not UTF-8 come as surrogate escapes
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(value, bytes):
        return _binary(value)
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)
    return value


def _ext_value(value: msgpack.ExtType) -> Any:
    """An extension value: an EventTime as its time, another as its type and base64 data."""
    moment = _event_time(value)
    if moment is not None and moment.nanoseconds < 10**9:
        return rfc3339_nanos(moment.seconds, moment.nanoseconds)
    return {"ext_type": value.code, "data": base64.b64encode(value.data).decode()}


def _timestamp_value(value: msgpack.Timestamp) -> Any:
    """MessagePack's timestamp as its time; one past what a date can hold as its bytes."""
    try:
        return rfc3339_nanos(value.seconds, value.nanoseconds)
    except (OverflowError, OSError, ValueError):
        return {"ext_type": -1, "data": base64.b64encode(value.to_bytes()).decode()}


def _binary(value: bytes) -> str:
    """A binary value as text when it is UTF-8, else base64."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(value).decode()


def _default(value: Any) -> Any:
    """What orjson cannot write by itself, on the fast path."""
    if isinstance(value, bytes):
        return _binary(value)
    if isinstance(value, msgpack.ExtType):
        return _ext_value(value)
    if isinstance(value, msgpack.Timestamp):
        return _timestamp_value(value)
    raise TypeError


def _key(key: Any) -> str:
    if isinstance(key, str):
        return str(_json_value(key))
    if isinstance(key, bytes):
        return key.decode("utf-8", "replace")
    return orjson.dumps(_json_value(key)).decode() if isinstance(key, list | dict) else str(key)


def _record(tag: str, time: Any, record: Any) -> bytes:
    if not isinstance(record, dict):
        raise ForwardError(f"record is {_kind(record)}, not a map")
    stamp = event_time(time)
    record.setdefault("tag", tag)
    record.setdefault("timestamp", stamp)
    try:  # orjson writes the record as it came, in C, unless it holds what JSON cannot
        return orjson.dumps(record, default=_default, option=orjson.OPT_NON_STR_KEYS)
    except (orjson.JSONEncodeError, TypeError):  # bytes keys, text not UTF-8, huge integers
        return orjson.dumps(_json_value(record), option=orjson.OPT_NON_STR_KEYS)


def _error_record(reason: str, message: Any, tag: Any = None) -> bytes:
    out: dict[str, Any] = {"forward_error": reason, "forward_message": _json_value(message)}
    if isinstance(tag, str):
        out["tag"] = tag
    out["timestamp"] = now_rfc3339()
    return orjson.dumps(out, option=orjson.OPT_NON_STR_KEYS)


def _entry(tag: str, entry: Any) -> bytes:
    """One ``[time, record]`` entry as a record, or as an error record saying what is wrong."""
    try:
        if not isinstance(entry, list | tuple) or len(entry) != 2:
            raise ForwardError("entry is not a [time, record] pair")
        return _record(tag, entry[0], entry[1])
    except ForwardError as exc:
        return _error_record(str(exc), entry, tag)


def _inflated(data: bytes, compressed: Any, max_bytes: int) -> bytes:
    """PackedForward's entries as they were packed: CompressedPackedForward's inflated."""
    if compressed == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        parts: list[bytes] = []
        size, rest = 0, data
        while rest:  # every gzip member (Fluent Bit appends one per flush)
            try:
                part = inflater.decompress(rest, max_bytes - size + 1)
            except zlib.error as exc:
                raise ForwardError(f"compressed entries are not valid gzip: {exc}") from None
            size += len(part)
            parts.append(part)
            if size > max_bytes:
                raise ForwardError(f"compressed entries inflate past {max_bytes} bytes")
            if inflater.unconsumed_tail:
                rest = inflater.unconsumed_tail
                continue
            if not inflater.eof:
                raise ForwardError("compressed entries end inside a gzip member")
            rest = inflater.unused_data
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        return b"".join(parts)
    if compressed not in (None, "text", "raw"):
        raise ForwardError(f"unsupported compression {compressed!r}; gzip or none")
    return data


def _packed_records(tag: str, data: bytes) -> list[bytes]:
    """The records of PackedForward's entries, and one error record holding the bytes of an
    entry the stream ends inside (a client cut off mid-entry)."""
    reader = unpacker(max(len(data), 1))
    reader.feed(data)
    records, end = [], 0
    for entry in reader:  # (past the last whole entry, tell() counts what it began to read)
        records.append(_entry(tag, entry))
        end = reader.tell()
    if end < len(data):
        rest = data[end:]
        reason = f"entries end inside an entry ({len(rest)} bytes left over)"
        records.append(_error_record(reason, rest, tag))
    return records


# PackedForward's usual entries, checked by msgspec as it reads them: pairs of a time (an
# extension value, EventTime when it is one, or a number) and a map keyed by text
_FAST_ENTRIES = msgspec.msgpack.Decoder(
    list[tuple[msgspec.msgpack.Ext | int | float, dict[str, Any]]]
)


def _entry_count(data: bytes) -> int | None:
    """How many MessagePack values ``data`` is, skipped without being built; None when it is
    not a whole number of them."""
    reader = msgpack.Unpacker(max_buffer_size=max(len(data), 1))
    reader.feed(data)
    count = end = 0
    try:
        while True:
            reader.skip()
            count += 1
            end = reader.tell()
    except msgpack.OutOfData:
        pass
    except (ValueError, msgpack.UnpackException):
        return None
    return count if end == len(data) and count < 2**32 else None


def _fast_records(tag: str, data: bytes) -> list[bytes] | None:
    """PackedForward's records the fast way, or None when anything in them is not the usual
    (see the module's text); nothing is half done: None means read it all the general way."""
    count = _entry_count(data)
    if count is None:
        return None
    try:  # (a ValidationError is a DecodeError; bad UTF-8 is a ValueError)
        entries = _FAST_ENTRIES.decode(_ARRAY32 + count.to_bytes(4, "big") + data)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
    records = []
    dumps = orjson.dumps
    passthrough = orjson.OPT_PASSTHROUGH_DATETIME  # msgspec's datetimes keep microseconds only
    unpack = _SECONDS_NANOSECONDS.unpack
    ext = msgspec.msgpack.Ext
    for time, record in entries:
        if type(time) is ext:
            try:
                seconds, nanoseconds = unpack(time.data)
            except struct.error:  # not 8 bytes
                return None
            if time.code != EVENT_TIME or nanoseconds >= 10**9:
                return None
            stamp = rfc3339_nanos(seconds, nanoseconds)
        else:
            try:
                stamp = event_time(time)
            except ForwardError:
                return None
        record.setdefault("tag", tag)
        record.setdefault("timestamp", stamp)
        try:  # binary, extension values, MessagePack timestamps: the general way
            records.append(dumps(record, option=passthrough))
        except (orjson.JSONEncodeError, TypeError):
            return None
    return records


def decode_message(message: Any, max_bytes: int) -> tuple[list[bytes], str | None]:
    """The records of one message and the chunk id to acknowledge (None: no ack asked).

    Never raises for what the client sent: what cannot be read becomes an error record."""
    if not isinstance(message, list | tuple) or len(message) < 2:
        return [_error_record("message is not an array of tag and entries", message)], None
    tag = _text(message[0])
    if not isinstance(tag, str):
        return [_error_record("tag is not a string", message)], None
    second = message[1]
    try:
        if isinstance(second, list | tuple) and not isinstance(second, msgpack.ExtType):  # Forward
            option = message[2] if len(message) > 2 else None
            records = [_entry(tag, entry) for entry in second]
        elif isinstance(second, bytes | str):  # PackedForward, CompressedPackedForward
            option = message[2] if len(message) > 2 else None
            compressed = _option(option, "compressed")
            if isinstance(second, str):  # packed as str by older clients: its bytes exactly
                second = second.encode("utf-8", "surrogateescape")
            data = _inflated(second, compressed, max_bytes)
            fast = _fast_records(tag, data)
            records = _packed_records(tag, data) if fast is None else fast
        else:  # Message mode
            if len(message) < 3:
                raise ForwardError("message has a time but no record")
            option = message[3] if len(message) > 3 else None
            records = [_entry(tag, [second, message[2]])]
    except (ForwardError, ValueError, TypeError, msgpack.UnpackException) as exc:
        # TypeError: msgpack refusing a map key it cannot hash (an array or a map)
        reason = str(exc) if isinstance(exc, ForwardError) else f"entries unreadable: {exc}"
        packed = isinstance(second, bytes | str | list)  # Message mode's third item is a record
        option = message[2] if packed and len(message) > 2 else None
        records = [_error_record(reason, message, tag)]
    chunk = _option(option, "chunk")
    return records, chunk if isinstance(chunk, str) else None


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _option(option: Any, name: str) -> Any:
    """An option's value (a map's key or value may have come as binary)."""
    if not isinstance(option, dict):
        return None
    return _text(option.get(name.encode(), option.get(name)))


def ack(chunk: str) -> bytes:
    """The answer to a message whose option asked for an ack."""
    packed: bytes = msgpack.packb({"ack": chunk})
    return packed


# The handshake (forward protocol v1, "Handshake Messages") -------------------------------


def helo(users: bool = False) -> tuple[bytes, bytes, bytes]:
    """The HELO a server with a shared key sends first, its nonce, and the salt of the user
    authentication it asks for when it has ``users`` (empty when it has none)."""
    nonce = os.urandom(16)
    salt = os.urandom(16) if users else b""
    hello = msgpack.packb(["HELO", {"nonce": nonce, "auth": salt, "keepalive": True}])
    return hello, nonce, salt


def _digest(salt: Any, hostname: str, nonce: bytes, shared_key: str) -> str:
    raw_salt = salt if isinstance(salt, bytes) else str(salt).encode()
    return hashlib.sha512(raw_salt + hostname.encode() + nonce + shared_key.encode()).hexdigest()


def pong(
    ping: Any,
    nonce: bytes,
    shared_key: str,
    server_hostname: str,
    auth_salt: bytes = b"",
    users: dict[str, str] | None = None,
) -> tuple[bytes, str]:
    """The PONG answering a client's PING, and why it failed ("" when it did not). With
    ``users`` (name → password) the PING must also prove one of them (Fluentd's ``<user>``,
    Fluent Bit's ``Username``/``Password``)."""
    if not (isinstance(ping, list | tuple) and len(ping) >= 4 and _text(ping[0]) == "PING"):
        reason = "expected PING after HELO"
        return msgpack.packb(["PONG", False, reason, server_hostname, ""]), reason
    _, client_hostname, salt, digest = ping[:4]
    hostname = str(_text(client_hostname))
    expected = _digest(salt, hostname, nonce, shared_key)
    given = str(_text(digest))
    if not hmac.compare_digest(given.encode(), expected.encode()):
        reason = "shared key mismatch"
        return msgpack.packb(["PONG", False, reason, server_hostname, ""]), reason
    if users:
        name = str(_text(ping[4])) if len(ping) > 4 else ""
        proof = str(_text(ping[5])) if len(ping) > 5 else ""
        password = users.get(name)
        wanted = hashlib.sha512(auth_salt + name.encode() + (password or "").encode()).hexdigest()
        if password is None or not hmac.compare_digest(proof.encode(), wanted.encode()):
            reason = "username/password mismatch"
            return msgpack.packb(["PONG", False, reason, server_hostname, ""]), reason
    answer = _digest(salt, server_hostname, nonce, shared_key)
    return msgpack.packb(["PONG", True, "", server_hostname, answer]), ""


__all__ = ["ack", "decode_message", "event_time", "helo", "pong", "unpacker"]
