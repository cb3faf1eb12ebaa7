"""Health and state APIs of piper and packer, and the control service's list of components."""

from __future__ import annotations

import gzip
import json
from contextlib import ExitStack
from pathlib import Path

import httpx

from bytefreezer.control import ControlStore, HttpControl
from bytefreezer.control.app import create_app as control_app
from bytefreezer.control.models import DatasetSpec, Tenant
from bytefreezer.ingress.receiver import IntakeWriter, build_state, create_app
from bytefreezer.pipelines.api import create_worker_api
from bytefreezer.pipelines.packer import run_packer_cycle
from bytefreezer.pipelines.piper import run_piper_cycle
from bytefreezer.pipelines.poller import Poller
from bytefreezer.storage import Storage
from tests.conftest import fast_settings
from tests.helpers import serve_app, wait_for


def test_worker_apis_and_component_reports(tmp_path: Path) -> None:
    settings = fast_settings(
        tmp_path / "data",
        storage={"s3": {"secret_key": "never-shown"}},
        monitoring={"report_interval_seconds": 0.2},
    )
    storage = Storage(settings)
    storage.ensure_buckets()
    store = ControlStore(settings.control_db_path(), destination_for=settings.destination_for)
    store.create_tenant(Tenant(name="acme"))
    store.create_dataset("acme", DatasetSpec(name="web"))
    admin = store.create_key(None, role="admin").key
    body = gzip.compress(b"".join(json.dumps({"i": i}).encode() + b"\n" for i in range(5)))
    IntakeWriter(storage).write("acme", "web", "ndjson", body, {})
    with ExitStack() as stack:
        control_url = stack.enter_context(serve_app(control_app(store)))
        control = HttpControl(control_url, admin, timeout=5)
        piper = Poller(
            "piper",
            lambda: run_piper_cycle(settings, control, storage),
            1,
            report=control.report_health,
            instance="piper-0",
        )
        packer = Poller(
            "packer",
            lambda: run_packer_cycle(settings, control, storage),
            1,
            report=control.report_health,
            instance="packer-0",
        )
        piper.run_once()
        packer.run_once()
        piper_api = stack.enter_context(
            serve_app(create_worker_api(settings, storage, control, piper))
        )
        packer_api = stack.enter_context(
            serve_app(create_worker_api(settings, storage, control, packer))
        )
        for api in (piper_api, packer_api):
            assert httpx.get(f"{api}/api/v1/health").json() == {"status": "ok"}
            ready = httpx.get(f"{api}/api/v1/ready")
            assert ready.status_code == 200 and ready.json()["checks"] == {
                "storage": "ok",
                "control": "ok",
            }
            config = httpx.get(f"{api}/api/v1/config").text
            assert "never-shown" not in config and '"max_objects_per_run":64' in config.replace(
                " ", ""
            )
        runs = httpx.get(f"{piper_api}/api/v1/pipelines").json()
        assert runs["component"] == "piper" and runs["cycles"] == 1
        assert runs["last"]["claimed"] == 1 and runs["last"]["counters"]["records_out"] == 5
        status = httpx.get(f"{packer_api}/api/v1/status").json()
        assert status["last"]["counters"]["rows_written"] == 5
        assert httpx.get(f"{piper_api}/api/v1/status").status_code == 404  # each has its own
        receiver_state = build_state(settings, control, storage)
        stack.enter_context(serve_app(create_app(settings, control, storage, state=receiver_state)))

        def listed() -> dict[str, float]:
            found = {c.component: c.age_seconds for c in control.list_components()}
            return found if {"receiver", "piper", "packer"} <= set(found) else {}

        ages = wait_for(listed, timeout=10)
        assert all(age is not None and age < 60 for age in ages.values())
        # A control service that cannot be reached makes readiness fail with the reason.
        stack.close()
    with serve_app(
        create_worker_api(
            settings, storage, HttpControl("http://127.0.0.1:9", admin, timeout=1), piper
        )
    ) as api:
        ready = httpx.get(f"{api}/api/v1/ready")
        assert ready.status_code == 503 and "unreachable" in ready.json()["checks"]["control"]
