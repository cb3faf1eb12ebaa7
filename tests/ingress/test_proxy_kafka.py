"""The proxy's `kafka` input against a Kafka cluster (librdkafka's mock cluster on real sockets,
``tests/kafka_broker.py``), produced to by confluent-kafka: topics through the receiver, piper
and packer to Parquet; offsets committed across a restart; two proxies of one group sharing a
pattern's topics; a full spool pausing the partitions without committing, and reading on once
it has room; a proxy killed
while messages flow loses none; configuration errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from bytefreezer.errors import ConfigError
from bytefreezer.ingress.proxy.config import load_proxy_config
from bytefreezer.ingress.proxy.kafka import message_records
from bytefreezer.ingress.proxy.records import records_with
from bytefreezer.ingress.proxy.service import ProxyService
from tests.helpers import free_port, stop_process, wait_for, wait_for_port
from tests.ingress.conftest import Receiver
from tests.ingress.test_proxy import (
    intake_records,
    proxy_config,
    serving,
    spooled_records,
    until,
)

BROKER = Path(__file__).parents[1] / "kafka_broker.py"


class Cluster:
    """A running ``tests/kafka_broker.py``: its bootstrap servers, and topics made on it."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process, self._in, self._out = process, process.stdin, process.stdout
        self.servers = self._out.readline().strip()
        assert self.servers, "the Kafka cluster did not start"

    def create_topics(self, partitions: int, *names: str) -> None:
        for name in names:
            self._in.write(f"{name} {partitions}\n")
            self._in.flush()
            assert self._out.readline().strip() == "ok"


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A Kafka cluster of one broker."""
    process = subprocess.Popen(
        [sys.executable, str(BROKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        yield Cluster(process)
    finally:
        stop_process(process)


def produce(
    servers: str,
    topic: str,
    messages: list[tuple[bytes | None, bytes | None]],
    pause: float = 0.0,
    headers: list[tuple[str, bytes | None]] | None = None,
) -> None:
    """Produce ``messages`` (with ``headers`` each), ``pause`` seconds after each thousand."""
    producer = Producer({"bootstrap.servers": servers, "linger.ms": 5})
    for at, (key, value) in enumerate(messages, 1):
        producer.produce(topic, value=value, key=key, headers=headers)
        producer.poll(0)
        if pause and at % 1000 == 0:
            producer.flush(30)
            time.sleep(pause)
    assert producer.flush(30) == 0


def committed(servers: str, group: str, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": servers, "group.id": group})
    try:
        offsets = consumer.committed(
            [TopicPartition(topic, p) for p in range(partitions)], timeout=10
        )
        return [o.offset for o in offsets]
    finally:
        consumer.close()


# The mock cluster moves a group's partitions to a new member only once the one before has been
# silent for its session timeout (Kafka's own brokers act on its LeaveGroup at once): short here.
GROUP = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}


def kafka_service(receiver: Receiver, tmp_path: Path, servers: str, **source: Any) -> ProxyService:
    return ProxyService(
        proxy_config(
            tmp_path, receiver.url, receiver.key,
            {"name": "events", "type": "kafka", "servers": [servers], "topics": ["events"],
             "kafka_options": GROUP, **source},
        )
    )  # fmt: skip


def numbers(records: list[dict[str, Any]]) -> list[int]:
    return sorted(int(r["n"]) if "n" in r else int(r["raw"].split()[1]) for r in records)


def test_topics_to_parquet_and_offsets_committed_across_a_restart(
    receiver: Receiver, tmp_path: Path, cluster: Cluster
) -> None:
    cluster.create_topics(3, "events")
    kafka = cluster.servers

    async def first(service: ProxyService) -> None:
        messages: list[tuple[bytes | None, bytes | None]] = [
            (f"host-{n % 5}".encode(), json.dumps({"n": n}).encode()) for n in range(100)
        ]
        messages.append((None, b"plain 100\nplain 101\n"))  # two records, no key
        messages.append((b"gone", None))  # a tombstone holds no record
        await asyncio.to_thread(produce, kafka, "events", messages)
        traced = [(None, json.dumps({"n": n}).encode()) for n in (102, 103)]
        headers = [("traceparent", b"00-4bf9-00f0-01"), ("empty", None), ("bin", b"\xff")]
        await asyncio.to_thread(produce, kafka, "events", traced, 0.0, headers)
        await until(lambda: numbers(intake_records(receiver)) == list(range(104)))
        assert service.consumers["events"].messages_read == 104
        assert len(service.consumers["events"].assigned) == 3

    asyncio.run(serving(kafka_service(receiver, tmp_path, kafka), first))
    assert sum(committed(kafka, "bytefreezer-events", "events", 3)) == 104  # on close
    # the proxy is down: its group's committed offsets say where it reads on
    produce(kafka, "events", [(None, json.dumps({"n": n}).encode()) for n in range(104, 150)])

    async def second(service: ProxyService) -> None:
        await until(lambda: numbers(intake_records(receiver)) == list(range(150)), timeout=30)
        await until(lambda: service.consumers["events"].lag == 0)
        exposition = service._exposition()
        assert 'bytefreezer_proxy_kafka_messages_total{input="events"} 46' in exposition
        assert 'bytefreezer_proxy_kafka_partitions{input="events"} 3' in exposition
        assert 'bytefreezer_proxy_kafka_lag{input="events"} 0' in exposition
        assert 'bytefreezer_proxy_kafka_paused{input="events"} 0' in exposition

    asyncio.run(serving(kafka_service(receiver, tmp_path, kafka), second))
    table = receiver.pack("web")
    assert table is not None
    rows = table.to_pylist()
    assert len(rows) == 150  # none twice
    assert {r["kafka_topic"] for r in rows} == {"events"}
    assert {r["kafka_partition"] for r in rows} == {0, 1, 2}
    assert {r["kafka_key"] for r in rows if r["n"] is not None and r["n"] < 100} == {
        f"host-{n}" for n in range(5)
    }
    plain = [r for r in rows if r["raw"] is not None]
    assert len(plain) == 2 and len({(r["kafka_partition"], r["kafka_offset"]) for r in plain}) == 1
    assert all(r["kafka_timestamp"] > 1_700_000_000_000 for r in rows)
    with_headers = {r["n"]: r["kafka_headers"] for r in rows if r["kafka_headers"] is not None}
    assert with_headers == {
        n: {"traceparent": "00-4bf9-00f0-01", "empty": None, "bin": "\ufffd"} for n in (102, 103)
    }
    by_partition: dict[int, list[int]] = {}
    for r in rows:
        if r["raw"] is None:
            by_partition.setdefault(r["kafka_partition"], []).append(r["kafka_offset"])
    for offsets in by_partition.values():
        assert len(set(offsets)) == len(offsets)


def test_two_proxies_of_one_group_share_a_patterns_topics(
    receiver: Receiver, tmp_path: Path, cluster: Cluster
) -> None:
    cluster.create_topics(2, "logs-a", "logs-b", "metrics")
    kafka = cluster.servers

    async def scenario() -> None:
        services = [
            kafka_service(receiver, tmp_path / str(i), kafka, topics=["^logs-.*"], group_id="edge")
            for i in range(2)
        ]
        for service in services:
            await service.start()
        try:
            readers = [s.consumers["events"] for s in services]
            await until(lambda: [len(r.assigned) for r in readers] == [2, 2], timeout=60)
            for topic in ("logs-a", "logs-b", "metrics"):
                await asyncio.to_thread(
                    produce, kafka, topic,
                    [(str(n).encode(), json.dumps({"n": n, "t": topic}).encode())
                     for n in range(100)],
                )  # fmt: skip
            await until(lambda: sum(r.messages_read for r in readers) >= 200)
            await asyncio.sleep(0.5)
            assert [r.messages_read > 0 for r in readers] == [True, True]
            assert sum(r.messages_read for r in readers) == 200
        finally:
            for service in services:
                await service.stop()

    asyncio.run(scenario())
    records = intake_records(receiver)
    assert {r["t"] for r in records} == {"logs-a", "logs-b"}  # not metrics
    assert sorted((r["t"], r["n"]) for r in records) == sorted(
        (t, n) for t in ("logs-a", "logs-b") for n in range(100)
    )


def test_a_full_spool_pauses_the_partitions_and_commits_nothing_past_it(
    receiver: Receiver, tmp_path: Path, cluster: Cluster
) -> None:
    cluster.create_topics(1, "events")
    kafka = cluster.servers
    # the receiver is unreachable and the spool small: the big message waits in Kafka
    service = ProxyService(
        proxy_config(
            tmp_path, "http://127.0.0.1:9", receiver.key,
            {"name": "events", "type": "kafka", "servers": [kafka], "topics": ["events"],
             "kafka_options": {**GROUP, "auto.commit.interval.ms": "100"}},
            spool_max_bytes=4096, batch_max_age_seconds=3600,
        )
    )  # fmt: skip

    async def scenario() -> None:
        await service.start()
        try:
            reader = service.consumers["events"]
            await asyncio.to_thread(produce, kafka, "events", [(None, b'{"small": 1}')])
            await until(lambda: reader.messages_read == 1)
            blob = json.dumps({"blob": os.urandom(4000).hex()}).encode()  # incompressible
            await asyncio.to_thread(produce, kafka, "events", [(None, blob), (None, b'{"n": 2}')])
            await until(lambda: reader.paused)
            await asyncio.sleep(1.5)  # served meanwhile: still a member, still paused
            assert reader.paused and len(reader.assigned) == 1
            assert reader.messages_read == 1
            assert 'bytefreezer_proxy_kafka_paused{input="events"} 1' in service._exposition()
        finally:
            await service.stop()

    asyncio.run(scenario())
    assert [r.get("small") for r in spooled_records(service)] == [1]
    assert committed(kafka, "bytefreezer-events", "events", 1) == [1]  # not past the refused


def test_partitions_paused_by_a_full_spool_read_on_once_it_has_room(
    tmp_path: Path, cluster: Cluster
) -> None:
    """The receiver is down and the spool holds one of two large messages: the input pauses.
    Once the receiver is back and takes the first, the second is spooled, the partitions
    resume and what waited behind them is read; nothing twice, nothing lost."""

    from tests.conftest import fast_settings
    from tests.ingress.conftest import seeded_control
    from tests.ingress.test_proxy import _receiver_on_port

    cluster.create_topics(1, "events")
    kafka, port = cluster.servers, free_port()
    settings = fast_settings(tmp_path / "rdata")
    control = seeded_control(settings)
    key = control.create_key("acme").key
    service = ProxyService(
        proxy_config(
            tmp_path, f"http://127.0.0.1:{port}", key,
            {"name": "events", "type": "kafka", "servers": [kafka], "topics": ["events"],
             "kafka_options": {**GROUP, "auto.commit.interval.ms": "100"}},
            spool_max_bytes=4096,
        )
    )  # fmt: skip
    blobs = [json.dumps({"n": n, "blob": os.urandom(2200).hex()}).encode() for n in (1, 2)]

    with ExitStack() as stack:

        async def scenario(service: ProxyService) -> None:
            reader = service.consumers["events"]
            await asyncio.to_thread(produce, kafka, "events", [(None, blobs[0])])
            await until(lambda: reader.messages_read == 1)
            more = [(None, blobs[1]), (None, b'{"n": 3}')]
            await asyncio.to_thread(produce, kafka, "events", more)
            await until(lambda: reader.paused)  # the second does not fit beside the first
            assert reader.messages_read == 1 and len(service.spool.paths()) == 1
            receiver = _receiver_on_port(stack, settings, control, port)  # the receiver is back
            await until(lambda: len(intake_records(receiver)) == 3, timeout=30)
            assert not reader.paused and reader.messages_read == 3
            assert [r["n"] for r in intake_records(receiver)] == [1, 2, 3]

        asyncio.run(serving(service, scenario))
    assert committed(kafka, "bytefreezer-events", "events", 1) == [3]


def test_a_proxy_killed_while_messages_flow_loses_none(
    receiver: Receiver, tmp_path: Path, cluster: Cluster
) -> None:
    from tests.ingress.test_proxy_durability import proxy_config_file, proxy_process

    cluster.create_topics(4, "events")
    kafka = cluster.servers
    api_port = free_port()
    source = {"name": "events", "type": "kafka", "servers": [kafka], "topics": ["events"],
              "kafka_options": GROUP}  # fmt: skip
    config = proxy_config_file(  # batches under the test receiver's 1,000,000-byte cap
        tmp_path, receiver, api_port, source, batch_max_age_seconds=0.05, batch_max_bytes=500_000
    )
    process = proxy_process(config, tmp_path / "proxy.log")
    total = 20_000
    try:
        wait_for_port(api_port)
        import httpx

        stats = f"http://127.0.0.1:{api_port}/api/v1/stats"
        wait_for(lambda: httpx.get(stats).json()["kafka"]["events"]["partitions"] == 4, 60)
        messages: list[tuple[bytes | None, bytes | None]] = [
            (None, json.dumps({"n": n}).encode()) for n in range(total)
        ]
        producer = asyncio.new_event_loop()
        sending = producer.run_in_executor(None, produce, kafka, "events", messages, 0.2)
        wait_for(lambda: len(intake_records(receiver)) > 1000, 30)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        assert len(intake_records(receiver)) < total  # killed while they flow
        process = proxy_process(config, tmp_path / "proxy.log")
        producer.run_until_complete(sending)
        producer.close()
        wait_for(lambda: set(numbers(intake_records(receiver))) == set(range(total)), 90)
    finally:
        stop_process(process)
    found = numbers(intake_records(receiver))
    assert set(found) == set(range(total))  # at least once: spooled, not committed, again
    assert len(found) - total < total


def test_unreachable_brokers_are_logged_and_waited_for(
    receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = kafka_service(receiver, tmp_path, f"127.0.0.1:{free_port()}")

    async def scenario() -> None:
        await service.start()
        try:
            await until(lambda: "Connection refused" in caplog.text, timeout=10)
            assert service.consumers["events"].assigned == []
        finally:
            await service.stop()  # and it stops cleanly, nothing read

    with caplog.at_level("INFO"):
        asyncio.run(scenario())
    assert service.consumers["events"].messages_read == 0


class _Message:
    """What librdkafka hands over, for the pure record-making below."""

    def __init__(
        self,
        value: bytes | None,
        key: bytes | None = None,
        stamp: int = 0,
        headers: list[tuple[str, bytes | None]] | None = None,
    ) -> None:
        self._value, self._key, self._stamp, self._headers = value, key, stamp, headers

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self._headers

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return 41

    def timestamp(self) -> tuple[int, int]:
        return (1 if self._stamp else 0, self._stamp)


def test_records_of_each_kind() -> None:
    own = message_records([_Message(b'{"a": 1, "kafka_topic": "own"}', b"k", 1_764_000_000_000)],
                          100)  # fmt: skip
    assert json.loads(own[0]) == {
        "a": 1, "kafka_topic": "own", "kafka_partition": 2, "kafka_offset": 41,
        "kafka_key": "k", "kafka_timestamp": 1_764_000_000_000,
    }  # fmt: skip
    wrapped = [json.loads(r) for r in message_records([_Message(b"one\r\n\ntwo \xff")], 100)]
    assert [r["raw"] for r in wrapped] == ["one", "two \ufffd"]
    assert "kafka_key" not in wrapped[0] and "kafka_timestamp" not in wrapped[0]
    assert message_records([_Message(None), _Message(b"")], 100) == []
    # one JSON line, the usual message, is spliced as bytes: the same record records_with makes
    headers: list[tuple[str, bytes | None]] = [("h", b"v"), ("h", b"w"), ("n", None)]
    for value, key, stamp, with_headers in [
        (b'{"a": 1, "b": [1, {"c": "}"}]}', b"k\xff", 1_764_000_000_000, headers),
        (b'  { "a" : "x" }\r\n', None, 0, None),
        (b"{}", None, 5, headers),
        (b'{"s": "caf\xc3\xa9"}', None, 0, headers),  # not ASCII: the general path
        (b'{"a": 1}\n{"a": 2}', None, 0, None),  # two lines: the general path
    ]:
        meta: dict[str, Any] = {"kafka_topic": "t", "kafka_partition": 2, "kafka_offset": 41}
        if key is not None:
            meta["kafka_key"] = key.decode("utf-8", "replace")
        if stamp:
            meta["kafka_timestamp"] = stamp
        if with_headers:
            meta["kafka_headers"] = {"h": "w", "n": None}  # the last of a repeated name
        lines = [line for line in value.decode().split("\n") if line.strip()]
        expected = records_with(lines, meta)
        assert message_records([_Message(value, key, stamp, with_headers)], 100) == expected
        assert [json.loads(r) for r in expected]  # JSON, each
    assert json.loads(message_records([_Message(b"x" * 50)], 10)[0])["raw"] == "x" * 10


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("topics: [a]", "needs servers"),
        ("servers: ['k:9092']", "and topics"),
        ("servers: ['k:9092'], topics: ['^(a']", "is not a regular expression"),
        ("servers: ['k:9092'], topics: [a], password: p", "a password needs a username"),
        ("servers: ['k:9092'], topics: [a], sasl_mechanism: GSSAPI", "sasl_mechanism"),
        ("topics: [a], port: 1", "are for kafka inputs"),
    ],
)
def test_configuration_errors(tmp_path: Path, extra: str, message: str) -> None:
    kind = "tcp" if "port" in extra else "kafka"
    config = tmp_path / "proxy.yaml"
    config.write_text(
        "receiver_url: http://127.0.0.1:8080\ninputs:\n"
        f"- {{name: k, type: {kind}, tenant: acme, dataset: web, api_key: k, {extra}}}\n"
    )
    with pytest.raises(ConfigError, match=message):
        load_proxy_config(config)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"enable.auto.commit": "false"}, "cannot set enable.auto.commit"),
        ({"no.such.setting": "1"}, "No such configuration property"),
        ({"session.timeout.ms": "many"}, "session.timeout.ms"),
    ],
)
def test_settings_librdkafka_refuses_are_configuration_errors(
    receiver: Receiver, tmp_path: Path, options: dict[str, str], message: str
) -> None:
    service = kafka_service(receiver, tmp_path, "127.0.0.1:9", kafka_options={**GROUP, **options})
    with pytest.raises(ConfigError, match=message):
        asyncio.run(service.start())
