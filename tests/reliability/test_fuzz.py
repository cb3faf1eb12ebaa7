"""Property-based fuzzing of every decoder and of the receiver's body handling."""

from __future__ import annotations

import base64
import functools
import gzip
import json
import zlib

import orjson
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bytefreezer.ingress import datadog, elastic, firehose, hec, loki, otlp, prometheus
from bytefreezer.ingress.bodies import BodyError, count_lines, prepare
from bytefreezer.ingress.headers import proxy_metadata
from bytefreezer.pipelines.decode import FORMATS, decode_object
from bytefreezer.pipelines.parquet import parquet_bytes

LINE = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.dictionaries(
        st.text(max_size=8),
        st.one_of(st.integers(), st.text(max_size=20), st.none(), st.floats(allow_nan=False)),
        max_size=5,
    ).map(lambda d: __import__("json").dumps(d).encode()),
)
BODY = st.lists(LINE, max_size=30).map(lambda lines: b"\n".join(lines))
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(body=BODY, fmt=st.sampled_from(FORMATS))
def test_decoders_never_crash_and_account_for_lines(body: bytes, fmt: str) -> None:
    decoded = decode_object(gzip.compress(body), fmt)
    for line, reason in decoded.rejected:
        assert isinstance(line, str) and reason
    parquet_bytes(decoded.table, "zstd")  # whatever a decoder returns can be staged
    lines = [line for line in body.split(b"\n") if line.strip()]
    if fmt in ("ndjson", "raw", "gelf", "syslog", "logfmt", "kv", "cef", "apache", "nginx"):
        # one record or one dead letter per line: nothing is dropped silently
        assert decoded.table.num_rows + len(decoded.rejected) == len(lines)
        assert count_lines(body) == len(lines)  # what ingest counts, piper reads


@FUZZ
@given(
    raw=st.binary(max_size=2000),
    encoding=st.sampled_from(["", "identity", "gzip", "deflate", "zstd", "br", "GZIP"]),
    fmt=st.sampled_from(FORMATS),
)
def test_receiver_bodies_either_pass_or_get_a_client_error(
    raw: bytes, encoding: str, fmt: str
) -> None:
    try:
        body = prepare(raw, encoding, fmt, 1_000_000)
    except BodyError as exc:
        assert 400 <= exc.status < 500 and exc.message
    else:
        assert gzip.decompress(body.member).strip()


@FUZZ
@given(
    payload=BODY,
    encoding=st.sampled_from(["gzip", "deflate", "zstd"]),
    cut=st.integers(min_value=1, max_value=40),
)
def test_truncated_compressed_bodies_are_refused(payload: bytes, encoding: str, cut: int) -> None:
    payload = payload.strip() + b"\n{}"
    packed = {
        "gzip": gzip.compress,
        "deflate": zlib.compress,
        "zstd": zstandard.ZstdCompressor().compress,
    }[encoding](payload)
    try:
        prepare(packed[: max(1, len(packed) - cut)], encoding, "raw", 1_000_000)
    except BodyError as exc:
        assert exc.status == 400
    else:  # a cut inside the trailer can still leave a complete stream for some codecs
        assert encoding != "gzip"


@FUZZ
@given(
    headers=st.dictionaries(
        st.sampled_from(
            ["x-proxy-filename", "x-proxy-line-count", "x-proxy-batch-id", "x-proxy-data-hint"]
        ),
        st.text(max_size=80),
        max_size=4,
    )
)
def test_proxy_headers_are_kept_or_refused_never_crash(headers: dict[str, str]) -> None:
    try:
        metadata = proxy_metadata(headers, "acme", "web")
    except BodyError as exc:
        assert exc.status == 400
    else:
        assert all(
            ".." not in v and "/" not in v for k, v in metadata.items() if k == "proxy-filename"
        )


# JSON values with the keys the compatible APIs look for, so that bodies reach past their
# first checks; and bodies of them as each API's clients frame them (a value, a value a line,
# values one after another), or any bytes.
_KEYS = st.one_of(
    st.text(max_size=6),
    st.sampled_from(
        ["event", "time", "fields", "host", "index", "source", "sourcetype", "timestamp",
         "records", "data", "requestId", "streams", "stream", "values", "message", "_id",
         "_index", "create", "delete", "doc", "logEvents", "messageType", "ddsource"]
    ),
)  # fmt: skip
_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=10),
    st.sampled_from(["", "2026-01-01T00:00:00Z", "1700000000", "{}"]),
)
_VALUE = st.recursive(
    _SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=5)),
    max_leaves=20,
)


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


_HEC_EVENT = st.fixed_dictionaries(
    {"event": _VALUE},
    optional={name: _VALUE for name in ("time", "fields", "host", "source", "index")},
)
_LOKI_PUSH = st.fixed_dictionaries(
    {
        "streams": st.lists(
            st.fixed_dictionaries(
                {"stream": _VALUE, "values": st.lists(st.lists(_VALUE, max_size=3), max_size=3)}
            ),
            max_size=3,
        )
    }
)
_BULK_LINES = st.lists(
    st.one_of(st.dictionaries(st.sampled_from(["index", "create", "delete", "update"]), _VALUE,
                              min_size=1, max_size=1), _VALUE),
    max_size=6,
)  # fmt: skip
API_BODY = st.one_of(
    _VALUE.map(_json),
    st.lists(_HEC_EVENT, max_size=4).map(lambda events: b"".join(map(_json, events))),
    _LOKI_PUSH.map(_json),
    _BULK_LINES.map(lambda lines: b"\n".join(map(_json, lines)) + b"\n"),
    st.lists(_VALUE, max_size=5).map(lambda values: b"\n".join(map(_json, values))),
    st.lists(_VALUE, max_size=5).map(lambda values: b"".join(map(_json, values))),
    st.lists(st.binary(max_size=30), max_size=4).map(
        lambda datas: _json(
            {"requestId": "r", "records": [{"data": base64.b64encode(d).decode()} for d in datas]}
        )
    ),
    st.binary(max_size=200),
)
_LIMIT = 1_000_000
_DECODERS = {
    "bulk": lambda body: elastic.parse_bulk(body, None),
    "loki json": lambda body: loki.push_records(body, "", "application/json", _LIMIT),
    "loki protobuf": lambda body: loki.push_records(body, "", "application/x-protobuf", _LIMIT),
    "datadog": lambda body: datadog.log_records(body, "", "application/json", _LIMIT, {}),
    "datadog tagged": lambda body: datadog.log_records(
        body, "", "application/json", _LIMIT, {"ddsource": "app"}
    ),
    "firehose": lambda body: firehose.request_records(body, "", _LIMIT, {}),
    "remote write": lambda body: prometheus.write_records(
        body, "snappy", "application/x-protobuf", _LIMIT
    ),
    "hec event": lambda body: hec.event_records(body)[0],
    "hec raw": lambda body: hec.raw_records(body, {"host": "h", "time": "1700000000"}),
    **{
        f"otlp {signal.path} {kind}": functools.partial(
            lambda body, signal, kind: otlp.prepare_otlp(body, "", kind, _LIMIT, signal),
            signal=signal,
            kind=kind,
        )
        for signal in otlp.SIGNALS.values()
        for kind in ("application/json", "application/x-protobuf")
    },
}


@settings(FUZZ, max_examples=400)  # 16 decoders
@given(body=API_BODY, api=st.sampled_from(sorted(_DECODERS)))
def test_compatible_apis_answer_records_or_a_client_error(body: bytes, api: str) -> None:
    """Whatever a client of a compatible API sends gets records (each a JSON object) or a 4xx
    with its reason, never an exception the server would answer with a 500."""
    try:
        decoded = _DECODERS[api](body)
    except BodyError as exc:
        assert 400 <= exc.status < 500 and exc.message
        return
    if isinstance(decoded, elastic.Bulk):  # an item's document, or its error and reason
        records = [
            source
            for item, (action, source) in enumerate(
                zip(decoded.actions, decoded.sources, strict=True)
            )
            if item not in decoded.errors and action in ("index", "create")
        ]
        assert all(reason for _, _, reason in decoded.errors.values())
    elif isinstance(decoded, list):
        records = decoded
    else:  # an OTLP body: stored as protobuf, its records counted
        assert decoded.records >= 0
        return
    for record in records:
        assert isinstance(orjson.loads(record), dict), record
