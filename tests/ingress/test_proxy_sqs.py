"""The proxy's `sqs` input against moto's server (an implementation of SQS's and S3's APIs,
installed with the test dependencies, standing in for AWS as SeaweedFS does for S3): messages
through the receiver, piper and packer to Parquet; S3 event notifications that moto's S3 sends
itself when objects are put, their objects read (gzip, CloudTrail, larger than a piece); objects
on SeaweedFS announced through SNS and EventBridge; unreadable messages left in the queue until
its redrive policy moves them; a proxy killed while reading loses nothing."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import zstandard

from bytefreezer.errors import ConfigError
from bytefreezer.ingress.proxy import sqs
from bytefreezer.ingress.proxy.config import load_proxy_config
from bytefreezer.ingress.proxy.records import RecordBlock, split_lines
from bytefreezer.ingress.proxy.service import ProxyService
from bytefreezer.lines import is_blank
from tests.helpers import free_port, stop_process, wait_for, wait_for_port
from tests.ingress.conftest import Receiver
from tests.ingress.test_proxy import intake_records, proxy_config, until

MOTO = Path(sys.executable).parent / "moto_server"

pytestmark = pytest.mark.skipif(
    not MOTO.exists(), reason="`make test` installs moto's server (a test dependency)"
)


class Aws:
    """moto's server on a free port, and boto3 clients of it."""

    def __init__(self, url: str) -> None:
        self.url = url
        options = {
            "endpoint_url": url, "region_name": "us-east-1",
            "aws_access_key_id": "test", "aws_secret_access_key": "test",
        }  # fmt: skip
        self.sqs = boto3.client("sqs", **options)
        self.s3 = boto3.client("s3", **options)

    def queue(self, name: str, **attributes: str) -> str:
        return str(self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])

    def arn(self, queue_url: str) -> str:
        found = self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        return str(found["Attributes"]["QueueArn"])

    def waiting(self, queue_url: str) -> int:
        """Messages in the queue, visible or taken."""
        found = self.sqs.get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(found["ApproximateNumberOfMessages"]) + int(
            found["ApproximateNumberOfMessagesNotVisible"]
        )


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Aws]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    port = free_port()
    with (tmp_path / "moto.log").open("wb") as log:
        process = __import__("subprocess").Popen(
            [str(MOTO), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
        )
    try:
        wait_for_port(port)
        yield Aws(f"http://127.0.0.1:{port}")
    finally:
        stop_process(process)


def sqs_service(receiver: Receiver, tmp_path: Path, aws: Aws, **source: Any) -> ProxyService:
    return ProxyService(
        proxy_config(
            tmp_path, receiver.url, receiver.key,
            {"name": "q", "type": "sqs", "endpoint_url": aws.url, "region": "us-east-1",
             "wait_seconds": 1, **source},
        )
    )  # fmt: skip


async def serving(service: ProxyService, check: Any) -> tuple[dict[str, Any], str]:
    """Run the proxy until ``check`` holds; its stats and metrics then."""
    await service.start()
    try:
        await until(check, 30)
        api = f"http://127.0.0.1:{service.ports['api']}"
        async with httpx.AsyncClient() as client:
            stats = (await client.get(f"{api}/api/v1/stats")).json()
            return stats, (await client.get(f"{api}/metrics")).text
    finally:
        await service.stop()


def test_a_queues_messages_to_parquet(receiver: Receiver, tmp_path: Path, aws: Aws) -> None:
    queue = aws.queue("events")
    for n in range(30):
        aws.sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"n": n}))
    aws.sqs.send_message(QueueUrl=queue, MessageBody="plain 30\n\nplain 31\n")
    service = sqs_service(receiver, tmp_path, aws, queue_url=queue)
    stats, exposition = asyncio.run(serving(service, lambda: len(intake_records(receiver)) == 32))
    assert stats["sqs"]["q"] == {"messages": 31, "records": 32, "objects": 0, "unreadable": 0}
    assert 'bytefreezer_proxy_sqs_messages_total{input="q"} 31' in exposition
    assert 'bytefreezer_proxy_sqs_records_total{input="q"} 32' in exposition

    assert aws.waiting(queue) == 0  # every message deleted, once spooled
    stats = service.queues["q"]
    assert (stats.messages_read, stats.records_read, stats.failed) == (31, 32, 0)
    table = receiver.pack("web")
    assert table is not None
    rows = table.to_pylist()
    numbers = sorted(int(r["n"]) if r.get("n") is not None else int(r["raw"][6:]) for r in rows)
    assert numbers == list(range(32))
    assert all(r["sqs_message_id"] for r in rows)
    assert len({r["sqs_message_id"] for r in rows}) == 31


def gz(text: str) -> bytes:
    return gzip.compress(text.encode())


def test_objects_announced_by_s3_itself(receiver: Receiver, tmp_path: Path, aws: Aws) -> None:
    queue = aws.queue("s3-events")
    aws.s3.create_bucket(Bucket="logs")
    aws.s3.put_bucket_notification_configuration(
        Bucket="logs",
        NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": aws.arn(queue), "Events": ["s3:ObjectCreated:*"]}]
        },
    )  # S3 sends its test event first: it makes no record
    ndjson = "".join(json.dumps({"n": n}) + "\n" for n in range(20))
    aws.s3.put_object(Bucket="logs", Key="app/2026 01/part 1.json.gz", Body=gz(ndjson))
    trail = {"Records": [{"eventName": "PutObject", "n": 20}, {"eventName": "GetObject", "n": 21}]}
    aws.s3.put_object(Bucket="logs", Key="AWSLogs/trail.json.gz", Body=gz(json.dumps(trail)))
    two_members = gz('{"n": 22}\n') + gz('{"n": 23}\n')  # concatenated gzip, as appends make
    aws.s3.put_object(Bucket="logs", Key="joined.gz", Body=two_members)
    aws.s3.put_object(Bucket="logs", Key="plain.log", Body=b"line 24\nline 25")  # no final \n
    service = sqs_service(
        receiver, tmp_path, aws, queue_url=queue, s3_notifications=True, s3_endpoint_url=aws.url
    )
    asyncio.run(serving(service, lambda: len(intake_records(receiver)) == 26))

    assert aws.waiting(queue) == 0
    assert service.queues["q"].objects_read == 4
    table = receiver.pack("web")
    assert table is not None
    rows = table.to_pylist()
    numbers = sorted(int(r["n"]) if r.get("n") is not None else int(r["raw"][5:]) for r in rows)
    assert numbers == list(range(26))
    keys = {r["s3_key"] for r in rows}
    assert keys == {"app/2026 01/part 1.json.gz", "AWSLogs/trail.json.gz", "joined.gz", "plain.log"}
    assert {r["s3_bucket"] for r in rows} == {"logs"}
    assert {r["eventName"] for r in rows if r["s3_key"].startswith("AWSLogs")} == {
        "PutObject",
        "GetObject",
    }


def notification(bucket: str, key: str, event: str = "ObjectCreated:Put") -> dict[str, Any]:
    from urllib.parse import quote_plus

    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventName": event,
                "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key, safe="/")}},
            }
        ]
    }


def test_objects_on_seaweedfs_through_sns_and_eventbridge_and_unreadable_messages(
    receiver: Receiver,
    tmp_path: Path,
    aws: Aws,
    s3_server: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the proxy's credentials are SeaweedFS's; moto takes any
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server["access_key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server["secret_key"])
    monkeypatch.setattr(sqs, "PIECE_BYTES", 64 * 1024)  # the big object is read in ~20 pieces
    seaweed = boto3.client(
        "s3", endpoint_url=s3_server["endpoint"], region_name="us-east-1",
        aws_access_key_id=s3_server["access_key"], aws_secret_access_key=s3_server["secret_key"],
    )  # fmt: skip
    seaweed.create_bucket(Bucket="sqs-objects")
    lines = [json.dumps({"n": n, "pad": "x" * 40}) + "\n" for n in range(20_000)]
    # blank lines filling whole pieces: a piece with no record does not end the object
    big = "".join(lines[:10_000]) + "\n" * 140_000 + "".join(lines[10_000:])
    seaweed.put_object(Bucket="sqs-objects", Key="big.ndjson", Body=big.encode())
    seaweed.put_object(Bucket="sqs-objects", Key="sns.json", Body=b'{"n": 20000}\n')
    seaweed.put_object(Bucket="sqs-objects", Key="bridge.json", Body=b'{"n": 20001}\n')

    dead = aws.queue("dead")
    redrive = json.dumps({"deadLetterTargetArn": aws.arn(dead), "maxReceiveCount": "1"})
    queue = aws.queue("s3-events", RedrivePolicy=redrive)
    send = lambda body: aws.sqs.send_message(QueueUrl=queue, MessageBody=body)  # noqa: E731
    send(json.dumps(notification("sqs-objects", "big.ndjson")))
    sns = {"Type": "Notification", "Message": json.dumps(notification("sqs-objects", "sns.json"))}
    send(json.dumps(sns))
    send(json.dumps({
        "source": "aws.s3", "detail-type": "Object Created",
        "detail": {"bucket": {"name": "sqs-objects"}, "object": {"key": "bridge.json"}},
    }))  # fmt: skip
    send(json.dumps(notification("sqs-objects", "big.ndjson", "ObjectRemoved:Delete")))
    send("not a notification")
    send(json.dumps(notification("sqs-objects", "gone.json")))

    service = sqs_service(
        receiver, tmp_path, aws, queue_url=queue, s3_notifications=True,
        s3_endpoint_url=s3_server["endpoint"], visibility_timeout_seconds=1,
    )  # fmt: skip

    def settled() -> bool:
        reader = service.queues.get("q")
        return (
            reader is not None
            and len(intake_records(receiver)) == 20_002
            and aws.waiting(dead) == 2  # the two unreadable, moved by the redrive policy
        )

    _, exposition = asyncio.run(serving(service, settled))
    assert 'bytefreezer_proxy_sqs_unreadable_total{input="q"} 2' in exposition
    assert 'bytefreezer_proxy_sqs_objects_total{input="q"} 3' in exposition
    reader = service.queues["q"]
    assert reader.objects_read == 3 and reader.failed == 2
    assert aws.waiting(queue) == 0
    left = aws.sqs.receive_message(QueueUrl=dead, MaxNumberOfMessages=10)["Messages"]
    assert sorted(m["Body"][:3] for m in left) == ["not", '{"R']
    numbers = sorted(int(r["n"]) for r in intake_records(receiver))
    assert numbers == list(range(20_002))


def test_a_proxy_killed_while_reading_an_object_loses_nothing(
    receiver: Receiver, tmp_path: Path, aws: Aws
) -> None:
    from tests.ingress.test_proxy_durability import proxy_config_file, proxy_process

    aws.s3.create_bucket(Bucket="logs")
    lines = "".join(json.dumps({"n": n, "pad": "y" * 200}) + "\n" for n in range(60_000))
    aws.s3.put_object(Bucket="logs", Key="big.ndjson.gz", Body=gz(lines))  # ~13 MB inflated
    queue = aws.queue("s3-events")
    aws.sqs.send_message(
        QueueUrl=queue, MessageBody=json.dumps(notification("logs", "big.ndjson.gz"))
    )
    api_port = free_port()
    source = {
        "name": "q", "type": "sqs", "queue_url": queue, "endpoint_url": aws.url,
        "s3_endpoint_url": aws.url, "region": "us-east-1", "s3_notifications": True,
        "wait_seconds": 1, "visibility_timeout_seconds": 2,
    }  # fmt: skip
    config = proxy_config_file(
        tmp_path, receiver, api_port, source,
        batch_max_age_seconds=0.05, batch_max_bytes=256 * 1024,  # the test receiver takes 1 MB
    )  # fmt: skip
    process = proxy_process(config, tmp_path / "proxy.log")
    delivered = lambda: {int(r["n"]) for r in intake_records(receiver)}  # noqa: E731
    try:
        wait_for_port(api_port)
        wait_for(lambda: len(delivered()) > 0, 30)  # the first pieces are through
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        before_kill = len(delivered())
        assert before_kill < 60_000  # killed in the middle of the object
        # the message was not deleted: once its visibility ends, it is read again from the start
        process = proxy_process(config, tmp_path / "proxy.log")
        wait_for(lambda: delivered() == set(range(60_000)), 60)
        wait_for(lambda: aws.waiting(queue) == 0, 30)
    finally:
        stop_process(process)
    numbers = [int(r["n"]) for r in intake_records(receiver)]
    assert set(numbers) == set(range(60_000))  # at least once: what was spooled is read again
    assert len(numbers) - 60_000 <= before_kill


def test_what_a_notification_announces() -> None:
    assert sqs.notified_objects(json.dumps(notification("b", "a b/c+d.json"))) == [
        sqs.ObjectRef("b", "a b/c+d.json")
    ]
    assert sqs.notified_objects('{"Service":"Amazon S3","Event":"s3:TestEvent"}') == []
    assert sqs.notified_objects(json.dumps(notification("b", "k", "ObjectRemoved:Delete"))) == []
    assert sqs.notified_objects('{"Type":"SubscriptionConfirmation","Message":"x"}') == []
    bridge = {"source": "aws.s3", "detail-type": "Object Deleted", "detail": {}}
    assert sqs.notified_objects(json.dumps(bridge)) == []
    for body, reason in [
        ("[1]", "not a JSON object"),
        ("{", "not JSON"),
        ('{"a": 1}', "no Records"),
        ('{"Records": [{"eventSource": "aws:sqs"}]}', "not an S3 event"),
        ('{"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}]}', "no bucket"),
    ]:
        with pytest.raises(sqs.Unreadable, match=reason):
            sqs.notified_objects(body)


def _lines(pieces: list[bytes | list[str]]) -> list[str]:
    """The lines of ``ObjectLines``' pieces as text, blank ones dropped."""
    lines: list[str] = []
    for piece in pieces:
        if isinstance(piece, bytes):  # whole lines as read
            assert piece.endswith(b"\n")
            piece = split_lines(piece.decode("utf-8", "replace"))
        lines += [line for line in piece if not is_blank(line)]
    return lines


def test_object_lines_in_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqs, "PIECE_BYTES", 7)
    text = "".join(f"line {n}\n" for n in range(50)) + "\n\nlast without newline " + "z" * 30
    pieces = list(sqs.ObjectLines(io.BytesIO(gz(text[:100]) + gz(text[100:])), 30))
    assert len(pieces) > 1
    assert any(isinstance(piece, bytes) for piece in pieces)  # the pieces with nothing to cut
    lines = _lines(pieces)
    assert lines == [f"line {n}" for n in range(50)] + [("last without newline " + "z" * 30)[:30]]
    with pytest.raises(sqs.Unreadable, match="gzip but does not inflate"):
        list(sqs.ObjectLines(io.BytesIO(b"\x1f\x8b" + b"\x00" * 40), 100))
    frames = zstandard.ZstdCompressor().compress(text[:100].encode())
    frames += zstandard.ZstdCompressor().compress(text[100:].encode())
    assert _lines(list(sqs.ObjectLines(io.BytesIO(frames), 30))) == lines
    with pytest.raises(sqs.Unreadable, match="zstd but does not inflate"):
        list(sqs.ObjectLines(io.BytesIO(b"\x28\xb5\x2f\xfd" + b"\xff" * 40), 100))
    # a line far longer than a piece: only what is kept of it is held while it is read
    long_line = "x" * 5000 + "\nafter\n"
    pieces = list(sqs.ObjectLines(io.BytesIO(long_line.encode()), 10))
    assert _lines(pieces) == ["x" * 10, "after"]
    trail = json.dumps({"Records": [{"a": 1}, {"a": 2}]})
    for piece in (["x", trail, '{"Records": 3}'], f'x\n\n{trail}\n{{"Records": 3}}\n'.encode()):
        records = sqs.object_records(piece, {"s3_key": "k"})
        assert isinstance(records, list)  # a CloudTrail file among them: record by record
        decoded = [json.loads(r) for r in records]
        assert [r.get("a") for r in decoded] == [None, 1, 2, None]
        assert decoded[0]["raw"] == "x" and decoded[3]["Records"] == 3
        assert {r["s3_key"] for r in decoded} == {"k"}
    block = sqs.object_records(b'{"a": 1}\n\n{"b": 2}\n', {"s3_key": "k"})
    assert isinstance(block, RecordBlock) and len(block) == 2  # none: one block
    assert [json.loads(r) for r in block.data.split(b"\n")] == [
        {"s3_key": "k", "a": 1},
        {"s3_key": "k", "b": 2},
    ]


def test_configuration_errors(tmp_path: Path) -> None:
    config = tmp_path / "proxy.yaml"
    base = "receiver_url: http://127.0.0.1:8080\ninputs:\n"
    entry = "- {name: q, tenant: acme, dataset: web, api_key: k, "
    config.write_text(base + entry + "type: sqs}\n")
    with pytest.raises(ConfigError, match="sqs input q needs a queue_url"):
        load_proxy_config(config)
    config.write_text(base + entry + "type: udp, port: 0, s3_notifications: true}\n")
    with pytest.raises(ConfigError, match="s3_notifications and s3_endpoint_url are for sqs"):
        load_proxy_config(config)
    config.write_text(base + entry + "type: sqs, queue_url: http://q, wait_seconds: 30}\n")
    with pytest.raises(ConfigError, match="wait_seconds"):
        load_proxy_config(config)
