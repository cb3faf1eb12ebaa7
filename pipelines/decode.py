"""Decoders: raw intake bytes to an Arrow table plus the lines that could not be read.

An intake object is gzip; with group commit it holds several members, one per request body.
The members of a line format (NDJSON, syslog, logfmt, ...) are read together as one document
of their lines, JSON documents body by body into one table, and consecutive CSV or TSV bodies
with the same header as one body under it (a CSV header or a JSON array never spans two
bodies). The decoder is chosen by the object's data hint when it names a format, else by the
dataset's.
"""

from __future__ import annotations

import functools
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import get_args

import orjson
import pyarrow as pa

from bytefreezer.compression import InflateError
from bytefreezer.compression import decompressobj as inflater
from bytefreezer.control.models import InputFormat
from bytefreezer.json_bodies import UnframedJson, json_records
from bytefreezer.lines import valid_utf8
from bytefreezer.pipelines.schema import unify
from bytefreezer.transforms.tables import (
    JsonFields,
    NotObjectLines,
    loads_exact,
    read_ndjson,
    rows_to_table,
)

_MAX_BLOCK = 1 << 30
_FIRST_SLICE, _LAST_SLICE = 16 << 10, 4 << 20  # compressed bytes fed to an inflater at once


@dataclass
class Decoded:
    """Rows read from one object, and the lines rejected with their reasons."""

    table: pa.Table
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (line, reason)
    lines: int = 0


def gzip_members(data: bytes) -> Iterator[bytes]:
    """The decompressed members of a gzip object (plain bytes pass through whole).

    Each member's inflater is fed growing slices of the object (16 KiB, then twice as much
    each time) rather than the whole rest of it: an inflater copies the input left over after
    its member's end, and a group-committed object of 3,251 members of 1 KB copied some 3 GB
    that way (86 ms to inflate 4 MB, 30 ms fed in slices)."""
    if data[:2] != b"\x1f\x8b":
        yield data
        return
    view = memoryview(data)
    at = 0
    while at < len(data):
        decoder = inflater(wbits=16 + zlib.MAX_WBITS)
        pieces = []
        step = _FIRST_SLICE
        try:
            while not decoder.eof:
                if at >= len(data):
                    raise ValueError("corrupt gzip object: truncated stream")
                piece = view[at : at + step]
                at += len(piece)
                step = min(step * 2, _LAST_SLICE)
                pieces.append(decoder.decompress(piece))
        except InflateError as exc:
            raise ValueError(f"corrupt gzip object: {exc}") from None
        at -= len(decoder.unused_data)  # the next member starts there
        yield pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if at < len(data) and data[at : at + 2] != b"\x1f\x8b":
            if data[at:].strip(b"\x00"):
                raise ValueError("corrupt gzip object: trailing bytes after the last member")
            return


def gunzip(data: bytes) -> bytes:
    """Decompress a gzip object (several members allowed); plain bytes pass through."""
    return b"".join(gzip_members(data))


_BOM = b"\xef\xbb\xbf"  # UTF-8 byte-order mark


def decode_ndjson(data: bytes, learned: JsonFields | None = None) -> Decoded:
    """Newline-delimited JSON objects; malformed lines are rejected, not fatal. Text stays text
    and integers stay exact (``read_ndjson``); ``learned``: the types the source's earlier
    objects were read with."""
    if data.startswith(_BOM) and data[3:4] == b"{":
        data = data[3:]  # a byte-order mark before the first record
    if not data.strip():
        return Decoded(pa.table({}), [], 0)
    if data[:1] in (b"\xef", b"\xbb", b"\xbf"):
        # pyarrow's reader skips these bytes at the start of an object as (part of) a byte-order
        # mark, and a first line of nothing else vanished without a dead letter.
        return _decode_lines(data)
    table = _read_blocks(data, learned)
    if table is not None:
        return Decoded(table, [], table.num_rows)
    return _without_bad_lines(data, learned)


def _read_blocks(data: bytes, learned: JsonFields | None) -> pa.Table | None:
    """``data`` read by pyarrow's reader: 1 MiB blocks parse in parallel; one block for the
    whole object copes with very long lines and with types that differ between blocks.
    ``None`` when a line needs reading on its own."""
    for block_size in (1 << 20, min(max(len(data) + 1, 1 << 20), _MAX_BLOCK)):
        try:
            return read_ndjson(data, block_size, learned)
        except NotObjectLines:
            break
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            if block_size >= len(data):
                break
    return None


def _without_bad_lines(data: bytes, learned: JsonFields | None) -> Decoded:
    """NDJSON that pyarrow's reader refused: each line is checked with orjson, and the good
    ones are read again by pyarrow's reader, together. A 4 MB object with one bad line took
    120-126 ms when every line went through Python dicts (59-60 ms this way), against 31-38 ms
    for the object without it. Read line by line (``_decode_lines``) when no line is bad, or
    the good lines are still refused."""
    rejected: list[tuple[str, str]] = []
    good = [raw for raw, _ in _object_lines(data, orjson.loads, rejected)]
    if not rejected:
        return _decode_lines(data)
    table = _read_blocks(b"\n".join(good) + b"\n", learned) if good else pa.table({})
    if table is None:
        return _decode_lines(data)
    return Decoded(table, rejected, len(good) + len(rejected))


# Formats read line by line, each line on its own: the members (bodies) of an object are read
# as one document.
LINE_FORMATS = frozenset(
    {"ndjson", "gelf", "raw", "syslog", "apache", "nginx", "logfmt", "kv", "cef"}
)


def _joined_lines(members: list[bytes], *, json_lines: bool) -> bytes | None:
    """The lines of several members (group-committed bodies) as one document, each member's
    last line ended: a line never spans two bodies, so the records and dead letters are those
    of one body holding all the lines, read in one pass. Member by member, an object of 64 KB
    NDJSON bodies read 4.7x slower than one body, of 1 KB bodies 65x (syslog 29x). For JSON
    lines (``json_lines``) each member's byte-order mark goes as ``decode_ndjson`` drops it,
    and ``None`` says a member starts with what may be part of one, which only its own
    decoding tells apart."""
    pieces = []
    for member in members:
        if json_lines:
            if member.startswith(_BOM) and member[3:4] == b"{":
                member = member[3:]
            if member[:1] in (b"\xef", b"\xbb", b"\xbf"):
                return None
        pieces.append(member)
        if member and not member.endswith(b"\n"):
            pieces.append(b"\n")
    return b"".join(pieces)


def _same_header_runs(members: list[bytes]) -> list[list[bytes]]:
    """CSV or TSV members in runs of consecutive bodies with the same header line, each body's
    quotes balanced (a body left inside a quoted field must not swallow the next one) and its
    bytes UTF-8 (text that is not makes its column binary, which must not spread to the
    other bodies' rows); a body that does not qualify is a run of its own."""
    runs: list[list[bytes]] = []
    header: bytes | None = None
    for member in members:
        head, newline, _ = member.partition(b"\n")
        if (
            newline
            and member.count(b'"') % 2 == 0
            and head.count(b'"') % 2 == 0
            and valid_utf8(member)
        ):
            if head == header:
                runs[-1].append(member)
                continue
            header = head
        else:
            header = None
        runs.append([member])
    return runs


def _delimited_bodies(members: list[bytes], decoder: Decoder) -> list[Decoded]:
    """CSV or TSV members decoded a run of ``_same_header_runs`` at a time. Read one body at a
    time, an object of 2,000 bodies of 10 rows took 155x as long as one body of them all. A
    run unreadable together (one body's bad bytes) is read a body at a time, as before."""
    parts: list[Decoded] = []
    for run in _same_header_runs(members):
        joined = decoder(_rows_under_one_header(run)) if len(run) > 1 else None
        if joined is None or (joined.rejected and not joined.table.num_rows):
            parts.extend(decoder(member) for member in run)
        else:
            parts.append(joined)
    return parts


def _rows_under_one_header(run: list[bytes]) -> bytes:
    """A run of ``_same_header_runs`` as one body: the first whole, the others' rows after it,
    every body's last row ended."""
    pieces = []
    for index, member in enumerate(run):
        rows = member if index == 0 else member.partition(b"\n")[2]
        pieces.append(rows)
        if rows and not rows.endswith(b"\n"):
            pieces.append(b"\n")
    return b"".join(pieces)


def _object_lines(
    data: bytes, loads: Callable[[bytes], object], rejected: list[tuple[str, str]]
) -> Iterator[tuple[bytes, dict[str, object]]]:
    """The non-blank lines of NDJSON that hold a JSON object, each with its value (read by
    ``loads``); every other non-blank line goes to ``rejected`` with its reason."""
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            value = loads(raw)
        except orjson.JSONDecodeError as exc:
            rejected.append((raw.decode("utf-8", "replace"), f"invalid JSON: {exc}"))
            continue
        if not isinstance(value, dict):
            kind = type(value).__name__
            rejected.append((raw.decode("utf-8", "replace"), f"not a JSON object ({kind})"))
            continue
        yield raw, value


def _decode_lines(data: bytes) -> Decoded:
    rejected: list[tuple[str, str]] = []
    rows = [value for _, value in _object_lines(data, loads_exact, rejected)]
    return Decoded(rows_to_table(rows), rejected, len(rows) + len(rejected))


def decode_json(data: bytes) -> Decoded:
    """A JSON array of objects, a single object, or several of them one after another."""
    return decode_json_bodies([data])


def decode_json_bodies(bodies: list[bytes]) -> Decoded:
    """The records of several JSON bodies (each framed on its own) as one table: the
    group-committed bodies of an object, read one table per body and then unified, took 11x as
    long for 1 KB bodies."""
    rows: list[dict[str, object]] = []
    rejected: list[tuple[str, str]] = []
    for data in bodies:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            rejected.append((data[:1000].decode("utf-8", "replace"), f"invalid UTF-8: {exc}"))
            continue
        try:
            for item in json_records(text):
                if isinstance(item, dict):
                    rows.append(item)
                else:
                    rejected.append(
                        (json.dumps(item)[:1000], f"not a JSON object ({type(item).__name__})")
                    )
        except UnframedJson as exc:  # the rest cannot be framed reliably
            rejected.append((exc.rest, f"invalid JSON: {exc.error.msg} at {exc.error.pos}"))
    return Decoded(rows_to_table(rows), rejected, len(rows) + len(rejected))


Decoder = Callable[[bytes], Decoded]


def decoders() -> dict[str, Decoder]:
    """Every format by name."""
    from bytefreezer.pipelines import text_formats
    from bytefreezer.pipelines.otlp_logs import decode_otlp_logs
    from bytefreezer.pipelines.otlp_metrics import decode_otlp_metrics
    from bytefreezer.pipelines.otlp_traces import decode_otlp_traces

    return {
        "ndjson": decode_ndjson,
        "json": decode_json,
        "gelf": text_formats.decode_gelf,
        "csv": text_formats.decode_csv,
        "tsv": text_formats.decode_tsv,
        "raw": text_formats.decode_raw,
        "syslog": text_formats.decode_syslog,
        "apache": text_formats.decode_access_log,
        "nginx": text_formats.decode_access_log,
        "logfmt": text_formats.decode_logfmt,
        "kv": text_formats.decode_logfmt,
        "cef": text_formats.decode_cef,
        OTLP_LOGS: decode_otlp_logs,
        OTLP_TRACES: decode_otlp_traces,
        OTLP_METRICS: decode_otlp_metrics,
    }


FORMATS: tuple[str, ...] = get_args(InputFormat)
# Objects the receiver stored from its OTLP endpoints (hints ``otlp``, ``otlp-traces`` and
# ``otlp-metrics``): a dataset is not declared in these formats, its OTLP requests say them.
OTLP_LOGS = "otlp"
OTLP_TRACES = "otlp-traces"
OTLP_METRICS = "otlp-metrics"


def choose_format(hint: str, dataset_format: str) -> str:
    """The format an object is decoded with: its hint when that names one, else the dataset's."""
    otlp = (OTLP_LOGS, OTLP_TRACES, OTLP_METRICS)
    return hint if hint in FORMATS or hint in otlp else dataset_format


def decode_object(
    data: bytes, fmt: str, learned: JsonFields | None = None, csv_delimiter: str = ","
) -> Decoded:
    """Decode the members of an intake object with the decoder of ``fmt``: together when its
    lines stand alone (``LINE_FORMATS``), JSON documents body by body into one table, CSV and
    TSV bodies under the same header as one (NDJSON: with the field types ``learned`` from
    the source's earlier objects; CSV: values separated by ``csv_delimiter``)."""
    decoder = decoders()[fmt]
    if fmt == "ndjson" and learned is not None:
        decoder = functools.partial(decode_ndjson, learned=learned)
    elif fmt == "csv" and csv_delimiter != ",":
        from bytefreezer.pipelines.text_formats import decode_csv

        decoder = functools.partial(decode_csv, delimiter=csv_delimiter)
    members = list(gzip_members(data))
    if len(members) > 1 and fmt in LINE_FORMATS:
        lines = _joined_lines(members, json_lines=fmt in ("ndjson", "gelf"))
        if lines is not None:
            return decoder(lines)
    if len(members) > 1 and fmt == "json":
        return decode_json_bodies(members)
    if len(members) > 1 and fmt in ("csv", "tsv"):
        parts = _delimited_bodies(members, decoder)
    else:
        parts = [decoder(member) for member in members]
    if len(parts) == 1:
        return parts[0]
    tables = [p.table for p in parts if p.table.num_rows]
    table = unify(tables) if tables else pa.table({})
    return Decoded(table, [r for p in parts for r in p.rejected], sum(p.lines for p in parts))
