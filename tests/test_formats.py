"""Piper's input formats, table-driven: raw bytes in, rows and rejected lines out."""

from __future__ import annotations

import datetime as dt
import gzip
import random
from typing import Any

import pytest

from bytefreezer.ingress.proxy.records import parse_syslog
from bytefreezer.pipelines.decode import LINE_FORMATS, choose_format, decode_object, gzip_members
from bytefreezer.pipelines.schema import unify
from bytefreezer.transforms import compile_chain

CASES: list[tuple[str, bytes, list[dict[str, Any]], list[str]]] = [
    ("ndjson", b'{"a": 1}\n{bad\n{"a": 2}\n', [{"a": 1}, {"a": 2}], ["invalid JSON"]),
    ("json", b'[{"a": 1}, {"a": 2}] {"a": 3} [4]', [{"a": 1}, {"a": 2}, {"a": 3}], ["not a JSON object (int)"]),
    ("json", b'{"a": 1} {broken', [{"a": 1}], ["invalid JSON"]),
    ("csv", b"a,b,c\n1,x,true\n2,y\n3,z,false\n", [{"a": 1, "b": "x", "c": True}, {"a": 3, "b": "z", "c": False}], ["expected 3 columns, found 2"]),
    ("tsv", b"a\tb\n1\tq\n", [{"a": 1, "b": "q"}], []),
    ("raw", b"hello\n\nworld\r\n\xff\xfe bad\n", [{"message": "hello"}, {"message": "world"}], ["invalid UTF-8"]),
    (
        "syslog",
        b"<13>Feb  5 17:32:18 10.0.0.99 myapp[7]: hello\nnot syslog\n",
        [{"message": "hello", "rfc": "rfc3164", "priority": 13, "facility": 1, "severity": 5, "version": None,
          "timestamp": "Feb  5 17:32:18", "hostname": "10.0.0.99", "app_name": "myapp", "proc_id": "7",
          "msg_id": None, "structured_data": None}],
        ["not an RFC 3164/5424 line"],
    ),
    (
        "nginx",
        b'1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 404 - "-" "curl/8"\nbad line\n',
        [{"message": '1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.1" 404 - "-" "curl/8"',
          "clientip": "1.2.3.4", "ident": "-", "auth": "-",
          "timestamp": dt.datetime(2000, 10, 10, 20, 55, 36, tzinfo=dt.UTC), "verb": "GET",
          "request": "/", "httpversion": "1.1", "response": 404, "bytes": None, "referrer": "-", "agent": "curl/8"}],
        ["no pattern matched"],
    ),
    ("logfmt", b'level=info msg="hello world" n=3\n', [{"level": "info", "msg": "hello world", "n": "3"}], []),
    ("logfmt", b'msg="say \\"hi\\"" n=3\n', [{"msg": 'say "hi"', "n": "3"}], []),
    (
        "cef",
        b"CEF:0|Sec|tm|1.0|100|worm \\| stopped|10|src=10.0.0.1 msg=a threat\nnope\n",
        [{"cef_version": 0, "device_vendor": "Sec", "device_product": "tm", "device_version": "1.0",
          "signature_id": "100", "name": "worm | stopped", "severity": "10", "src": "10.0.0.1", "msg": "a threat"}],
        ["not a CEF line"],
    ),
    (  # CEF's escapes undone; other backslashes kept as written (they were dropped)
        "cef",
        b"CEF:0|V|P|1|7|n|3|msg=a\\=b c\\\\d filePath=C:\\Windows\\temp cs1=l1\\nl2\n",
        [{"cef_version": 0, "device_vendor": "V", "device_product": "P", "device_version": "1",
          "signature_id": "7", "name": "n", "severity": "3", "msg": "a=b c\\d",
          "filePath": "C:\\Windows\\temp", "cs1": "l1\nl2"}],
        [],
    ),
    ("gelf", b'{"version":"1.1","host":"h","short_message":"m","_user_id":9}\n', [{"version": "1.1", "host": "h", "short_message": "m", "user_id": 9}], []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("fmt", "data", "rows", "reasons"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_format(fmt: str, data: bytes, rows: list[dict[str, Any]], reasons: list[str]) -> None:
    decoded = decode_object(gzip.compress(data), fmt)
    got = decoded.table.to_pylist()
    for row in got:  # compare timestamps by instant
        for key, value in row.items():
            if isinstance(value, dt.datetime):
                row[key] = value.astimezone(dt.UTC)
    assert got == rows
    assert len(decoded.rejected) == len(reasons)
    for (_, reason), fragment in zip(decoded.rejected, reasons, strict=True):
        assert fragment in reason


def test_each_gzip_member_is_one_body() -> None:
    data = gzip.compress(b"a,b\n1,2\n") + gzip.compress(b"a,c\n3,4\n")
    assert decode_object(data, "csv").table.to_pylist() == [
        {"a": 1, "b": 2, "c": None},
        {"a": 3, "b": None, "c": 4},
    ]


LINE_CASES = [(i, c[0], c[1]) for i, c in enumerate(CASES) if c[0] in LINE_FORMATS]


@pytest.mark.parametrize(
    ("fmt", "data"), [c[1:] for c in LINE_CASES], ids=[f"{c[1]}-{c[0]}" for c in LINE_CASES]
)
def test_a_group_committed_object_of_line_bodies_reads_as_one_body(fmt: str, data: bytes) -> None:
    """Bodies of lines (a line each, every other one without its newline, an empty and a blank
    one among them), committed as the members of one object, give the rows, dead letters and
    line count of one body holding all the lines."""
    bodies = [b"", b" \n"]
    for i, line in enumerate(data.split(b"\n")):
        bodies.append(line if i % 2 else line + b"\n")
    one = decode_object(gzip.compress(data), fmt)
    joined = decode_object(b"".join(gzip.compress(body) for body in bodies), fmt)
    assert joined.table.schema == one.table.schema
    assert joined.table.to_pylist() == one.table.to_pylist()
    assert joined.rejected == one.rejected
    assert joined.lines == one.lines


def test_ndjson_bodies_read_together_as_one_body_would_read_them() -> None:
    # a list of numbers and a list of text: one body reads the column as JSON text, as the
    # bodies together do (read one by one, they were unified into a list of text)
    bodies = [b'{"l": [1, 2]}\n', b'{"l": ["a"]}']
    one = decode_object(gzip.compress(b"\n".join(bodies)), "ndjson")
    joined = decode_object(b"".join(gzip.compress(b) for b in bodies), "ndjson")
    assert joined.table.to_pylist() == one.table.to_pylist() == [{"l": "[1,2]"}, {"l": '["a"]'}]
    # each body's byte-order mark goes, as it goes at the start of a body read alone
    bom = b"\xef\xbb\xbf"
    marked = [b'{"a": 1}\n', bom + b'{"a": 2}\n', bom + b'{"a": 3}']
    decoded = decode_object(b"".join(gzip.compress(b) for b in marked), "ndjson")
    assert decoded.table.to_pylist() == [{"a": 1}, {"a": 2}, {"a": 3}] and not decoded.rejected
    # a body starting with a stray byte of a mark is read alone: its line is dead-lettered
    stray = [b'{"a": 1}\n', b'\xef{"a": 2}\n']
    decoded = decode_object(b"".join(gzip.compress(b) for b in stray), "ndjson")
    assert decoded.table.to_pylist() == [{"a": 1}] and len(decoded.rejected) == 1


def test_json_bodies_committed_together_read_as_one_body_of_those_documents() -> None:
    bodies = [
        b'[{"a": 1, "l": [1, 2]}, {"a": 2}]',
        b'{"a": 3, "l": ["x"]}',
        b"[4]",
        b'{"a": 5} {broken',
        b"\xff\xfe",
        b"",
    ]
    one = decode_object(gzip.compress(b" ".join(bodies[:3])), "json")
    joined = decode_object(b"".join(gzip.compress(b) for b in bodies), "json")
    assert joined.table.schema == one.table.schema
    assert joined.table.to_pylist()[:3] == one.table.to_pylist()
    assert [row["a"] for row in joined.table.to_pylist()] == [1, 2, 3, 5]
    reasons = [reason for _, reason in joined.rejected]
    assert len(reasons) == 3 and "not a JSON object (int)" in reasons[0]
    assert "invalid JSON" in reasons[1] and "invalid UTF-8" in reasons[2]
    assert joined.lines == 7


def test_csv_bodies_under_one_header_read_as_one_body() -> None:
    bodies = [b"a,b\n1,x\n2,y", b"a,b\n3,z\n", b"a,b\n", b"a,b\n4,+7\n"]
    one = decode_object(gzip.compress(b"a,b\n1,x\n2,y\n3,z\n4,+7\n"), "csv")
    joined = decode_object(b"".join(gzip.compress(b) for b in bodies), "csv")
    assert joined.table.schema == one.table.schema
    assert joined.table.to_pylist() == one.table.to_pylist()
    assert [row["a"] for row in joined.table.to_pylist()] == [1, 2, 3, 4]
    assert joined.lines == one.lines == 4 and not joined.rejected
    crlf = [b"a\tb\r\n1\tx\r\n", b"a\tb\r\n2\ty\r\n"]
    tsv = decode_object(b"".join(gzip.compress(b) for b in crlf), "tsv")
    assert tsv.table.to_pylist() == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]


def test_a_csv_body_that_cannot_be_read_with_others_is_read_alone() -> None:
    # left inside a quoted field: read with the next body, it would swallow its rows
    open_quote = [b'a,b\n1,"x\n', b"a,b\n2,y\n"]
    decoded = decode_object(b"".join(gzip.compress(b) for b in open_quote), "csv")
    assert {"a": 2, "b": "y"} in decoded.table.to_pylist()
    # bytes that make the bodies unreadable together: each body alone, as if never joined
    bad = [b"a,b\n1,x\n", b"a,b\n2,\xff\xfe\n", b"a,b\n3,z\n"]
    together = decode_object(b"".join(gzip.compress(b) for b in bad), "csv")
    alone = [decode_object(gzip.compress(b), "csv") for b in bad]
    assert together.table.to_pylist() == unify([d.table for d in alone]).to_pylist()
    assert together.rejected == [r for d in alone for r in d.rejected]
    assert together.table.to_pylist()[0] == {"a": 1, "b": "x"}


def test_gzip_members_of_every_size_are_read_back_whole() -> None:
    rng = random.Random(5)
    members = [b"", b"x", rng.randbytes(5 << 20), b"line\n" * 200_000]
    members += [rng.randbytes(rng.randrange(1, 3000)) for _ in range(300)]
    rng.shuffle(members)
    data = b"".join(gzip.compress(m, compresslevel=1) for m in members)
    assert list(gzip_members(data)) == members
    assert list(gzip_members(data + b"\x00" * 64)) == members  # zero padding after the last
    with pytest.raises(ValueError, match="truncated"):
        list(gzip_members(data[:-3]))
    with pytest.raises(ValueError, match="trailing bytes"):
        list(gzip_members(data + b"junk"))


def test_hint_names_the_format_else_the_dataset_decides() -> None:
    assert choose_format("csv", "ndjson") == "csv"
    assert choose_format("auto", "syslog") == "syslog"
    assert choose_format("custom-hint", "json") == "json"


BIG = 18446744073709551617  # 2**64 + 1


def _types_and_rows(fmt: str, body: bytes) -> tuple[list[str], list[dict[str, Any]]]:
    table = decode_object(gzip.compress(body), fmt).table
    return [str(t) for t in table.schema.types], table.to_pylist()


def test_csv_numbers_a_number_would_rewrite_stay_as_written() -> None:
    # pyarrow read 00501 as 501, -0 as 0, and the 2**64 + 1 column as doubles.
    types, rows = _types_and_rows(
        "csv", f"zip,id,z,plain\n00501,{BIG},-0,5\n02134,2,1,NA\n".encode()
    )
    assert types == ["string", "decimal128(38, 0)", "string", "int64"]
    assert rows == [
        {"zip": "00501", "id": BIG, "z": "-0", "plain": 5},
        {"zip": "02134", "id": 2, "z": "1", "plain": None},
    ]
    assert _types_and_rows("tsv", b"code\tx\n0012\tq\n")[1] == [{"code": "0012", "x": "q"}]
    forty = "1" * 40  # beyond what decimal128(38, 0) holds: text, not a rounded double
    assert _types_and_rows("csv", f"v\n1\n{forty}\n".encode()) == (
        ["string"],
        [{"v": "1"}, {"v": forty}],
    )


def test_csv_integers_with_a_plus_sign_stay_as_written_wherever_it_appears() -> None:
    # pyarrow read +7 as the double 7.0 when the sign was in the sampled rows, while a sign
    # further on kept the column as text: one source gave two types.
    assert _types_and_rows("csv", b"a,b\n+7,1\n-3,2\n") == (
        ["string", "int64"],
        [{"a": "+7", "b": 1}, {"a": "-3", "b": 2}],
    )
    many = b"a\n" + b"1\n" * 5000
    assert _types_and_rows("csv", many + b"+7\n")[1][-1] == {"a": "+7"}
    assert _types_and_rows("csv", b"a\n+7\n" + b"1\n" * 5000)[1][0] == {"a": "+7"}
    # Doubles stay doubles: fractions, exponents, a sign before a fraction, whole doubles.
    assert _types_and_rows("csv", b"a,b,c,d\n+1.5,1e3,2.0,+2\n-2.5,2e3,3.0,+4.5\n") == (
        ["double", "double", "double", "double"],
        [{"a": 1.5, "b": 1000.0, "c": 2.0, "d": 2.0}, {"a": -2.5, "b": 2000.0, "c": 3.0, "d": 4.5}],
    )


def test_csv_integer_columns_typed_beyond_the_sample_as_pyarrow_would() -> None:
    many = b"a,b\n" + b"1,x\n" * 5000  # more rows than the sample holds
    assert _types_and_rows("csv", many + b"2.5,y\n")[0] == ["double", "string"]
    assert _types_and_rows("csv", many + b"text,y\n")[0] == ["string", "string"]
    assert _types_and_rows("csv", many + b"007,y\n")[1][-1] == {"a": "007", "b": "y"}
    # a column empty in the sample: found after the read, still kept as written
    empty = b"a,b\n" + b",x\n" * 5000
    assert _types_and_rows("csv", empty + b"007,y\n")[1][-1] == {"a": "007", "b": "y"}
    assert _types_and_rows("csv", empty + b"7,y\n")[0] == ["int64", "string"]
    assert _types_and_rows("csv", empty + f"{BIG},y\n".encode())[1][-1] == {"a": BIG, "b": "y"}


def test_csv_times_stay_as_written_and_empty_cells_are_null() -> None:
    # pyarrow made these UTC without their offset, naive, dates and times of day: text changed
    # when a later object made the column text, and date_parse took naive times for UTC.
    header = b"at,day,local,clock,n\n"
    body = (
        header + b"2026-01-01T10:00:00.25+02:00,2026-03-04,2026-01-01 10:00:00,10:00:00,1\n,,,,2\n"
    )
    types, rows = _types_and_rows("csv", body)
    assert types == ["string", "string", "string", "string", "int64"]
    assert rows == [
        {
            "at": "2026-01-01T10:00:00.25+02:00",
            "day": "2026-03-04",
            "local": "2026-01-01 10:00:00",
            "clock": "10:00:00",
            "n": 1,
        },
        {"at": None, "day": None, "local": None, "clock": None, "n": 2},
    ]
    late = b"a,t\n" + b"x,\n" * 5000 + b"y,2026-01-01T10:00:00Z\n"  # empty in the sample
    assert _types_and_rows("csv", late)[1][-1] == {"a": "y", "t": "2026-01-01T10:00:00Z"}
    step = {"type": "date_parse", "config": {"source_field": "local", "timezone": "Europe/Paris"}}
    table = decode_object(gzip.compress(body), "csv").table
    parsed = compile_chain([step]).run(table).table.column("local").to_pylist()
    assert parsed[0] == dt.datetime(2026, 1, 1, 9, tzinfo=dt.UTC)


def test_csv_header_of_invalid_utf8_dead_letters_every_line() -> None:
    # It decoded into a table whose column name could not be written: staging failed each cycle.
    decoded = decode_object(gzip.compress(b"\x80a,b\n1,2\n3,4\n"), "csv")
    assert decoded.table.num_rows == 0 and decoded.lines == 3
    assert [line for line, _ in decoded.rejected] == ["\ufffda,b", "1,2", "3,4"]
    assert all("header row is not valid UTF-8" in reason for _, reason in decoded.rejected)


def test_unreadable_csv_dead_letters_every_line_not_its_first_bytes() -> None:
    # The header's quote never closes; a line of a form feed is blank, as the receiver counts.
    body = b'"a\n' + b"x" * 600 + b"\n\x0c\n" + b"y" * 600 + b"\n"
    decoded = decode_object(gzip.compress(body), "csv")
    assert decoded.table.num_rows == 0 and decoded.lines == 3
    assert [line for line, _ in decoded.rejected] == ['"a', "x" * 600, "y" * 600]
    assert all(reason.startswith("unreadable CSV") for _, reason in decoded.rejected)


def test_syslog_structured_data_keeps_escaped_brackets_in_quoted_values() -> None:
    # It ended at the first ], and the rest of the structured data went into the message.
    line = (
        '<165>1 2026-01-01T00:00:00Z host app 123 ID47 [ex@32473 src="App\\]x"][b@1 k="v]w"] '
        "the message"
    )
    row = decode_object(gzip.compress(line.encode() + b"\n"), "syslog").table.to_pylist()[0]
    assert row["structured_data"] == '[ex@32473 src="App\\]x"][b@1 k="v]w"]'
    assert row["message"] == "the message"
    proxy = parse_syslog(line, "auto", "10.0.0.1")  # the edge proxy parses with the same layout
    assert (proxy["structured_data"], proxy["message"]) == (row["structured_data"], "the message")
