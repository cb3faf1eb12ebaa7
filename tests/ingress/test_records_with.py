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
from bytefreezer.ingress.proxy.records import records_with, with_fields

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
