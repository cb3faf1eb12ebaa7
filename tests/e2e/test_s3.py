"""The same flow against a real S3 server, with separate intake, piper and destination buckets."""

from __future__ import annotations

import gzip
import io
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from bytefreezer.control import ControlStore
from bytefreezer.control.models import DatasetSpec, Tenant
from bytefreezer.errors import StorageError
from bytefreezer.ingress.receiver import create_app
from bytefreezer.pipelines.packer import run_packer_cycle
from bytefreezer.pipelines.piper import run_piper_cycle
from bytefreezer.settings import Settings
from bytefreezer.storage import Storage
from tests.conftest import fast_settings
from tests.helpers import s3_client, serve_app

pytestmark = pytest.mark.s3


def s3_settings(tmp_path: Path, server: dict[str, str], suffix: str, **s3: Any) -> Settings:
    return fast_settings(
        tmp_path / "data",
        storage={
            "backend": "s3",
            "s3": {
                "endpoint": server["endpoint"],
                "access_key": server["access_key"],
                "secret_key": server["secret_key"],
                **s3,
            },
        },
        buckets={
            "intake": f"intake-{suffix}",
            "piper": f"piper-{suffix}",
            "geoip": f"geoip-{suffix}",
        },
        default_destination=f"s3://dest-{suffix}/warehouse/{{tenant}}/{{dataset}}",
    )


def test_post_to_parquet_on_s3(tmp_path: Path, s3_server: dict[str, str]) -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = s3_settings(tmp_path, s3_server, suffix)
    storage = Storage(settings)
    storage.ensure_buckets()
    s3 = s3_client(s3_server)
    s3.create_bucket(Bucket=f"dest-{suffix}")
    control = ControlStore(settings.control_db_path(), destination_for=settings.destination_for)
    control.create_tenant(Tenant(name="acme"))
    chain = [
        {"type": "filter", "config": {"condition": "status >= 400"}},
        {"type": "rename_field", "config": {"from": "src", "to": "source_ip"}},
        {"type": "add_field", "config": {"field": "tenant", "value": "${tenant_id}"}},
    ]
    control.create_dataset("acme", DatasetSpec(name="web", transforms=chain))
    key = control.create_key("acme").key
    rows = [
        {
            "timestamp": f"2026-03-0{1 + i % 2}T10:00:00Z",
            "status": 200 + 100 * (i % 4),
            "src": f"10.0.0.{i}",
            "id": i,
        }
        for i in range(40)
    ]
    body = gzip.compress("\n".join(json.dumps(r) for r in rows).encode() + b"\n{oops\n")
    with serve_app(create_app(settings, control, storage)) as url:
        response = httpx.post(
            f"{url}/acme/web",
            content=body,
            headers={"Authorization": f"Bearer {key}", "Content-Encoding": "gzip"},
        )
    assert response.status_code == 200, response.text
    stored = response.json()["key"]
    head = s3.head_object(Bucket=f"intake-{suffix}", Key=stored)
    assert head["Metadata"]["lines"] == "41"

    assert run_piper_cycle(settings, control, storage).claimed == 1
    assert run_packer_cycle(settings, control, storage).claimed == 1

    listed = s3.list_objects_v2(Bucket=f"dest-{suffix}", Prefix="warehouse/acme/web/")
    keys = sorted(o["Key"] for o in listed.get("Contents", []))
    assert keys and all(k.endswith(".parquet") for k in keys)
    assert {k.split("/")[5] for k in keys} == {"day=01", "day=02"}
    found = []
    for k in keys:
        data = s3.get_object(Bucket=f"dest-{suffix}", Key=k)["Body"].read()
        found.extend(pq.read_table(io.BytesIO(data)).to_pylist())
    expected = sorted(r["id"] for r in rows if r["status"] >= 400)
    assert sorted(r["id"] for r in found) == expected
    assert all(r["tenant"] == "acme" and "source_ip" in r for r in found)

    dead = s3.list_objects_v2(Bucket=f"piper-{suffix}", Prefix="_dead-letter/acme/web/")
    (dead_key,) = [o["Key"] for o in dead["Contents"]]
    record = json.loads(s3.get_object(Bucket=f"piper-{suffix}", Key=dead_key)["Body"].read())
    assert record["line"] == "{oops" and "invalid JSON" in record["error"]
    assert s3.list_objects_v2(Bucket=f"intake-{suffix}").get("KeyCount") == 0
    staged = s3.list_objects_v2(Bucket=f"piper-{suffix}", Prefix="acme/")
    assert staged.get("KeyCount") == 0


def test_wrong_credentials_are_refused(tmp_path: Path, s3_server: dict[str, str]) -> None:
    suffix = uuid.uuid4().hex[:8]
    good = s3_settings(tmp_path, s3_server, suffix)
    Storage(good).ensure_buckets()
    bad = s3_settings(tmp_path, s3_server, suffix, secret_key="not-the-secret")
    with pytest.raises(StorageError):
        Storage(bad).ping()
    with pytest.raises(StorageError):
        Storage(bad).intake.put("acme/web/x", b"data")
    control = ControlStore(bad.control_db_path())
    control.create_tenant(Tenant(name="acme"))
    control.create_dataset("acme", DatasetSpec(name="web"))
    key = control.create_key("acme").key
    # With no room to spool, the receiver refuses rather than acknowledging what it cannot keep.
    no_spool = bad.model_copy(
        update={"receiver": bad.receiver.model_copy(update={"spool_max_bytes": 10})}
    )
    with serve_app(create_app(no_spool, control)) as url:
        response = httpx.post(
            f"{url}/acme/web", content=b'{"a": 1}\n', headers={"Authorization": f"Bearer {key}"}
        )
    assert response.status_code == 503
    assert response.headers["retry-after"]
