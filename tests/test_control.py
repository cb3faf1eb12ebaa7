"""The control service through both client implementations: in-process and HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bytefreezer.control import ControlClient, ControlStore, HttpControl
from bytefreezer.control.app import create_app
from bytefreezer.control.models import (
    DatasetSpec,
    DatasetStatus,
    Destination,
    HealthReport,
    ParquetOptions,
    Tenant,
)
from bytefreezer.errors import (
    AuthError,
    ConfigError,
    Conflict,
    Forbidden,
    Gone,
    LeaseLost,
    NotFound,
)
from bytefreezer.transforms import validate_chain
from tests.helpers import serve_app


def _altered(key: str) -> str:
    """The key with its last character changed, so it is never the key itself."""
    return key[:-1] + ("y" if key[-1] != "y" else "z")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ControlStore]:
    store = ControlStore(
        tmp_path / "control.db",
        destination_for=lambda t, d: f"file:///tmp/out/{t}/{d}",
        validate_chain=validate_chain,
    )
    yield store
    store.close()


@pytest.fixture(params=["in-process", "http"])
def control(request: pytest.FixtureRequest, store: ControlStore) -> Iterator[ControlClient]:
    if request.param == "in-process":
        yield store
        return
    admin = store.create_key(None, role="admin").key
    with serve_app(create_app(store)) as url:
        client = HttpControl(url, admin, timeout=10)
        yield client
        client.close()


def test_tenants_datasets_and_keys(control: ControlClient) -> None:
    control.create_tenant(Tenant(name="acme"))
    with pytest.raises(Conflict):
        control.create_tenant(Tenant(name="acme"))
    dataset = control.create_dataset("acme", DatasetSpec(name="web", timestamp_field="ts"))
    assert dataset.destination.url == "file:///tmp/out/acme/web"
    assert dataset.parquet.compression == "zstd" and dataset.parquet.partitioning == "hive"
    assert [d.name for d in control.list_datasets("acme")] == ["web"]
    with pytest.raises(NotFound):
        control.create_dataset("nobody", DatasetSpec(name="web"))
    with pytest.raises(NotFound):
        control.get_dataset("acme", "nope")

    created = control.create_key("acme", "web")
    assert created.key.startswith("bfk_")
    listed = control.list_keys("acme")
    assert [k.id for k in listed] == [created.info.id]
    assert created.key not in repr(listed)

    scope = control.verify_ingest(created.key, "acme", "web")
    assert (scope.tenant, scope.dataset) == ("acme", "web")
    # a key's own scope, for requests that name no dataset (Splunk HEC's)
    own = control.authenticate(created.key)
    assert (own.key_id, own.tenant, own.dataset) == (scope.key_id, "acme", "web")
    tenant_key = control.authenticate(control.create_key("acme").key)
    assert (tenant_key.tenant, tenant_key.dataset) == ("acme", None)
    with pytest.raises(AuthError):
        control.authenticate(_altered(created.key))
    control.create_dataset("acme", DatasetSpec(name="other"))
    with pytest.raises(Forbidden):
        control.verify_ingest(created.key, "acme", "other")
    with pytest.raises(AuthError):
        control.verify_ingest(_altered(created.key), "acme", "web")
    control.update_tenant("acme", active=False)
    with pytest.raises(Gone):
        control.verify_ingest(created.key, "acme", "web")
    control.revoke_key(created.info.id)
    with pytest.raises(AuthError):
        control.verify_ingest(created.key, "acme", "web")


def test_dataset_chain_is_validated_on_create_and_change(control: ControlClient) -> None:
    control.create_tenant(Tenant(name="acme"))
    bad = DatasetSpec(name="web", transforms=[{"type": "rename_field", "config": {"from": "a"}}])
    with pytest.raises(ConfigError, match=r"step 0 \(rename_field\): to"):
        control.create_dataset("acme", bad)
    control.create_dataset("acme", DatasetSpec(name="web"))
    with pytest.raises(ConfigError, match="unknown transform"):
        control.put_dataset("acme", DatasetSpec(name="web", transforms=[{"type": "zzz"}]))


def test_a_custom_partition_template_is_checked_on_create_and_change(
    control: ControlClient,
) -> None:
    """A template packer could not write under is refused when saved (400 over HTTP), not
    found failing every packer run of the dataset."""
    control.create_tenant(Tenant(name="acme"))

    def custom(template: str) -> DatasetSpec:
        options = ParquetOptions(partitioning="custom", partition_template=template)
        return DatasetSpec(name="web", parquet=options)

    with pytest.raises(ConfigError, match=r"'\.\./\.\./other/%Y' makes paths such as"):
        control.create_dataset("acme", custom("../../other/%Y"))
    with pytest.raises(ConfigError, match="needs a partition_template"):
        control.create_dataset("acme", custom(""))
    created = control.create_dataset("acme", custom("{tenant}/{year}/{month}"))
    assert created.parquet.partition_template == "{tenant}/{year}/{month}"
    with pytest.raises(ConfigError, match=r"unknown placeholder \{yaer\}"):
        control.put_dataset("acme", custom("{yaer}"))
    with pytest.raises(ConfigError, match=r"\{field:\} names no field"):
        control.put_dataset("acme", custom("kind={field:}/{year}"))
    assert (
        control.get_dataset("acme", "web").parquet.partition_template == "{tenant}/{year}/{month}"
    )
    # Only `custom` reads the template: another scheme keeps one it does not use.
    hive = ParquetOptions(partitioning="hive", partition_template="unused/..")
    control.put_dataset("acme", DatasetSpec(name="web", parquet=hive))


def test_leases_fencing_and_takeover(control: ControlClient) -> None:
    first = control.acquire_leases(["a", "b"], "one", ttl=0.5)
    assert [x.name for x in first] == ["a", "b"]
    assert control.acquire_leases(["a", "b", "c"], "two", ttl=30)[0].name == "c"
    control.check_lease(first[0])
    time.sleep(0.6)
    with pytest.raises(LeaseLost):
        control.check_lease(first[0])  # expired
    taken = control.acquire_leases(["a"], "two", ttl=30)
    assert taken[0].token > max(x.token for x in first)
    with pytest.raises(LeaseLost):
        control.renew_lease(first[0], ttl=30)  # the old holder is fenced off
    control.release_leases([first[0]])  # a stale release leaves the new holder alone
    control.check_lease(taken[0])
    renewed = control.renew_lease(taken[0], ttl=60)
    assert renewed.expires_at > taken[0].expires_at
    control.release_leases([renewed])
    assert control.acquire_leases(["a"], "three", ttl=30)


def test_health_reports_list_components_with_age(control: ControlClient) -> None:
    control.report_health(HealthReport(component="piper", instance="pod-1", details={"n": 1}))
    (report,) = control.list_components()
    assert (report.component, report.instance, report.details) == ("piper", "pod-1", {"n": 1})
    assert report.age_seconds is not None and 0 <= report.age_seconds < 5


def test_dataset_status_is_reported_listed_cleared_and_reset_by_saving(
    control: ControlClient,
) -> None:
    control.create_tenant(Tenant(name="acme"))
    for name in ("web", "app"):
        control.create_dataset("acme", DatasetSpec(name=name))
    unknown = control.get_dataset_status("acme", "web")
    assert [(s.stage, s.state) for s in unknown] == [("piper", "unknown"), ("packer", "unknown")]
    assert control.list_dataset_statuses() == []
    failing = DatasetStatus(
        tenant="acme",
        dataset="web",
        stage="packer",
        state="failing",
        error="StorageError: cannot write s3://bucket/x: AccessDenied",
        failures=2,
        failing_since=100.0,
        retry_at=time.time() + 60,
        instance="packer-1",
    )
    stored = control.report_dataset_status(failing)
    assert stored.reported_at > 0 and stored.model_copy(update={"reported_at": 0.0}) == failing
    piper_ok = control.report_dataset_status(
        DatasetStatus(tenant="acme", dataset="web", stage="piper", state="ok", last_success_at=5.0)
    )
    control.report_dataset_status(
        DatasetStatus(tenant="acme", dataset="app", stage="packer", state="ok")
    )
    assert control.get_dataset_status("acme", "web") == [piper_ok, stored]
    listed = control.list_dataset_statuses()
    assert [(s.dataset, s.stage) for s in listed] == [
        ("app", "packer"), ("web", "packer"), ("web", "piper"),
    ]  # fmt: skip
    assert [s.dataset for s in control.list_dataset_statuses("acme", "failing")] == ["web"]
    assert [s.dataset for s in control.list_dataset_statuses(stage="piper")] == ["web"]
    with pytest.raises(NotFound):
        control.report_dataset_status(failing.model_copy(update={"dataset": "nope"}))
    with pytest.raises(NotFound):
        control.get_dataset_status("acme", "nope")
    with pytest.raises(NotFound):
        control.list_dataset_statuses("nobody")

    control.clear_dataset_status("acme", "web", "packer")  # an operator's retry at one stage
    assert [s.state for s in control.get_dataset_status("acme", "web")] == ["ok", "unknown"]
    control.report_dataset_status(failing)
    control.clear_dataset_status("acme", "web")  # at both
    assert [s.state for s in control.get_dataset_status("acme", "web")] == ["unknown"] * 2
    control.report_dataset_status(failing)
    # Saving the dataset (a new destination, say) clears its status; deleting it removes it.
    control.put_dataset(
        "acme", DatasetSpec(name="web", destination=Destination(url="file:///tmp/fixed"))
    )
    assert [s.state for s in control.get_dataset_status("acme", "web")] == ["unknown"] * 2
    control.delete_dataset("acme", "app")
    assert control.list_dataset_statuses() == []


def test_dataset_status_requests_are_checked(store: ControlStore) -> None:
    store.create_tenant(Tenant(name="acme"))
    store.create_dataset("acme", DatasetSpec(name="web"))
    admin = {"Authorization": f"Bearer {store.create_key(None, role='admin').key}"}
    with serve_app(create_app(store)) as url:
        api = f"{url}/api/v1"
        path = f"{api}/tenants/acme/datasets/web/status"
        other = {"tenant": "acme", "dataset": "app", "stage": "packer", "state": "ok"}
        moved = httpx.put(f"{path}/packer", json=other, headers=admin)
        assert moved.status_code == 409 and "acme/app" in moved.json()["error"]
        piper = {**other, "dataset": "web", "stage": "piper"}
        staged = httpx.put(f"{path}/packer", json=piper, headers=admin)
        assert staged.status_code == 409 and "piper status" in staged.json()["error"]
        odd = {**other, "dataset": "web", "state": "fine"}
        state = httpx.put(f"{path}/packer", json=odd, headers=admin)
        assert state.status_code == 400 and "state" in state.json()["error"]
        query = httpx.get(f"{api}/dataset-status", params={"state": "bad"}, headers=admin)
        assert query.status_code == 400 and "ok, failing, unknown" in query.json()["error"]
        stage = httpx.delete(path, params={"stage": "receiver"}, headers=admin)
        assert stage.status_code == 400 and "piper, packer" in stage.json()["error"]
        anonymous = httpx.get(f"{api}/dataset-status")
        assert anonymous.status_code == 401


def test_management_api_needs_the_admin_key(store: ControlStore) -> None:
    store.create_tenant(Tenant(name="acme"))
    store.create_dataset("acme", DatasetSpec(name="web"))
    ingest_key = store.create_key("acme").key
    admin_key = store.create_key(None, role="admin").key
    with serve_app(create_app(store)) as url:
        api = f"{url}/api/v1"
        assert httpx.get(f"{api}/health").json() == {"status": "ok"}
        assert httpx.get(f"{api}/tenants").status_code == 401
        forbidden = httpx.get(f"{api}/tenants", headers={"Authorization": f"Bearer {ingest_key}"})
        assert forbidden.status_code == 403
        ok = httpx.get(f"{api}/tenants", headers={"Authorization": f"Bearer {admin_key}"})
        assert ok.status_code == 200
        assert ok.json() == [{"name": "acme", "active": True, "daily_ingest_mb": None}]
        bad = httpx.post(
            f"{api}/tenants",
            json={"name": "../etc"},
            headers={"Authorization": f"Bearer {admin_key}"},
        )
        assert bad.status_code == 400 and "invalid tenant" in bad.json()["error"]
        junk = httpx.post(
            f"{api}/leases/acquire", content=b"{", headers={"Authorization": f"Bearer {admin_key}"}
        )
        assert junk.status_code == 400
        admin = {"Authorization": f"Bearer {admin_key}"}
        # Requests the OpenAPI document refuses never reach the store.
        listed = httpx.post(f"{api}/keys", json={"tenant": ["acme"]}, headers=admin)
        assert listed.status_code == 400 and "body['tenant']" in listed.json()["error"]
        many = httpx.post(
            f"{api}/leases/acquire",
            json={"names": [f"n{i}" for i in range(51)], "owner": "a", "ttl": 5},
            headers=admin,
        )
        assert many.status_code == 400 and "body['names']" in many.json()["error"]
        path = httpx.get(f"{api}/tenants/Bad!/keys", headers=admin)
        assert path.status_code == 400 and "invalid tenant" in path.json()["error"]
        report = httpx.post(
            f"{api}/health/reports", json={"component": "", "instance": "i"}, headers=admin
        )
        assert report.status_code == 400 and "invalid component" in report.json()["error"]
        huge = {"name": "n", "owner": "o", "token": 2**63, "expires_at": 0}
        token = httpx.post(f"{api}/leases/release", json={"leases": [huge]}, headers=admin)
        assert token.status_code == 400 and "body['leases'][0]['token']" in token.json()["error"]


def test_keys_may_expire(control: ControlClient, store: ControlStore) -> None:
    """A key made to expire works until then and is refused after (401, saying when), over
    either client; a key without expiry keeps working."""
    control.create_tenant(Tenant(name="acme"))
    control.create_dataset("acme", DatasetSpec(name="web"))
    lasting = control.create_key("acme")
    expiring = control.create_key("acme", expires_in_days=0.5)
    assert lasting.info.expires_at is None
    assert expiring.info.expires_at == pytest.approx(time.time() + 43_200, abs=60)
    listed = {k.id: k.expires_at for k in control.list_keys("acme")}
    assert listed[expiring.info.id] == expiring.info.expires_at
    assert control.verify_ingest(expiring.key, "acme", "web").tenant == "acme"
    later = time.time() + 43_300
    store._clock = lambda: later  # half a day and a bit on
    with pytest.raises(AuthError, match=rf"API key {expiring.info.id} expired at 20\d\d-"):
        control.verify_ingest(expiring.key, "acme", "web")
    assert control.verify_ingest(lasting.key, "acme", "web").tenant == "acme"
    with pytest.raises(ConfigError, match="expires_in_days"):
        control.create_key("acme", expires_in_days=0)


def test_a_database_made_before_limits_and_key_expiry_gets_their_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE tenants (name TEXT PRIMARY KEY, active INTEGER NOT NULL, "
            "created_at REAL NOT NULL)"
        )
        db.execute("INSERT INTO tenants VALUES ('acme', 1, 0)")
        db.execute(
            "CREATE TABLE api_keys (id TEXT PRIMARY KEY, hash TEXT NOT NULL, role TEXT NOT NULL, "
            "tenant TEXT, dataset TEXT, description TEXT NOT NULL DEFAULT '', "
            "created_at REAL NOT NULL)"
        )
    store = ControlStore(path)
    assert store.get_tenant("acme") == Tenant(name="acme")
    assert store.set_daily_ingest_limit("acme", 3).daily_ingest_mb == 3
    admin = store.create_key(None, role="admin", expires_in_days=1)
    assert store.authenticate(admin.key).role == "admin"
    store.import_admin_key("bfk_abc123_secretsecret")
    assert {k.expires_at is None for k in store.list_keys()} == {True, False}
