"""Fencing: a worker whose lease expired and was taken over writes and deletes nothing."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

from bytefreezer.control import ControlStore
from bytefreezer.control.models import DatasetSpec, Tenant
from bytefreezer.ingress.receiver import IntakeWriter
from bytefreezer.keys import IntakeKey, piper_lease_name
from bytefreezer.pipelines.packer import run_packer_cycle
from bytefreezer.pipelines.piper import PiperWork, _ProcessIntakeFn, run_piper_cycle
from bytefreezer.storage import Storage
from tests.conftest import fast_settings
from tests.helpers import read_parquet_dir


def test_a_paused_piper_cannot_commit_over_the_new_owner(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path / "data", piper={"lease_ttl_seconds": 0.5})
    storage = Storage(settings)
    storage.ensure_buckets()
    control = ControlStore(settings.control_db_path(), destination_for=settings.destination_for)
    control.create_tenant(Tenant(name="acme"))
    dataset = control.create_dataset("acme", DatasetSpec(name="web"))
    body = gzip.compress(b"\n".join(json.dumps({"id": i}).encode() for i in range(10)))
    key = IntakeWriter(storage).write("acme", "web", "ndjson", body, {})

    (stale,) = control.acquire_leases([piper_lease_name(key.key)], "paused-worker", 0.5)
    time.sleep(0.6)  # the worker is paused past its lease; another takes the object over
    assert run_piper_cycle(settings, control, storage).claimed == 1
    run_packer_cycle(settings, control, storage)
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
