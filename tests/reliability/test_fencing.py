"""Fencing: a worker whose lease expired and was taken over writes and deletes nothing."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import Any

from bytefreezer.control import ControlStore
from bytefreezer.control.models import Dataset, DatasetSpec, Lease, Tenant
from bytefreezer.ingress.receiver import IntakeWriter
from bytefreezer.keys import IntakeKey, packed_prefix, piper_lease_name
from bytefreezer.pipelines.packer import LEDGER_MERGE_AT, _PackDatasetFn, run_packer_cycle
from bytefreezer.pipelines.piper import PiperWork, _ProcessIntakeFn, run_piper_cycle
from bytefreezer.settings import Settings
from bytefreezer.storage import Storage
from tests.conftest import fast_settings
from tests.helpers import read_parquet_dir


def world(tmp_path: Path, **overrides: Any) -> tuple[Settings, Storage, ControlStore, Dataset]:
    """Local storage and control with tenant acme and dataset web."""
    settings = fast_settings(tmp_path / "data", **overrides)
    storage = Storage(settings)
    storage.ensure_buckets()
    control = ControlStore(settings.control_db_path(), destination_for=settings.destination_for)
    control.create_tenant(Tenant(name="acme"))
    return settings, storage, control, control.create_dataset("acme", DatasetSpec(name="web"))


def test_a_paused_piper_cannot_commit_over_the_new_owner(tmp_path: Path) -> None:
    # Only the paused worker's lease is short; the new owner keeps the default TTL, so a slow
    # machine cannot make the new owner lose its own lease and the test lose its point.
    settings, storage, control, dataset = world(tmp_path)
    body = gzip.compress(b"\n".join(json.dumps({"id": i}).encode() for i in range(10)))
    key = IntakeWriter(storage).write("acme", "web", "ndjson", body, {})

    (stale,) = control.acquire_leases([piper_lease_name(key.key)], "paused-worker", 0.5)
    time.sleep(0.6)  # the worker is paused past its lease; another takes the object over
    taken_over = run_piper_cycle(settings, control, storage)
    assert (taken_over.claimed, taken_over.counters.get("objects_processed")) == (1, 1)
    assert run_packer_cycle(settings, control, storage).counters["staged_objects_packed"] == 1
    assert not storage.intake.exists(key.key)

    # The paused worker wakes up with the object's bytes still in hand and tries to finish.
    storage.intake.put(key.key, body)  # as if it had read them before pausing
    zombie = _ProcessIntakeFn(settings)
    zombie.setup()
    assert (
        list(zombie.process(PiperWork(key.key, dataset.model_dump_json(), stale.model_dump_json())))
        == []
    )
    assert storage.intake.exists(key.key), "a fenced-off worker must not delete"
    assert not storage.piper.exists(IntakeKey.parse(key.key).staged_key), "nor stage anything"
    table = read_parquet_dir(settings.data_dir / "destination" / "acme" / "web")
    assert table is not None and sorted(table.column("id").to_pylist()) == list(range(10))


def test_a_piper_paused_between_its_lease_check_and_its_write_is_not_packed_twice(
    tmp_path: Path,
) -> None:
    """The narrowest window: the lease is still held at the check, the worker pauses right
    after it, another piper takes the object over and packer packs the result; then the paused
    worker writes the same staged object again. Packer's ledger must discard that late copy."""
    settings, storage, control, dataset = world(tmp_path)  # the new owner keeps a long TTL
    body = gzip.compress(b"\n".join(json.dumps({"id": i}).encode() for i in range(10)))
    key = IntakeWriter(storage).write("acme", "web", "ndjson", body, {})
    staged_key = IntakeKey.parse(key.key).staged_key

    (lease,) = control.acquire_leases([piper_lease_name(key.key)], "paused-worker", 0.5)
    zombie = _ProcessIntakeFn(settings)
    zombie.setup()
    still_held = zombie._still_held
    checks: list[bool] = []

    def pause_after_first_check(held: Lease, name: str) -> bool:
        ok = bool(still_held(held, name))
        checks.append(ok)
        if len(checks) == 1:
            # Paused right after a successful check: the world moves on meanwhile.
            time.sleep(0.6)
            taken_over = run_piper_cycle(settings, control, storage)
            assert (taken_over.claimed, taken_over.counters.get("objects_processed")) == (1, 1)
            packed = run_packer_cycle(settings, control, storage)
            assert packed.counters["staged_objects_packed"] == 1
            assert not storage.piper.exists(staged_key)
        return ok

    zombie._still_held = pause_after_first_check  # type: ignore[method-assign]
    work = PiperWork(key.key, dataset.model_dump_json(), lease.model_dump_json())
    assert list(zombie.process(work)) == []
    assert checks == [True, False]
    assert storage.piper.exists(staged_key), "the late write happened (the window is real)"

    stats = run_packer_cycle(settings, control, storage)
    assert stats.counters.get("late_staged_discarded") == 1
    assert not storage.piper.exists(staged_key), "the late copy is deleted"
    table = read_parquet_dir(settings.data_dir / "destination" / "acme" / "web")
    assert table is not None and sorted(table.column("id").to_pylist()) == list(range(10))


def test_the_ledger_forgets_runs_past_its_retention(tmp_path: Path) -> None:
    settings, storage, control, _ = world(tmp_path, packer={"ledger_retention_seconds": 0.5})
    for i in range(2):
        body = gzip.compress(json.dumps({"id": i}).encode())
        IntakeWriter(storage).write("acme", "web", "ndjson", body, {})
        run_piper_cycle(settings, control, storage)
        run_packer_cycle(settings, control, storage)
        assert len(storage.piper.list(packed_prefix("acme", "web"))) == 1
        time.sleep(0.6)  # the first run's entry expires before the second run ends


def test_the_ledger_is_merged_and_still_fences_late_copies(tmp_path: Path) -> None:
    """A run every few seconds kept an hour of entries, each listed by every run: merged into
    one past ``LEDGER_MERGE_AT``, the stems they hold still discard a late copy."""
    settings, storage, control, _ = world(tmp_path)
    runs = LEDGER_MERGE_AT + 8
    first: tuple[str, bytes] | None = None
    for i in range(runs):
        body = gzip.compress(json.dumps({"id": i}).encode())
        key = IntakeWriter(storage).write("acme", "web", "ndjson", body, {})
        run_piper_cycle(settings, control, storage)
        if first is None:
            staged_key = IntakeKey.parse(key.key).staged_key
            first = (staged_key, storage.piper.get(staged_key))
        run_packer_cycle(settings, control, storage)
        assert len(storage.piper.list(packed_prefix("acme", "web"))) <= LEDGER_MERGE_AT + 1
    assert first is not None
    storage.piper.put(*first)  # the first object's staged copy, written late by a zombie
    stats = run_packer_cycle(settings, control, storage)
    assert stats.counters.get("late_staged_discarded") == 1
    table = read_parquet_dir(settings.data_dir / "destination" / "acme" / "web")
    assert table is not None and sorted(table.column("id").to_pylist()) == list(range(runs))


def test_a_merged_ledger_entry_forgets_each_stem_past_its_retention(tmp_path: Path) -> None:
    settings, storage, _, dataset = world(tmp_path, packer={"ledger_retention_seconds": 60})
    now = time.time()
    prefix = packed_prefix("acme", "web")
    merged = {"stems": ["old", "new"], "packed": {"old": now - 120, "new": now - 30}}
    storage.piper.put(f"{prefix}merged-1.json", json.dumps(merged).encode())
    for i in range(LEDGER_MERGE_AT):  # one more than the merge threshold, with the merged one
        run = {"run_id": f"r{i}", "stems": [f"run-{i}"]}
        storage.piper.put(f"{prefix}r{i}.json", json.dumps(run).encode())
    packer = _PackDatasetFn(settings)
    packer.setup()
    try:
        expected = {"new", *(f"run-{i}" for i in range(LEDGER_MERGE_AT))}
        assert packer._packed_stems(dataset) == expected
        (entry,) = storage.piper.list(prefix)  # merged into one, without the expired stem
        assert set(json.loads(storage.piper.get(entry.key))["packed"]) == expected
        assert packer._packed_stems(dataset) == expected
    finally:
        packer.teardown()
