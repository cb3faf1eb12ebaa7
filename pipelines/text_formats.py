"""Line-oriented input formats: CSV/TSV, raw lines, syslog, access logs, logfmt, CEF, GELF."""

from __future__ import annotations

import io
import re

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from bytefreezer.lines import BLANK_BYTES, is_blank
from bytefreezer.pipelines.decode import Decoded, decode_ndjson
from bytefreezer.transforms import Output
from bytefreezer.transforms.builtin.cast import Cast, CastConfig
from bytefreezer.transforms.builtin.date_parse import DateParse, DateParseConfig
from bytefreezer.transforms.builtin.grok import Grok, GrokConfig
from bytefreezer.transforms.builtin.kv import Kv, KvConfig
from bytefreezer.transforms.builtin.parse_syslog import ParseSyslog, ParseSyslogConfig
from bytefreezer.transforms.tables import EXACT_INTEGER, INT64_BOUND, rows_to_table


def _lines(data: bytes) -> tuple[list[str], list[tuple[str, str]]]:
    """Non-empty lines as text, and lines that are not valid UTF-8 (rejected)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        good: list[str] = []
        bad: list[tuple[str, str]] = []
        for raw in data.split(b"\n"):
            try:
                line = raw.decode("utf-8").rstrip("\r")
            except UnicodeDecodeError as exc:
                bad.append(
                    (raw.decode("utf-8", "replace"), f"invalid UTF-8: {exc.reason} at {exc.start}")
                )
                continue
            if not is_blank(line):
                good.append(line)
        return good, bad
    return [line.rstrip("\r") for line in text.split("\n") if not is_blank(line)], []


def _apply(step: object, table: pa.Table, rejected: list[tuple[str, str]], column: str) -> pa.Table:
    out = step.apply(table)  # type: ignore[attr-defined]
    if isinstance(out, Output):
        if out.rejected is not None:
            for line, reason in zip(
                out.rejected.column(column).to_pylist(), out.errors, strict=False
            ):
                rejected.append((line, reason))
        return out.table
    assert isinstance(out, pa.Table)
    return out


def decode_raw(data: bytes) -> Decoded:
    """One record per line, in a `message` field."""
    lines, bad = _lines(data)
    return Decoded(pa.table({"message": pa.array(lines, pa.string())}), bad, len(lines) + len(bad))


def _decode_delimited(data: bytes, delimiter: str) -> Decoded:
    bad_rows: list[tuple[str, str]] = []

    def invalid(row: pacsv.InvalidRow) -> str:
        reason = f"expected {row.expected_columns} columns, found {row.actual_columns}"
        bad_rows.append((row.text or "", reason))
        return "skip"

    integers, times = _sampled_columns(data, delimiter)
    try:
        table = pacsv.read_csv(
            io.BytesIO(data),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=invalid),
            read_options=_csv_read_options(data),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(integers + times, pa.string())
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        return _unreadable(data, f"unreadable {'TSV' if delimiter == chr(9) else 'CSV'}: {exc}")
    try:
        table.column_names  # noqa: B018 - names are text: a header of other bytes names nothing
    except UnicodeDecodeError as exc:
        return _unreadable(data, f"header row is not valid UTF-8: {exc.reason} at {exc.start}")
    for name in integers + times:
        index = table.column_names.index(name)
        written = table.column(index)
        written = pc.if_else(pc.is_in(written, value_set=_NULLS), _NO_TEXT, written)
        table = table.set_column(
            index, name, _typed_integers(written) if name in integers else written
        )
    table = _late_columns(data, delimiter, table, integers)
    return Decoded(table, bad_rows, table.num_rows + len(bad_rows))


def _unreadable(data: bytes, reason: str) -> Decoded:
    """Every line of an object no row can be read from, dead-lettered with ``reason``."""
    lines = [raw.decode("utf-8", "replace") for raw in data.split(b"\n") if raw.strip(BLANK_BYTES)]
    return Decoded(pa.table({}), [(line, reason) for line in lines], len(lines))


# CSV columns are typed as pyarrow infers them, except integer columns a number would not write
# back as they were: leading zeros (zip codes, account numbers), minus zero or a plus sign keep
# the column as text, and integers beyond 64 bits are EXACT_INTEGER, not doubles (text beyond 38
# digits). pyarrow has no option for either, so the columns it types as integers in a sample of
# the object are read as text and typed here (~+70% of a CSV read; a column pyarrow reads as
# doubles, fractions in its first rows, stays doubles). pyarrow reads integers with a plus sign
# as doubles (+7 as 7.0): such a column is text too, wherever the sign appears.
_SAMPLE_BYTES = 16 * 1024
_INTEGER_TEXT = r"^-?[0-9]+$"
_SIGNED_INTEGER_TEXT = r"^[+-]?[0-9]+$"
_NULLS = pa.array(pacsv.ConvertOptions().null_values, pa.string())
_NO_TEXT = pa.scalar(None, pa.string())


def _csv_read_options(data: bytes) -> pacsv.ReadOptions:
    return pacsv.ReadOptions(block_size=max(1 << 20, min(len(data) + 1, 1 << 30)))


def _sampled_columns(data: bytes, delimiter: str) -> tuple[list[str], list[str]]:
    """The columns pyarrow types as integers, and as times (dates, times of day, timestamps),
    in the first rows of ``data`` (unique names). Times are kept as written: pyarrow makes a time
    with an offset UTC and drops the offset, one without an offset naive (which date_parse then
    took for UTC, whatever its ``timezone``), and a column that is a time in one object and text
    in the next was rewritten when both were packed."""
    head = data[:_SAMPLE_BYTES]
    if len(data) > len(head):
        head = head[: head.rfind(b"\n") + 1]
    try:
        sample = pacsv.read_csv(
            io.BytesIO(head),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, invalid_row_handler=lambda _: "skip"
            ),
            read_options=pacsv.ReadOptions(use_threads=False),  # small: threads cost more
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, UnicodeDecodeError):
        return [], []  # the whole read reports it, or the columns are found late
    try:
        names = sample.column_names
    except UnicodeDecodeError:
        return [], []  # the whole read reports it
    unique = [f for f in sample.schema if names.count(f.name) == 1]
    return (
        [f.name for f in unique if pa.types.is_integer(f.type)],
        [f.name for f in unique if pa.types.is_temporal(f.type)],
    )


def _typed_integers(written: pa.ChunkedArray) -> pa.ChunkedArray:
    """Integer text as pyarrow would type it, or as text where a number would rewrite it."""
    if _rewritten(written):
        return written
    try:
        return written.cast(pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    exact = _exact_integers(written)
    if exact is not None:
        return exact
    try:
        return written.cast(pa.float64())  # fractions further on, as pyarrow reads them
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return written  # text further on


def _rewritten(written: pa.ChunkedArray) -> bool:
    """Whether a value has leading zeros, a plus sign or is minus zero (prefix tests: a third
    of the cost of a regular expression)."""
    zero = pc.and_(pc.starts_with(written, "0"), pc.greater(pc.binary_length(written), 1))
    signed = pc.or_(pc.starts_with(written, "+"), pc.starts_with(written, "-0"))
    return bool(pc.any(pc.or_(zero, signed)).as_py())


def _exact_integers(written: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """Integer text (some beyond 64 bits) as ``EXACT_INTEGER``, or as the text itself beyond 38
    digits (Arrow's cast would wrap such a value around); None if a value is not an integer."""
    if not pc.all(pc.match_substring_regex(written, _INTEGER_TEXT)).as_py():
        return None
    digits = pc.max(pc.utf8_length(pc.utf8_ltrim(written, characters="-"))).as_py()
    return written.cast(EXACT_INTEGER) if digits is not None and digits <= 38 else written


def _late_columns(data: bytes, delimiter: str, table: pa.Table, integers: list[str]) -> pa.Table:
    """The same for integer and time columns the sample did not show (null there) and double
    columns that integers beyond 64 bits or with a plus sign made doubles, read again as text:
    rare, so a second read."""
    names = table.column_names
    # Without a plus sign anywhere there is no column of signed integers to look for (the
    # object is searched only when pyarrow read a column as doubles).
    signed = any(pa.types.is_floating(f.type) for f in table.schema) and b"+" in data
    late = [
        f.name
        for f in table.schema
        if names.count(f.name) == 1
        and f.name not in integers
        and (
            pa.types.is_integer(f.type)
            or pa.types.is_temporal(f.type)
            or (pa.types.is_floating(f.type) and _integral(table.column(f.name), signed))
        )
    ]
    if not late:
        return table
    text = pacsv.read_csv(
        io.BytesIO(data),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=lambda _: "skip"),
        read_options=_csv_read_options(data),
        convert_options=pacsv.ConvertOptions(
            include_columns=late,
            column_types=dict.fromkeys(late, pa.string()),
            strings_can_be_null=True,
        ),
    )
    for name in late:
        index = names.index(name)
        written = text.column(name)
        kind = table.schema.field(name).type
        if pa.types.is_temporal(kind):
            table = table.set_column(index, name, written)
        elif pa.types.is_integer(kind):
            table = table.set_column(index, name, _typed_integers(written))
        elif _plus_signed(written):
            table = table.set_column(index, name, written)
        elif (exact := _exact_integers(written)) is not None:
            table = table.set_column(index, name, exact)
    return table


def _integral(column: pa.ChunkedArray, signed: bool) -> bool:
    """Whether a double column may hold integers pyarrow made doubles: beyond 64 bits, or (in
    an object with a plus sign) every value a whole number."""
    if (pc.max(pc.abs(column)).as_py() or 0) >= INT64_BOUND:
        return True
    return signed and bool(pc.all(pc.equal(column, pc.floor(column))).as_py())


def _plus_signed(written: pa.ChunkedArray) -> bool:
    """Whether every value is integer text and one has a plus sign (kept as written)."""
    return bool(
        pc.all(pc.match_substring_regex(written, _SIGNED_INTEGER_TEXT)).as_py()
        and pc.any(pc.starts_with(written, "+")).as_py()
    )


def decode_csv(data: bytes, delimiter: str = ",") -> Decoded:
    """CSV with a header row; numbers and booleans are typed, times stay text as written."""
    return _decode_delimited(data, delimiter)


def decode_tsv(data: bytes) -> Decoded:
    """Tab-separated values with a header row."""
    return _decode_delimited(data, "\t")


_SYSLOG = ParseSyslog(ParseSyslogConfig(on_error="dead_letter"))


def decode_syslog(data: bytes) -> Decoded:
    """RFC 3164 or RFC 5424 lines."""
    lines, rejected = _lines(data)
    table = pa.table({"message": pa.array(lines, pa.string())})
    out = _apply(_SYSLOG, table, rejected, "message")
    return Decoded(out, rejected, len(lines) + _utf8_count(rejected))


_ACCESS = Grok(
    GrokConfig(patterns=["%{COMBINEDAPACHELOG}", "%{COMMONAPACHELOG}"], on_no_match="dead_letter")
)
_ACCESS_TIME = DateParse(
    DateParseConfig(source_field="timestamp", formats=["%d/%b/%Y:%H:%M:%S %z"])
)
_ACCESS_TYPES = Cast(CastConfig(fields={"response": "int", "bytes": "int"}))


def decode_access_log(data: bytes) -> Decoded:
    """Apache / nginx access logs, common or combined format."""
    lines, rejected = _lines(data)
    table = pa.table({"message": pa.array(lines, pa.string())})
    table = _apply(_ACCESS, table, rejected, "message")
    table = _apply(_ACCESS_TIME, table, rejected, "message")
    table = _apply(_ACCESS_TYPES, table, rejected, "message")
    for quoted in ("referrer", "agent"):
        if quoted in table.column_names:
            trimmed = pc.utf8_trim(table.column(quoted), characters='"')
            table = table.set_column(table.schema.get_field_index(quoted), quoted, trimmed)
    drop = [c for c in ("rawrequest", "_grokparsefailure") if c in table.column_names]
    return Decoded(table.drop_columns(drop), rejected, len(lines) + _utf8_count(rejected))


def _utf8_count(rejected: list[tuple[str, str]]) -> int:
    return sum(1 for _, reason in rejected if reason.startswith("invalid UTF-8"))


_LOGFMT = Kv(KvConfig(field="message"))


def decode_logfmt(data: bytes) -> Decoded:
    """logfmt / key=value lines (`level=info msg="hello world" n=3`)."""
    lines, rejected = _lines(data)
    table = pa.table({"message": pa.array(lines, pa.string())})
    out = _apply(_LOGFMT, table, rejected, "message").drop_columns(["message"])
    return Decoded(out, rejected, len(lines) + _utf8_count(rejected))


_CEF_HEADER = re.compile(
    r"^(?:.*?\s)?CEF:(\d+)\|((?:[^|\\]|\\.)*)\|((?:[^|\\]|\\.)*)\|((?:[^|\\]|\\.)*)\|((?:[^|\\]|\\.)*)\|((?:[^|\\]|\\.)*)\|((?:[^|\\]|\\.)*)\|(.*)$"
)
_CEF_KEY = re.compile(r"(?:^|(?<=\s))([\w.\[\]-]+)=")
_NOT_CEF = "not a CEF line (CEF:Version|Vendor|Product|Version|ID|Name|Severity|Extension)"
_CEF_FIELDS = [
    "cef_version",
    "device_vendor",
    "device_product",
    "device_version",
    "signature_id",
    "name",
    "severity",
]


_CEF_ESCAPE = re.compile(r"\\([\\=|nr])")


def _cef_unescape(value: str) -> str:
    """CEF's escapes (``\\\\``, ``\\=``, ``\\|``, ``\\n``, ``\\r``) undone; any other backslash is kept
    as written (``C:\\Windows\\temp`` from a producer that does not escape it lost them)."""
    return _CEF_ESCAPE.sub(lambda m: {"n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), value)


def decode_cef(data: bytes) -> Decoded:
    """ArcSight Common Event Format: header fields plus the extension's key=value pairs."""
    lines, rejected = _lines(data)
    rows = []
    for line in lines:
        match = _CEF_HEADER.match(line)
        if not match:
            rejected.append((line, _NOT_CEF))
            continue
        row: dict[str, object] = {
            k: _cef_unescape(v) for k, v in zip(_CEF_FIELDS, match.groups()[:7], strict=True)
        }
        row["cef_version"] = int(match.group(1))
        extension = match.group(8)
        keys = list(_CEF_KEY.finditer(extension))
        for i, key in enumerate(keys):
            end = keys[i + 1].start() if i + 1 < len(keys) else len(extension)
            row[key.group(1)] = _cef_unescape(extension[key.end() : end].rstrip())
        rows.append(row)
    return Decoded(rows_to_table(rows), rejected, len(lines) + _utf8_count(rejected))


def decode_gelf(data: bytes) -> Decoded:
    """GELF messages, one JSON object per line; additional fields lose their leading `_`."""
    decoded = decode_ndjson(data)
    names = [
        name[1:] if name.startswith("_") and len(name) > 1 and name != "_id" else name
        for name in decoded.table.column_names
    ]
    if len(set(names)) == len(names):
        decoded.table = decoded.table.rename_columns(names)
    return decoded
