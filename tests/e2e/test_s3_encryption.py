"""S3 server-side encryption: every object the stack writes asks for the configured encryption
(buckets and destinations on the stack's settings), a dataset's destination may ask for its own
(a tenant's KMS key) or none, and the destination check probes with it."""

from __future__ import annotations

import gzip
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from bytefreezer.control import ControlStore
from bytefreezer.control.models import DatasetSpec, Destination, Tenant
from bytefreezer.ingress.receiver import create_app
from bytefreezer.pipelines.packer import run_packer_cycle
from bytefreezer.pipelines.piper import run_piper_cycle
from bytefreezer.settings import S3Settings
from bytefreezer.storage import Storage, s3_options
from tests.e2e.test_s3 import s3_settings
from tests.helpers import s3_client, serve_app

pytestmark = pytest.mark.s3


def encryption_of(s3: Any, bucket: str, prefix: str = "") -> dict[str, str | None]:
    """Each object under ``prefix`` and the server-side encryption S3 reports for it."""
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {
        o["Key"]: s3.head_object(Bucket=bucket, Key=o["Key"]).get("ServerSideEncryption")
        for o in listed
    }


def test_every_object_written_asks_for_the_configured_encryption(
    tmp_path: Path, s3_server: dict[str, str]
) -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = s3_settings(tmp_path, s3_server, suffix, server_side_encryption="AES256")
    storage = Storage(settings)
    storage.ensure_buckets()
    s3 = s3_client(s3_server)
    s3.create_bucket(Bucket=f"dest-{suffix}")
    s3.create_bucket(Bucket=f"own-{suffix}")
    control = ControlStore(settings.control_db_path(), destination_for=settings.destination_for)
    control.create_tenant(Tenant(name="acme"))
    # On the stack's settings (AES256), keeping raw copies; and one whose own destination, with
    # its own options, asks for no encryption.
    control.create_dataset("acme", DatasetSpec(name="web", keep_raw=True))
    own = Destination(
        url=f"s3://own-{suffix}/plain",
        options={
            "endpoint_url": s3_server["endpoint"],
            "key": s3_server["access_key"],
            "secret": s3_server["secret_key"],
        },
        server_side_encryption="",
    )
    control.create_dataset("acme", DatasetSpec(name="plain", destination=own))
    key = control.create_key("acme").key
    lines = [json.dumps({"id": i, "timestamp": "2026-03-01T10:00:00Z"}) for i in range(20)]
    body = gzip.compress(("\n".join(lines) + "\n{oops\n").encode())
    headers = {"Authorization": f"Bearer {key}", "Content-Encoding": "gzip"}
    with serve_app(create_app(settings, control, storage)) as url:
        for dataset in ("web", "plain"):
            response = httpx.post(f"{url}/acme/{dataset}", content=body, headers=headers)
            assert response.status_code == 200, response.text

    intake = encryption_of(s3, f"intake-{suffix}")
    assert len(intake) == 2 and set(intake.values()) == {"AES256"}
    run_piper_cycle(settings, control, storage)
    staged = encryption_of(s3, f"piper-{suffix}")
    assert {k.rsplit(".", 1)[-1] for k in staged} == {"parquet", "ndjson"}  # + dead letters
    assert len(staged) == 4 and set(staged.values()) == {"AES256"}
    run_packer_cycle(settings, control, storage)
    ledger = encryption_of(s3, f"piper-{suffix}", "_packed/")
    assert len(ledger) == 2 and set(ledger.values()) == {"AES256"}
    written = encryption_of(s3, f"dest-{suffix}")
    assert {k.rsplit(".", 1)[-1] for k in written} == {"parquet", "gz"}  # + the raw copy
    assert set(written.values()) == {"AES256"}
    plain = encryption_of(s3, f"own-{suffix}")
    assert plain and set(plain.values()) == {None}

    # A file streamed in parts (a multipart upload) asks for it too.
    pending = storage.piper.open_write("acme/web/large.bin")
    pending.file.write(b"x" * (9 * 1024 * 1024))
    pending.commit()
    assert encryption_of(s3, f"piper-{suffix}", "acme/web/large")["acme/web/large.bin"] == "AES256"

    # The dataset's own encryption, the other way round: asked for where the stack asks none.
    bare = s3_settings(tmp_path / "bare", s3_server, suffix)
    store = Storage(bare).destination(own.url, own.options, server_side_encryption="AES256")
    store.put("probe/one", b"x")
    assert encryption_of(s3, f"own-{suffix}", "plain/probe/") == {"plain/probe/one": "AES256"}


def test_the_destination_check_probes_with_the_destinations_encryption(
    tmp_path: Path, s3_server: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bucket whose policy refuses unencrypted writes would fail a probe that did not ask for
    the encryption packer asks for: the probe asks for the same."""
    suffix = uuid.uuid4().hex[:8]
    settings = s3_settings(tmp_path, s3_server, suffix)
    s3 = s3_client(s3_server)
    s3.create_bucket(Bucket=f"dest-{suffix}")
    storage = Storage(settings)
    asked: list[dict[str, Any]] = []
    original = Storage.destination

    def spy(self: Storage, url: str, options: Any = None, **kwargs: Any) -> Any:
        store = original(self, url, options, **kwargs)
        asked.append(dict(store.fs.s3_additional_kwargs))
        return store

    monkeypatch.setattr(Storage, "destination", spy)
    storage.check_destination(f"s3://dest-{suffix}/x", {}, server_side_encryption="AES256")
    assert asked == [{"ServerSideEncryption": "AES256"}]


def test_encryption_options_compose(tmp_path: Path) -> None:
    """The stack's setting reaches s3fs for the buckets; a destination's own replaces it, also
    within options that ask for something else, and keeps their other extra arguments."""
    stack = s3_options(S3Settings(server_side_encryption="aws:kms", kms_key_id="alias/stack"))
    assert stack["s3_additional_kwargs"] == {
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": "alias/stack",
    }
    assert "s3_additional_kwargs" not in s3_options(S3Settings())
    settings = s3_settings(
        tmp_path,
        {"endpoint": "http://127.0.0.1:1", "access_key": "a", "secret_key": "b"},
        "x",
        server_side_encryption="AES256",
    )
    storage = Storage(settings)
    kept = storage.destination("s3://b/p")
    assert kept.fs.s3_additional_kwargs == {"ServerSideEncryption": "AES256"}
    own = storage.destination(
        "s3://b/p", server_side_encryption="aws:kms", kms_key_id="alias/tenant"
    )
    assert own.fs.s3_additional_kwargs == {
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": "alias/tenant",
    }
    given = {"key": "k", "s3_additional_kwargs": {"ServerSideEncryption": "AES256", "ACL": "x"}}
    none = storage.destination("s3://b/p", given, server_side_encryption="")
    assert none.fs.s3_additional_kwargs == {"ACL": "x"}
    as_given = storage.destination("s3://b/p", given)
    assert as_given.fs.s3_additional_kwargs == {"ServerSideEncryption": "AES256", "ACL": "x"}


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"url": "file:///data/out", "server_side_encryption": "AES256"}, "s3:// destinations"),
        ({"url": "s3://b/p", "kms_key_id": "alias/x"}, "KMS key id is used with"),
        (
            {"url": "s3://b/p", "server_side_encryption": "AES256", "kms_key_id": "alias/x"},
            "not 'AES256'",
        ),
        ({"url": "s3://b/p", "server_side_encryption": "aes"}, "Input should be"),
    ],
)
def test_encryption_a_destination_cannot_have_is_refused(
    fields: dict[str, str], reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        Destination.model_validate(fields)
