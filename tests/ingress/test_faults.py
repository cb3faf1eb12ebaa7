"""Faults at the edge: storage down under load, the receiver killed with a full spool, and a
bounded load test. Every acknowledged record must reach Parquet exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from bytefreezer.control import ControlStore
from bytefreezer.control.models import DatasetSpec, Tenant
from bytefreezer.pipelines.packer import run_packer_cycle
from bytefreezer.pipelines.piper import run_piper_cycle
from bytefreezer.settings import Settings
from bytefreezer.storage import Storage
from tests.conftest import SeaweedServer, fast_settings
from tests.helpers import free_port, read_parquet_dir, stop_process, wait_for, wait_for_port


def settings_for(tmp_path: Path, s3: SeaweedServer | None) -> Settings:
    storage: dict[str, Any] = {"backend": "file"}
    if s3 is not None:
        storage = {
            "backend": "s3",
            "s3": {
                "endpoint": s3.endpoint,
                "access_key": s3.credentials["access_key"],
                "secret_key": s3.credentials["secret_key"],
                "connect_timeout_seconds": 1,
                "max_attempts": 1,
            },
        }
    return fast_settings(
        tmp_path / "data",
        storage=storage,
        receiver={"spool_retry_seconds": 0.3, "group_commit_max_age_ms": 10},
        piper={"max_objects_per_run": 500},
    )


def env_for(settings: Settings, port: int, api_port: int) -> dict[str, str]:
    env = {
        **os.environ,
        "BYTEFREEZER_DATA_DIR": str(settings.data_dir),
        "BYTEFREEZER_RECEIVER__HOST": "127.0.0.1",
        "BYTEFREEZER_RECEIVER__PORT": str(port),
        "BYTEFREEZER_RECEIVER__API_HOST": "127.0.0.1",
        "BYTEFREEZER_RECEIVER__API_PORT": str(api_port),
        "BYTEFREEZER_RECEIVER__SPOOL_RETRY_SECONDS": "0.3",
        "BYTEFREEZER_STORAGE__BACKEND": settings.storage.backend,
    }
    s3 = settings.storage.s3
    if settings.storage.backend == "s3":
        env |= {
            "BYTEFREEZER_STORAGE__S3__ENDPOINT": s3.endpoint,
            "BYTEFREEZER_STORAGE__S3__ACCESS_KEY": s3.access_key.get_secret_value(),
            "BYTEFREEZER_STORAGE__S3__SECRET_KEY": s3.secret_key.get_secret_value(),
            "BYTEFREEZER_STORAGE__S3__CONNECT_TIMEOUT_SECONDS": "1",
            "BYTEFREEZER_STORAGE__S3__MAX_ATTEMPTS": "1",
        }
    return env


def setup_control(settings: Settings) -> tuple[ControlStore, str]:
    """Buckets, tenant acme with dataset web, and an ingest key for it."""
    Storage(settings).ensure_buckets()
    control = ControlStore(settings.control_db_path(), destination_for=settings.destination_for)
    control.create_tenant(Tenant(name="acme"))
    control.create_dataset("acme", DatasetSpec(name="web"))
    return control, control.create_key("acme").key


@contextmanager
def receiver_process(
    settings: Settings,
    log: Path,
    prefix: Sequence[str] = (),
    api_port: int | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A receiver as its own process; ``prefix`` wraps its command line (e.g. ``unshare``)."""
    port, api_port = free_port(), api_port or free_port()
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "bytefreezer.cli", "receiver"],
            env=env_for(settings, port, api_port) | dict(extra_env or {}),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, timeout=60)
        yield process, f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)


async def load(
    url: str, key: str, seconds: float, clients: int, start_id: int = 0
) -> dict[str, Any]:
    """Post unique ids from ``clients`` concurrent clients for ``seconds``; honour Retry-After."""
    acked: list[int] = []
    statuses: Counter[int] = Counter()
    next_id = start_id
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {key}"}

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal next_id
        while time.monotonic() < deadline:
            ids = list(range(next_id, next_id + 20))
            next_id += 20
            body = "\n".join(json.dumps({"id": i, "pad": "x" * 100}) for i in ids)
            try:
                response = await client.post(f"{url}/acme/web", content=body, headers=headers)
            except httpx.HTTPError:
                statuses[0] += 1
                await asyncio.sleep(0.1)
                continue
            statuses[response.status_code] += 1
            if response.status_code == 200:
                acked.extend(ids)
            elif response.status_code in (429, 503):
                assert response.headers.get("retry-after"), response.text
                await asyncio.sleep(0.2)

    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
    return {"acked": acked, "statuses": statuses}


def pipeline_until_done(settings: Settings, control: ControlStore) -> None:
    storage = Storage(settings)
    for _ in range(20):
        run_piper_cycle(settings, control, storage)
        run_packer_cycle(settings, control, storage)
        if not storage.intake.list() and not [
            o for o in storage.piper.list("acme/") if o.key.endswith(".parquet")
        ]:
            return
    raise AssertionError("piper and packer did not finish")


def found_ids(settings: Settings) -> Counter[int]:
    table = read_parquet_dir(settings.data_dir / "destination" / "acme" / "web")
    return Counter(table.column("id").to_pylist()) if table is not None else Counter()


@pytest.mark.slow
def test_bounded_load_no_5xx_and_every_acknowledged_record_lands(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, None)
    control, key = setup_control(settings)
    with receiver_process(settings, tmp_path / "receiver.log") as (_, url):
        result = asyncio.run(load(url, key, seconds=10, clients=32))
    statuses = result["statuses"]
    assert not [s for s in statuses if s >= 500 or s == 0], statuses
    assert statuses[200] > 100
    pipeline_until_done(settings, control)
    found = found_ids(settings)
    assert set(result["acked"]) <= set(found)
    assert max(found.values()) == 1


@pytest.mark.slow
@pytest.mark.s3
def test_storage_down_under_load_spools_or_503s_and_loses_nothing(
    tmp_path: Path, own_s3_server: SeaweedServer
) -> None:
    settings = settings_for(tmp_path, own_s3_server)
    control, key = setup_control(settings)
    with receiver_process(settings, tmp_path / "receiver.log") as (_, url):

        async def scenario() -> dict[str, Any]:
            task = asyncio.create_task(load(url, key, seconds=8, clients=8))
            await asyncio.sleep(2)
            await asyncio.to_thread(own_s3_server.stop)
            await asyncio.sleep(3)
            await asyncio.to_thread(own_s3_server.start)
            return await task

        result = asyncio.run(scenario())
        # The spool drains once storage is back.
        spool = settings.spool_path()
        wait_for(lambda: not list(spool.glob("*.spool")), timeout=60)
    statuses = result["statuses"]
    assert not [s for s in statuses if s >= 500 and s != 503], statuses
    assert (settings.data_dir / "spool").exists()
    pipeline_until_done(settings, control)
    found = found_ids(settings)
    print(  # the figures, with pytest -s or -rP
        f"storage down 3 s: statuses {dict(statuses)}, acknowledged {len(result['acked'])}, "
        f"found {len(found)}, missing {len(set(result['acked']) - set(found))}, "
        f"duplicated {sum(1 for n in found.values() if n > 1)}"
    )
    assert set(result["acked"]) <= set(found), "an acknowledged record was lost"
    assert max(found.values()) == 1, "a record was duplicated"


@pytest.mark.s3
def test_receiver_killed_with_a_full_spool_loses_nothing(
    tmp_path: Path, own_s3_server: SeaweedServer
) -> None:
    settings = settings_for(tmp_path, own_s3_server)
    control, key = setup_control(settings)
    own_s3_server.stop()
    with receiver_process(settings, tmp_path / "receiver.log") as (process, url):
        acked = []
        for i in range(10):
            response = httpx.post(
                f"{url}/acme/web",
                content=json.dumps({"id": i}),
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
            assert response.status_code == 200 and response.json()["status"] == "spooled", (
                response.text
            )
            acked.append(i)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    assert len(list(settings.spool_path().glob("*.spool"))) >= 1
    own_s3_server.start()
    with receiver_process(settings, tmp_path / "receiver2.log"):
        wait_for(lambda: not list(settings.spool_path().glob("*.spool")), timeout=60)
    pipeline_until_done(settings, control)
    assert found_ids(settings) == Counter(acked)
