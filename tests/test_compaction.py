"""Compaction of a dataset's closed partitions: small files merged into few, every row kept once
through crashes at each step, packer's work left alone, on local files and on S3."""

from __future__ import annotations

import gzip
import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bytefreezer.cli import main
from bytefreezer.control import ControlStore
from bytefreezer.control.models import DatasetSpec, Tenant
from bytefreezer.errors import Conflict
from bytefreezer.ingress.receiver import IntakeWriter
from bytefreezer.keys import compaction_prefix, manifest_key, packer_lease_name
from bytefreezer.pipelines import compaction
from bytefreezer.pipelines.compaction import compact_dataset, plan_merges
from bytefreezer.pipelines.packer import run_packer_cycle
from bytefreezer.pipelines.piper import run_piper_cycle
from bytefreezer.settings import Settings
from bytefreezer.storage import ObjectInfo, ObjectStore, Storage
from tests.e2e.test_recovery import setup_stack
from tests.e2e.test_s3 import s3_settings


class InjectedCrash(Exception):
    pass


def pack_rounds(settings: Settings, control: Any, storage: Storage, rounds: int) -> None:
    """``rounds`` packer runs, each of 40 events over two hours (a partition each): every
    partition gets a small file per round. One round's `extra` field is text, another's a
    number: files whose schemas differ."""
    writer = IntakeWriter(storage)
    for r in range(rounds):
        lines = []
        for n in range(40):
            event: dict[str, Any] = {
                "id": r * 1000 + n,
                "timestamp": f"2026-03-01T0{n % 2}:{n:02d}:00Z",
                "user": {"name": f"u{n % 7}", "round": r},
            }
            if r == 1:
                event["extra"] = "text"
            if r == 2:
                event["extra"] = n
            lines.append(json.dumps(event))
        writer.write("acme", "web", "ndjson", gzip.compress("\n".join(lines).encode()), {})
        run_piper_cycle(settings, control, storage)
        run_packer_cycle(settings, control, storage)


def destination(storage: Storage, control: Any) -> ObjectStore:
    return storage.destination(**control.get_dataset("acme", "web").destination.model_dump())


def files(dest: ObjectStore) -> dict[str, int]:
    """Parquet files per partition."""
    return dict(
        Counter(i.key.rpartition("/")[0] for i in dest.list() if i.key.endswith(".parquet"))
    )


def rows(dest: ObjectStore) -> list[dict[str, Any]]:
    out = []
    for info in dest.list():
        if info.key.endswith(".parquet"):
            table = pq.read_table(pa.BufferReader(dest.get(info.key)))
            out.extend(table.to_pylist())
    return sorted(out, key=lambda r: r["id"])


def compact(settings: Settings, control: Any, storage: Storage, **kwargs: Any) -> Any:
    return compact_dataset(
        settings, control, storage, control.get_dataset("acme", "web"), min_age_seconds=0, **kwargs
    )


def test_small_files_of_a_partition_become_one_with_every_row_and_value(tmp_path: Path) -> None:
    settings, control, storage = setup_stack(tmp_path)
    pack_rounds(settings, control, storage, 5)
    dest = destination(storage, control)
    before = rows(dest)
    assert sorted(files(dest).values()) == [5, 5]
    report = compact(settings, control, storage)
    assert (report.partitions, report.files_in, report.files_out, report.rows) == (2, 10, 2, 200)
    assert sorted(files(dest).values()) == [1, 1]
    after = rows(dest)
    # every row and value as before; `extra` (text in one round, numbers in another) unified
    assert [r["id"] for r in after] == [r["id"] for r in before]
    for old, new in zip(before, after, strict=True):
        assert {k: v for k, v in new.items() if k != "extra"} == {
            k: v for k, v in old.items() if k != "extra"
        }
        assert (old.get("extra") is None) == (new["extra"] is None)
        if old.get("extra") is not None:
            assert str(new["extra"]) == str(old["extra"])
    assert storage.piper.list(compaction_prefix("acme", "web")) == []
    # nothing more to do: one file per partition
    again = compact(settings, control, storage)
    assert (again.files_in, again.files_out) == (0, 0)
    # the lease is given back: packer packs the dataset again
    pack_rounds(settings, control, storage, 1)
    assert sorted(files(dest).values()) == [2, 2]


def test_open_partitions_are_left_and_a_dry_run_changes_nothing(tmp_path: Path) -> None:
    settings, control, storage = setup_stack(tmp_path)
    pack_rounds(settings, control, storage, 3)
    dest = destination(storage, control)
    recent = compact_dataset(settings, control, storage, control.get_dataset("acme", "web"))
    assert recent.files_in == 0  # files written a moment ago: partitions still open
    dry = compact(settings, control, storage, dry_run=True)
    assert dry.files_in == 6 and dry.files_out == 0 and len(dry.merges) == 2
    assert sorted(files(dest).values()) == [3, 3]


def test_plan_groups_small_files_up_to_the_limit() -> None:
    mb = 1024 * 1024
    listed = [
        ObjectInfo("p=1/a.parquet", 300_000, 0.0),
        ObjectInfo("p=1/b.parquet", 300_000, 0.0),
        ObjectInfo("p=1/c.parquet", 300_000, 0.0),
        ObjectInfo("p=1/d.parquet", 300_000, 0.0),
        ObjectInfo("p=1/big.parquet", 900_000, 0.0),  # over half the limit: left alone
        ObjectInfo("p=2/a.parquet", 100, 0.0),  # alone in its partition
        ObjectInfo("p=3/a.parquet", 100, 0.0),
        ObjectInfo("p=3/b.parquet", 100, 99.0),  # changed 1 s ago: p=3 is open
        ObjectInfo("_raw/x.parquet", 100, 0.0),
        ObjectInfo("_raw/y.parquet", 100, 0.0),
        ObjectInfo("p=4/.tmp-a.parquet", 100, 0.0),
        ObjectInfo("p=4/b.parquet", 100, 0.0),
    ]
    merges = plan_merges(listed, mb, now=100.0, min_age=10.0)
    assert [(m.partition, m.inputs) for m in merges] == [
        ("p=1", ["p=1/a.parquet", "p=1/b.parquet", "p=1/c.parquet"]),
    ]  # the fourth file would pass 90% of the limit and is alone in the next group


@pytest.mark.parametrize(
    "crash_at", ["manifest planned", "output written", "inputs deleted", "manifest deleted"]
)
def test_a_crash_at_any_step_then_another_run_keeps_each_row_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at: str
) -> None:
    settings, control, storage = setup_stack(tmp_path)
    pack_rounds(settings, control, storage, 3)
    dest = destination(storage, control)
    expected = [r["id"] for r in rows(dest)]
    original_put, original_delete = ObjectStore.put, ObjectStore.delete_many
    original_open = ObjectStore.open_write

    def open_write(self: ObjectStore, key: str, **kwargs: Any) -> Any:
        if crash_at == "manifest planned":
            raise InjectedCrash("after the manifest, before the merged file")
        return original_open(self, key, **kwargs)

    def put(self: ObjectStore, key: str, data: bytes, metadata: Any = None) -> None:
        if crash_at == "output written" and b'"written"' in data:
            raise InjectedCrash("after the merged file, before its manifest says so")
        original_put(self, key, data, metadata)

    def delete_many(self: ObjectStore, keys: Any) -> None:
        keys = list(keys)
        if crash_at == "inputs deleted" and keys[0].endswith(".parquet"):
            raise InjectedCrash("after the manifest says written, before the inputs go")
        original_delete(self, keys)
        if crash_at == "manifest deleted" and keys[0].endswith(".parquet"):
            raise InjectedCrash("after the inputs went, before the manifest")

    with monkeypatch.context() as patched:
        patched.setattr(ObjectStore, "put", put)
        patched.setattr(ObjectStore, "delete_many", delete_many)
        patched.setattr(ObjectStore, "open_write", open_write)
        with pytest.raises(InjectedCrash):
            compact(settings, control, storage)
    report = compact(settings, control, storage)
    assert report.recovered == 1
    assert [r["id"] for r in rows(dest)] == expected
    assert sorted(files(dest).values()) == [1, 1]
    assert storage.piper.list(compaction_prefix("acme", "web")) == []


def test_packer_at_work_is_left_alone(tmp_path: Path) -> None:
    settings, control, storage = setup_stack(tmp_path)
    pack_rounds(settings, control, storage, 2)
    held = control.acquire_leases([packer_lease_name("acme", "web")], "packer-1", 60.0)
    with pytest.raises(Conflict, match="packer is packing acme/web"):
        compact(settings, control, storage)
    control.release_leases(held)
    storage.piper.put(manifest_key("acme", "web", "run1"), b"{}")  # a run packer must finish
    with pytest.raises(Conflict, match="unfinished run"):
        compact(settings, control, storage)
    storage.piper.delete_many([manifest_key("acme", "web", "run1")])
    assert compact(settings, control, storage).files_out == 2  # the lease was given back


def test_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings, control, storage = setup_stack(tmp_path)
    pack_rounds(settings, control, storage, 2)
    data = ["--data-dir", str(settings.data_dir)]
    main(["datasets", "compact", "acme", "web", "--dry-run", "--min-age-minutes", "0", *data])
    assert json.loads(capsys.readouterr().out)["files_in"] == 4
    main(["datasets", "compact", "acme", "web", "--min-age-minutes", "0", *data])
    report = json.loads(capsys.readouterr().out)
    assert (report["files_in"], report["files_out"], report["rows"]) == (4, 2, 80)


@pytest.mark.s3
def test_compaction_on_s3(tmp_path: Path, s3_server: dict[str, str]) -> None:
    settings = s3_settings(tmp_path, s3_server, uuid.uuid4().hex[:8])
    storage = Storage(settings)
    storage.ensure_buckets()
    control = ControlStore(settings.control_db_path(), destination_for=settings.destination_for)
    control.create_tenant(Tenant(name="acme"))
    control.create_dataset("acme", DatasetSpec(name="web"))
    pack_rounds(settings, control, storage, 3)
    dest = destination(storage, control)
    expected = [r["id"] for r in rows(dest)]
    report = compact(settings, control, storage)
    assert (report.files_in, report.files_out) == (6, 2)
    assert [r["id"] for r in rows(dest)] == expected
    assert sorted(files(dest).values()) == [1, 1]


def test_packer_compacts_the_datasets_that_ask_for_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, control, storage = setup_stack(tmp_path)
    control.create_dataset("acme", DatasetSpec(name="other"))
    data = ["--data-dir", str(settings.data_dir)]
    main(["datasets", "update", "acme", "web", "--compact-after-minutes", "0.01", *data])
    capsys.readouterr()
    assert control.get_dataset("acme", "web").parquet.compact_after_minutes == 0.01
    settings = settings.model_copy(
        update={"packer": settings.packer.model_copy(update={"compaction_check_seconds": 3600})}
    )
    dest = destination(storage, control)
    # the first cycle's check finds one file a partition (nothing to merge), and the next
    # check is an hour away: the second round's files wait for it
    pack_rounds(settings, control, storage, 2)
    time.sleep(0.7)
    compaction._NEXT_CHECK.clear()  # the hour has passed
    run_packer_cycle(settings, control, storage)
    assert sorted(files(dest).values()) == [1, 1]
    assert len(rows(dest)) == 80
    # a dataset that does not ask is left as it is (other has no data: nothing to list)
    main(["datasets", "update", "acme", "web", "--compact-after-minutes", "0", *data])
    capsys.readouterr()
    assert control.get_dataset("acme", "web").parquet.compact_after_minutes is None
    pack_rounds(settings, control, storage, 2)
    compaction._NEXT_CHECK.clear()
    time.sleep(0.7)
    run_packer_cycle(settings, control, storage)
    assert sorted(files(dest).values()) == [3, 3]
