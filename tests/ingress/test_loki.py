"""Grafana Loki's push API in: winston-loki (Node.js; protobuf with snappy, and JSON) and
python-logging-loki (JSON) push log lines through the receiver, piper and packer to Parquet;
labels, structured metadata and times as Loki has them; refusals as Loki's text answers."""

from __future__ import annotations

import base64
import gzip
import json
import logging
import shutil
import subprocess
from pathlib import Path

import cramjam
import httpx
import logging_loki
import pytest

from bytefreezer.ingress.bodies import BodyError
from bytefreezer.ingress.loki import PushRequest, parse_labels
from bytefreezer.keys import IntakeKey
from tests.ingress.conftest import Receiver

LOKI_CLIENT = Path(__file__).parents[1] / "clients" / "loki"


def basic(key: str, user: str = "acme") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


@pytest.mark.skipif(
    shutil.which("node") is None or not (LOKI_CLIENT / "node_modules" / "winston-loki").exists(),
    reason="`make test` installs winston-loki (npm ci in tests/clients/loki)",
)
@pytest.mark.parametrize("as_json", [False, True], ids=["protobuf-snappy", "json"])
def test_winston_loki_pushes_to_parquet(receiver: Receiver, as_json: bool) -> None:
    key = receiver.control.create_key("acme", "web").key
    args = {"host": receiver.url, "basicAuth": f"acme:{key}", "json": as_json, "count": 120}
    sent = subprocess.run(
        ["node", str(LOKI_CLIENT / "send.js"), json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    used = json.loads(sent.stdout.strip().splitlines()[-1])["contentType"]
    assert used == ("application/json" if as_json else "application/x-protobuf")
    keys = [IntakeKey.parse(o.key) for o in receiver.storage.intake.list("acme/web/")]
    assert keys and {k.hint for k in keys} == {"ndjson"}
    table = receiver.pack("web")
    assert table is not None
    rows = sorted(table.to_pylist(), key=lambda r: int(r["message"].split()[1]))
    assert [r["message"] for r in rows] == [f"order {i} paid" for i in range(120)]
    assert rows[3]["labels"] == {"app": "checkout", "env": "prod", "shard": "1", "level": "info"}
    assert all(r["timestamp"].endswith("Z") and r["timestamp"] >= "2026" for r in rows)


def test_python_logging_loki_with_a_tenant_key_in_the_path(receiver: Receiver) -> None:
    handler = logging_loki.LokiHandler(
        url=f"{receiver.url}/acme/web/loki/api/v1/push",
        tags={"service": "billing"},
        auth=("acme", receiver.key),  # a tenant key: the path names the dataset
        version="1",
    )
    log = logging.getLogger("loki.test")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        for i in range(5):
            log.warning("disk %d almost full", i, extra={"tags": {"host": f"db-{i}"}})
    finally:
        log.removeHandler(handler)
    table = receiver.pack("web")
    assert table is not None
    rows = sorted(table.to_pylist(), key=lambda r: r["message"])
    assert [r["message"] for r in rows] == [f"disk {i} almost full" for i in range(5)]
    assert rows[2]["labels"]["service"] == "billing" and rows[2]["labels"]["host"] == "db-2"
    assert rows[2]["labels"]["severity"] == "warning"


def push(entries: list[tuple[str, int, str, dict[str, str]]]) -> bytes:
    request = PushRequest()
    for labels, nanoseconds, line, metadata in entries:
        stream = request.streams.add(labels=labels)
        entry = stream.entries.add(line=line)
        entry.timestamp.seconds, entry.timestamp.nanos = divmod(nanoseconds, 10**9)
        for name, value in metadata.items():
            entry.structuredMetadata.add(name=name, value=value)
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


def test_times_labels_and_structured_metadata(receiver: Receiver) -> None:
    key = receiver.control.create_key("acme", "web").key
    body = push(
        [
            ('{app="web", quote="say \\"hi\\""}', 1_767_225_600_000_000_001, "one", {}),
            ("{}", 1_767_225_601_500_000_000, "two", {"trace_id": "abc"}),
        ]
    )
    response = httpx.post(
        f"{receiver.url}/loki/api/v1/push",
        content=body,
        headers={**basic(key), "Content-Type": "application/x-protobuf"},
    )
    assert response.status_code == 204, response.text
    json_body = {
        "streams": [
            {"stream": {"app": "api"}, "values": [["1767225602000000000", "three", {"k": "v"}]]}
        ]
    }
    response = httpx.post(
        f"{receiver.url}/loki/api/v1/push",
        content=gzip.compress(json.dumps(json_body).encode()),
        headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        },
    )
    assert response.status_code == 204, response.text
    table = receiver.pack("web")
    assert table is not None
    rows = {r["message"]: r for r in table.to_pylist()}
    assert rows["one"]["timestamp"] == "2026-01-01T00:00:00.000000001Z"
    assert rows["one"]["labels"]["quote"] == 'say "hi"'
    assert rows["two"]["structured_metadata"] == {"trace_id": "abc", "k": None}
    assert rows["three"]["structured_metadata"]["k"] == "v"
    assert rows["three"]["labels"]["app"] == "api"
    part = receiver.settings.data_dir / "destination" / "acme" / "web" / "year=2026"
    assert part.exists()  # partitioned by the entries' time


@pytest.mark.parametrize(
    ("path", "headers", "body", "status", "reason"),
    [
        ("/loki/api/v1/push", {}, b"{}", 401, "missing credentials"),
        ("/loki/api/v1/push", None, b'{"streams": []}', 400, "tenant key names the dataset"),
        ("/acme/nope/loki/api/v1/push", None, b'{"streams": []}', 404, "nope"),
        ("/acme/web/loki/api/v1/push", None, b"", 400, "empty body"),
        ("/acme/web/loki/api/v1/push", None, b"[1]", 400, '{"streams"'),
        (
            "/acme/web/loki/api/v1/push",
            None,
            b'{"streams": [{"values": [["x", "l"]]}]}',
            400,
            "unix epoch",
        ),
        (
            "/acme/web/loki/api/v1/push",
            None,
            '{"streams": [{"values": [["\u00b2", "l"]]}]}'.encode(),  # a digit to isdigit only
            400,
            "unix epoch",
        ),
        (
            "/acme/web/loki/api/v1/push",
            {"Content-Type": "application/x-protobuf"},
            b"\xff\x00",
            400,
            "snappy",
        ),
        (
            "/acme/web/loki/api/v1/push",
            {"Content-Type": "text/plain"},
            b"x",
            415,
            "not 'text/plain'",
        ),
    ],
)
def test_refusals_store_nothing(
    receiver: Receiver,
    path: str,
    headers: dict[str, str] | None,
    body: bytes,
    status: int,
    reason: str,
) -> None:
    sent = {**basic(receiver.key), **(headers or {})} if headers is None or headers else {}
    response = httpx.post(f"{receiver.url}{path}", content=body, headers=sent)
    assert response.status_code == status, response.text
    assert reason in response.text
    assert not receiver.storage.intake.list("acme/")


def test_label_text() -> None:
    assert parse_labels('{a="1", b_c="x,y", d="\\\\ \\" \\n"}') == {
        "a": "1",
        "b_c": "x,y",
        "d": '\\ " \n',
    }
    assert parse_labels("{}") == {}
    for bad in ("a=1", "{a=1}", '{a="1" b="2"}', '{="x"}'):
        with pytest.raises(BodyError):
            parse_labels(bad)
