"""Request bodies: decompress within caps, check framing cheaply, produce the stored gzip member.

The receiver does not parse line formats: it checks the body is not empty, decompresses it
(refusing a decompression bomb before it grows past the cap), and looks at the first significant
byte to tell an obviously wrong format. Piper does the parsing and dead-letters bad lines. A JSON
body (an array or objects, not lines) up to ``JSON_PARSE_MAX_BYTES`` is parsed to count its
records, and refused when it is not JSON.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson
import zstandard
from isal import igzip

from bytefreezer.compression import InflateError
from bytefreezer.compression import decompressobj as inflater
from bytefreezer.json_bodies import UnframedJson, json_records
from bytefreezer.lines import count_nonblank_lines

CHUNK = 1 << 20
# What a msgspec decoder raises for a text it does not take (the compatibility endpoints read
# their usual bodies with msgspec, and anything else the slower way that says why)
NOT_DECODED = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)


class BodyError(Exception):
    """A body refused with an HTTP status and a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Body:
    """A checked body: the gzip member to store and its counts."""

    member: bytes
    lines: int
    size: int  # decompressed bytes
    records: int  # what piper reads as records: the lines, less a CSV or TSV header; JSON values


def _limit_error(limit: int) -> BodyError:
    return BodyError(413, f"decompressed body exceeds {limit} bytes")


def _inflate(raw: bytes, wbits: int, limit: int, name: str) -> bytes:
    out: list[bytes] = []
    size = 0
    data = raw
    decoder = inflater(wbits=wbits)
    try:
        while True:
            chunk = decoder.decompress(data, CHUNK)
            size += len(chunk)
            if size > limit:
                raise _limit_error(limit)
            out.append(chunk)
            data = decoder.unconsumed_tail
            if decoder.eof:
                rest = decoder.unused_data
                if wbits > 16 and rest and rest[:2] == b"\x1f\x8b":
                    decoder, data = inflater(wbits=wbits), rest  # next gzip member
                    continue
                if rest.strip(b"\x00"):
                    raise BodyError(400, f"invalid {name} body: trailing bytes after the stream")
                break
            if not data:
                raise BodyError(400, f"invalid {name} body: truncated stream")
    except InflateError as exc:
        raise BodyError(400, f"invalid {name} body: {exc}") from None
    return b"".join(out)


def _unzstd(raw: bytes, limit: int) -> bytes:
    out: list[bytes] = []
    size = 0
    try:
        # Bounded read first: a bomb is refused before its output grows past the limit.
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        while chunk := reader.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise _limit_error(limit)
            out.append(chunk)
        # The stream reader is silent about a cut-off frame; a frame-by-frame pass is not
        # (its output is already known to be within the limit).
        rest = raw
        while rest:
            frame = zstandard.ZstdDecompressor().decompressobj()
            frame.decompress(rest)
            if not frame.eof:
                raise BodyError(400, "invalid zstd body: truncated frame")
            rest = frame.unused_data
    except zstandard.ZstdError as exc:
        raise BodyError(400, f"invalid zstd body: {exc}") from None
    return b"".join(out)


def decompress(raw: bytes, encoding: str, limit: int) -> bytes:
    """The body as sent, decompressed; ``BodyError`` 400/413/415."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        if len(raw) > limit:
            raise _limit_error(limit)
        return raw
    if encoding in ("gzip", "x-gzip"):
        return _inflate(raw, 16 + zlib.MAX_WBITS, limit, "gzip")
    if encoding == "deflate":  # zlib-wrapped per RFC 9110; raw deflate accepted too
        wbits = zlib.MAX_WBITS if raw[:1] and (raw[0] & 0x0F) == 8 else -zlib.MAX_WBITS
        return _inflate(raw, wbits, limit, "deflate")
    if encoding == "zstd":
        return _unzstd(raw, limit)
    raise BodyError(
        415, f"unsupported Content-Encoding {encoding!r}; use gzip, zstd, deflate or identity"
    )


_FIRST_BYTE = {
    "ndjson": (b"{", "NDJSON bodies hold one JSON object per line"),
    "gelf": (b"{", "GELF bodies hold one JSON object per line"),
    "json": (b"[{", "JSON bodies hold an array of objects or an object"),
}


def unsnappy(raw: bytes, limit: int, what: str) -> bytes:
    """A snappy block (not framed) decompressed, as Loki's and Prometheus's protobuf bodies
    come; ``BodyError`` 400 naming ``what`` if it is not snappy, 413 past ``limit``."""
    import cramjam

    try:
        length = cramjam.snappy.decompress_raw_len(raw)
    except cramjam.DecompressionError as exc:
        raise BodyError(400, f"{what} is snappy-compressed: {exc}") from None
    if length > limit:
        raise _limit_error(limit)
    try:
        return bytes(cramjam.snappy.decompress_raw(raw))
    except cramjam.DecompressionError as exc:
        raise BodyError(400, f"{what} is snappy-compressed: {exc}") from None


def snappy_or_encoded(raw: bytes, encoding: str, limit: int, what: str) -> bytes:
    """A protobuf push's body: snappy (no Content-Encoding, or `snappy`), or any encoding
    ``decompress`` takes."""
    if encoding.strip().lower() in ("", "snappy"):
        return unsnappy(raw, limit, what)
    return decompress(raw, encoding, limit)


def json_list(data: bytes, field: str, shape: str) -> tuple[dict[str, Any], list[Any]]:
    """A JSON object body and its list ``field`` (a push's streams, a delivery's records);
    ``BodyError`` 400 naming the expected ``shape`` otherwise."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BodyError(400, f"body is not JSON: {exc}") from None
    found = document.get(field) if isinstance(document, dict) else None
    if not isinstance(found, list):
        raise BodyError(400, f"a {shape}")
    return document, found


def check_framing(data: bytes, fmt: str) -> None:
    """Refuse a body that cannot be in ``fmt`` by its first significant byte (cheap)."""
    stripped = data.lstrip(b" \t\r\n\x0b\x0c\xef\xbb\xbf")
    if not stripped:
        raise BodyError(400, "empty body")
    expected = _FIRST_BYTE.get(fmt)
    if expected is not None and stripped[:1] not in (bytes([c]) for c in expected[0]):
        raise BodyError(400, f"body does not look like {fmt}: {expected[1]}")


def count_lines(data: bytes) -> int:
    """Records in a body: its lines holding more than whitespace (a last line without newline
    counts). Blank lines are no records to piper either, so ingest and pipeline counts agree.
    Lines are only split in Python when one may be blank (starts with whitespace)."""
    return count_nonblank_lines(data)


_BOM = b"\xef\xbb\xbf"
# JSON bodies up to this size (decompressed) are parsed to count their records: parsed, a body
# takes about five times its size in memory for a moment (a 128 MB array: 640 MB). Larger ones
# are counted by their lines and not checked here; piper dead-letters what does not parse.
JSON_PARSE_MAX_BYTES = 16 * 1024 * 1024


def count_json_records(data: bytes) -> int:
    """Records in a JSON body as piper reads them: an array's elements, one for an object, and
    so for each value when several follow one another. ``BodyError`` 400 when it is not JSON
    (piper could only dead-letter it; the sender can still fix it)."""
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        pass  # several values one after another, or not JSON
    else:
        return len(value) if isinstance(value, list) else 1
    try:
        return sum(1 for _ in json_records(data.decode("utf-8")))
    except UnicodeDecodeError as exc:
        raise BodyError(400, f"body is not valid UTF-8 JSON: {exc}") from None
    except UnframedJson as exc:
        where = f"line {exc.error.lineno} column {exc.error.colno}"
        raise BodyError(400, f"body is not valid JSON: {exc.error.msg} at {where}") from None


def lines_body(lines: list[bytes]) -> Body:
    """JSON records, a line each (no newline inside), as the NDJSON body the receiver stores:
    ISA-L's gzip at level 1, about 4 times zlib's speed at that level."""
    data = b"\n".join(lines) + b"\n"
    # lines without a newline of their own are as many lines as records (a record is never
    # blank); counted otherwise
    count = len(lines) if data.count(b"\n") == len(lines) else count_lines(data)
    return Body(igzip.compress(data, compresslevel=1), count, len(data), len(lines))


def prepare(raw: bytes, encoding: str, fmt: str, limit: int) -> Body:
    """Decompress, check and package one request body."""
    if not raw:
        raise BodyError(400, "empty body")
    data = decompress(raw, encoding, limit)
    check_framing(data, fmt)
    if not data.endswith(b"\n"):
        data += b"\n"  # members concatenate cleanly with group commit
        member = gzip.compress(data, compresslevel=1)
    elif encoding.strip().lower() in ("gzip", "x-gzip"):
        member = raw  # already gzip: store as sent
    else:
        member = gzip.compress(data, compresslevel=1)
    lines = count_lines(data)
    if fmt == "json" and len(data) <= JSON_PARSE_MAX_BYTES:
        records = count_json_records(data)
    else:  # a CSV or TSV body's first line names its columns: no record to piper
        records = max(lines - 1, 0) if fmt in ("csv", "tsv") else lines
    return Body(member, lines, len(data), records)
