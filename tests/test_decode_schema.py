"""Decoding, schema unification and event-time partitions."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bytefreezer.control.models import ParquetOptions
from bytefreezer.keys import (
    escape_partition_value,
    fill_partition_fields,
    partition_fields,
    partition_strftime,
)
from bytefreezer.pipelines.decode import decode_json, decode_ndjson, gunzip
from bytefreezer.pipelines.partitioning import event_times, partition_paths
from bytefreezer.pipelines.schema import unified_schema, unify
from bytefreezer.transforms import compile_chain
from bytefreezer.transforms import tables as tables_module
from bytefreezer.transforms.builtin.date_parse import parse_iso
from bytefreezer.transforms.tables import (
    EXACT_INTEGER,
    JsonFields,
    loads_exact,
    may_hold_non_objects,
    rows_to_table,
    stringify,
)


def test_malformed_lines_are_rejected_with_reasons_and_good_lines_kept() -> None:
    data = b'{"a": 1}\n{bad json\n\n[1, 2]\n{"a": 2, "b": "x"}\n'
    decoded = decode_ndjson(data)
    assert decoded.table.to_pylist() == [{"a": 1, "b": None}, {"a": 2, "b": "x"}]
    assert decoded.lines == 4
    reasons = [reason for _, reason in decoded.rejected]
    assert reasons[0].startswith("invalid JSON") and "not a JSON object (list)" in reasons[1]
    assert decoded.rejected[0][0] == "{bad json"


def test_conflicting_types_in_one_object_become_strings_not_losses() -> None:
    decoded = decode_ndjson(b'{"v": 1}\n{"v": "one"}\n{"v": {"n": 1}}\n')
    assert decoded.table.column("v").to_pylist() == ["1", "one", '{"n":1}']
    assert not decoded.rejected


def test_integers_stay_integers() -> None:
    decoded = decode_ndjson(b'{"n": 9007199254740993}\n')
    assert decoded.table.schema.field("n").type == pa.int64()
    assert decoded.table.column("n").to_pylist() == [9007199254740993]


def test_integers_beyond_64_bits_are_kept_as_text() -> None:
    table = rows_to_table([{"n": -9223372036854775809}, {"n": [1180591620717411303424]}])
    assert table.column("n").to_pylist() == ["-9223372036854775809", "[1180591620717411303424]"]


BIG = 18446744073709551617  # 2**64 + 1: beyond signed and unsigned 64 bits
UNSIGNED = 18446744073709551615  # 2**64 - 1: unsigned 64-bit, beyond int64


def test_ndjson_integers_beyond_64_bits_stay_exact_with_every_number_of_their_field() -> None:
    # pyarrow's reader made these fields doubles: 2**53 + 1 lost its last digit, 2**64 + 1 too.
    decoded = decode_ndjson(
        b'{"id": 9007199254740993, "n": {"x": 1}, "l": [1], "f": 2.5, "i": 7}\n'
        + f'{{"id": {UNSIGNED}, "n": {{"x": {BIG}}}, "l": [{BIG}, -{BIG}], "f": 1}}\n'.encode()
    )
    table = decoded.table
    assert not decoded.rejected
    assert table.schema.field("id").type == EXACT_INTEGER
    assert table.schema.field("n").type == pa.struct([("x", EXACT_INTEGER)])
    assert table.schema.field("l").type == pa.list_(EXACT_INTEGER)
    assert table.schema.field("f").type == pa.float64()  # fractions: a JSON number, as before
    assert table.schema.field("i").type == pa.int64()
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == [9007199254740993, UNSIGNED]
    assert [r["n"]["x"] for r in rows] == [1, BIG]
    assert [r["l"] for r in rows] == [[1], [BIG, -BIG]]


def test_a_field_mixing_huge_integers_with_fractions_or_more_digits_is_exact_text() -> None:
    forty = "1" * 40
    decoded = decode_ndjson(f'{{"v": 1.5}}\n{{"v": {BIG}}}\n{{"v": {forty}}}\n'.encode())
    assert decoded.table.column("v").to_pylist() == ["1.5", str(BIG), forty]
    assert not decoded.rejected


def test_huge_integers_stay_exact_on_the_line_by_line_path_and_in_json_documents() -> None:
    decoded = decode_ndjson(f'{{"v": {BIG}}}\nnot json\n{{"v": 3}}\n'.encode())
    assert len(decoded.rejected) == 1
    assert decoded.table.schema.field("v").type == EXACT_INTEGER
    assert decoded.table.column("v").to_pylist() == [BIG, 3]
    document = decode_json(f'[{{"v": {BIG}}}, {{"v": {UNSIGNED}}}]'.encode())
    assert document.table.column("v").to_pylist() == [BIG, UNSIGNED]
    assert loads_exact(f'{{"a": [{BIG}]}}'.encode()) == {"a": [BIG]}
    assert loads_exact(f'{{"a": "{BIG}"}}') == {"a": str(BIG)}
    # 19 digits after a minus are below -2**63: orjson made it -1e+19
    low = -9999999999999999999
    assert loads_exact(f'{{"a": [296, {low}]}}') == {"a": [296, low]}
    conflict = decode_ndjson(f'{{"a": [296, {low}]}}\n{{"a": "x"}}\n'.encode()).table
    assert conflict.column("a").to_pylist() == [f"[296,{low}]", "x"]


def test_gunzip_handles_members_and_reports_corruption() -> None:
    assert gunzip(gzip.compress(b"a\n") + gzip.compress(b"b\n")) == b"a\nb\n"
    with pytest.raises(ValueError, match="corrupt gzip"):
        gunzip(gzip.compress(b"abc" * 100)[:20])


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        ([pa.int32(), pa.int64()], pa.int64()),
        ([pa.int64(), pa.float64()], pa.float64()),
        ([pa.null(), pa.int64()], pa.int64()),
        ([pa.bool_(), pa.int64()], pa.int64()),
        ([pa.int64(), pa.string()], pa.string()),
        ([pa.int64(), EXACT_INTEGER], EXACT_INTEGER),
        ([pa.uint64(), EXACT_INTEGER, pa.bool_()], EXACT_INTEGER),
        ([pa.decimal128(10, 2), pa.int64()], pa.decimal128(22, 2)),
        ([EXACT_INTEGER, pa.float64()], pa.float64()),
        ([EXACT_INTEGER, pa.string()], pa.string()),
        ([pa.timestamp("s"), pa.timestamp("ms", "UTC")], pa.timestamp("us", "UTC")),
        (
            [pa.struct([("a", pa.int64())]), pa.struct([("b", pa.string())])],
            pa.struct([("a", pa.int64()), ("b", pa.string())]),
        ),
        ([pa.struct([("a", pa.int64())]), pa.list_(pa.int64())], pa.string()),
    ],
)
def test_widening_rules(types: list[pa.DataType], expected: pa.DataType) -> None:
    schema = unified_schema([pa.schema([("f", t)]) for t in types])
    assert schema.field("f").type == expected


def test_unify_adds_new_columns_and_stringifies_conflicts() -> None:
    a = pa.table({"x": [1], "y": [{"k": 1}]})
    b = pa.table({"x": ["two"], "z": [2.5], "y": [[1, 2]]})
    table = unify([a, b])
    assert table.to_pylist() == [
        {"x": "1", "y": '{"k":1}', "z": None},
        {"x": "two", "y": "[1,2]", "z": 2.5},
    ]


def test_unify_widens_conflicts_inside_objects_and_lists() -> None:
    # Arrow cannot cast a struct whose field widened to text: such a conflict failed the
    # packer's run, every cycle.
    first = decode_ndjson(b'{"m":{"a":1,"b":2},"l":[{"x":1}]}\n{"m":null}\n').table
    second = decode_ndjson(b'{"m":{"a":{"x":1}},"l":[{"x":"s"},null]}\n').table
    assert unify([first.slice(1), second, first.slice(0, 1)]).to_pylist() == [
        {"m": None, "l": None},
        {"m": {"a": '{"x":1}', "b": None}, "l": [{"x": "s"}, None]},
        {"m": {"a": "1", "b": 2}, "l": [{"x": "1"}]},
    ]


def test_event_time_from_strings_epochs_and_fallback_to_ingest_time() -> None:
    ingest_ns = 1_600_000_000 * 10**9  # 2020-09-13T12:26:40Z
    table = pa.table(
        {"ts": ["2024-01-02T03:04:05Z", "2024-01-02T23:30:00-02:00", "1700000000", "junk", None]}
    )
    paths = partition_paths(event_times(table, "ts", ingest_ns), ParquetOptions())
    assert paths is not None
    assert paths.to_pylist() == [
        "year=2024/month=01/day=02/hour=03",
        "year=2024/month=01/day=03/hour=01",
        "year=2023/month=11/day=14/hour=22",
        "year=2020/month=09/day=13/hour=12",
        "year=2020/month=09/day=13/hour=12",
    ]
    millis = pa.table({"ts": [1700000000123, 1700000000]})
    times = event_times(millis, "ts", ingest_ns)
    assert [t.isoformat() for t in times.to_pylist()] == [
        "2023-11-14T22:13:20.123000+00:00",
        "2023-11-14T22:13:20+00:00",
    ]
    # One bogus integer beyond 64 bits makes the field decimal; the other rows keep their times.
    exact = decode_ndjson(f'{{"ts": 1700000000}}\n{{"ts": {10**30}}}\n'.encode()).table
    doubles = pa.table({"ts": [1700000000.0, 1e30]})  # out of range: that row alone falls back
    for table in (exact, doubles):
        times = event_times(table, "ts", ingest_ns)
        assert [t.isoformat() for t in times.to_pylist()] == [
            "2023-11-14T22:13:20+00:00",
            "2020-09-13T12:26:40+00:00",
        ]


@pytest.mark.parametrize(
    ("scheme", "template", "expected"),
    [
        ("date", "", "date=2024-01-02"),
        ("date_hour", "", "date=2024-01-02/hour=03"),
        ("custom", "dt=%Y%m%d", "dt=20240102"),
    ],
)
def test_partition_schemes(scheme: str, template: str, expected: str) -> None:
    table = pa.table({"timestamp": ["2024-01-02T03:04:05Z"]})
    options = ParquetOptions(partitioning=scheme, partition_template=template)  # type: ignore[arg-type]
    paths = partition_paths(event_times(table, "timestamp", 0), options)
    assert paths is not None and paths.to_pylist() == [expected]
    assert (
        partition_paths(event_times(table, "timestamp", 0), ParquetOptions(partitioning="none"))
        is None
    )


@settings(max_examples=60, deadline=None)
@given(
    micros=st.lists(
        st.integers(min_value=-(10**15), max_value=4 * 10**15), min_size=1, max_size=300
    ),
    template=st.sampled_from(
        [
            "year=%Y/month=%m/day=%d/hour=%H",
            "date=%Y-%m-%d",
            "dt=%Y%m%d/h=%H",
            "doy=%j/%%/%y",
            "m=%M",  # finer than an hour: every row is formatted
        ]
    ),
)
def test_partition_paths_match_formatting_every_row(micros: list[int], template: str) -> None:
    times = pa.chunked_array([pa.array(micros, pa.timestamp("us", tz="UTC"))])
    options = ParquetOptions(partitioning="custom", partition_template=template)
    paths = partition_paths(times, options)
    assert paths is not None
    assert paths.to_pylist() == pc.strftime(times, format=template, locale="C").to_pylist()


def test_an_object_whose_members_conflict_keeps_the_others_readable_by_path() -> None:
    """One member of `event` is a number in one record and text in the next: that member
    becomes text, and `event.created` still gives the time (the whole object was JSON text,
    and its records fell back to their ingest time)."""
    lines = [
        {"event": {"kind": "login", "created": "2024-01-02T03:04:05Z", "n": {"x": 1}}},
        {"event": {"kind": 7, "created": "2024-01-02T04:00:00Z", "n": {"x": "s"}}},
        {"event": None},
        {"other": 1},
    ]
    table = decode_ndjson("\n".join(json.dumps(line) for line in lines).encode()).table
    assert table.column("event").to_pylist() == [
        {"kind": "login", "created": "2024-01-02T03:04:05Z", "n": {"x": "1"}},
        {"kind": "7", "created": "2024-01-02T04:00:00Z", "n": {"x": "s"}},
        None,
        None,
    ]
    paths = partition_paths(event_times(table, "event.created", 0), ParquetOptions())
    assert paths is not None and paths.to_pylist()[:2] == [
        "year=2024/month=01/day=02/hour=03",
        "year=2024/month=01/day=02/hour=04",
    ]


def test_custom_partitions_by_record_fields() -> None:
    table = pa.table(
        {
            "timestamp": ["2024-01-02T03:04:05Z"] * 6 + ["2024-01-03T00:00:00Z"],
            "event": [{"kind": k} for k in ["login", "a/b", None, "", "login", "..", "login"]],
            "port": pa.array([443, 80, None, 443, 443, 1, 443], pa.int64()),
            "tags": [["x"]] * 7,
        }
    )
    options = ParquetOptions(
        partitioning="custom",
        partition_template="kind={field:event.kind}/port={field:port}/{year}{month}{day}",
    )
    paths = partition_paths(event_times(table, "timestamp", 0), options, table=table)
    assert paths is not None and paths.to_pylist() == [
        "kind=login/port=443/20240102",
        "kind=a%2Fb/port=80/20240102",
        "kind=__HIVE_DEFAULT_PARTITION__/port=__HIVE_DEFAULT_PARTITION__/20240102",
        "kind=__HIVE_DEFAULT_PARTITION__/port=443/20240102",
        "kind=login/port=443/20240102",
        "kind=%2E./port=1/20240102",
        "kind=login/port=443/20240103",
    ]
    # A field the object lacks, or one holding a list, is the null partition for every row.
    for template in ("{field:missing}", "{field:tags}"):
        options = ParquetOptions(partitioning="custom", partition_template=template)
        paths = partition_paths(event_times(table, "timestamp", 0), options, table=table)
        assert paths is not None and set(paths.to_pylist()) == {"__HIVE_DEFAULT_PARTITION__"}
    # Dictionary-encoded and boolean columns read as their values.
    flags = pa.table({"f": [True, False, None], "d": pa.array(["p", "q", "p"]).dictionary_encode()})
    options = ParquetOptions(partitioning="custom", partition_template="{field:d}/{field:f}")
    paths = partition_paths(event_times(flags, "timestamp", 0), options, table=flags)
    assert paths is not None
    assert paths.to_pylist() == ["p/true", "q/false", "p/__HIVE_DEFAULT_PARTITION__"]


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=4 * 10**14),
            st.sampled_from([None, "", "a", "b/c", "..", "_x", "%", "é"]),
            st.sampled_from([None, 1, 2, -7]),
        ),
        min_size=1,
        max_size=200,
    ),
    template=st.sampled_from(
        [
            "k={field:kind}/n={field:n}/h=%H",
            "{field:n}/%Y%m%d/{field:kind}",
            "m=%M/{field:kind}",  # finer than an hour
            "{field:kind}",
        ]
    ),
)
def test_field_partitions_match_formatting_every_row(
    rows: list[tuple[int, str | None, int | None]], template: str
) -> None:
    micros, kinds, numbers = zip(*rows, strict=True)
    times = pa.chunked_array([pa.array(micros, pa.timestamp("us", tz="UTC"))])
    table = pa.table({"kind": pa.array(kinds, pa.string()), "n": pa.array(numbers, pa.int64())})
    options = ParquetOptions(partitioning="custom", partition_template=template)
    paths = partition_paths(times, options, table=table)
    assert paths is not None
    fmt = partition_strftime(template, "", "")
    formatted = pc.strftime(times, format=fmt, locale="C").to_pylist()
    expected = []
    for path, kind, number in zip(formatted, kinds, numbers, strict=True):
        row = {"kind": kind, "n": None if number is None else str(number)}
        values = [escape_partition_value(row[f]) for f in partition_fields(template)]
        expected.append(fill_partition_fields(path, values))
    assert paths.to_pylist() == expected


@pytest.mark.parametrize(
    ("data", "rows", "rejected"),
    [
        (b"\xbb", 0, 1),
        (b'\xbb\n{"a": 1}', 1, 1),
        (b'\xef\xbb\n{"a": 1}\n', 1, 1),
        (b"\xef\xbb\xbf", 0, 1),
        (b'\xef\xbb\xbf{"a": 1}\n{"a": 2}', 2, 0),
    ],
)
def test_stray_byte_order_mark_bytes_are_dead_lettered_not_dropped(
    data: bytes, rows: int, rejected: int
) -> None:
    decoded = decode_ndjson(data)
    assert (decoded.table.num_rows, len(decoded.rejected)) == (rows, rejected)


INTEGERS = st.integers(min_value=-(10**38) + 1, max_value=10**38 - 1)
# Text that pyarrow's JSON reader would take for a time: it must come back as written.
TIME_TEXT = st.builds(
    lambda moment, fmt: moment.strftime(fmt),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1)),
    st.sampled_from(
        [
            "%Y-%m-%d",
            "%Y-%m-%dT%H:%M:%SZ",
            "%Y-%m-%d %H:%M:%S",
            "%Y-%m-%dT%H:%M:%S+02:00",
            "%Y-%m-%dT%H:%M",
            "%Y-%m-%dT%H:%M:%S.%fZ",
        ]
    ),
)
SCALARS = st.one_of(INTEGERS, st.none(), st.text(max_size=5), TIME_TEXT)
VALUES = st.one_of(
    SCALARS,
    st.lists(st.one_of(INTEGERS, TIME_TEXT), max_size=3),
    st.dictionaries(
        st.sampled_from(["x", "y"]),
        st.one_of(SCALARS, st.dictionaries(st.sampled_from(["x", "y"]), SCALARS, max_size=2)),
        max_size=2,
    ),
)


def _same(value: object, read: object) -> bool:
    """``read`` is ``value`` as written, or (a field whose types conflict) the same as text; an
    object's absent keys read as null (the struct's fields of other records)."""
    if isinstance(value, dict | list) and isinstance(read, str):
        read = loads_exact(read)  # nested values as JSON text
    if isinstance(value, dict) and isinstance(read, dict):
        extra = read.keys() - value.keys()
        return all(_same(v, read.get(k)) for k, v in value.items()) and not any(
            read[k] is not None for k in extra
        )
    if isinstance(value, list) and isinstance(read, list):
        return len(value) == len(read) and all(map(_same, value, read))
    return read == value or (isinstance(read, str) and read == stringify(value))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.dictionaries(st.sampled_from(["a", "b", "c"]), VALUES, min_size=1),
        min_size=1,
        max_size=20,
    ),
    st.integers(min_value=0, max_value=20),
)
def test_ndjson_values_read_back_exactly(rows: list[dict[str, object]], cut: int) -> None:
    # Two objects of one source: the second read with what the first taught, then packed together.
    learned, tables = JsonFields(), []
    for part in (rows[:cut], rows[cut:]):
        if part:
            decoded = decode_ndjson("\n".join(json.dumps(r) for r in part).encode(), learned)
            assert not decoded.rejected
            for original, read in zip(part, decoded.table.to_pylist(), strict=True):
                assert all(_same(value, read[name]) for name, value in original.items())
            tables.append(decoded.table)
    for original, read in zip(rows, unify(tables).to_pylist(), strict=True):
        assert all(_same(value, read[name]) for name, value in original.items()), original


def test_text_that_looks_like_a_time_stays_as_written_from_object_to_object() -> None:
    # pyarrow reads such text as a naive timestamp, moved to UTC without its offset, and only
    # when it has no fractions of a second: the same field was a timestamp in one object and text
    # in the next, and packing both rewrote the first object's text.
    first = decode_ndjson(b'{"ts":"2026-01-01T10:00:00+02:00","day":"2026-03-04"}\n').table
    second = decode_ndjson(b'{"ts":"2026-01-01T10:00:00.5Z","day":"n/a"}\n').table
    assert first.schema == second.schema == pa.schema([("ts", pa.string()), ("day", pa.string())])
    assert unify([first, second]).to_pylist() == [
        {"ts": "2026-01-01T10:00:00+02:00", "day": "2026-03-04"},
        {"ts": "2026-01-01T10:00:00.5Z", "day": "n/a"},
    ]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
            st.sampled_from(["Z", "+02:00", "-03:30", "+0545", "+00:00"]),
            st.sampled_from(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%dT%H:%M"]),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_times_with_offsets_read_the_same_by_arrow_as_by_duckdb(
    values: list[tuple[datetime, str, str]],
) -> None:
    # Text with offsets takes Arrow's parser; one value without forces DuckDB's for them all.
    texts = [moment.strftime(fmt) + zone for moment, zone, fmt in values]
    fast = parse_iso(pa.chunked_array([texts], pa.string()), "Asia/Tokyo")
    both = parse_iso(pa.chunked_array([[*texts, "2026-01-01 09:00"]], pa.string()), "Asia/Tokyo")
    assert fast.to_pylist() == both.to_pylist()[:-1]
    assert both.to_pylist()[-1].isoformat() == "2026-01-01T00:00:00+00:00"


def test_date_parse_reads_decoded_times_in_the_dataset_timezone() -> None:
    # A time without an offset is in date_parse's `timezone`; pyarrow had read it as a naive
    # timestamp, which date_parse took for UTC: five hours off in New York.
    body = b'{"t":"2026-01-01 10:00:00"}\n{"t":"2026-07-01T10:00:00-04:00"}\n'
    step = {"type": "date_parse", "config": {"source_field": "t", "timezone": "America/New_York"}}
    result = compile_chain([step]).run(decode_ndjson(body).table)
    assert [t.isoformat() for t in result.table.column("t").to_pylist()] == [
        "2026-01-01T15:00:00+00:00",
        "2026-07-01T14:00:00+00:00",
    ]


def test_ndjson_fields_learned_from_earlier_objects_are_read_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads = []
    real = tables_module.pajson.read_json
    monkeypatch.setattr(
        tables_module.pajson, "read_json", lambda *a, **k: reads.append(1) or real(*a, **k)
    )
    learned = JsonFields()
    body = b'{"ts":"2026-01-01T10:00:00Z","s":{"t":"2026-01-01","n":1},"id":18446744073709551615}\n'
    for expected_reads in (2, 1, 1):  # the first object is read again with the types to keep
        reads.clear()
        table = decode_ndjson(body, learned).table
        assert len(reads) == expected_reads
        assert table.schema.field("ts").type == pa.string()
        assert table.column("s").type == pa.struct([("t", pa.string()), ("n", pa.int64())])
        assert table.column("id").to_pylist() == [18446744073709551615]
    # Invalid JSON is no fault of the types given: the object is read once, then its good
    # lines once more, with the same types.
    reads.clear()
    decoded = decode_ndjson(body + b'{"ts":"x",}\n', learned)
    assert (decoded.table.num_rows, len(decoded.rejected), len(reads)) == (1, 1, 2)
    assert decoded.table.schema.field("ts").type == pa.string()
    assert decoded.table.column("id").to_pylist() == [18446744073709551615]
    assert learned.schema is not None
    # An object whose fields are not what earlier ones were is still read as written.
    reads.clear()
    table = decode_ndjson(b'{"ts":5,"s":"text","id":1.5}\n', learned).table
    assert table.to_pylist() == [{"ts": 5, "s": "text", "id": 1.5}]
    assert len(reads) == 2
    assert learned.schema is None


NULL_AT_BLOCK_START = b'{"a":1}\n' * 131072 + b"null\n" + b'{"a":2}\n'  # null at 1 MiB


@pytest.mark.parametrize(
    "body",
    [b'null\n{"a":1}\n', b' null\n{"a":1}\n', b'{"a":1}\r\n\tnull\r\n', NULL_AT_BLOCK_START],
    ids=["first", "indented", "crlf-tab", "block-start"],
)
def test_null_lines_are_dead_lettered_without_crashing_the_process(body: bytes) -> None:
    # pyarrow's reader died with SIGSEGV on these (a line of null starting the data or a block),
    # and read a null line elsewhere as an empty record. In a child process: a crash fails here.
    script = (
        "import sys\n"
        "from bytefreezer.pipelines.decode import decode_ndjson\n"
        "d = decode_ndjson(sys.stdin.buffer.read())\n"
        "print(d.table.num_rows, d.lines, [reason for _, reason in d.rejected])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], input=body, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    rows, lines, reasons = done.stdout.decode().strip().splitlines()[-1].split(" ", 2)
    assert int(rows) + 1 == int(lines)
    assert reasons == "['not a JSON object (NoneType)']"


def test_line_start_check_flags_null_and_whitespace_only() -> None:
    assert may_hold_non_objects(b"null")
    assert may_hold_non_objects(b'{"a":1}\n  {"a":2}\n')
    assert not may_hold_non_objects(b'{"a": null}\n\n{"n": "null"}\r\n{"b":1}\n')
    assert not may_hold_non_objects(b"")


def test_learned_ndjson_fields_are_shared_by_the_worker_threads_instances(
    tmp_path: Path,
) -> None:
    """Each worker thread has its own piper instance; what one learned about a dataset's fields
    serves the others (an instance that had not seen the dataset parsed its object twice),
    but never an instance with other settings."""
    from bytefreezer.control.models import Dataset
    from bytefreezer.pipelines.piper import _ProcessIntakeFn
    from tests.conftest import fast_settings

    stack = fast_settings(tmp_path / "data")
    first, second = _ProcessIntakeFn(stack), _ProcessIntakeFn(stack)
    other = _ProcessIntakeFn(fast_settings(tmp_path / "other"))
    for instance in (first, second, other):
        instance.setup()
    dataset = Dataset(tenant="acme", name="web", destination={"url": "file:///tmp/x"})
    learned = first._learned(dataset)
    assert second._learned(dataset) is learned
    assert other._learned(dataset) is not learned
    assert first._learned(Dataset(**{**dataset.model_dump(), "name": "api"})) is not learned


def test_bad_lines_are_set_aside_and_the_good_ones_read_as_without_them() -> None:
    good = [
        b'{"ts": "2026-01-01T10:00:00Z", "n": %d, "big": 18446744073709551615, "s": {"k": "v"}}' % i
        for i in range(3000)
    ]
    lines = list(good)
    lines[10:10] = [b'{"broken": ']
    lines[2000:2000] = [b"[1, 2]", b"   ", b'"text"']
    decoded = decode_ndjson(b"\n".join(lines) + b"\n")
    alone = decode_ndjson(b"\n".join(good) + b"\n")
    assert decoded.table.schema == alone.table.schema  # the types of the good lines alone
    assert decoded.table.schema.field("ts").type == pa.string()
    assert decoded.table.to_pylist() == alone.table.to_pylist()
    assert [line for line, _ in decoded.rejected] == ['{"broken": ', "[1, 2]", '"text"']
    reasons = [reason for _, reason in decoded.rejected]
    assert reasons[0].startswith("invalid JSON") and reasons[1:] == [
        "not a JSON object (list)",
        "not a JSON object (str)",
    ]
    assert decoded.lines == 3003
    # good lines pyarrow still refuses (a repeated key) are read one by one, as before
    refused = decode_ndjson(b'{"a": 1, "a": 2}\n{"a": 3}\nnope\n')
    assert refused.table.to_pylist() == [{"a": 2}, {"a": 3}] and len(refused.rejected) == 1
