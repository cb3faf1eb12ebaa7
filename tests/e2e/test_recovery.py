"""Crashes at the commit points of piper and packer, then a restart: every record exactly once."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from bytefreezer.control import ControlStore
from bytefreezer.control.models import DatasetSpec, ParquetOptions, Tenant
from bytefreezer.ingress.receiver import IntakeWriter
from bytefreezer.pipelines.packer import run_packer_cycle
from bytefreezer.pipelines.piper import run_piper_cycle
from bytefreezer.settings import Settings
from bytefreezer.storage import ObjectStore, PendingObject, Storage
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


def crash_without_releasing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A crashed process releases nothing: its leases must expire."""
    monkeypatch.setattr(ControlStore, "release_leases", lambda self, leases: None)


def test_piper_crash_between_staged_write_and_delete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, control, storage = setup_stack(tmp_path)
    post(storage, range(0, 50))
    post(storage, range(50, 100))
    original_delete = ObjectStore.delete

    def crash_on_intake_delete(self: ObjectStore, key: str) -> None:
        if key.endswith(".gz") and self.root.endswith("/intake"):
            raise InjectedCrash(f"injected crash at {key}")
        original_delete(self, key)

    with monkeypatch.context() as patch:
        patch.setattr(ObjectStore, "delete", crash_on_intake_delete)
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


@pytest.mark.parametrize("crash_point", ["after_upload", "mid_upload"])
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
            self.abort()
            raise InjectedCrash(f"injected crash at {self.key}")
        return original_commit(self)

    def crash_before_delete(self: ObjectStore, keys: list[str]) -> None:
        raise InjectedCrash("injected crash before deleting inputs")

    with monkeypatch.context() as patch:
        crash_without_releasing(patch)
        if crash_point == "mid_upload":
            patch.setattr(PendingObject, "commit", crash_mid_upload)
        else:
            patch.setattr(ObjectStore, "delete_many", crash_before_delete)
        with pytest.raises(BaseException, match="injected crash"):
            run_packer_cycle(settings, control, storage)
    manifests = storage.piper.list("_manifests/acme/web/")
    assert len(manifests) == 1
    state = json.loads(storage.piper.get(manifests[0].key))["state"]
    assert state == ("uploaded" if crash_point == "after_upload" else "planned")

    time.sleep(TTL + 0.1)
    stats = run_packer_cycle(settings, control, storage)
    assert stats.counters.get("manifests_recovered") == 1
    assert ids_at_destination(settings) == Counter(range(300))
    assert not storage.piper.list("_manifests/")
    assert not [o for o in storage.piper.list("acme/") if o.key.endswith(".parquet")]
