"""Packer's write slots: at most ``packer.max_concurrent_jobs`` dataset runs of a process read
and write their files at once, while as many more list, commit and clean up meanwhile (small
datasets' runs mostly wait on storage there), and a run that fails gives its slot back."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bytefreezer.control import ControlStore
from bytefreezer.control.models import DatasetSpec, Tenant
from bytefreezer.keys import IntakeKey
from bytefreezer.pipelines import packer as packer_module
from bytefreezer.pipelines.packer import run_packer_cycle
from bytefreezer.pipelines.piper import run_piper_cycle
from bytefreezer.pipelines.runner import CycleStats
from bytefreezer.settings import Settings
from bytefreezer.storage import Storage
from tests.conftest import fast_settings
from tests.helpers import read_parquet_dir

DATASETS = [f"d{i}" for i in range(6)]


class _Gauge:
    """How many threads are inside a section at once, and the most there ever were."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.most = 0

    def wrap(self, method: Callable[..., Any], pause: float) -> Callable[..., Any]:
        def inside(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.now += 1
                self.most = max(self.most, self.now)
            try:
                time.sleep(pause)  # long enough for another run to arrive meanwhile
                return method(*args, **kwargs)
            finally:
                with self._lock:
                    self.now -= 1

        return inside


@pytest.fixture
def staged(tmp_path: Path) -> Iterator[tuple[Settings, ControlStore, Storage]]:
    """Six datasets with one small staged object each, packer at one dataset at once."""
    settings = fast_settings(tmp_path / "data", packer={"max_concurrent_jobs": 1})
    storage = Storage(settings)
    storage.ensure_buckets()
    control = ControlStore(settings.control_db_path(), destination_for=settings.destination_for)
    control.create_tenant(Tenant(name="acme"))
    for number, name in enumerate(DATASETS):
        control.create_dataset("acme", DatasetSpec(name=name))
        lines = [
            json.dumps({"id": number * 100 + i, "timestamp": "2026-03-01T10:00:00Z"})
            for i in range(50)
        ]
        key = IntakeKey("acme", name, time.time_ns(), "ndjson")
        storage.intake.put(key.key, gzip.compress("\n".join(lines).encode()), {})
    while storage.intake.list():
        run_piper_cycle(settings, control, storage)
    yield settings, control, storage
    control.close()


def _packed_ids(settings: Settings, name: str) -> Counter[int]:
    table = read_parquet_dir(settings.data_dir / "destination" / "acme" / name)
    return Counter(table.column("id").to_pylist()) if table is not None else Counter()


def _cycle(settings: Settings, control: ControlStore, storage: Storage) -> CycleStats:
    """One packer cycle on a thread of its own: a slot never given back would hang it."""
    result: list[CycleStats] = []
    thread = threading.Thread(
        target=lambda: result.append(run_packer_cycle(settings, control, storage)), daemon=True
    )
    thread.start()
    thread.join(timeout=60)
    assert result, "the packer cycle did not finish: a write slot was not given back"
    return result[0]


def test_runs_overlap_outside_their_write_slots(
    staged: tuple[Settings, ControlStore, Storage], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, control, storage = staged
    runs, writing = _Gauge(), _Gauge()
    fn = packer_module._PackDatasetFn
    monkeypatch.setattr(fn, "_pack", runs.wrap(fn._pack, 0.05))
    monkeypatch.setattr(fn, "_write_run", writing.wrap(fn._write_run, 0.05))

    stats = _cycle(settings, control, storage)

    assert stats.claimed == len(DATASETS)
    assert writing.most == 1  # max_concurrent_jobs: 1
    assert runs.most > writing.most  # the others list, commit and clean up meanwhile
    for number, name in enumerate(DATASETS):
        assert _packed_ids(settings, name) == Counter(range(number * 100, number * 100 + 50))
    assert not [o for o in storage.piper.list() if o.key.endswith(".parquet")]


def test_a_failed_run_gives_its_write_slot_back(
    staged: tuple[Settings, ControlStore, Storage], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, control, storage = staged
    fn = packer_module._PackDatasetFn
    write_files = fn._write_files

    def refusing(self: Any, summaries: Any, schema: Any, files: Any, dataset: Any, *rest: Any):
        if dataset.name in ("d0", "d3"):
            raise OSError("destination refuses writes")
        return write_files(self, summaries, schema, files, dataset, *rest)

    monkeypatch.setattr(fn, "_write_files", refusing)
    _cycle(settings, control, storage)

    for number, name in enumerate(DATASETS):
        expected = (
            Counter() if name in ("d0", "d3") else Counter(range(number * 100, number * 100 + 50))
        )
        assert _packed_ids(settings, name) == expected
    # Their manifests stay for the replay, which packs them once the destination takes writes.
    monkeypatch.setattr(fn, "_write_files", write_files)
    _cycle(settings, control, storage)
    for number, name in enumerate(DATASETS):
        assert _packed_ids(settings, name) == Counter(range(number * 100, number * 100 + 50))
