"""Splunk HEC in: the splunk-handler library (a real HEC client, posting events back to back)
ships log records through the receiver, piper and packer to Parquet; tenant keys routed by
index, HEC's answers and codes, gzip, the raw endpoint, health and indexer acknowledgement."""

from __future__ import annotations

import gzip
import json
import logging
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from splunk_handler import SplunkHandler

from bytefreezer.ingress import hec
from bytefreezer.keys import IntakeKey
from tests.ingress.conftest import Receiver


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Splunk {key}"}


def test_a_hec_logging_client_ships_events_to_parquet(receiver: Receiver) -> None:
    key = receiver.control.create_key("acme", "web").key
    address = urlsplit(receiver.url)
    handler = SplunkHandler(
        host=address.hostname,
        port=address.port,
        token=key,
        index="main",  # a dataset key sends to its dataset whatever the index
        protocol="http",
        verify=False,
        source="checkout.py",
        sourcetype="app",
        hostname="web-1",
        flush_interval=3600,  # queued, sent back to back in one request at shutdown
        retry_count=0,
    )
    log = logging.getLogger("hec.test")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        for i in range(20):
            log.info("payment %d accepted", i)
    finally:
        log.removeHandler(handler)
        handler.shutdown()
    (stored,) = receiver.storage.intake.list("acme/web/")
    assert IntakeKey.parse(stored.key).hint == "ndjson"
    table = receiver.pack("web")
    assert table is not None
    rows = sorted(table.to_pylist(), key=lambda r: int(r["event"].split()[1]))
    assert [r["event"] for r in rows] == [f"payment {i} accepted" for i in range(20)]
    assert {(r["host"], r["source"], r["sourcetype"], r["index"]) for r in rows} == {
        ("web-1", "checkout.py", "app", "main")
    }
    assert all(r["timestamp"].endswith("Z") for r in rows)


def test_events_fields_and_routing_by_index(receiver: Receiver) -> None:
    url = f"{receiver.url}/services/collector/event"
    tenant_key = receiver.key  # a tenant key: the events' index names the dataset
    events = [
        {"time": 1767225600.25, "index": "web", "host": "h1", "event": {"user": "ann", "n": 1}},
        {"time": "1767225601", "index": "web", "event": "plain text", "fields": {"region": "eu"}},
        {"index": "web", "event": {"host": "own"}, "host": "meta"},  # the event's field wins
    ]
    body = "\n".join(json.dumps(e) for e in events).encode()
    response = httpx.post(
        url, content=gzip.compress(body), headers={**auth(tenant_key), "Content-Encoding": "gzip"}
    )
    assert response.status_code == 200 and response.json() == {"text": "Success", "code": 0}
    table = receiver.pack("web")
    assert table is not None
    rows = table.to_pylist()
    first = next(r for r in rows if r.get("user") == "ann")
    assert (first["n"], first["host"], first["timestamp"]) == (
        1,
        "h1",
        "2026-01-01T00:00:00.250000Z",
    )
    second = next(r for r in rows if r.get("event") == "plain text")
    assert (second["region"], second["timestamp"]) == ("eu", "2026-01-01T00:00:01.000000Z")
    assert next(r for r in rows if r.get("host") in ("own", "meta"))["host"] == "own"
    part = receiver.settings.data_dir / "destination" / "acme" / "web" / "year=2026"
    assert part.exists()  # partitioned by the events' time


@pytest.mark.parametrize(
    ("body", "status", "code", "text"),
    [
        (b"", 400, 5, "No data"),
        (b'{"index": "web"}', 400, 12, "Event field is required"),
        (b'{"index": "web", "event": ""}', 400, 13, "Event field cannot be blank"),
        (b'{"index": "web", "event": "x"}{"index": "tab", "event": "y"}', 400, 7, "one a request"),
        (b'{"event": "x"}', 400, 7, "Incorrect index"),
        (b'{"index": "nope", "event": "x"}', 404, 7, "nope"),
        (b'{"index": "../x", "event": "x"}', 400, 7, "Incorrect index"),
        (b'{"index": "web", "event": "x", "time": "soon"}', 400, 6, "not epoch seconds"),
        (b'{"index": "web", "event": "x"} [1]', 400, 6, "event 1 is not an object"),
        (b'{"index": "web", "event": "x"', 400, 6, "Invalid data format"),
        (b'{"index": "web", "event": "x", "fields": [1]}', 400, 15, "indexed fields"),
    ],
)
def test_refusals_are_hec_answers(
    receiver: Receiver, body: bytes, status: int, code: int, text: str
) -> None:
    response = httpx.post(
        f"{receiver.url}/services/collector/event", content=body, headers=auth(receiver.key)
    )
    assert response.status_code == status, response.text
    assert response.json()["code"] == code and text in response.json()["text"]
    assert not receiver.storage.intake.list("acme/")


def test_tokens_raw_lines_health_and_acks(receiver: Receiver) -> None:
    base = f"{receiver.url}/services/collector"
    event = b'{"index": "web", "event": "x"}'
    missing = httpx.post(f"{base}/event", content=event)
    assert (missing.status_code, missing.json()["code"]) == (401, 2)
    wrong = httpx.post(f"{base}/event", content=event, headers=auth("bfk_000000000000_nope"))
    assert (wrong.status_code, wrong.json()["code"]) == (403, 4)
    admin = receiver.control.create_key(None, role="admin").key
    refused = httpx.post(f"{base}/event", content=event, headers=auth(admin))
    assert refused.status_code == 403 and "admin key" in refused.json()["text"]
    other = receiver.control.create_key("other").key  # another tenant's key: its own datasets
    assert httpx.post(f"{base}/event", content=event, headers=auth(other)).status_code == 200

    health = httpx.get(f"{base}/health")
    assert health.json() == {"text": "HEC is healthy", "code": 17}

    raw = httpx.post(
        f"{base}/raw?index=text&host=h9&sourcetype=syslog",
        content=b"first line\r\nsecond line\n\n",
        headers=auth(receiver.key),
    )
    assert raw.status_code == 200
    table = receiver.pack("text")
    assert table is not None
    assert sorted(table.column("event").to_pylist()) == ["first line", "second line"]
    assert set(table.column("host").to_pylist()) == {"h9"}

    channel = {"X-Splunk-Request-Channel": "0f1e2d3c-aaaa-bbbb-cccc-000000000001"}
    headers = {**auth(receiver.key), **channel}
    ids = [
        httpx.post(f"{base}/event", content=event, headers=headers).json()["ackId"]
        for _ in range(2)
    ]
    assert ids == [0, 1]
    # an id is handed out only with a durable success: any replica acknowledges it
    acks = httpx.post(f"{base}/ack", json={"acks": [0, 1]}, headers=headers)
    assert acks.json() == {"acks": {"0": True, "1": True}}
    bad = httpx.post(f"{base}/ack", json={"acks": "all"}, headers=headers)
    assert (bad.status_code, bad.json()["code"]) == (400, 6)
    no_channel = httpx.post(f"{base}/ack", json={"acks": [0]}, headers=auth(receiver.key))
    assert (no_channel.status_code, no_channel.json()["code"]) == (400, 10)


@settings(max_examples=500, deadline=None)
@given(st.floats(min_value=0, max_value=253_402_300_799.9, allow_nan=False))
def test_an_events_time_is_the_moment_datetime_makes_of_it(seconds: float) -> None:
    moment = datetime.fromtimestamp(seconds, UTC)
    expected = moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
    assert hec._time(seconds, 0) == expected
    assert hec._time(str(seconds), 0) == expected


_EVENTS = [
    b'{"event": "a"}',
    b'{"event": {"msg": "}{ inside"}, "time": 1767225600.25}',
    b'{"event": "b", "fields": {"k": "v"}}',
    b'{"event": "tail }"}',
    b'{"event": "{head"}',
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(_EVENTS), min_size=1, max_size=8),
    st.sampled_from([b"", b"\n", b" ", b"\r\n"]),
)
def test_events_one_after_another_are_each_read(events: list[bytes], between: bytes) -> None:
    """However events follow each other, the records are those of each event alone (as JSON:
    a body read whole keeps its text as sent, one read value by value is written anew)."""
    records, _ = hec.event_records(between.join(events))
    alone = [hec.event_records(event)[0][0] for event in events]
    assert [list(json.loads(r).items()) for r in records] == [
        list(json.loads(r).items()) for r in alone
    ]


_KEYS = st.sampled_from(["msg", "user", "host", "source", "timestamp", "event", "n", "é"])
_META_VALUES = (
    st.text(max_size=4)
    | st.lists(st.integers(0, 9), max_size=2)
    | st.sampled_from([1, 1.0, True, "1"])
)
_BODIES = (
    st.dictionaries(
        _KEYS, st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5), min_size=1, max_size=4
    )
    | st.text(min_size=1, max_size=5)
    | st.integers(-(2**63), 2**63 - 1)
)
_HEC_EVENTS = st.fixed_dictionaries(
    {"event": _BODIES},
    optional={
        "fields": st.dictionaries(_KEYS, st.text(max_size=3), max_size=2) | st.none(),
        "time": st.floats(min_value=0, max_value=2e9),
        "host": _META_VALUES,
        "source": _META_VALUES,
        "sourcetype": st.text(max_size=4),
        "index": st.sampled_from(["web", "app"]),
    },
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_HEC_EVENTS, min_size=1, max_size=6),
    st.sampled_from([b"", b"\n"]),
    st.booleans(),
)
def test_an_events_record_is_its_fields_body_metadata_and_time(
    events: list[dict], between: bytes, escaped: bool
) -> None:
    """Fields, then the body's keys (an object's, else `event`), then the metadata and time the
    body has none of: in that order, each once, whether the body was spliced as sent or
    rebuilt (and whatever a key's text escapes)."""
    body = between.join(json.dumps(event, ensure_ascii=escaped).encode() for event in events)
    records, indexes = hec.event_records(body)
    for event, record in zip(events, records, strict=True):
        expected = dict(event.get("fields") or {})
        inner = event["event"]
        expected.update(inner if isinstance(inner, dict) else {"event": inner})
        for name in ("host", "source", "sourcetype", "index"):
            if name in event:
                expected.setdefault(name, event[name])
        if "time" in event:
            expected.setdefault("timestamp", hec._time(event["time"], 0))
        assert json.loads(record, object_pairs_hook=list) == list(expected.items())
    assert indexes == {event["index"] for event in events if "index" in event}


def test_the_shapes_vector_and_the_opentelemetry_collector_send_are_spliced() -> None:
    shapes = [
        {"event": {"msg": "a"}, "time": 1767225600.5, "sourcetype": "app"},  # Fluent Bit
        {"event": "GET / 200", "time": 1767225600, "host": "h", "fields": {}},  # Vector
        {  # the OpenTelemetry Collector: resource attributes as indexed fields
            "time": 1767225600.25, "host": "h", "source": "otel", "sourcetype": "otel",
            "index": "main", "event": "GET / 200", "fields": {"service.name": "shop"},
        },
        {"event": 7, "fields": {"host": "own", "n": "1"}, "host": "h"},
    ]  # fmt: skip
    for shape in shapes:
        line = json.dumps(shape).encode()
        (event,) = hec._typed_events(line) or []
        indexes: set[str] = set()
        spliced = hec._spliced(event, 0, indexes, {})
        assert spliced is not None, shape
        rebuilt = hec._record(json.loads(line), 0, set())
        assert json.loads(spliced, object_pairs_hook=list) == list(rebuilt.items())
        assert indexes == ({shape["index"]} if "index" in shape else set())
    # events of one body with the same metadata: each body keeps what it has of its own
    body = (
        b'{"event": {"m": 1}, "host": "h", "source": "s"}'
        b'{"event": {"m": 2, "host": "own"}, "host": "h", "source": "s"}'
        b'{"event": "text", "fields": {"source": "own"}, "host": "h", "source": "s"}'
        b'{"event": {"m": 3}, "host": "h", "source": "s"}'
        b'{"event": 4, "host": 1}{"event": 5, "host": true}{"event": 6, "host": 1.0}'
    )
    records, _ = hec.event_records(body)
    assert [json.loads(r, object_pairs_hook=list) for r in records] == [
        [("m", 1), ("host", "h"), ("source", "s")],
        [("m", 2), ("host", "own"), ("source", "s")],
        [("source", "own"), ("event", "text"), ("host", "h")],
        [("m", 3), ("host", "h"), ("source", "s")],
        [("event", 4), ("host", 1)],
        [("event", 5), ("host", True)],
        [("event", 6), ("host", 1.0)],
    ]
    # equal in Python, not in JSON: 1, true and 1.0 each as sent
    assert records[4:] == [b'{"event":4,"host":1}', b'{"event":5,"host":true}',
                           b'{"event":6,"host":1.0}']  # fmt: skip
    # a key written with escapes is still the body's own: not given the event's again
    (event,) = hec._typed_events(b'{"event": 1, "fields": {"ho\\u0073t": "own"}, "host": "h"}')
    assert json.loads(hec._spliced(event, 0, set(), {}) or b"", object_pairs_hook=list) == [
        ("host", "own"),
        ("event", 1),
    ]


def test_an_event_body_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(hec.HecError) as refused:
        hec.event_records(b'{"event": {"m": "ok"}}{"event": {"m": "\xff"}}')
    assert refused.value.status == 400 and "not UTF-8" in refused.value.message
