"""Packer's buffer: a dataset's staged objects wait, durable, until the oldest was received
``packer.buffer_seconds`` ago or they add up to ``packer.buffer_mb``; then one run packs them
all, so a stream becomes a few large files instead of one small file per cycle."""

from __future__ import annotations

import gzip
import json
import random
import re
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from bytefreezer.control import ControlStore
from bytefreezer.control.models import Dataset, DatasetSpec, ParquetOptions, Tenant
from bytefreezer.keys import IntakeKey
from bytefreezer.pipelines import packer as packer_module
from bytefreezer.pipelines.api import create_worker_api
from bytefreezer.pipelines.packer import Buffer, buffer_limits, run_packer_cycle
from bytefreezer.pipelines.piper import run_piper_cycle
from bytefreezer.pipelines.poller import Poller
from bytefreezer.settings import Settings, load_settings
from bytefreezer.storage import ObjectInfo, PendingObject, Storage
from tests.conftest import fast_settings
from tests.helpers import read_parquet_dir, scraped, serve_app

MINUTE_NS = 60 * 10**9


def stack(data_dir: Path, **packer: float) -> tuple[Settings, ControlStore, Storage]:
    settings = fast_settings(data_dir, packer=packer)
    storage = Storage(settings)
    storage.ensure_buckets()
    control = ControlStore(settings.control_db_path(), destination_for=settings.destination_for)
    if not control.list_tenants():
        control.create_tenant(Tenant(name="acme"))
        control.create_dataset("acme", DatasetSpec(name="web"))
    return settings, control, storage


def receive(storage: Storage, ids: range, received_ns: int, pad: int = 0) -> None:
    """An intake object as the receiver stores it, received at ``received_ns``; ``pad`` random
    hex characters per record make its staged Parquet large."""
    rng = random.Random(ids.start)
    lines = [
        json.dumps(
            {
                "id": i,
                "timestamp": "2026-03-01T10:00:00Z",
                "pad": f"{rng.getrandbits(pad * 4):0{pad}x}" if pad else "",
            }
        )
        for i in ids
    ]
    key = IntakeKey("acme", "web", received_ns, "ndjson")
    storage.intake.put(key.key, gzip.compress("\n".join(lines).encode()), {})


def destination_ids(settings: Settings) -> Counter[int]:
    table = read_parquet_dir(settings.data_dir / "destination" / "acme" / "web")
    return Counter(table.column("id").to_pylist()) if table is not None else Counter()


def staged_keys(storage: Storage) -> list[str]:
    return [o.key for o in storage.piper.list("acme/web/") if o.key.endswith(".parquet")]


def packer_gauges(
    settings: Settings, control: ControlStore, storage: Storage
) -> tuple[int, dict[str, float]]:
    """One packer cycle with a Prometheus endpoint: what it claimed, and its buffer gauges."""
    stats, text = scraped(
        "packer", lambda telemetry: run_packer_cycle(settings, control, storage, telemetry)
    )
    gauges = {}
    for name in ("buffered_objects", "oldest_staged_seconds", "backlog_objects"):
        found = re.search(rf"^bytefreezer_packer_{name}\S* (\S+)$", text, re.MULTILINE)
        assert found, name
        gauges[name] = float(found.group(1))
    return stats.claimed, gauges


def test_a_young_small_dataset_waits_and_is_packed_whole_once_its_oldest_record_is_due(
    tmp_path: Path,
) -> None:
    settings, control, storage = stack(tmp_path / "data", buffer_seconds=60, buffer_mb=64)
    now = time.time_ns()
    receive(storage, range(0, 10), now - 5 * 10**9)
    receive(storage, range(10, 20), now)
    run_piper_cycle(settings, control, storage)
    assert len(staged_keys(storage)) == 2

    claimed, gauges = packer_gauges(settings, control, storage)
    assert claimed == 0  # not even a lease: nothing is due
    assert destination_ids(settings) == Counter()
    assert len(staged_keys(storage)) == 2  # still staged, nothing lost
    assert gauges["buffered_objects"] == 2 and gauges["backlog_objects"] == 2
    assert 5 <= gauges["oldest_staged_seconds"] < 60

    # The buffer counts from when the receiver stored a record, not from when piper staged it:
    # an object received two minutes ago (a spool's backlog, say) makes the dataset due, and
    # the run takes every staged object, young ones too.
    receive(storage, range(20, 30), now - 2 * MINUTE_NS)
    run_piper_cycle(settings, control, storage)
    claimed, gauges = packer_gauges(settings, control, storage)
    assert claimed == 1
    assert destination_ids(settings) == Counter(range(30))
    assert staged_keys(storage) == []
    files = list((settings.data_dir / "destination" / "acme" / "web").rglob("*.parquet"))
    assert len(files) == 1  # one partition, one run: one file for the three objects
    assert gauges["buffered_objects"] == 0


def test_packers_status_api_says_what_waits_and_when_it_is_due(tmp_path: Path) -> None:
    settings, control, storage = stack(tmp_path / "data", buffer_seconds=60, buffer_mb=64)
    control.create_dataset("acme", DatasetSpec(name="slow", parquet=ParquetOptions(buffer_mb=8)))
    now = time.time_ns()
    receive(storage, range(0, 10), now - 20 * 10**9)
    line = json.dumps({"id": 1, "timestamp": "2026-03-01T10:00:00Z"}).encode()
    storage.intake.put(IntakeKey("acme", "slow", now, "ndjson").key, gzip.compress(line), {})
    run_piper_cycle(settings, control, storage)
    poller = Poller(
        "packer",
        lambda: run_packer_cycle(settings, control, storage),
        1,
        report=control.report_health,
        instance="packer-0",
    )
    assert poller.run_once() is not None
    # Where no packer API runs (`bytefreezer up`), the control service's component list says
    # it too.
    (report,) = [c for c in control.list_components() if c.component == "packer"]
    assert report.details["buffered_datasets"] == 2
    assert 0 < report.details["next_due_in_seconds"] <= 40
    with serve_app(create_worker_api(settings, storage, control, poller)) as api:
        status = httpx.get(f"{api}/api/v1/status").json()
    waiting = status["last"]["waiting"]
    assert [(w["tenant"], w["dataset"]) for w in waiting] == [("acme", "web"), ("acme", "slow")]
    web, slow = waiting
    assert web["objects"] == 1 and web["staged_bytes"] > 0
    assert 20 <= web["oldest_seconds"] < 60 and 0 < web["due_in_seconds"] <= 40
    assert (web["buffer_seconds"], web["buffer_mb"]) == (60, 64)
    assert slow["due_in_seconds"] > web["due_in_seconds"]  # soonest due first
    assert (slow["buffer_seconds"], slow["buffer_mb"]) == (60, 8)  # the dataset's own


def test_a_dataset_whose_staged_objects_reach_buffer_mb_is_packed_before_its_time(
    tmp_path: Path,
) -> None:
    settings, control, storage = stack(tmp_path / "data", buffer_seconds=3600, buffer_mb=1)
    now = time.time_ns()
    receive(storage, range(0, 10), now)
    run_piper_cycle(settings, control, storage)
    assert run_packer_cycle(settings, control, storage).claimed == 0
    receive(storage, range(10, 40_010), now + 1, pad=64)  # random text: ~1.3 MB staged
    run_piper_cycle(settings, control, storage)
    assert sum(o.size for o in storage.piper.list("acme/web/")) > 1024 * 1024
    assert run_packer_cycle(settings, control, storage).claimed == 1
    assert destination_ids(settings) == Counter(range(40_010))
    assert staged_keys(storage) == []


def test_buffer_zero_packs_every_cycle(tmp_path: Path) -> None:
    settings, control, storage = stack(tmp_path / "data", buffer_seconds=0)
    receive(storage, range(0, 10), time.time_ns())
    run_piper_cycle(settings, control, storage)
    assert run_packer_cycle(settings, control, storage).claimed == 1
    assert destination_ids(settings) == Counter(range(10))


class InjectedCrash(BaseException):
    pass


def test_an_unfinished_run_is_replayed_whatever_the_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that crashed after its manifest has files at the destination to finish or remove:
    its dataset is due at once even though its staged objects would still be buffered."""
    data_dir = tmp_path / "data"
    settings, control, storage = stack(data_dir, buffer_seconds=0, lease_ttl_seconds=0.5)
    receive(storage, range(0, 50), time.time_ns())
    run_piper_cycle(settings, control, storage)

    def crash(self: PendingObject) -> int:
        self.abort()
        raise InjectedCrash("injected crash writing a file")

    with monkeypatch.context() as patch:
        patch.setattr(ControlStore, "release_leases", lambda self, leases: None)
        patch.setattr(PendingObject, "commit", crash)
        with pytest.raises(InjectedCrash):
            run_packer_cycle(settings, control, storage)
    assert storage.piper.list("_manifests/acme/web/")
    time.sleep(0.6)  # the crashed run's lease expires

    buffered, control, storage = stack(data_dir, buffer_seconds=3600, buffer_mb=64)
    stats = run_packer_cycle(buffered, control, storage)
    assert stats.claimed == 1 and stats.counters.get("manifests_recovered") == 1
    assert destination_ids(settings) == Counter(range(50))
    assert not storage.piper.list("_manifests/")


def test_buffer_due_rules() -> None:
    now = time.time_ns()
    limits = (60.0, 2)  # seconds, MB

    def buffer(*objects: tuple[int, int]) -> Buffer:
        found = Buffer()
        for received, size in objects:
            key = IntakeKey("acme", "web", received, "ndjson").staged_key
            found.add(ObjectInfo(key, size))
        return found

    assert not buffer((now - 59 * 10**9, 1000)).due(*limits, now)
    assert buffer((now - 59 * 10**9, 1000), (now - 61 * 10**9, 10)).due(*limits, now)
    assert buffer((now, 1024 * 1024), (now, 1024 * 1024)).due(*limits, now)  # 2 MB staged
    assert not buffer((now, 1024 * 1024), (now, 1024 * 1024 - 1)).due(*limits, now)
    assert not buffer((now + MINUTE_NS, 10)).due(*limits, now)  # a clock ahead: not yet due
    # A name packer cannot read is never packed, so it never makes its dataset due by age;
    # only staged Parquet counts.
    odd = Buffer()
    odd.add(ObjectInfo("acme/web/not-an-intake-stem.parquet", 10))
    odd.add(ObjectInfo("acme/web/notes.txt", 10**9))
    assert odd.objects == 1 and not odd.due(*limits, now)
    assert odd.due(0, 2, now)


def test_a_dataset_sets_its_own_buffer_over_packers() -> None:
    packer = load_settings(packer={"buffer_seconds": 60, "buffer_mb": 64}).packer
    spec = {"tenant": "acme", "name": "web", "destination": {"url": "file:///tmp/x"}}
    plain = Dataset.model_validate(spec)
    own = Dataset.model_validate({**spec, "parquet": {"buffer_seconds": 0, "buffer_mb": 8}})
    half = Dataset.model_validate({**spec, "parquet": {"buffer_mb": 8}})
    assert buffer_limits(packer, plain) == (60, 64)
    assert buffer_limits(packer, own) == (0, 8)  # 0 is a setting, not "unset"
    assert buffer_limits(packer, half) == (60, 8)
    assert buffer_limits(packer, None) == (60, 64)  # a dataset that is gone


def test_a_dataset_with_no_buffer_is_packed_while_another_waits(tmp_path: Path) -> None:
    settings, control, storage = stack(tmp_path / "data", buffer_seconds=60, buffer_mb=64)
    control.create_dataset(
        "acme", DatasetSpec(name="alerts", parquet=ParquetOptions(buffer_seconds=0))
    )
    now = time.time_ns()
    receive(storage, range(0, 10), now)
    line = json.dumps({"id": 99, "timestamp": "2026-03-01T10:00:00Z"}).encode()
    key = IntakeKey("acme", "alerts", now, "ndjson")
    storage.intake.put(key.key, gzip.compress(line), {})
    run_piper_cycle(settings, control, storage)
    assert run_packer_cycle(settings, control, storage).claimed == 1  # alerts only
    alerts = read_parquet_dir(settings.data_dir / "destination" / "acme" / "alerts")
    assert alerts is not None and alerts.column("id").to_pylist() == [99]
    assert destination_ids(settings) == Counter()  # web waits for its buffer
    assert len(staged_keys(storage)) == 1


def test_the_health_report_counts_every_buffered_dataset_beyond_the_listed_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, control, storage = stack(tmp_path / "data", buffer_seconds=60, buffer_mb=64)
    control.create_dataset("acme", DatasetSpec(name="api"))
    now = time.time_ns()
    receive(storage, range(0, 10), now - 10 * 10**9)
    line = json.dumps({"id": 1, "timestamp": "2026-03-01T10:00:00Z"}).encode()
    storage.intake.put(IntakeKey("acme", "api", now, "ndjson").key, gzip.compress(line), {})
    run_piper_cycle(settings, control, storage)
    monkeypatch.setattr(packer_module, "WAITING_REPORTED", 1)
    poller = Poller(
        "packer",
        lambda: run_packer_cycle(settings, control, storage),
        1,
        report=control.report_health,
        instance="packer-0",
    )
    stats = poller.run_once()
    assert stats is not None and [w["dataset"] for w in stats.waiting] == ["web"]
    (report,) = [c for c in control.list_components() if c.component == "packer"]
    assert report.details["buffered_datasets"] == 2
