"""Crashes at the commit points of piper and packer, then a restart: every record exactly once."""

from __future__ import annotations

import gzip
import json
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bytefreezer.control import ControlStore
from bytefreezer.control.models import DatasetSpec, ParquetOptions, Tenant
from bytefreezer.errors import StorageError
from bytefreezer.ingress.receiver import IntakeWriter
from bytefreezer.pipelines.packer import run_packer_cycle
from bytefreezer.pipelines.piper import run_piper_cycle
from bytefreezer.settings import Settings
from bytefreezer.storage import _TMP_MARK as TMP_MARK
from bytefreezer.storage import ObjectStore, PendingObject, Storage
from bytefreezer.storage import _LocalPending as LocalPending
from tests.conftest import fast_settings
from tests.helpers import read_parquet_dir


class InjectedCrash(BaseException):
    """Stands for the process dying at this exact point: not an Exception (as SystemExit is not),
    so that no handler that lets one dataset's failure spare the others takes it for one."""


# Long enough that a loaded machine finishes a cycle inside it, short enough to wait out.
TTL = 2.0


def setup_stack(tmp_path: Path, ttl: float = TTL) -> tuple[Settings, ControlStore, Storage]:
    settings = fast_settings(
        tmp_path / "data",
        piper={"lease_ttl_seconds": ttl},
        packer={"lease_ttl_seconds": ttl},
    )
    storage = Storage(settings)
    storage.ensure_buckets()
    control = ControlStore(settings.control_db_path(), destination_for=settings.destination_for)
    control.create_tenant(Tenant(name="acme"))
    control.create_dataset(
        "acme", DatasetSpec(name="web", parquet=ParquetOptions(max_file_size_mb=1))
    )
    return settings, control, storage


def post(storage: Storage, ids: range) -> None:
    lines = [
        json.dumps({"id": i, "timestamp": f"2026-02-0{1 + i % 3}T0{i % 5}:00:00Z"}) for i in ids
    ]
    IntakeWriter(storage).write(
        "acme", "web", "ndjson", gzip.compress("\n".join(lines).encode()), {}
    )


def ids_at_destination(settings: Settings) -> Counter[int]:
    table = read_parquet_dir(settings.data_dir / "destination" / "acme" / "web")
    return Counter(table.column("id").to_pylist()) if table is not None else Counter()


def crash_on_intake_delete(monkeypatch: pytest.MonkeyPatch) -> None:
    """Piper dies after writing an object's outputs, before deleting the intake object."""
    original_delete = ObjectStore.delete

    def delete(self: ObjectStore, key: str) -> None:
        if key.endswith(".gz") and self.root.endswith("/intake"):
            raise InjectedCrash(f"injected crash at {key}")
        original_delete(self, key)

    monkeypatch.setattr(ObjectStore, "delete", delete)


def crash_without_releasing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A crashed process releases nothing: its leases must expire."""
    monkeypatch.setattr(ControlStore, "release_leases", lambda self, leases: None)


def test_piper_crash_between_staged_write_and_delete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, control, storage = setup_stack(tmp_path)
    post(storage, range(0, 50))
    post(storage, range(50, 100))
    with monkeypatch.context() as patch:
        crash_on_intake_delete(patch)
        crash_without_releasing(patch)
        with pytest.raises(BaseException, match="injected crash"):
            run_piper_cycle(settings, control, storage)
    staged = [o for o in storage.piper.list("acme/web/") if o.key.endswith(".parquet")]
    assert staged, "the crash happened after the staged write"
    assert len(storage.intake.list("acme/")) == 2

    # Packer must not take staged objects whose intake object is still there.
    run_packer_cycle(settings, control, storage)
    assert ids_at_destination(settings) == Counter()

    # Restart: nothing is claimable until the dead worker's leases expire.
    assert run_piper_cycle(settings, control, storage).claimed == 0
    time.sleep(TTL + 0.1)
    assert run_piper_cycle(settings, control, storage).claimed == 2
    run_packer_cycle(settings, control, storage)
    assert ids_at_destination(settings) == Counter(range(100))


@pytest.mark.parametrize(
    "crash_point",
    [
        "after_upload",
        "mid_upload",
        "mid_upload_then_moved",
        "killed_mid_upload",
        "mid_delete",
        "uploaded_by_earlier_version",
    ],
)
def test_packer_crash_then_manifest_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_point: str
) -> None:
    settings, control, storage = setup_stack(tmp_path)
    for start in range(0, 300, 50):
        post(storage, range(start, start + 50))
    run_piper_cycle(settings, control, storage)
    commits: list[str] = []
    original_commit = PendingObject.commit
    lock = threading.Lock()

    def crash_mid_upload(self: PendingObject) -> int:
        with lock:  # output files are committed several at a time
            commits.append(self.key)
            crash = len(commits) == 3
        if crash:
            self.abort()  # killed: a no-op, the temporary files stay
            raise InjectedCrash(f"injected crash at {self.key}")
        return original_commit(self)

    def crash_before_delete(self: ObjectStore, keys: list[str]) -> None:
        raise InjectedCrash("injected crash before deleting inputs")

    original_delete = ObjectStore.delete

    def crash_mid_delete(self: ObjectStore, key: str) -> None:
        # After the ledger entry, some inputs are gone: a replay that packed the run again
        # from its inputs would lose their rows.
        if key.endswith(".parquet") and len(deleted) == 2:
            raise InjectedCrash(f"injected crash before deleting {key}")
        deleted.append(key)
        original_delete(self, key)

    deleted: list[str] = []

    with monkeypatch.context() as patch:
        crash_without_releasing(patch)
        if crash_point in ("mid_upload", "mid_upload_then_moved", "killed_mid_upload"):
            patch.setattr(PendingObject, "commit", crash_mid_upload)
        if crash_point == "killed_mid_upload":  # a killed process cleans nothing up
            patch.setattr(LocalPending, "abort", lambda self: None)
        elif crash_point == "mid_delete":
            patch.setattr(ObjectStore, "delete", crash_mid_delete)
        else:
            patch.setattr(ObjectStore, "delete_many", crash_before_delete)
        with pytest.raises(BaseException, match="injected crash"):
            run_packer_cycle(settings, control, storage)
    manifests = storage.piper.list("_manifests/acme/web/")
    assert len(manifests) == 1
    manifest = json.loads(storage.piper.get(manifests[0].key))
    assert manifest["state"] == "planned"
    assert manifest["destination"] == {"url": control.get_dataset("acme", "web").destination.url}
    # The run's ledger entry is its commit point: written once its files are final.
    ledger = storage.piper.list("_packed/acme/web/")
    assert [o.key.rsplit("/", 1)[1] for o in ledger] == (
        [] if "mid_upload" in crash_point else [f"{manifest['run_id']}.json"]
    )
    destination = settings.data_dir / "destination" / "acme" / "web"
    leftovers = list(destination.rglob(f"{TMP_MARK}*"))
    assert bool(leftovers) == (crash_point == "killed_mid_upload")
    if crash_point == "mid_delete":
        assert len(deleted) == 2  # two inputs gone before the crash
    if crash_point == "uploaded_by_earlier_version":
        # Earlier versions marked the manifest uploaded, then wrote the ledger entry.
        storage.piper.delete(ledger[0].key)
        manifest["state"] = "uploaded"
        storage.piper.put(manifests[0].key, json.dumps(manifest).encode())

    moved = tmp_path / "moved"
    if crash_point == "mid_upload_then_moved":
        # The dataset gets a new destination before the replay: the run is written there, and
        # the files the crashed run committed at the old one are removed.
        assert list(destination.rglob("*.parquet"))
        spec = control.get_dataset("acme", "web").model_dump(exclude={"tenant"})
        spec["destination"] = {"url": f"file://{moved}"}
        control.put_dataset("acme", DatasetSpec.model_validate(spec))

    time.sleep(TTL + 0.1)
    stats = run_packer_cycle(settings, control, storage)
    assert stats.counters.get("manifests_recovered") == 1
    if crash_point == "mid_upload_then_moved":
        assert not list(destination.rglob("*.parquet"))
        table = read_parquet_dir(moved)
        assert table is not None and Counter(table.column("id").to_pylist()) == Counter(range(300))
    else:
        assert ids_at_destination(settings) == Counter(range(300))
    assert not storage.piper.list("_manifests/")
    assert not [o for o in storage.piper.list("acme/") if o.key.endswith(".parquet")]
    assert len(storage.piper.list("_packed/acme/web/")) == 1
    assert not list(destination.rglob(f"{TMP_MARK}*"))  # the killed run's partial files too


def test_packer_splits_a_backlog_into_runs_of_its_budget(tmp_path: Path) -> None:
    """A backlog larger than ``max_input_mb_per_run`` is packed in one cycle as several runs,
    each its own commit (manifest, ledger entry), every record once."""
    settings = fast_settings(tmp_path / "data", packer={"max_input_mb_per_run": 1})
    storage = Storage(settings)
    storage.ensure_buckets()
    control = ControlStore(settings.control_db_path(), destination_for=settings.destination_for)
    control.create_tenant(Tenant(name="acme"))
    control.create_dataset("acme", DatasetSpec(name="web"))
    for start in range(0, 30_000, 10_000):  # each staged object ~0.8 MB (random text)
        lines = [
            json.dumps({"id": i, "timestamp": "2026-02-01T00:00:00Z", "pad": os.urandom(64).hex()})
            for i in range(start, start + 10_000)
        ]
        IntakeWriter(storage).write(
            "acme", "web", "ndjson", gzip.compress("\n".join(lines).encode()), {}
        )
    run_piper_cycle(settings, control, storage)
    staged = [o for o in storage.piper.list("acme/") if o.key.endswith(".parquet")]
    assert len(staged) == 3 and all(o.size > 512 * 1024 for o in staged)

    run_packer_cycle(settings, control, storage)
    assert ids_at_destination(settings) == Counter(range(30_000))
    assert len(storage.piper.list("_packed/acme/web/")) == 3  # one run per staged object
    assert not [o for o in storage.piper.list("acme/") if o.key.endswith(".parquet")]


def test_packer_makes_its_files_durable_before_recording_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Output files are committed without an fsync each, then the destination is synced once,
    before the ledger entry that makes the run final (and before any input is deleted)."""
    settings, control, storage = setup_stack(tmp_path)
    for start in range(0, 300, 50):
        post(storage, range(start, start + 50))
    run_piper_cycle(settings, control, storage)
    events: list[str] = []
    lock = threading.Lock()
    commit, sync, put, delete = (
        PendingObject.commit,
        ObjectStore.sync,
        ObjectStore.put,
        ObjectStore.delete,
    )

    def note(event: str) -> None:
        with lock:
            events.append(event)

    def committed(self: PendingObject) -> int:
        note("file")
        return commit(self)

    def synced(self: ObjectStore) -> None:
        note(f"sync {self.url}")
        sync(self)

    def written(self: ObjectStore, key: str, data: bytes, metadata: Any = None) -> None:
        note(key.split("/")[0])
        if key.startswith("_manifests/"):
            time.sleep(0.3)  # a slow PUT: the files must still wait for it
        put(self, key, data, metadata)
        note(f"{key.split('/')[0]} written")

    def deleted(self: ObjectStore, key: str) -> None:
        note(f"delete {key.split('/')[0]}")
        delete(self, key)

    monkeypatch.setattr(PendingObject, "commit", committed)
    monkeypatch.setattr(ObjectStore, "sync", synced)
    monkeypatch.setattr(ObjectStore, "put", written)
    monkeypatch.setattr(ObjectStore, "delete", deleted)
    run_packer_cycle(settings, control, storage)
    assert ids_at_destination(settings) == Counter(range(300))
    files = [i for i, e in enumerate(events) if e == "file"]
    syncs = [i for i, e in enumerate(events) if e.startswith("sync")]
    assert len(syncs) == 1 and events[syncs[0]].endswith("/destination/acme/web")
    assert max(files) < syncs[0] < events.index("_packed") < events.index("delete acme")
    # The manifest that lets a replay find the files is durable before any of them appears.
    assert events.index("_manifests written") < min(files)


def test_packer_writes_no_file_when_its_manifest_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest is written while the files are encoded; when its write fails, none of the
    files appears and the inputs stay staged for the next cycle."""
    settings, control, storage = setup_stack(tmp_path)
    for start in range(0, 300, 50):
        post(storage, range(start, start + 50))
    run_piper_cycle(settings, control, storage)
    put = ObjectStore.put

    def refused(self: ObjectStore, key: str, data: bytes, metadata: Any = None) -> None:
        if key.startswith("_manifests/"):
            time.sleep(0.3)
            raise StorageError(f"cannot write {key}: injected")
        put(self, key, data, metadata)

    with monkeypatch.context() as patch:
        patch.setattr(ObjectStore, "put", refused)
        stats = run_packer_cycle(settings, control, storage)
    assert stats.counters.get("dataset_errors") == 1
    assert not list((settings.data_dir / "destination").rglob("*.parquet"))
    assert len([o for o in storage.piper.list("acme/") if o.key.endswith(".parquet")]) == 6
    run_packer_cycle(settings, control, storage)
    assert ids_at_destination(settings) == Counter(range(300))
