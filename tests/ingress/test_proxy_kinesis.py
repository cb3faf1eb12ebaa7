"""The proxy's `kinesis` input against kinesalite (an implementation of Kinesis Data Streams'
API, installed by `make test` with `npm ci`, standing in for Kinesis as SeaweedFS does for S3):
records of every shard through the receiver, piper and packer to Parquet; CloudWatch Logs
subscription messages a record per log event; checkpoints that survive a restart; a full spool
that moves no checkpoint."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from bytefreezer.ingress.proxy.kinesis import records_of
from bytefreezer.ingress.proxy.service import ProxyService
from tests.helpers import free_port, stop_process, wait_for, wait_for_port
from tests.ingress.conftest import Receiver
from tests.ingress.test_proxy import intake_records, proxy_config, serving, spooled_records, until

KINESALITE = (
    Path(__file__).parents[1] / "clients" / "kinesis" / "node_modules" / ".bin" / "kinesalite"
)

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not KINESALITE.exists(),
    reason="`make test` installs kinesalite (npm ci in tests/clients/kinesis)",
)


@pytest.fixture
def kinesis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    """kinesalite on a free port, and a boto3 client of it."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    port = free_port()
    process = subprocess.Popen(
        [str(KINESALITE), "--port", str(port), "--path", str(tmp_path / "kinesalite"),
         "--createStreamMs", "0", "--deleteStreamMs", "0", "--updateStreamMs", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}"
        client = boto3.client(
            "kinesis", endpoint_url=url, region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test",
        )  # fmt: skip
        yield url, client
    finally:
        stop_process(process)


def create_stream(client: Any, name: str, shards: int) -> None:
    client.create_stream(StreamName=name, ShardCount=shards)
    wait_for(
        lambda: (
            client.describe_stream(StreamName=name)["StreamDescription"]["StreamStatus"] == "ACTIVE"
        ),
        10,
    )


def kinesis_service(receiver: Receiver, tmp_path: Path, url: str, **extra: Any) -> ProxyService:
    source = {"name": "kds", "type": "kinesis", "stream": "events", "endpoint_url": url,
              "region": "us-east-1", "poll_interval_seconds": 0.05, **extra.pop("source", {})}  # fmt: skip
    return ProxyService(proxy_config(tmp_path, receiver.url, receiver.key, source, **extra))


def cloudwatch(events: list[tuple[int, str]]) -> bytes:
    message = {
        "messageType": "DATA_MESSAGE",
        "owner": "123456789012",
        "logGroup": "/aws/lambda/checkout",
        "logStream": "2026/01/01/[$LATEST]abc",
        "subscriptionFilters": ["all"],
        "logEvents": [
            {"id": str(n), "timestamp": t, "message": m} for n, (t, m) in enumerate(events)
        ],
    }
    return gzip.compress(json.dumps(message).encode())


def test_a_streams_shards_to_parquet_and_checkpoints_across_a_restart(
    receiver: Receiver, tmp_path: Path, kinesis: tuple[str, Any]
) -> None:
    url, client = kinesis
    create_stream(client, "events", 2)
    for n in range(40):
        client.put_record(
            StreamName="events", Data=json.dumps({"n": n}).encode(), PartitionKey=f"k{n}"
        )
    client.put_record(StreamName="events", Data=b"plain 40\nplain 41\n", PartitionKey="p")
    client.put_record(
        StreamName="events",
        Data=cloudwatch([(1_767_225_600_000, "START 42"), (1_767_225_601_500, "END 43")]),
        PartitionKey="cw",
    )
    client.put_record(
        StreamName="events",
        Data=gzip.compress(
            json.dumps({"messageType": "CONTROL_MESSAGE", "logEvents": []}).encode()
        ),
        PartitionKey="cw",
    )

    def numbers() -> list[int]:
        out = []
        for record in intake_records(receiver):
            text = record.get("message") or record.get("raw") or ""
            out.append(int(record["n"]) if "n" in record else int(text.split()[1]))
        return sorted(out)

    async def first(service: ProxyService) -> None:
        await until(lambda: numbers() == list(range(44)))
        assert service.kinesis["kds"].records_read == 44

    asyncio.run(serving(kinesis_service(receiver, tmp_path, url), first))
    for n in range(44, 50):
        client.put_record(
            StreamName="events", Data=json.dumps({"n": n}).encode(), PartitionKey=f"k{n}"
        )

    async def second(service: ProxyService) -> None:
        await until(lambda: numbers() == list(range(50)))
        await asyncio.sleep(0.3)  # more reads: nothing again
        assert numbers() == list(range(50))

    asyncio.run(serving(kinesis_service(receiver, tmp_path, url), second))
    table = receiver.pack("web")
    assert table is not None
    rows = table.to_pylist()
    assert len(rows) == 50
    start = next(r for r in rows if r.get("message") == "START 42")
    assert start["timestamp"] == "2026-01-01T00:00:00.000Z"
    assert (start["log_group"], start["kinesis_partition_key"]) == ("/aws/lambda/checkout", "cw")
    assert {r["kinesis_shard_id"] for r in rows} <= {"shardId-000000000000", "shardId-000000000001"}


def test_read_from_end_and_a_full_spool(
    receiver: Receiver, tmp_path: Path, kinesis: tuple[str, Any]
) -> None:
    url, client = kinesis
    create_stream(client, "events", 1)
    client.put_record(StreamName="events", Data=b'{"old": true}', PartitionKey="p")
    # the receiver is unreachable and the spool small: the big records wait in the stream
    service = ProxyService(
        proxy_config(
            tmp_path, "http://127.0.0.1:9", receiver.key,
            {"name": "kds", "type": "kinesis", "stream": "events", "endpoint_url": url,
             "read_from": "end", "poll_interval_seconds": 0.05},
            spool_max_bytes=4096, batch_max_age_seconds=3600,
        )
    )  # fmt: skip
    checkpoints = tmp_path / "proxy-spool-checkpoints" / "kds.json"

    async def scenario() -> None:
        await service.start()
        try:
            # LATEST, taken once the shard's iterator is: the record put before is not read (a
            # fixed wait let a slow start take its iterator after the next record, unread)
            await until(lambda: "kds" in service.kinesis and service.kinesis["kds"]._iterators)
            client.put_record(StreamName="events", Data=b'{"new": 1}', PartitionKey="p")
            reader = service.kinesis["kds"]
            # counted once spooled; the checkpoint file is written just after, on a thread
            await until(
                lambda: (
                    reader.records_read == 1
                    and checkpoints.exists()
                    and json.loads(checkpoints.read_text()) == reader.checkpoints
                )
            )
            saved = json.loads(checkpoints.read_text())
            blob = json.dumps({"blob": os.urandom(4000).hex()}).encode()  # incompressible
            client.put_record(StreamName="events", Data=blob, PartitionKey="p")
            await until(lambda: service.stats.lines_refused.get("kds", 0) >= 1)
            await asyncio.sleep(0.3)
            assert json.loads(checkpoints.read_text()) == saved  # not moved past the refused
        finally:
            await service.stop()

    asyncio.run(scenario())
    assert [r.get("new") for r in spooled_records(service)] == [1]


def test_records_of_each_kind() -> None:
    assert json.loads(records_of(b'{"a": 1, "kinesis_shard_id": "own"}', "k", "9", "s")[0]) == {
        "a": 1, "kinesis_shard_id": "own", "kinesis_partition_key": "k",
        "kinesis_sequence_number": "9",
    }  # fmt: skip
    wrapped = [json.loads(r) for r in records_of(b"one\n\ntwo", "k", "9", "s")]
    assert [r["raw"] for r in wrapped] == ["one", "two"]
    assert records_of(b"\x1f\x8bnot gzip", "k", "9", "s")  # kept as text, not dropped
    assert records_of(cloudwatch([]), "k", "9", "s") == []
