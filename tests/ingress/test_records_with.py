"""``records_with``, which gives the lines of many of the proxy's inputs (and the receiver's
Firehose endpoint) the fields of where they came from: lines of every shape, each as a line
alone would be."""

from __future__ import annotations

import gzip
from unittest import mock

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from bytefreezer.ingress.cloudwatch import payload_records, payloads_records
from bytefreezer.ingress.proxy.records import (
    lines_records_with,
    records_with,
    split_lines,
    with_fields,
)
from bytefreezer.lines import is_blank

_LINES = [
    '{"a": 1}',
    '{"a":1,"b":{"c":[1,2]}}',
    '{"file": "own", "x": 2}',  # a key of meta's its own
    '  {"a": 2}  ',
    "{}",
    "{ }",
    '{ "a": 3}',
    "plain text",
    "{not json}",
    '{"s": "é ☃ \\u00e9"}',
    "",
    '["a"]',
    '{"a": 1}\n{"b": 2}',  # a caller's line holding a newline stays one record
]
_METAS = [
    {"file": "/var/log/app.log"},
    {"shard": "shardId-0", "sequence": 7},
    {"topic": "t", "headers": {"k": "v"}},
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_LINES), max_size=10), st.sampled_from(_METAS))
def test_lines_become_the_records_they_make_alone(lines: list[str], meta: dict) -> None:
    with mock.patch(
        "bytefreezer.ingress.proxy.records.now_rfc3339", return_value="2026-01-01T00:00:00Z"
    ):
        records = records_with(lines, meta)
        assert records == [with_fields(line, meta) for line in lines]
    for line, record in zip(lines, records, strict=True):
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict):  # meta's fields first, those the line has of its own kept
            assert orjson.loads(record) == {**meta, **value}
            assert list(orjson.loads(record)) == [k for k in meta if k not in value] + list(value)
        elif not line.strip().startswith("{"):  # anything else kept whole, beside meta's fields
            wrapped = orjson.loads(record)
            assert wrapped["raw"] == line and {k: wrapped[k] for k in meta} == meta


_PAYLOADS = [
    b'{"a": 1}\n',
    b'{"a": 2}',
    b'{"a": 3}\r\n{"b": 4}\r\n',
    b"\n \n",
    b"text \xff not UTF-8",
    b'{"firehose_request_id": "own"}\n',
    b"",
    gzip.compress(b'{"g": 1}\n{"g": 2}\n'),
    orjson.dumps(
        {
            "messageType": "DATA_MESSAGE",
            "logGroup": "/app",
            "logStream": "s1",
            "owner": "123",
            "logEvents": [{"id": "1", "timestamp": 1767225600000, "message": "hello"}],
        }
    ),
]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(_PAYLOADS), max_size=8))
def test_many_payloads_make_what_each_makes_alone(payloads: list[bytes]) -> None:
    """A Firehose request's or a Kinesis read's payloads of lines are split together: the
    records are those each payload makes alone, in order."""
    meta = {"firehose_request_id": "r1"}
    with mock.patch(
        "bytefreezer.ingress.proxy.records.now_rfc3339", return_value="2026-01-01T00:00:00Z"
    ):
        alone = [record for payload in payloads for record in payload_records(payload, meta)]
        assert payloads_records(payloads, meta) == alone


_FILE_LINES = [
    b'{"a":1}',
    b'{"a":1,"b":{"c":[1,2]}}',
    b'{"s":"\xc3\xa9 \xe2\x98\x83"}',  # UTF-8 beyond ASCII
    b'{"s":"\xff\xfe"}',  # not UTF-8: replaced, as decoding a line replaces it
    b'{"file":"own","x":2}',  # a key of meta's its own
    b'{"x":"the word \\"file\\" in a value"}',
    b'{"a":1}\r',  # a CRLF file
    b'  {"a":2}',
    b'{"a":3}  ',
    b"{}",
    b"",
    b"   ",
    b"\t\x0b",
    b"plain text",
    b'["a"]',
    b"{not json}",
]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(_FILE_LINES), min_size=1, max_size=12)
    | st.lists(st.sampled_from(_FILE_LINES[:3]), min_size=1, max_size=12),  # the usual read
    st.sampled_from(_METAS),
)
def test_a_files_lines_become_the_records_each_makes(lines: list[bytes], meta: dict) -> None:
    """``lines_records_with`` of a file's lines (as read, each ending in a newline) is
    ``records_with`` of them as text, blank ones left out, joined by newlines: its spliced
    path for the usual read included."""
    data = b"\n".join(lines) + b"\n"
    with mock.patch(
        "bytefreezer.ingress.proxy.records.now_rfc3339", return_value="2026-01-01T00:00:00Z"
    ):
        text = [line for line in split_lines(data.decode("utf-8", "replace")) if not is_blank(line)]
        records = records_with(text, meta)
        block = lines_records_with(data, meta)
        assert (block.data, block.count, len(block)) == (b"\n".join(records), *[len(records)] * 2)


def test_the_usual_read_is_spliced_without_a_line_decoded() -> None:
    """Compact object lines in valid UTF-8 take the spliced path (no line goes through
    ``records_with``); a line with meta's key of its own, or not UTF-8, takes the general one."""
    meta = {"file": "/var/log/app.log"}
    usual = b'{"a":1}\n{"s":"\xc3\xa9"}\n'
    with mock.patch("bytefreezer.ingress.proxy.records.records_with") as general:
        block = lines_records_with(usual, meta)
    general.assert_not_called()
    assert block.count == 2
    assert [orjson.loads(record) for record in block.data.split(b"\n")] == [
        {"file": "/var/log/app.log", "a": 1},
        {"file": "/var/log/app.log", "s": "é"},
    ]
    for other in (b'{"file":"own"}\n', b'{"a":"\xff"}\n', b'{"a":1}\r\n', b"\n"):
        with mock.patch(
            "bytefreezer.ingress.proxy.records.records_with", return_value=[b"{}"]
        ) as general:
            lines_records_with(usual + other, meta)
        general.assert_called_once()
