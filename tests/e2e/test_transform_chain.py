"""A dataset whose chain uses grok, date_parse, geoip, split, enricher and a `when` condition:
posted lines become the expected Parquet columns."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import httpx

from bytefreezer.control import ControlStore
from bytefreezer.control.models import DatasetSpec, Tenant
from bytefreezer.ingress.receiver import create_app
from bytefreezer.pipelines.packer import run_packer_cycle
from bytefreezer.pipelines.piper import run_piper_cycle
from bytefreezer.storage import Storage
from bytefreezer.transforms import validate_chain
from tests.conftest import fast_settings
from tests.helpers import read_parquet_dir, serve_app
from tests.transforms.test_lookups import city_database

CHAIN = [
    {"type": "grok", "config": {"patterns": ["%{COMMONAPACHELOG}"], "on_no_match": "dead_letter"}},
    {
        "type": "date_parse",
        "config": {"source_field": "timestamp", "formats": ["%d/%b/%Y:%H:%M:%S %z"]},
    },
    {
        "type": "geoip",
        "config": {"source_field": "clientip", "fields": ["country_code", "city_name"]},
    },
    {
        "type": "enricher",
        "config": {
            "source_field": "auth",
            "object": "users.csv",
            "lookup_key": "user",
            "fields": ["dept"],
        },
    },
    {"type": "split", "config": {"field": "tags", "separator": ","}},
    {"type": "cast", "config": {"fields": {"response": "int", "bytes": "int"}}},
    {"type": "add_field", "config": {"field": "alert", "value": True}, "when": "response >= 500"},
    {"type": "remove_field", "config": {"fields": ["message", "ident", "rawrequest"]}},
]


def test_chain_turns_posted_lines_into_expected_parquet(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path / "data")
    storage = Storage(settings)
    storage.ensure_buckets()
    storage.bucket("geoip").put("GeoLite2-City.mmdb", city_database())
    storage.bucket("geoip").put("users.csv", b"user,dept\nalice,eng\nbob,ops\n")
    control = ControlStore(
        settings.control_db_path(),
        destination_for=settings.destination_for,
        validate_chain=validate_chain,
    )
    control.create_tenant(Tenant(name="acme"))
    control.create_dataset("acme", DatasetSpec(name="access", transforms=CHAIN))
    key = control.create_key("acme").key
    lines = [
        {
            "message": '81.2.69.142 - alice [10/Oct/2026:13:55:36 +0000] "GET /a HTTP/1.1" 200 512',
            "tags": "web,prod",
        },
        {
            "message": '10.0.0.7 - bob [10/Oct/2026:15:01:02 +0200] "POST /b HTTP/1.1" 503 -',
            "tags": "api",
        },
        {"message": "this is not an access log line", "tags": "x"},
    ]
    body = "\n".join(json.dumps(line) for line in lines)
    with serve_app(create_app(settings, control, storage)) as url:
        answer = httpx.post(
            f"{url}/acme/access", content=body, headers={"Authorization": f"Bearer {key}"}
        )
    assert answer.status_code == 200, answer.text
    run_piper_cycle(settings, control, storage)
    run_packer_cycle(settings, control, storage)

    destination = settings.data_dir / "destination" / "acme" / "access"
    table = read_parquet_dir(destination)
    assert table is not None
    rows = sorted(table.to_pylist(), key=lambda r: (r["timestamp"], r["tags"]))
    utc = dt.UTC
    assert rows == [
        {
            "tags": "api",
            "clientip": "10.0.0.7",
            "auth": "bob",
            "timestamp": dt.datetime(2026, 10, 10, 13, 1, 2, tzinfo=utc),
            "verb": "POST",
            "request": "/b",
            "httpversion": "1.1",
            "response": 503,
            "bytes": None,
            "geo": None,
            "dept": "ops",
            "alert": True,
        },
        {
            "tags": "prod",
            "clientip": "81.2.69.142",
            "auth": "alice",
            "timestamp": dt.datetime(2026, 10, 10, 13, 55, 36, tzinfo=utc),
            "verb": "GET",
            "request": "/a",
            "httpversion": "1.1",
            "response": 200,
            "bytes": 512,
            "geo": {"country_code": "GB", "city_name": "London"},
            "dept": "eng",
            "alert": None,
        },
        {
            "tags": "web",
            "clientip": "81.2.69.142",
            "auth": "alice",
            "timestamp": dt.datetime(2026, 10, 10, 13, 55, 36, tzinfo=utc),
            "verb": "GET",
            "request": "/a",
            "httpversion": "1.1",
            "response": 200,
            "bytes": 512,
            "geo": {"country_code": "GB", "city_name": "London"},
            "dept": "eng",
            "alert": None,
        },
    ]
    by_tag = {r["tags"]: r for r in rows}
    assert set(by_tag) == {"web", "prod", "api"}
    assert by_tag["api"]["alert"] is True and by_tag["web"]["alert"] is None
    assert by_tag["api"]["timestamp"] == dt.datetime(2026, 10, 10, 13, 1, 2, tzinfo=utc)
    assert by_tag["web"]["geo"] == {"country_code": "GB", "city_name": "London"}
    assert by_tag["api"]["geo"] is None and by_tag["api"]["dept"] == "ops"
    assert by_tag["web"]["response"] == 200 and by_tag["api"]["bytes"] is None
    assert "message" not in table.column_names
    # Event-time partitions come from the parsed timestamp (13:xx UTC on 2026-10-10).
    assert {p.parent.name for p in destination.rglob("*.parquet")} == {"hour=13"}
    (dead_file,) = (settings.data_dir / "buckets" / "piper" / "_dead-letter").rglob("*.ndjson")
    dead = json.loads(dead_file.read_text())
    assert dead["transform"] == "grok" and "no pattern matched" in dead["error"]
    assert json.loads(dead["record"])["message"] == "this is not an access log line"
