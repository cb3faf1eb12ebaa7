"""Elasticsearch's bulk API in: Elastic's own Python client (`helpers.bulk`, with Basic auth and
with an API key) ships documents through the receiver, piper and packer to Parquet; rsyslog's
omelasticsearch ships syslog lines the same way (test_rsyslog_ships_to_the_bulk_api); tenant keys
routed by index, item errors beside stored documents, refusals as Elasticsearch's error bodies."""

from __future__ import annotations

import base64
import gzip
import json

import httpx
import orjson
import pytest
from elasticsearch import Elasticsearch, helpers
from hypothesis import given, settings
from hypothesis import strategies as st

from bytefreezer.ingress.credentials import key_of
from bytefreezer.ingress.elastic import answer as elastic_answer
from bytefreezer.ingress.elastic import parse_bulk
from bytefreezer.keys import IntakeKey
from tests.ingress.conftest import Receiver


def ndjson(*values: object) -> bytes:
    return b"".join(json.dumps(v).encode() + b"\n" for v in values)


def basic(key: str, user: str = "acme") -> dict[str, str]:
    token = base64.b64encode(f"{user}:{key}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/x-ndjson"}


def test_elastics_client_bulk_ships_documents_to_parquet(receiver: Receiver) -> None:
    key = receiver.control.create_key("acme", "web").key
    client = Elasticsearch(receiver.url, basic_auth=("shipper", key), request_timeout=30)
    assert client.info()["version"]["number"].startswith("8.")
    documents = [
        {
            "_index": "logs-2026.01.01",
            "_id": f"id-{i}",
            "@timestamp": "2026-01-01T10:00:00Z",
            "message": f"login {i}",
            "user": {"name": f"u{i}"},
        }
        for i in range(50)
    ]
    stored, errors = helpers.bulk(client, documents, chunk_size=20)
    assert (stored, errors) == (50, [])
    keys = [IntakeKey.parse(o.key) for o in receiver.storage.intake.list("acme/web/")]
    assert keys and {k.hint for k in keys} == {"ndjson"}
    table = receiver.pack("web")
    assert table is not None
    rows = sorted(table.to_pylist(), key=lambda r: int(r["_id"].split("-")[1]))
    assert [r["message"] for r in rows] == [f"login {i}" for i in range(50)]
    assert [r["_id"] for r in rows] == [f"id-{i}" for i in range(50)]
    assert rows[7]["user"] == {"name": "u7"}


def test_an_api_key_and_a_tenant_key_routed_by_index(receiver: Receiver) -> None:
    # Elastic's encoded form: base64 of "id:key", as the client sends a (id, key) pair.
    client = Elasticsearch(receiver.url, api_key=("any-id", receiver.key), request_timeout=30)
    actions = [{"_index": "web", "n": i} for i in range(3)] + [{"_index": "text", "n": 9}]
    ok, errors = helpers.bulk(client, actions, raise_on_error=False)
    assert ok == 4 and not errors
    assert len(receiver.storage.intake.list("acme/web/")) == 1
    assert len(receiver.storage.intake.list("acme/text/")) == 1
    web = receiver.pack("web")
    assert web is not None and sorted(web.column("n").to_pylist()) == [0, 1, 2]
    # the key as given works too, and so does a bearer token
    for header in (f"ApiKey {receiver.key}", f"Bearer {receiver.key}"):
        response = httpx.post(
            f"{receiver.url}/web/_bulk",
            content=ndjson({"create": {}}, {"n": 5}),
            headers={"Authorization": header},
        )
        assert response.status_code == 200 and response.json()["errors"] is False, response.text
        assert response.headers["x-elastic-product"] == "Elasticsearch"
        item = response.json()["items"][0]["create"]
        assert (item["status"], item["result"], item["_index"]) == (201, "created", "web")


def test_item_errors_beside_stored_documents(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted: list[tuple[str, float, dict[str, str]]] = []
    add = receiver.state.telemetry.add

    def counting(name: str, value: float = 1, **attributes: str) -> None:
        if attributes.get("error_type") == "bulk_item":
            counted.append((name, value, attributes))
        add(name, value, **attributes)

    monkeypatch.setattr(receiver.state.telemetry, "add", counting)
    body = (
        ndjson({"index": {"_index": "web"}}, {"ok": 1})
        + b'{"index": {"_index": "web"}}\n{"broken": \n'
        + ndjson({"index": {"_index": "web"}}, [1, 2])
        + ndjson({"index": {"_index": "nope"}}, {"ok": 2})
        + ndjson({"index": {"_index": "../x"}}, {"ok": 3})
        + ndjson({"index": {}}, {"no": "index"})
        + ndjson({"update": {"_index": "web", "_id": "1"}}, {"doc": {"a": 1}})
        + ndjson({"delete": {"_index": "web", "_id": "1"}})
        + ndjson({"create": {"_index": "web", "_id": "keep"}}, {"ok": 4})
    )
    response = httpx.post(
        f"{receiver.url}/_bulk",
        content=gzip.compress(body),
        headers={**basic(receiver.key), "Content-Encoding": "gzip"},
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["errors"] is True
    statuses = [(next(iter(i)), next(iter(i.values()))["status"]) for i in answer["items"]]
    assert statuses == [
        ("index", 201),
        ("index", 400),
        ("index", 400),
        ("index", 404),
        ("index", 400),
        ("index", 400),
        ("update", 400),
        ("delete", 400),
        ("create", 201),
    ]
    reasons = [next(iter(i.values())).get("error", {}) for i in answer["items"]]
    assert reasons[1]["type"] == "document_parsing_exception"
    assert "not a JSON object" in reasons[2]["reason"]
    assert "nope" in reasons[3]["reason"]
    assert reasons[4]["type"] == "invalid_index_name_exception"
    assert "index is required" in reasons[5]["reason"]
    assert "does not update" in reasons[6]["reason"]
    assert counted == [("bytefreezer_errors", 7, {"stage": "ingest", "error_type": "bulk_item"})]
    table = receiver.pack("web")
    assert table is not None
    assert sorted(table.column("ok").to_pylist()) == [1, 4]  # the stored two, nothing else
    assert table.column("_id").to_pylist().count("keep") == 1


@pytest.mark.parametrize(
    ("body", "headers", "status", "reason"),
    [
        (ndjson({"index": {}}, {"a": 1}), {}, 401, "missing credentials"),
        (ndjson({"index": {}}, {"a": 1}), {"Authorization": "Bearer bfk_x_y"}, 401, "authenticate"),
        (b"", None, 400, "request body is required"),
        (b"not json\n{}\n", None, 400, "Malformed action/metadata line [1]"),
        (ndjson({"index": {}, "create": {}}, {"a": 1}), None, 400, "line [1]"),
        (ndjson({"upsert": {}}, {"a": 1}), None, 400, "unknown action [upsert]"),
        (ndjson({"index": {}}), None, 400, "has no document line"),
        (b"\x1f\x8b not gzip", {"Content-Encoding": "gzip"}, 400, "gzip"),
    ],
)
def test_requests_refused_whole_store_nothing(
    receiver: Receiver, body: bytes, headers: dict[str, str] | None, status: int, reason: str
) -> None:
    sent = basic(receiver.key) if headers is None or "Content-Encoding" in headers else {}
    response = httpx.post(
        f"{receiver.url}/web/_bulk", content=body, headers={**sent, **(headers or {})}
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert reason in error["reason"] and error["root_cause"][0]["type"] == error["type"]
    assert response.json()["status"] == status
    assert not receiver.storage.intake.list("acme/")


def test_an_admin_key_and_another_tenants_dataset(receiver: Receiver) -> None:
    admin = receiver.control.create_key(None, role="admin").key
    response = httpx.post(
        f"{receiver.url}/web/_bulk", content=ndjson({"index": {}}, {"a": 1}), headers=basic(admin)
    )
    assert response.status_code == 403 and "ingest key" in response.json()["error"]["reason"]
    other = receiver.control.create_key("other", "web").key
    response = httpx.post(
        f"{receiver.url}/_bulk",
        content=ndjson({"index": {"_index": "whatever"}}, {"a": 1}),
        headers=basic(other),
    )
    assert response.status_code == 200 and not response.json()["errors"]
    assert len(receiver.storage.intake.list("other/web/")) == 1  # a dataset key's own dataset
    assert not receiver.storage.intake.list("acme/")


def test_probes_shippers_make(receiver: Receiver) -> None:
    info = httpx.get(f"{receiver.url}/")
    assert info.status_code == 200 and info.json()["version"]["number"].startswith("8.")
    assert info.headers["x-elastic-product"] == "Elasticsearch"
    assert httpx.get(f"{receiver.url}/_cluster/health").json()["status"] == "green"
    assert httpx.head(f"{receiver.url}/_cat/health").status_code == 200


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ("Bearer bfk_a_b", "bfk_a_b"),
        ("ApiKey bfk_a_b", "bfk_a_b"),
        (f"ApiKey {base64.b64encode(b'id:bfk_a_b').decode()}", "bfk_a_b"),
        (f"Basic {base64.b64encode(b'user:bfk_a_b').decode()}", "bfk_a_b"),
        (f"Basic {base64.b64encode(b'user-only').decode()}", None),
        ("Basic %%%", None),
        ("Digest x", None),
        ("Bearer ", None),
    ],
)
def test_the_key_of_each_scheme(header: str, key: str | None) -> None:
    assert key_of(header) == key


def test_stored_lines_keep_the_document_and_add_the_actions_id() -> None:
    body = (
        ndjson(
            {"index": {"_id": "a"}},
            {},
            {"index": {"_id": 7}},
            {"x": 1},
            {"create": {"_id": "c"}},
            {"_id": "own", "x": 2},
            {"index": {}},
            {"y": [1, 2]},
        )
        + b'{"index": {"_id": "e"}}\n  { "z" : 3 }  \r\n'
    )
    bulk = parse_bulk(body, "web")
    lines = bulk.lines(bulk.pending())
    assert [json.loads(line) for line in lines] == [
        {"_id": "a"},
        {"_id": "7", "x": 1},
        {"_id": "own", "x": 2},
        {"y": [1, 2]},
        {"_id": "e", "z": 3},
    ]
    assert lines[3] == b'{"y": [1, 2]}'  # as sent


def test_one_action_line_repeated_with_documents_that_fail() -> None:
    """Shippers' usual body (one action line before each document) is checked at once; a bad
    document among good ones fails its own item only, wherever it is."""
    documents = [
        b'{"ok": 1}',
        b"[1, 2]",
        b'{"broken": ',
        b'{"text": "\xff\xfe"}',  # not UTF-8: the fast check skips strings, so this is its test
        b'  {"ok": 2}  \r',
        b'{"deep": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"own": 3, "\\u005fid": "x"}',
        b'{"ok": 4}',
    ]
    for action in (b'{"index": {"_index": "web"}}', b'{"create": {"_id": "same"}}'):
        body = b"".join(action + b"\n" + document + b"\n" for document in documents)
        bulk = parse_bulk(body, "web")
        assert len(bulk) == len(documents)
        assert sorted(bulk.errors) == [1, 2, 3, 5]
        assert {error[1] for error in bulk.errors.values()} == {"document_parsing_exception"}
        assert "not a JSON object" in bulk.errors[1][2]
        assert "UTF-8" in bulk.errors[3][2]
        stored = [json.loads(line) for line in bulk.lines(bulk.pending())]
        if b"_id" in action:  # the action's id, unless the document has its own
            assert stored == [
                {"_id": "same", "ok": 1},
                {"_id": "same", "ok": 2},
                {"own": 3, "_id": "x"},
                {"_id": "same", "ok": 4},
            ]
        else:
            assert stored == [{"ok": 1}, {"ok": 2}, {"own": 3, "_id": "x"}, {"ok": 4}]
        items = json.loads(elastic_answer(bulk, 5, "web").body)["items"]
        assert [next(iter(item.values()))["status"] for item in items] == [
            201, 400, 400, 400, 201, 400, 201, 201,
        ]  # fmt: skip
        ids = [next(iter(item.values()))["_id"] for item in items]
        assert len(set(ids)) == (len(ids) if b"_id" not in action else 1)


# Lines a bulk body is made of: actions, documents good and bad (each judged alike by orjson,
# the reference below, and by the receiver), blank lines.
_ACTIONS = [
    b'{"index": {}}',
    b'{"index": {"_index": "web"}}',
    b'{"create": {"_index": "web", "_id": 5}}',
    b'{"update": {"_id": "u"}}',
    b'{"delete": {"_id": "d"}}',
]
_DOCUMENTS = [
    b'{"a": 1}',
    b'{"_id": "own", "b": [1, {"c": null}]}',
    b' {"s": "x\\"y"} \r',
    b"[1]",
    b'"text"',
    b'{"a": ',
    b'{"a": 1}}',
    b'{"t": "\xc3\x28"}',
    b"{}",
]


def _reference(body: bytes, path_index: str | None) -> list[tuple[str, bytes | None]]:
    """What each action of ``body`` becomes, line by line with orjson: (action, the stored
    line or None)."""
    lines = [line for line in body.split(b"\n") if line.strip()]
    items: list[tuple[str, bytes | None]] = []
    at = 0
    while at < len(lines):
        ((action, meta),) = orjson.loads(lines[at]).items()
        at += 1
        if action == "delete":
            items.append((action, None))
            continue
        source, at = lines[at].strip(), at + 1
        try:
            document = orjson.loads(source)
        except orjson.JSONDecodeError:
            document = None
        if action == "update" or not isinstance(document, dict):
            items.append((action, None))
        elif "_id" in meta and "_id" not in document:
            items.append((action, orjson.dumps({"_id": str(meta["_id"]), **document})))
        else:
            items.append((action, orjson.dumps(document)))
    return items


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(_ACTIONS), st.sampled_from(_DOCUMENTS), st.booleans()),
        min_size=1,
        max_size=12,
    ),
    st.sampled_from(["mixed", "one action", "one action but the last"]),
)
def test_bulk_bodies_read_as_line_by_line(
    pairs: list[tuple[bytes, bytes, bool]], shape: str
) -> None:
    """Whatever the body, the items are what reading it line by line with orjson makes of it:
    shippers' bodies of one repeated action line, those that nearly are, and any other."""
    body = b""
    for number, (action, document, blank) in enumerate(pairs):
        if shape == "one action" or (shape != "mixed" and number < len(pairs) - 1):
            action = pairs[0][0]
        body += action + b"\n" + (b"" if b"delete" in action else document + b"\n")
        body += b" \r\n" if blank else b""
    bulk = parse_bulk(body, "web")
    expected = _reference(body, "web")
    assert bulk.actions == [action for action, _ in expected]
    assert sorted(bulk.pending()) == [n for n, (_, line) in enumerate(expected) if line]
    stored = [orjson.loads(line) for line in bulk.lines(bulk.pending())]
    assert stored == [orjson.loads(line) for _, line in expected if line]
