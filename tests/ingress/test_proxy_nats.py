"""The proxy's `nats` input against a real NATS server (Debian's nats-server, with JetStream):
core NATS messages to the receiver; a JetStream durable consumer acknowledged only once its
records are spooled, so a proxy stopped and started again picks up where it left off, and
messages a proxy could not spool go to the next one."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from bytefreezer.ingress.proxy.config import ProxyConfig
from bytefreezer.ingress.proxy.service import ProxyService
from tests.helpers import free_port, stop_process, wait_for_port
from tests.ingress.conftest import Receiver
from tests.ingress.test_proxy import intake_records, proxy_config, until

pytestmark = pytest.mark.skipif(
    shutil.which("nats-server") is None,
    reason="Debian's nats-server comes with `make test` (system-deps)",
)


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        ["nats-server", "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp_path / "js")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"nats://127.0.0.1:{port}"
    finally:
        stop_process(process)


def nats_proxy(receiver: Receiver, tmp_path: Path, url: str, **extra: object) -> ProxyService:
    config = proxy_config(
        tmp_path,
        receiver.url,
        receiver.key,
        {"name": "bus", "type": "nats", "servers": [url], "subject": "logs.>", **extra},
    )
    return ProxyService(config)


async def publish(url: str, subject: str, ids: range, jetstream: bool = False) -> None:
    client = await nats.connect(url)
    try:
        for i in ids:
            payload = json.dumps({"id": i}).encode() + b"\n" + b"plain line " + str(i).encode()
            if jetstream:
                await client.jetstream().publish(subject, payload)
            else:
                await client.publish(subject, payload)
        await client.flush()
    finally:
        await client.close()


def test_core_nats_messages_become_records(
    receiver: Receiver, tmp_path: Path, nats_url: str
) -> None:
    service = nats_proxy(receiver, tmp_path, nats_url)

    async def scenario() -> None:
        await service.start()
        try:
            await publish(nats_url, "logs.app", range(50))
            await until(lambda: len(intake_records(receiver)) == 100)
        finally:
            await service.stop()

    asyncio.run(scenario())
    records = intake_records(receiver)
    assert sorted(r["id"] for r in records if "id" in r) == list(range(50))
    assert sorted(r["raw"] for r in records if "raw" in r)[:2] == ["plain line 0", "plain line 1"]


def test_jetstream_acknowledged_once_spooled_resumes_after_a_stop(
    receiver: Receiver, tmp_path: Path, nats_url: str
) -> None:
    async def make_stream() -> None:
        client = await nats.connect(nats_url)
        await client.jetstream().add_stream(name="LOGS", subjects=["logs.>"])
        await client.close()

    asyncio.run(make_stream())

    async def run_proxy_until(count: int) -> None:
        service = nats_proxy(receiver, tmp_path, nats_url, stream="LOGS")
        await service.start()
        try:
            await until(lambda: sum(1 for r in intake_records(receiver) if "id" in r) >= count)
        finally:
            await service.stop()

    asyncio.run(publish(nats_url, "logs.app", range(100), jetstream=True))
    asyncio.run(run_proxy_until(100))
    # published while no proxy ran: the durable consumer kept its place
    asyncio.run(publish(nats_url, "logs.app", range(100, 150), jetstream=True))
    asyncio.run(run_proxy_until(150))
    ids = [r["id"] for r in intake_records(receiver) if "id" in r]
    assert sorted(ids) == list(range(150))  # each once: acknowledged messages are not sent again


def test_messages_a_proxy_could_not_spool_go_to_the_next_one(
    receiver: Receiver, tmp_path: Path, nats_url: str
) -> None:
    # the first proxy's spool refuses everything (too small): it takes the messages and
    # acknowledges none; the next proxy, with room, gets them all from JetStream. The durable
    # consumer is made beforehand, as operators do, with a short ack wait for the test.
    async def scenario() -> None:
        client = await nats.connect(nats_url)
        jetstream = client.jetstream()
        await jetstream.add_stream(name="LOGS", subjects=["logs.>"])
        await jetstream.add_consumer(
            "LOGS", ConsumerConfig(durable_name="edge", ack_wait=2, ack_policy=AckPolicy.EXPLICIT)
        )
        await client.close()
        await publish(nats_url, "logs.app", range(20), jetstream=True)
        full = ProxyService(
            ProxyConfig.model_validate(
                {
                    **proxy_config(
                        tmp_path / "a",
                        receiver.url,
                        receiver.key,
                        {
                            "name": "bus",
                            "type": "nats",
                            "servers": [nats_url],
                            "subject": "logs.>",
                            "stream": "LOGS",
                            "durable": "edge",
                        },
                    ).model_dump(mode="json"),
                    "spool_max_bytes": 10,
                }
            )
        )
        await full.start()
        await until(lambda: sum(full.stats.lines_refused.values()) >= 40)
        await full.stop()
        assert not intake_records(receiver)
        roomy = nats_proxy(receiver, tmp_path / "b", nats_url, stream="LOGS", durable="edge")
        await roomy.start()
        try:
            await until(lambda: len(intake_records(receiver)) >= 40, timeout=40)
        finally:
            await roomy.stop()

    asyncio.run(scenario())
    ids = sorted(r["id"] for r in intake_records(receiver) if "id" in r)
    assert ids == list(range(20))


def test_a_nats_input_needs_servers_and_a_subject() -> None:
    with pytest.raises(ValueError, match="needs servers and a subject"):
        ProxyConfig.model_validate(
            {
                "receiver_url": "http://x",
                "inputs": [
                    {"name": "bus", "type": "nats", "tenant": "a", "dataset": "b", "api_key": "k"}
                ],
            }
        )
    with pytest.raises(ValueError, match="needs a port"):
        ProxyConfig.model_validate(
            {
                "receiver_url": "http://x",
                "inputs": [
                    {"name": "t", "type": "tcp", "tenant": "a", "dataset": "b", "api_key": "k"}
                ],
            }
        )
