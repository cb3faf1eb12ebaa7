"""A dataset piper cannot process (its chain cannot run) or packer cannot pack (its destination
refuses writes) is reported to control and left alone for a growing wait, its data kept, while
the other datasets go on; saving the dataset or clearing its status has it tried at once, each
record exactly once."""

from __future__ import annotations

import gzip
import json
import re
import socket
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from bytefreezer.control import ControlStore, HttpControl
from bytefreezer.control.app import create_app
from bytefreezer.control.models import DatasetSpec, DatasetStatus, Destination, Tenant
from bytefreezer.errors import ConfigError, NotFound, StorageError
from bytefreezer.keys import IntakeKey
from bytefreezer.pipelines.api import create_worker_api
from bytefreezer.pipelines.failures import (
    OK_REFRESH_SECONDS,
    backoff_seconds,
    failure_text,
    next_status,
)
from bytefreezer.pipelines.packer import run_packer_cycle
from bytefreezer.pipelines.piper import run_piper_cycle
from bytefreezer.pipelines.poller import Poller
from bytefreezer.settings import PackerSettings, Settings
from bytefreezer.storage import Storage
from tests.conftest import fast_settings
from tests.helpers import read_parquet_dir, s3_client, scraped, serve_app, wait_for
from tests.transforms.test_lookups import city_database


def stack(settings: Settings, bad: Destination) -> tuple[ControlStore, Storage]:
    storage = Storage(settings)
    storage.ensure_buckets()
    control = ControlStore(settings.control_db_path(), destination_for=settings.destination_for)
    control.create_tenant(Tenant(name="acme"))
    control.create_dataset("acme", DatasetSpec(name="good"))
    control.create_dataset("acme", DatasetSpec(name="bad", destination=bad))
    return control, storage


def stage(settings: Settings, control: ControlStore, storage: Storage, ids: range) -> None:
    """Records ``ids`` posted to both datasets, through piper."""
    for dataset in ("good", "bad"):
        lines = [json.dumps({"id": i, "timestamp": "2026-03-01T10:00:00Z"}) for i in ids]
        key = IntakeKey("acme", dataset, time.time_ns(), "ndjson").key
        storage.intake.put(key, gzip.compress("\n".join(lines).encode()), {})
    while storage.intake.list():
        run_piper_cycle(settings, control, storage)


def staged(storage: Storage, dataset: str) -> int:
    return sum(o.key.endswith(".parquet") for o in storage.piper.list(f"acme/{dataset}/"))


def ids_in(root: Path) -> Counter[int]:
    table = read_parquet_dir(root)
    return Counter(table.column("id").to_pylist()) if table is not None else Counter()


def status_of(
    control: ControlStore, dataset: str, stage: str = "packer", tenant: str = "acme"
) -> DatasetStatus:
    (status,) = [s for s in control.get_dataset_status(tenant, dataset) if s.stage == stage]
    return status


def blocked(tmp_path: Path) -> Destination:
    """A local destination no file can be written under: its parent is a regular file."""
    (tmp_path / "blocker").write_text("not a directory")
    return Destination(url=f"file://{tmp_path}/blocker/out")


def test_a_failing_destination_waits_its_data_staged_while_the_others_are_packed(
    tmp_path: Path,
) -> None:
    settings = fast_settings(tmp_path / "data", packer={"retry_backoff_seconds": 60})
    control, storage = stack(settings, blocked(tmp_path))
    stage(settings, control, storage, range(100))
    started = time.time()

    stats = run_packer_cycle(settings, control, storage)
    assert stats.claimed == 2
    good_root = settings.data_dir / "destination" / "acme" / "good"
    assert ids_in(good_root) == Counter(range(100))
    assert staged(storage, "bad") == 1
    status = status_of(control, "bad")
    assert status.state == "failing" and status.failures == 1
    assert "blocker" in status.error and "Error" in status.error.split(":")[0]
    assert status.failing_since is not None and status.failing_since >= started
    assert status.retry_at is not None and 59 <= status.retry_at - started <= 61 + (
        time.time() - started
    )
    assert status.instance == "test" and status.last_success_at is None
    good = status_of(control, "good")
    assert good.state == "ok" and good.last_success_at is not None and good.failures == 0

    # Within the wait no packer claims it, so the poller sleeps instead of re-encoding it.
    poller = Poller(
        "packer",
        lambda: run_packer_cycle(settings, control, storage),
        1,
        report=control.report_health,
        instance="packer-0",
    )
    again = poller.run_once()
    assert again is not None and again.claimed == 0
    (report,) = [c for c in control.list_components() if c.component == "packer"]
    assert report.details["failing_datasets"] == 1 and report.status == "ok"
    with serve_app(create_worker_api(settings, storage, control, poller)) as api:
        listed = httpx.get(f"{api}/api/v1/status").json()["last"]["failing"]
    assert [(f["dataset"], f["error"]) for f in listed] == [("bad", status.error)]
    assert [(f["dataset"], f["failures"]) for f in again.failing] == [("bad", 1)]
    assert 0 < float(str(again.failing[0]["retry_in_seconds"])) <= 60
    assert status_of(control, "bad").failures == 1
    assert staged(storage, "bad") == 1

    # More data for both: the good dataset is packed, the failing one keeps waiting.
    stage(settings, control, storage, range(100, 150))
    assert run_packer_cycle(settings, control, storage).claimed == 1
    assert ids_in(good_root) == Counter(range(150))
    assert staged(storage, "bad") == 2

    # Saving the dataset with a destination that works ends the wait: packed at once, once.
    fixed = tmp_path / "fixed"
    control.put_dataset(
        "acme", DatasetSpec(name="bad", destination=Destination(url=f"file://{fixed}"))
    )
    assert status_of(control, "bad").state == "unknown"
    assert run_packer_cycle(settings, control, storage).claimed == 1
    assert ids_in(fixed) == Counter(range(150))
    assert staged(storage, "bad") == 0
    recovered = status_of(control, "bad")
    assert recovered.state == "ok" and recovered.error == "" and recovered.retry_at is None


def test_the_wait_doubles_with_each_failure_until_its_cap_and_retry_ends_it(
    tmp_path: Path,
) -> None:
    settings = fast_settings(
        tmp_path / "data", packer={"retry_backoff_seconds": 0.4, "retry_backoff_max_seconds": 1.0}
    )
    control, storage = stack(settings, blocked(tmp_path))
    stage(settings, control, storage, range(20))
    waits = []
    for failures in (1, 2, 3):
        status = status_of(control, "bad")
        if status.retry_at is not None:
            time.sleep(max(0.0, status.retry_at - time.time()) + 0.05)
        stats, text = scraped("packer", lambda t: run_packer_cycle(settings, control, storage, t))
        status = status_of(control, "bad")
        assert stats.claimed >= 1 and status.failures == failures
        # The wait counts from the failure (reported a moment after it), however long the run
        # took before it failed on a loaded machine.
        waits.append(round((status.retry_at or 0) - status.reported_at, 1))
    assert waits[0] == pytest.approx(0.4, abs=0.15)
    assert waits[1] == pytest.approx(0.8, abs=0.15)
    assert waits[2] == pytest.approx(1.0, abs=0.15)  # 1.6 capped
    assert re.search(r"^bytefreezer_packer_failing_datasets\{[^}]*\} 1\.0$", text, re.M), text
    assert staged(storage, "bad") == 1

    # An operator's retry (clearing the status) has it packed at the next cycle; the
    # destination still refuses, so it fails again and waits the first wait again.
    control.clear_dataset_status("acme", "bad")
    assert run_packer_cycle(settings, control, storage).claimed == 1
    assert status_of(control, "bad").failures == 1


def test_a_failing_dataset_whose_staged_data_was_removed_is_reported_ok_after_its_wait(
    tmp_path: Path,
) -> None:
    settings = fast_settings(tmp_path / "data", packer={"retry_backoff_seconds": 0.2})
    control, storage = stack(settings, blocked(tmp_path))
    stage(settings, control, storage, range(5))
    run_packer_cycle(settings, control, storage)
    assert status_of(control, "bad").state == "failing"
    for prefix in ("acme/bad/", "_manifests/acme/bad/"):  # an operator removes them
        for info in storage.piper.list(prefix):
            storage.piper.delete(info.key)
    time.sleep(0.3)
    run_packer_cycle(settings, control, storage)
    assert status_of(control, "bad").state == "ok"


@pytest.mark.s3
def test_an_s3_destination_refusing_the_credentials_fails_until_they_are_fixed(
    tmp_path: Path, s3_server: dict[str, str]
) -> None:
    bucket = f"dest-{uuid.uuid4().hex[:10]}"
    s3_client(s3_server).create_bucket(Bucket=bucket)

    def destination(secret: str) -> Destination:
        options: dict[str, Any] = {
            "endpoint_url": s3_server["endpoint"],
            "key": s3_server["access_key"],
            "secret": secret,
        }
        return Destination(url=f"s3://{bucket}/out", options=options)

    settings = fast_settings(tmp_path / "data", packer={"retry_backoff_seconds": 60})
    control, storage = stack(settings, destination("not-the-secret"))
    stage(settings, control, storage, range(40))
    run_packer_cycle(settings, control, storage)
    status = status_of(control, "bad")
    assert status.state == "failing", status
    assert "not-the-secret" not in status.error
    assert run_packer_cycle(settings, control, storage).claimed == 0

    control.put_dataset(
        "acme", DatasetSpec(name="bad", destination=destination(s3_server["secret_key"]))
    )
    assert run_packer_cycle(settings, control, storage).claimed == 1
    assert status_of(control, "bad").state == "ok"
    written = Storage(settings).destination(**destination(s3_server["secret_key"]).model_dump())
    keys = [o.key for o in written.list("")]
    assert keys and all(k.endswith(".parquet") for k in keys)


def test_next_status_counts_failures_keeps_their_start_and_refreshes_ok() -> None:
    packer = PackerSettings(retry_backoff_seconds=10, retry_backoff_max_seconds=25)
    assert [backoff_seconds(packer, n) for n in (1, 2, 3, 4, 500)] == [10, 20, 25, 25, 25]

    def after(
        previous: DatasetStatus | None, error: str | None, now: float
    ) -> DatasetStatus | None:
        return next_status(
            previous, "t", "d", "packer", error, now=now, retry=packer, instance="p1"
        )

    first = after(None, None, 100.0)
    assert first is not None and first.state == "ok" and first.last_success_at == 100.0
    reported = first.model_copy(update={"reported_at": 100.0})
    assert after(reported, None, 100.0 + OK_REFRESH_SECONDS - 1) is None
    refreshed = after(reported, None, 100.0 + OK_REFRESH_SECONDS)
    assert refreshed is not None and refreshed.last_success_at == 100.0 + OK_REFRESH_SECONDS

    failed = after(reported, "OSError: refused", 200.0)
    assert failed is not None
    assert (failed.state, failed.failures, failed.failing_since, failed.retry_at) == (
        "failing", 1, 200.0, 210.0,
    )  # fmt: skip
    assert failed.last_success_at == 100.0 and failed.error == "OSError: refused"
    twice = after(failed, "OSError: still", 210.0)
    assert twice is not None
    assert (twice.failures, twice.failing_since, twice.retry_at) == (2, 200.0, 230.0)
    healed = after(twice, None, 230.0)
    assert healed is not None and healed.state == "ok" and healed.failures == 0

    long = failure_text(OSError("x" * 5000))
    assert long.startswith("OSError: xxx") and len(long) == 1000 and long.endswith("...")


def test_a_dataset_whose_chain_cannot_run_does_not_hold_up_the_others_objects(
    tmp_path: Path,
) -> None:
    # Claimed oldest first, a failing dataset's backlog filled every piper run: a tenant whose
    # GeoIP database was missing stopped every other tenant's records.
    settings = fast_settings(
        tmp_path / "data", piper={"max_objects_per_run": 4, "retry_backoff_seconds": 60}
    )
    storage = Storage(settings)
    storage.ensure_buckets()
    control = ControlStore(settings.control_db_path(), destination_for=settings.destination_for)
    for tenant in ("acme", "geo"):
        control.create_tenant(Tenant(name=tenant))
    control.create_dataset("acme", DatasetSpec(name="web"))
    step = {"type": "geoip", "config": {"source_field": "ip"}}
    control.create_dataset("geo", DatasetSpec(name="web", transforms=[step]))
    received = time.time_ns() - 10**9
    for i in range(9):  # the failing dataset's six objects are the oldest
        tenant = "geo" if i < 6 else "acme"
        line = json.dumps({"id": i, "ip": "81.2.69.142", "timestamp": "2026-03-01T10:00:00Z"})
        key = IntakeKey(tenant, "web", received + i, "ndjson").key
        storage.intake.put(key, gzip.compress(line.encode()), {})

    first = run_piper_cycle(settings, control, storage)
    assert first.claimed == 4 and first.counters.get("errors:config") == 4
    status = status_of(control, "web", "piper", "geo")
    assert status.state == "failing" and status.failures == 1 and "GeoLite2" in status.error
    stats, text = scraped("piper", lambda t: run_piper_cycle(settings, control, storage, t))
    assert stats.claimed == 3 and not stats.counters.get("errors:config")
    assert [(f["tenant"], f["failures"]) for f in stats.failing] == [("geo", 1)]
    for gauge, value in (("failing_datasets", 1.0), ("backlog_objects", 9.0)):  # as listed
        found = re.search(rf"^bytefreezer_piper_{gauge}\{{[^}}]*\}} (\S+)$", text, re.M)
        assert found and float(found.group(1)) == value, gauge
    age = re.search(r"^bytefreezer_piper_backlog_age_seconds\{[^}]*\} (\S+)$", text, re.M)
    assert age and float(age.group(1)) >= 1.0  # the waiting objects still count as waiting
    assert status_of(control, "web", "piper", "acme").state == "ok"
    assert {o.key.split("/")[0] for o in storage.intake.list()} == {"geo"}
    assert run_piper_cycle(settings, control, storage).claimed == 0  # still waiting

    # The database uploaded and the dataset retried: its objects go through, each once.
    storage.bucket(settings.buckets.geoip).put("GeoLite2-City.mmdb", city_database())
    control.clear_dataset_status("geo", "web", "piper")
    while storage.intake.list():
        assert run_piper_cycle(settings, control, storage).claimed
    assert status_of(control, "web", "piper", "geo").state == "ok"
    run_packer_cycle(settings, control, storage)
    out = settings.data_dir / "destination"
    assert ids_in(out / "geo" / "web") == Counter(range(6))
    assert ids_in(out / "acme" / "web") == Counter(range(6, 9))


def test_a_failing_dataset_whose_objects_were_removed_is_no_longer_failing(
    tmp_path: Path,
) -> None:
    settings = fast_settings(tmp_path / "data", piper={"retry_backoff_seconds": 0.2})
    storage = Storage(settings)
    storage.ensure_buckets()
    control = ControlStore(settings.control_db_path(), destination_for=settings.destination_for)
    control.create_tenant(Tenant(name="geo"))
    step = {"type": "geoip", "config": {"source_field": "ip"}}
    control.create_dataset("geo", DatasetSpec(name="web", transforms=[step]))
    key = IntakeKey("geo", "web", time.time_ns(), "ndjson").key
    storage.intake.put(key, gzip.compress(b'{"ip": "81.2.69.142"}'), {})
    run_piper_cycle(settings, control, storage)
    assert status_of(control, "web", "piper", "geo").state == "failing"
    storage.intake.delete(key)  # an operator removes it
    stats = run_piper_cycle(settings, control, storage)
    assert stats.failing == [] and status_of(control, "web", "piper", "geo").state == "unknown"


def checking_store(settings: Settings) -> ControlStore:
    storage = Storage(settings)
    return ControlStore(
        settings.control_db_path(),
        destination_for=settings.destination_for,
        check_destination=lambda d: storage.check_destination(d.url, d.options),
    )


def test_a_destination_is_checked_on_demand_with_a_probe_it_does_not_keep(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path / "data")
    store = checking_store(settings)
    store.create_tenant(Tenant(name="acme"))
    store.create_dataset("acme", DatasetSpec(name="good"))
    store.create_dataset("acme", DatasetSpec(name="bad", destination=blocked(tmp_path)))
    admin = store.create_key(None, role="admin").key
    with serve_app(create_app(store)) as url:
        for control in (store, HttpControl(url, admin, timeout=30)):
            good = control.check_destination("acme", "good")
            assert good.ok and good.error == "" and good.url.endswith("/destination/acme/good")
            root = settings.data_dir / "destination" / "acme" / "good"
            assert root.is_dir() and not list(root.iterdir())  # the probe is gone
            bad = control.check_destination("acme", "bad")
            assert not bad.ok and "blocker" in bad.error and bad.seconds < 20
    unchecked = ControlStore(tmp_path / "other.db")
    unchecked.create_tenant(Tenant(name="acme"))
    unchecked.create_dataset("acme", DatasetSpec(name="web"))
    with pytest.raises(ConfigError, match="without destination checks"):
        unchecked.check_destination("acme", "web")
    with pytest.raises(NotFound):
        store.check_destination("acme", "nope")


def test_a_destination_that_never_answers_fails_its_check_in_time(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()  # accepts connections (the kernel does) and never answers
    try:
        port = listener.getsockname()[1]
        options = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "k", "secret": "s"}
        storage = Storage(fast_settings(tmp_path / "data"))
        started = time.monotonic()
        with pytest.raises(StorageError, match="no answer from s3://bucket/out within 1 s"):
            storage.check_destination("s3://bucket/out", options, timeout=1)
        assert time.monotonic() - started < 5
        # The probe itself gives up soon after (one attempt, the check's timeout): no thread
        # is left retrying.
        assert wait_for(
            lambda: not [t for t in threading.enumerate() if t.name.startswith("destination")],
            timeout=10,
        )
    finally:
        listener.close()


@pytest.mark.s3
def test_an_s3_destination_check_tells_a_wrong_secret_from_a_working_one(
    tmp_path: Path, s3_server: dict[str, str]
) -> None:
    bucket = f"check-{uuid.uuid4().hex[:10]}"
    s3 = s3_client(s3_server)
    s3.create_bucket(Bucket=bucket)
    settings = fast_settings(tmp_path / "data")
    store = checking_store(settings)
    store.create_tenant(Tenant(name="acme"))
    for name, secret in (("wrong", "not-the-secret"), ("right", s3_server["secret_key"])):
        options = {
            "endpoint_url": s3_server["endpoint"],
            "key": s3_server["access_key"],
            "secret": secret,
        }
        destination = Destination(url=f"s3://{bucket}/{name}", options=options)
        store.create_dataset("acme", DatasetSpec(name=name, destination=destination))
    wrong = store.check_destination("acme", "wrong")
    assert not wrong.ok and "signature" in wrong.error.lower()
    assert "not-the-secret" not in wrong.error
    assert store.check_destination("acme", "right").ok
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0  # no probe left


def test_a_control_service_without_statuses_leaves_the_stages_working(tmp_path: Path) -> None:
    """One older than the workers (a rolling upgrade): no status to read or report, so failing
    datasets are tried every cycle as before, and the others' data still flows."""

    class OlderControl(ControlStore):
        def list_dataset_statuses(self, *args: Any, **kwargs: Any) -> list[DatasetStatus]:
            raise NotFound("Not Found")

        def report_dataset_status(self, status: DatasetStatus) -> DatasetStatus:
            raise NotFound("Not Found")

    settings = fast_settings(tmp_path / "data", packer={"retry_backoff_seconds": 60})
    storage = Storage(settings)
    storage.ensure_buckets()
    control = OlderControl(settings.control_db_path(), destination_for=settings.destination_for)
    control.create_tenant(Tenant(name="acme"))
    control.create_dataset("acme", DatasetSpec(name="good"))
    control.create_dataset("acme", DatasetSpec(name="bad", destination=blocked(tmp_path)))
    stage(settings, control, storage, range(10))
    assert run_packer_cycle(settings, control, storage).claimed == 2
    assert ids_in(settings.data_dir / "destination" / "acme" / "good") == Counter(range(10))
    assert run_packer_cycle(settings, control, storage).claimed == 1  # no wait known
