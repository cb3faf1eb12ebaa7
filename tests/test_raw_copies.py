"""``keep_raw``: every intake object of the dataset is kept as received at its destination under
``_raw/date=YYYY-MM-DD/``, written before the intake copy is deleted, once whatever crashes, and
invisible to the readers of the dataset's Parquet."""

from __future__ import annotations

import gzip
import json
import time
import uuid
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from bytefreezer.control.models import DatasetSpec, Destination
from bytefreezer.ingress.receiver import IntakeWriter
from bytefreezer.keys import IntakeKey
from bytefreezer.pipelines.packer import run_packer_cycle
from bytefreezer.pipelines.piper import expire_raw_copies, run_piper_cycle
from bytefreezer.storage import ObjectStore
from tests.conftest import file_or_s3_storage
from tests.e2e.test_recovery import (
    TTL,
    crash_on_intake_delete,
    crash_without_releasing,
    setup_stack,
)
from tests.helpers import s3_client


def body(ids: range) -> bytes:
    lines = [json.dumps({"id": i, "timestamp": "2026-02-01T10:00:00Z"}) for i in ids]
    return gzip.compress("\n".join(lines).encode())


def raw_copies(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "_raw").rglob("*.gz"))}


def parquet_ids(root: Path) -> Counter[int]:
    # As a reader of the dataset would: the raw copies beside the Parquet are not picked up.
    rows = duckdb.sql(
        f"SELECT id FROM read_parquet('{root}/**/*.parquet', hive_partitioning = true)"
    ).fetchall()
    return Counter(r[0] for r in rows)


def test_intake_objects_are_kept_as_received_beside_the_parquet(tmp_path: Path) -> None:
    settings, control, storage = setup_stack(tmp_path)
    control.create_dataset("acme", DatasetSpec(name="kept", keep_raw=True))
    writer = IntakeWriter(storage)
    sent = {}
    for start in (0, 50):
        sent[start] = body(range(start, start + 50))
        writer.write("acme", "kept", "ndjson", sent[start], {})
        writer.write("acme", "web", "ndjson", body(range(start, start + 50)), {})
    intake = {o.key: storage.intake.get(o.key) for o in storage.intake.list("acme/kept/")}
    run_piper_cycle(settings, control, storage)
    run_packer_cycle(settings, control, storage)

    root = settings.data_dir / "destination" / "acme" / "kept"
    assert parquet_ids(root) == Counter(range(100))
    copies = raw_copies(root)
    expected = {}
    for key, data in intake.items():
        received = IntakeKey.parse(key)
        day = time.strftime("%Y-%m-%d", time.gmtime(received.unixnano // 10**9))
        expected[f"_raw/date={day}/{received.stem}.gz"] = data
    assert copies == expected
    assert sorted(gzip.decompress(d) for d in copies.values()) == sorted(
        gzip.decompress(d) for d in sent.values()
    )
    # A dataset without keep_raw keeps nothing.
    web = settings.data_dir / "destination" / "acme" / "web"
    assert parquet_ids(web) == Counter(range(100)) and not (web / "_raw").exists()


def test_a_crash_after_the_copy_leaves_one_copy_and_each_record_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, control, storage = setup_stack(tmp_path)
    control.create_dataset("acme", DatasetSpec(name="kept", keep_raw=True))
    IntakeWriter(storage).write("acme", "kept", "ndjson", body(range(30)), {})
    with monkeypatch.context() as patch:
        crash_on_intake_delete(patch)
        crash_without_releasing(patch)
        with pytest.raises(BaseException, match="injected crash"):
            run_piper_cycle(settings, control, storage)
    root = settings.data_dir / "destination" / "acme" / "kept"
    first = raw_copies(root)
    assert len(first) == 1 and storage.intake.list("acme/kept/")
    time.sleep(TTL + 0.1)
    run_piper_cycle(settings, control, storage)
    run_packer_cycle(settings, control, storage)
    assert raw_copies(root) == first
    assert parquet_ids(root) == Counter(range(30))


def test_a_destination_refusing_the_copy_keeps_the_object_waiting(tmp_path: Path) -> None:
    settings, control, storage = setup_stack(tmp_path)
    (tmp_path / "blocker").write_text("a file where a directory should be")
    blocked = Destination(url=f"file://{tmp_path}/blocker/out")
    control.create_dataset("acme", DatasetSpec(name="kept", keep_raw=True, destination=blocked))
    writer = IntakeWriter(storage)
    writer.write("acme", "kept", "ndjson", body(range(10)), {})
    writer.write("acme", "web", "ndjson", body(range(10)), {})
    stats = run_piper_cycle(settings, control, storage)
    assert stats.counters.get("errors:raw_copy") == 1
    assert [o.key.split("/")[1] for o in storage.intake.list("acme/")] == ["kept"]
    assert not storage.piper.list("acme/kept/")  # nothing staged while the copy waits
    (status,) = [s for s in control.get_dataset_status("acme", "kept") if s.stage == "piper"]
    assert status.state == "failing" and "blocker" in status.error

    fixed = tmp_path / "fixed"
    spec = DatasetSpec(name="kept", keep_raw=True, destination=Destination(url=f"file://{fixed}"))
    control.put_dataset("acme", spec)
    run_piper_cycle(settings, control, storage)
    run_packer_cycle(settings, control, storage)
    assert not storage.intake.list("acme/")
    assert len(raw_copies(fixed)) == 1 and parquet_ids(fixed) == Counter(range(10))


@pytest.mark.s3
def test_raw_copies_on_an_s3_destination(tmp_path: Path, s3_server: dict[str, str]) -> None:
    bucket = f"raw-{uuid.uuid4().hex[:10]}"
    s3 = s3_client(s3_server)
    s3.create_bucket(Bucket=bucket)
    options = {
        "endpoint_url": s3_server["endpoint"],
        "key": s3_server["access_key"],
        "secret": s3_server["secret_key"],
    }
    settings, control, storage = setup_stack(tmp_path)
    destination = Destination(url=f"s3://{bucket}/lake", options=options)
    control.create_dataset("acme", DatasetSpec(name="kept", keep_raw=True, destination=destination))
    sent = body(range(20))
    IntakeWriter(storage).write("acme", "kept", "ndjson", sent, {})
    (received,) = [storage.intake.get(o.key) for o in storage.intake.list("acme/kept/")]
    run_piper_cycle(settings, control, storage)
    run_packer_cycle(settings, control, storage)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    raw = [k for k in keys if k.startswith("lake/_raw/date=")]
    assert len(raw) == 1 and all(k.endswith(".parquet") for k in keys if k not in raw)
    copy = s3.get_object(Bucket=bucket, Key=raw[0])["Body"].read()
    assert copy == received and gzip.decompress(copy) == gzip.decompress(sent)
    assert not storage.intake.list("acme/")


RAW = {
    "_raw/date=2026-01-01/a.gz": "old",
    "_raw/date=2026-01-09/b.gz": "old",
    "_raw/date=2026-01-10/c.gz": "old",  # ended 9 days and an hour before Jan 20, 01:00
    "_raw/date=2026-01-11/f.gz": "kept",  # ended 8 days and an hour before
    "_raw/date=2026-01-20/d.gz": "kept",
    "_raw/notes.txt": "kept",  # not a day's folder: never deleted
    "year=2026/month=01/e.parquet": "kept",
}


@pytest.fixture(params=["file", "s3"])
def raw_store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    store = file_or_s3_storage(request, tmp_path).piper  # any store: a destination is one
    for key in RAW:
        store.put(key, b"x")
    return store


def test_raw_copies_past_their_days_are_deleted_and_nothing_else(raw_store: ObjectStore) -> None:
    jan_20 = 1_768_867_200.0 + 3600  # 2026-01-20T01:00Z
    assert expire_raw_copies(raw_store, 9, now=jan_20) == 3
    kept = sorted(k for k, v in RAW.items() if v == "kept")
    assert sorted(o.key for o in raw_store.list()) == kept
    assert expire_raw_copies(raw_store, 9, now=jan_20) == 0


def test_piper_expires_a_datasets_raw_copies_with_keep_raw_days(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bytefreezer.pipelines import piper

    settings, control, storage = setup_stack(tmp_path)
    control.create_dataset("acme", DatasetSpec(name="kept", keep_raw=True, keep_raw_days=3))
    control.create_dataset("acme", DatasetSpec(name="forever", keep_raw=True))
    roots = {}
    for name in ("kept", "forever"):
        dataset = control.get_dataset("acme", name)
        roots[name] = storage.destination(**dataset.destination.model_dump())  # type: ignore[union-attr]
        roots[name].put("_raw/date=2020-01-01/old.gz", b"x")
    monkeypatch.setattr(piper, "_SWEPT", {})
    IntakeWriter(storage).write("acme", "kept", "ndjson", body(range(5)), {})
    run_piper_cycle(settings, control, storage)
    kept = sorted(o.key for o in roots["kept"].list("_raw/"))
    assert len(kept) == 1 and kept[0].startswith("_raw/date=20")  # today's copy, not 2020's
    assert [o.key for o in roots["forever"].list("_raw/")] == ["_raw/date=2020-01-01/old.gz"]
