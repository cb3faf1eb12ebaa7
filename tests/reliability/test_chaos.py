"""kill -9 at random moments: control, receiver, pipers and packers are killed and restarted
under continuous load; every acknowledged record is in the final Parquet exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from bytefreezer.control import ControlStore
from bytefreezer.control.models import DatasetSpec, Tenant
from tests.helpers import free_port, read_parquet_dir, wait_for, wait_for_port

ADMIN = "bfk_0a1b2c3d4e5f_chaos-admin-key-secret"


class Stack:
    """Processes of one stack on a shared data directory, each killable and restartable."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.data = tmp_path / "data"
        self.control_port, self.port = free_port(), free_port()
        self.env = {
            **os.environ,
            "BYTEFREEZER_DATA_DIR": str(self.data),
            "BYTEFREEZER_CONTROL__URL": f"http://127.0.0.1:{self.control_port}",
            "BYTEFREEZER_CONTROL__API_KEY": ADMIN,
            "BYTEFREEZER_CONTROL__ADMIN_KEY": ADMIN,
            "BYTEFREEZER_CONTROL__PORT": str(self.control_port),
            "BYTEFREEZER_CONTROL__TIMEOUT_SECONDS": "3",
            "BYTEFREEZER_RECEIVER__HOST": "127.0.0.1",
            "BYTEFREEZER_RECEIVER__PORT": str(self.port),
            "BYTEFREEZER_RECEIVER__API_HOST": "127.0.0.1",
            "BYTEFREEZER_RECEIVER__SPOOL_RETRY_SECONDS": "0.3",
            "BYTEFREEZER_PIPER__POLL_INTERVAL_SECONDS": "0.3",
            "BYTEFREEZER_PIPER__LEASE_TTL_SECONDS": "4",
            "BYTEFREEZER_PIPER__MAX_OBJECTS_PER_RUN": "8",
            "BYTEFREEZER_PACKER__POLL_INTERVAL_SECONDS": "0.3",
            "BYTEFREEZER_PACKER__BUFFER_SECONDS": "0",
            "BYTEFREEZER_PACKER__LEASE_TTL_SECONDS": "4",
            "BYTEFREEZER_PACKER__MAX_INPUT_MB_PER_RUN": "1",
            "BYTEFREEZER_MONITORING__REPORT_INTERVAL_SECONDS": "1",
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.kills: Counter[str] = Counter()

    def start(self, name: str) -> None:
        component = name.split("-")[0]
        env = {**self.env, "BYTEFREEZER_INSTANCE_ID": name}
        env["BYTEFREEZER_RECEIVER__API_PORT"] = str(free_port())
        env["BYTEFREEZER_PIPER__API_HOST"] = env["BYTEFREEZER_PACKER__API_HOST"] = "127.0.0.1"
        env["BYTEFREEZER_PIPER__API_PORT"] = env["BYTEFREEZER_PACKER__API_PORT"] = str(free_port())
        if component == "control":
            env.pop("BYTEFREEZER_CONTROL__URL")
        with open(self.tmp / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", "bytefreezer.cli", component],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def seed(self) -> str:
        """Create the admin key, tenant acme and dataset web; return an ingest key."""
        destination = (self.data / "destination").as_uri()
        store = ControlStore(
            self.data / "control.db", destination_for=lambda t, d: f"{destination}/{t}/{d}"
        )
        store.import_admin_key(ADMIN)
        store.create_tenant(Tenant(name="acme"))
        store.create_dataset("acme", DatasetSpec(name="web"))
        key = store.create_key("acme").key
        store.close()
        return key

    def start_all(self, names: list[str]) -> None:
        """Start each named process; wait until control and the receiver listen."""
        for name in names:
            self.start(name)
        wait_for_port(self.control_port, timeout=60)
        wait_for_port(self.port, timeout=60)

    def found(self) -> Counter[int]:
        """How often each id is in the destination's Parquet."""
        table = read_parquet_dir(self.data / "destination" / "acme" / "web")
        return Counter(table.column("id").to_pylist()) if table is not None else Counter()

    def landed(self, acked: list[int]) -> Counter[int]:
        """Wait until every acknowledged id is in Parquet, then a little longer (a duplicate
        would land after the last record); return what is there."""
        wait_for(lambda: set(acked) <= set(self.found()), timeout=120, interval=1)
        time.sleep(3)
        return self.found()

    def summary(self, acked: list[int], found: Counter[int]) -> str:
        """One line of figures: kills per component, records acknowledged, found, doubled."""
        kills = ", ".join(f"{name} {n}" for name, n in sorted(self.kills.items()))
        doubled = sum(1 for n in found.values() if n > 1)
        missing = len(set(acked) - set(found))
        return (
            f"kills: {sum(self.kills.values())} ({kills}); acknowledged {len(acked)}, "
            f"found {len(found)}, missing {missing}, duplicated {doubled}"
        )

    def kill(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait()
        self.kills[name.split("-")[0]] += 1

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


async def load(url: str, key: str, stop: asyncio.Event, acked: list[int]) -> None:
    """Post unique ids until stopped; only 200 answers count as acknowledged."""
    next_id = 0
    async with httpx.AsyncClient(timeout=10) as client:
        while not stop.is_set():
            ids = list(range(next_id, next_id + 25))
            next_id += 25
            body = "\n".join(
                json.dumps({"id": i, "timestamp": "2026-03-01T00:00:00Z"}) for i in ids
            )
            try:
                answer = await client.post(
                    f"{url}/acme/web", content=body, headers={"Authorization": f"Bearer {key}"}
                )
            except httpx.HTTPError:
                await asyncio.sleep(0.1)
                continue
            if answer.status_code == 200:
                acked.extend(ids)
            else:
                await asyncio.sleep(0.1)


@pytest.mark.slow
def test_kill_9_anything_under_load_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    key = stack.seed()
    names = ["control-0", "receiver-0", "piper-0", "piper-1", "piper-2", "packer-0", "packer-1"]
    rng = random.Random(42)
    acked: list[int] = []
    try:
        stack.start_all(names)

        async def chaos() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(load(f"http://127.0.0.1:{stack.port}", key, stop, acked))
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                await asyncio.sleep(rng.uniform(0.5, 1.5))
                victim = rng.choice(names + ["piper-1"] * 2)  # piper-1 is killed most often
                await asyncio.to_thread(stack.kill, victim)
                await asyncio.sleep(rng.uniform(0.1, 0.6))
                await asyncio.to_thread(stack.start, victim)
            stop.set()
            await task

        asyncio.run(chaos())
        assert len(acked) > 200 and sum(stack.kills.values()) >= 10

        found = stack.landed(acked)
        print(stack.summary(acked, found))  # the figures, with pytest -s or -rP
        assert set(acked) <= set(found), "an acknowledged record was lost"
        assert max(found.values()) == 1, [i for i, n in found.items() if n > 1][:10]
    finally:
        stack.stop_all()


@pytest.mark.slow
def test_control_down_longer_than_a_lease_ttl(tmp_path: Path) -> None:
    """Ingest goes on with cached keys while the control service is down past every lease's
    TTL; when it is back, expired leases are taken over and nothing is lost or doubled."""
    stack = Stack(tmp_path)
    stack.env["BYTEFREEZER_RECEIVER__AUTH_CACHE_SECONDS"] = (
        "1"  # cached verdicts are stale during the outage
    )
    key = stack.seed()
    names = ["control-0", "receiver-0", "piper-0", "piper-1", "packer-0"]
    acked: list[int] = []
    during_outage: list[int] = []
    try:
        stack.start_all(names)

        async def outage() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(load(f"http://127.0.0.1:{stack.port}", key, stop, acked))
            await asyncio.sleep(3)
            await asyncio.to_thread(stack.kill, "control-0")
            before = len(acked)
            await asyncio.sleep(6)  # longer than the 4 s lease TTL
            during_outage.append(len(acked) - before)
            await asyncio.to_thread(stack.start, "control-0")
            await asyncio.sleep(4)
            stop.set()
            await task

        asyncio.run(outage())
        assert during_outage[0] > 0, "ingest stopped while control was down"

        found = stack.landed(acked)
        print(stack.summary(acked, found), f"during the outage {during_outage[0]}")
        assert set(acked) <= set(found) and max(found.values()) == 1
    finally:
        stack.stop_all()
