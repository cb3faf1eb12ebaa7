"""Usage per tenant, dataset and UTC day, added up from every receiver by the control service;
daily ingest limits held by the receivers from those counts."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from bytefreezer.cli import main
from bytefreezer.control import ControlStore
from bytefreezer.control.app import create_app as create_control_app
from bytefreezer.control.models import DatasetSpec, Tenant, Usage, utc_day
from bytefreezer.errors import NotFound
from tests.conftest import fast_settings
from tests.helpers import serve_app
from tests.ingress.conftest import Receiver, seeded_control, start_receiver

FAST = {"usage_report_seconds": 0.05, "max_body_bytes": 4_000_000}


def lines(n: int, width: int = 100) -> bytes:
    return b"".join(json.dumps({"id": i, "pad": "x" * width}).encode() + b"\n" for i in range(n))


def post(receiver: Receiver, path: str, body: bytes, **headers: str) -> httpx.Response:
    merged = {**receiver.auth(), **headers}
    return httpx.post(f"{receiver.url}{path}", content=body, headers=merged, timeout=30)


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def totals(control: ControlStore, tenant: str) -> dict[str, Usage]:
    return {u.dataset: u for u in control.list_usage(tenant, 1)}


def test_what_is_accepted_is_counted_per_dataset_and_day(
    make_receiver: Callable[..., Receiver], capsys: pytest.CaptureFixture[str]
) -> None:
    receiver = make_receiver(receiver=FAST)
    sent = [lines(10), lines(20), lines(5)]
    compressed = [gzip.compress(body) for body in sent]
    for body in compressed:
        response = post(receiver, "/acme/web", body, **{"Content-Encoding": "gzip"})
        assert response.status_code == 200
    csv = b"a,b\n1,2\n3,4\n"
    assert post(receiver, "/acme/tab", csv).status_code == 200
    assert post(receiver, "/acme/web", b"").status_code == 400  # refused: not counted
    wait_for(lambda: sum(u.requests for u in totals(receiver.control, "acme").values()) == 4)
    web, tab = totals(receiver.control, "acme")["web"], totals(receiver.control, "acme")["tab"]
    assert (web.requests, web.records, web.bytes) == (3, 35, sum(len(b) for b in sent))
    assert (
        web.compressed_bytes == sum(len(gzip.compress(b)) for b in sent)
        or web.compressed_bytes < web.bytes
    )
    assert (tab.requests, tab.records, tab.bytes) == (1, 2, len(csv))
    assert web.day == utc_day() and receiver.control.list_usage("other") == []

    main(["tenants", "usage", "acme", "--data-dir", str(receiver.settings.data_dir)])
    printed = json.loads(capsys.readouterr().out)
    assert {(u["dataset"], u["requests"]) for u in printed} == {("web", 3), ("tab", 1)}


def test_two_receivers_counts_add_up_and_the_limit_holds_across_them(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path / "data", receiver={**FAST, "auth_cache_seconds": 0.05})
    control = seeded_control(settings)
    control.set_daily_ingest_limit("acme", 1)  # 1 MB a day
    body = lines(2400)  # three of them are under 1 MB, four over it
    assert 3 * len(body) < 1024 * 1024 <= 4 * len(body)
    with ExitStack() as stack:
        first = start_receiver(stack, settings, control)
        second = start_receiver(stack, settings, control)
        statuses = [post(first, "/acme/web", body).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        wait_for(lambda: totals(control, "acme")["web"].requests == 3)
        time.sleep(0.1)  # the second receiver's cached verdicts expire
        assert post(second, "/acme/web", body).status_code == 200  # under the limit before it
        refused = post(second, "/acme/web", body)
        assert refused.status_code == 429
        assert "daily ingest limit of 1 MB" in refused.json()["error"]
        retry = int(refused.headers["Retry-After"])
        assert 0 < retry <= 86400 and abs(retry - (86400 - time.time() % 86400)) < 5
        wait_for(lambda: totals(control, "acme")["web"].requests == 4)
        time.sleep(0.1)
        assert post(first, "/acme/web", body).status_code == 429  # the first sees it too
        # Another tenant is not held back; a raised limit lets the tenant in again.
        other = control.create_key("other").key
        response = post(first, "/other/web", body, Authorization=f"Bearer {other}")
        assert response.status_code == 200
        control.set_daily_ingest_limit("acme", 10)
        time.sleep(0.1)
        assert post(first, "/acme/web", body).status_code == 200
        control.set_daily_ingest_limit("acme", None)
        assert control.get_tenant("acme").daily_ingest_mb is None


def test_the_store_adds_reports_and_keeps_days_apart(tmp_path: Path) -> None:
    now = [1_767_225_600.0 + 3600]  # 2026-01-01T01:00Z
    store = ControlStore(tmp_path / "c.db", clock=lambda: now[0])
    store.create_tenant(Tenant(name="acme", daily_ingest_mb=5))
    report = Usage(
        tenant="acme",
        dataset="web",
        day="2026-01-01",
        requests=1,
        records=10,
        bytes=100,
        compressed_bytes=40,
    )
    store.report_usage([report, report])
    gone = report.model_copy(update={"tenant": "gone"})
    store.report_usage([gone])  # a tenant deleted meanwhile: skipped, the rest kept
    yesterday = report.model_copy(update={"day": "2025-12-31"})
    store.report_usage([yesterday])
    (today,) = store.list_usage("acme", 1)
    assert (today.requests, today.records, today.bytes, today.compressed_bytes) == (2, 20, 200, 80)
    assert [u.day for u in store.list_usage("acme", 2)] == ["2026-01-01", "2025-12-31"]
    assert [u.tenant for u in store.list_usage(None, 7)] == ["acme", "acme"]
    with pytest.raises(NotFound):
        store.list_usage("gone")
    store.create_dataset("acme", DatasetSpec(name="web"))
    verified = store.verify_ingest(store.create_key("acme").key, "acme", "web")
    assert (verified.daily_ingest_bytes, verified.ingested_today_bytes, verified.day) == (
        5 * 1024 * 1024,
        200,
        "2026-01-01",
    )
    store.delete_tenant("acme")
    assert store.list_usage(None, 7) == []


def test_the_api_sets_limits_and_reads_usage(tmp_path: Path) -> None:
    store = ControlStore(tmp_path / "c.db")
    store.create_tenant(Tenant(name="acme"))
    admin = {"Authorization": f"Bearer {store.create_key(None, role='admin').key}"}
    with serve_app(create_control_app(store)) as url:
        api = f"{url}/api/v1"
        limited = httpx.patch(f"{api}/tenants/acme", json={"daily_ingest_mb": 50}, headers=admin)
        assert limited.status_code == 200 and limited.json()["daily_ingest_mb"] == 50
        both = httpx.patch(
            f"{api}/tenants/acme", json={"daily_ingest_mb": None, "active": False}, headers=admin
        )
        assert both.json() == {"name": "acme", "active": False, "daily_ingest_mb": None}
        for body in ({}, {"daily_ingest_mb": 0}, {"colour": "red"}):
            assert httpx.patch(f"{api}/tenants/acme", json=body, headers=admin).status_code == 400
        entry = {
            "tenant": "acme",
            "dataset": "web",
            "day": utc_day(),
            "requests": 2,
            "records": 3,
            "bytes": 4,
            "compressed_bytes": 1,
        }
        assert httpx.post(f"{api}/usage", json=[entry], headers=admin).status_code == 204
        assert (
            httpx.post(
                f"{api}/usage", json=[{**entry, "day": "yesterday"}], headers=admin
            ).status_code
            == 400
        )
        assert httpx.get(f"{api}/tenants/acme/usage", headers=admin).json() == [entry]
        assert httpx.get(f"{api}/usage", params={"days": 0}, headers=admin).status_code == 400
        for days in ("²", "1.5", "-1", "x"):  # "²" is a digit to str.isdigit, not to int()
            refused = httpx.get(f"{api}/usage", params={"days": days}, headers=admin)
            assert refused.status_code == 400 and "whole number" in refused.text, refused.text
        assert httpx.get(f"{api}/usage").status_code == 401


@pytest.mark.parametrize("endpoint", ["bulk", "hec"])
def test_a_daily_limit_holds_for_the_bulk_api_and_hec_as_reports_go_out(
    make_receiver: Callable[..., Receiver], endpoint: str
) -> None:
    """The receiver's count of a tenant's day is control's total when its key was verified plus
    what it accepted since; a cached verdict, used again while the receiver reports its counts,
    must not be taken for a new total (that would forget what was reported in between)."""
    receiver = make_receiver(receiver=FAST)
    receiver.control.set_daily_ingest_limit("acme", 1)  # 1 MB a day
    documents = lines(2400).splitlines()  # about 300 KB of records a request
    if endpoint == "bulk":
        path, headers = "/web/_bulk", {}
        body = b"".join(b'{"index": {}}\n' + doc + b"\n" for doc in documents)
    else:
        path, headers = "/services/collector/event", {"Authorization": f"Splunk {receiver.key}"}
        body = b"".join(b'{"event": %s, "index": "web"}' % doc for doc in documents)
    statuses = []
    for _ in range(6):
        statuses.append(post(receiver, path, body, **headers).status_code)
        time.sleep(0.2)  # the receiver reports what it accepted to control
    assert statuses == [200, 200, 200, 200, 429, 429]
