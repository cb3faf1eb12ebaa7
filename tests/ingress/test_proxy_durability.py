"""What the proxy acknowledges is on its disk: a proxy killed right after answering loses
nothing, and concurrent requests share a spool write."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bytefreezer.ingress.proxy.config import ProxyConfig
from bytefreezer.ingress.proxy.delivery import Batcher, GroupCommit, ProxyStats
from bytefreezer.ingress.spool import Spool
from tests.helpers import free_port, stop_process, wait_for, wait_for_port
from tests.ingress.conftest import Receiver
from tests.ingress.test_proxy import intake_records


def proxy_process(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bytefreezer.cli", "proxy", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def proxy_config_file(
    tmp_path: Path, receiver: Receiver, api_port: int, source: dict[str, Any], **extra: Any
) -> Path:
    """A proxy configuration file for ``bytefreezer proxy`` with one input to acme/web."""
    config = tmp_path / "proxy.yaml"
    settings = {
        "receiver_url": receiver.url,
        "spool_dir": str(tmp_path / "spool"),
        "dead_letter_dir": str(tmp_path / "dead"),
        "retry_initial_seconds": 0.1,
        "api_host": "127.0.0.1",
        "api_port": api_port,
        "inputs": [{"tenant": "acme", "dataset": "web", "api_key": receiver.key, **source}],
        **extra,
    }
    config.write_text(yaml.safe_dump(settings))
    return config


def test_a_proxy_killed_after_answering_delivers_what_it_answered_for(
    receiver: Receiver, tmp_path: Path
) -> None:
    # Batches flush by age only after an hour: before, a 200 meant "in memory", and a proxy
    # killed within `batch_max_age_seconds` of it lost the lines.
    http_port, api_port = free_port(), free_port()
    source = {"name": "hooks", "type": "http", "host": "127.0.0.1", "port": http_port}
    config = proxy_config_file(tmp_path, receiver, api_port, source, batch_max_age_seconds=3600)
    process = proxy_process(config, tmp_path / "proxy.log")
    try:
        wait_for_port(http_port)
        for i in range(5):
            body = "\n".join(json.dumps({"id": i * 10 + j}) for j in range(10)) + "\n"
            response = httpx.post(f"http://127.0.0.1:{http_port}/", content=body, timeout=30)
            assert response.status_code == 200, response.text
            assert response.json() == {"status": "spooled", "lines": 10}
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        # the receiver may have taken some already; what it has not is in the spool
        delivered = {r["id"] for r in intake_records(receiver)}
        assert delivered or list((tmp_path / "spool").glob("*.spool"))
        process = proxy_process(config, tmp_path / "proxy.log")
        wait_for(lambda: len(intake_records(receiver)) >= 50, timeout=30)
        wait_for(lambda: not list((tmp_path / "spool").glob("*.spool")), timeout=30)
    finally:
        stop_process(process)
    ids = sorted(r["id"] for r in intake_records(receiver))
    assert ids == list(range(50))


def batcher(tmp_path: Path, spool_bytes: int = 1 << 30, **config: object) -> Batcher:
    settings = ProxyConfig.model_validate(
        {
            "receiver_url": "http://127.0.0.1:1",
            "inputs": [
                {
                    "name": "in",
                    "type": "http",
                    "port": 0,
                    "tenant": "acme",
                    "dataset": "web",
                    "api_key": "k",
                }
            ],
            **config,
        }
    )
    return Batcher(
        settings, settings.inputs[0], Spool(tmp_path / "spool", spool_bytes), ProxyStats()
    )


def spooled_records(spool: Spool) -> list[bytes]:
    import gzip

    return [
        line for path in spool.paths() for line in gzip.decompress(Spool.read(path)[1]).splitlines()
    ]


@pytest.mark.parametrize("batch_max_lines", [3, 10_000])
def test_concurrent_writers_each_get_their_records_spooled_once(
    tmp_path: Path, batch_max_lines: int
) -> None:
    batch = batcher(tmp_path, batch_max_lines=batch_max_lines)
    spool = batch._spool
    answered: list[int] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        for k in range(20):
            records = [json.dumps({"c": n, "k": k, "j": j}).encode() for j in range(5)]
            first, last = batch.add_many(records)
            assert batch.spool_through(first, last)
            # the moment it is answered, every record of the request is on disk
            on_disk = set(spooled_records(spool))
            assert all(r in on_disk for r in records)
            with lock:
                answered.append(len(records))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = spooled_records(spool)
    assert len(records) == len(set(records)) == sum(answered) == 8 * 20 * 5
    # group commit: fewer spool writes than requests when the batches are not cut by size
    if batch_max_lines > 100:
        assert len(spool.paths()) <= 8 * 20


def test_a_full_spool_is_reported_to_the_requests_it_refused(tmp_path: Path) -> None:
    batch = batcher(tmp_path, spool_bytes=600)
    first, last = batch.add_many([b'{"small": 1}'])
    assert batch.spool_through(first, last)
    first, last = batch.add_many([json.dumps({"big": os.urandom(2000).hex()}).encode()])
    assert not batch.spool_through(first, last)
    first, last = batch.add_many([b'{"small": 2}'])
    assert batch.spool_through(first, last)
    assert batch._stats.lines_refused == {"in": 1}


def test_requests_waiting_together_share_one_write_and_hear_of_a_refusal(tmp_path: Path) -> None:
    batch = batcher(tmp_path, spool_bytes=4000)
    commit = GroupCommit(batch)

    async def scenario() -> None:
        small = [commit.spool([json.dumps({"n": n}).encode()]) for n in range(50)]
        assert all(await asyncio.gather(*small))
        assert len(batch._spool.paths()) == 1  # every request that waited, in one write
        big = json.dumps({"big": os.urandom(4000).hex()}).encode()
        assert await commit.spool([big]) is False  # the full spool refused it
        assert await commit.spool([b'{"n": 50}'])

    asyncio.run(scenario())
    numbers = sorted(json.loads(r)["n"] for r in spooled_records(batch._spool))
    assert numbers == list(range(51))
