"""OTLP modes: the real exporters push to real OTLP receivers; after N records, they hold N."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from bytefreezer.control import ControlStore
from bytefreezer.control.models import DatasetSpec, Tenant
from bytefreezer.ingress.receiver import build_state, create_app
from bytefreezer.pipelines.packer import run_packer_cycle
from bytefreezer.pipelines.piper import run_piper_cycle
from bytefreezer.settings import Settings
from bytefreezer.storage import Storage
from bytefreezer.telemetry import Telemetry
from tests.conftest import fast_settings
from tests.helpers import serve_app, wait_for
from tests.monitoring.otlp_receivers import Collected, grpc_receiver, http_receiver

N = 37


@contextmanager
def receiver_for(mode: str) -> Iterator[tuple[str, Collected]]:
    with grpc_receiver() if mode == "otlp_grpc" else http_receiver() as pair:
        yield pair


def run_stack(settings: Settings) -> dict[str, Telemetry]:
    storage = Storage(settings)
    storage.ensure_buckets()
    control = ControlStore(settings.control_db_path(), destination_for=settings.destination_for)
    control.create_tenant(Tenant(name="acme"))
    chain = [{"type": "filter", "config": {"condition": "n % 2 = 0"}}]
    control.create_dataset("acme", DatasetSpec(name="web", transforms=chain))
    key = control.create_key("acme").key
    telemetry = {c: Telemetry(settings, c) for c in ("receiver", "piper", "packer")}
    with ExitStack() as stack:
        state = build_state(settings, control, storage, telemetry["receiver"])
        url = stack.enter_context(serve_app(create_app(settings, control, storage, state=state)))
        lines = "\n".join(json.dumps({"n": i}) for i in range(N)) + "\n{broken\n"
        response = httpx.post(
            f"{url}/acme/web",
            content=gzip.compress(lines.encode()),
            headers={"Authorization": f"Bearer {key}", "Content-Encoding": "gzip"},
        )
        assert response.status_code == 200
    run_piper_cycle(settings, control, storage, telemetry["piper"])
    run_packer_cycle(settings, control, storage, telemetry["packer"])
    for t in telemetry.values():
        t.flush()
    return telemetry


def assert_batch_trace(collected: Collected) -> None:
    """request → intake object → piper run → packer file, linked as one path."""
    wait_for(
        lambda: (
            {s.name for s in collected.spans()}
            >= {
                "receiver.request",
                "receiver.write_object",
                "piper.process_object",
                "packer.write_files",
            }
        ),
        timeout=20,
    )
    spans = {s.name: s for s in collected.spans()}
    request, write = spans["receiver.request"], spans["receiver.write_object"]
    piper, packer = spans["piper.process_object"], spans["packer.write_files"]
    assert [link.span_id for link in write.links] == [request.span_id]
    assert piper.trace_id == write.trace_id and piper.parent_span_id == write.span_id
    assert [link.span_id for link in packer.links] == [piper.span_id]


@pytest.mark.parametrize("mode", ["otlp_grpc", "otlp_http"])
def test_metrics_and_traces_are_pushed(tmp_path: Path, mode: str) -> None:
    with receiver_for(mode) as (endpoint, collected):
        settings = fast_settings(
            tmp_path / "data",
            monitoring={
                "mode": mode,
                "external_endpoint": endpoint,
                "headers": {"x-api-key": "collector-secret"},
                "export_interval_seconds": 60,
            },
        )
        telemetry = run_stack(settings)
        try:
            wait_for(lambda: collected.total("bytefreezer_packer_rows") > 0, timeout=20)
            received = collected.total("bytefreezer_records_received", stage="ingest")
            assert received == N + 1  # every line the receiver took in, the broken one too
            assert collected.total("bytefreezer_receiver_requests", status_class="2xx") == 1
            assert collected.total("bytefreezer_records_received", stage="piper") == N + 1
            kept = len([i for i in range(N) if i % 2 == 0])
            assert collected.total("bytefreezer_records_sent", stage="piper") == kept
            assert (
                collected.total("bytefreezer_records_dropped", stage="piper", transform="filter")
                == N - kept
            )
            dead = collected.total(
                "bytefreezer_records_dead_lettered", stage="piper", transform="decode"
            )
            assert dead == 1
            assert collected.total("bytefreezer_packer_rows") == kept
            assert collected.total("bytefreezer_packer_files") >= 1
            assert collected.total("bytefreezer_piper_objects", result="done") == 1
            assert collected.total("bytefreezer_receiver_store_write_seconds") >= 1
            resources = collected.resource_attributes()
            components = {r.get("bytefreezer.component") for r in resources}
            assert {"receiver", "piper", "packer"} <= components
            assert all(r["service.instance.id"] == settings.instance_id for r in resources)
            seen: dict[str, Any] = collected.headers[-1]
            assert seen.get("x-api-key") == "collector-secret"
            assert_batch_trace(collected)
        finally:
            for t in telemetry.values():
                t.shutdown()
