"""The edge proxy's inputs that answer only once records are in its spool: `forward` (Fluent
Bit-style PackedForward chunks with acks) and `http` (small NDJSON bodies from many clients).

    python benchmarks/proxy.py [--mb 32] [--chunk-records 1000] [--connections 4] [--passes 3]
        [--http-clients 32] [--http-seconds 5]

Generated security events, packed as Fluent Bit packs them (PackedForward, EventTime, a chunk id
asking for an ack), are sent over ``--connections`` TCP connections, one chunk in flight on each
(as Fluent Bit waits for each chunk's ack), to ``bytefreezer proxy`` with a forward input: each
ack comes once the chunk's records are JSON in the proxy's spool, fsync'd (its receiver is
unreachable, so the spool keeps them). The baseline, in the same run: a bare asyncio server in
its own process that reads the same stream with msgpack, unpacks each chunk's entries and acks
it (the protocol with nothing kept). The two take turns for ``--passes`` passes; prints records/s
of each from its median pass and the median of the pairs' ratios.

Then ``--http-clients`` clients post bodies of ten JSON lines (about 1 KB) for ``--http-seconds``
to the proxy's `http` input, each answered once its lines are spooled, fsync'd; the baseline is
`benchmarks/ingest.py`'s bare Starlette-on-Hypercorn endpoint writing each body to a file, taking
turns the same way. Last, the same events as a file that appears whole in the directory a `file`
input follows, timed until the proxy's stats count every line spooled; the baseline reads the
file, gzips its lines in 1 MiB batches and writes each with an fsync (``bare_tail``); and again
with each event written as a container runtime writes a line (CRI: `<time> stdout F <event>`),
read by a `file` input with `container_format: cri`, against the same baseline on that file. Then
the same events as one gzip'd object in moto's S3, announced by an S3 event notification on moto's
SQS, timed until an `sqs` input with `s3_notifications` has spooled every line; the baseline
reads the same object with botocore, inflates it and spools its lines as ``bare_tail`` does
(``bare_s3``). Last, journal files of generated entries (systemd-journal-remote writes them),
timed until a `journald` input has spooled every entry; the baseline runs the same journalctl
over them and spools its lines as ``bare_tail`` does. Then QoS 1 MQTT messages published to
mosquitto, timed until an `mqtt` input has spooled (and acknowledged) every one; the baseline is
a bare paho-mqtt subscriber in the same session settings acknowledging each message as it
arrives, keeping nothing. Last, the same events as Kafka messages (one each) in a topic of 16
partitions on librdkafka's mock cluster (``tests/kafka_broker.py``), read from the beginning by
a `kafka` input in a new group each pass, timed from the partitions' assignment until it has
spooled every message; the baseline is a bare confluent-kafka consumer spooling the values as
``bare_tail`` does. Then sFlow: pmacct's ``pmacctd`` (its sfprobe plugin, a sample a packet)
replays a capture of 20,000 TCP packets once, its datagrams caught; each pass sends them to an
`sflow` input as fast as it reads them (the next burst only once its socket's queue is short,
so the kernel drops none), and counts the CPU time the proxy's process spent until every sample
was decoded and spooled; the baseline is a bare UDP receiver spooling the same datagrams raw
(gzip'd and fsync'd in 1 MiB batches), its CPU time counted the same way. Merges the figures
into benchmarks/results/latest.json under "forward", "proxy_http", "proxy_file",
"proxy_containers", "proxy_sqs", "proxy_journald", "proxy_mqtt", "proxy_kafka" and
"proxy_sflow".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import msgpack
import orjson
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from common import free_port, generate, merge_results, stop_process, wait_port
from ingest import drive

EPOCH = 1_767_225_600

BARE_SERVER = r"""
import asyncio, sys
import httpx
import msgpack

async def handle(reader, writer):
    messages = msgpack.Unpacker(raw=True, strict_map_key=False)
    while data := await reader.read(1 << 16):
        messages.feed(data)
        for message in messages:
            entries = msgpack.Unpacker(raw=True, strict_map_key=False)
            entries.feed(message[1])
            count = sum(1 for _ in entries)
            writer.write(msgpack.packb({"ack": message[2][b"chunk"]}))
            await writer.drain()
    writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


def chunks(lines: list[bytes], per_chunk: int) -> list[bytes]:
    """The events as PackedForward messages of ``per_chunk`` entries, each asking for an ack."""
    out = []
    for start in range(0, len(lines), per_chunk):
        entries = b"".join(
            msgpack.packb(
                [msgpack.ExtType(0, struct.pack(">II", EPOCH + n, 0)), orjson.loads(line)]
            )
            for n, line in enumerate(lines[start : start + per_chunk], start)
        )
        option = {"size": per_chunk, "chunk": f"c{start}", "compressed": "text"}
        out.append(msgpack.packb(["app.events", entries, option], use_bin_type=True))
    return out


async def send_all(port: int, messages: list[bytes], connections: int) -> None:
    async def connection(share: list[bytes]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answers = msgpack.Unpacker()
        for message in share:
            writer.write(message)
            await writer.drain()
            while True:  # one chunk in flight: wait for its ack
                answers.feed(await reader.read(1024))
                if next(answers, None) is not None:
                    break
        writer.close()

    await asyncio.gather(*(connection(messages[i::connections]) for i in range(connections)))


def start_proxy(
    work: Path, port: int, api_port: int, kind: str, **source: object
) -> subprocess.Popen[bytes]:
    """``bytefreezer proxy`` with one input of ``kind`` on ``port`` (and ``source``'s other
    settings) and an unreachable receiver: what it answers for stays in its (fresh) spool."""
    spool = work / "spool"
    shutil.rmtree(spool, ignore_errors=True)
    shutil.rmtree(work / "spool-checkpoints", ignore_errors=True)
    config = work / "proxy.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "receiver_url": "http://127.0.0.1:9",
                "spool_dir": str(spool),
                "spool_max_bytes": 8 << 30,
                "dead_letter_dir": str(work / "dead"),
                "retry_initial_seconds": 30,
                "api_host": "127.0.0.1",
                "api_port": api_port,
                "inputs": [
                    {
                        "name": kind,
                        "type": kind,
                        "host": "127.0.0.1",
                        "port": port,
                        "tenant": "acme",
                        "dataset": "events",
                        "api_key": "unused",
                        **source,
                    }
                ],
            }
        )
    )
    return subprocess.Popen(
        [sys.executable, "-m", "bytefreezer.cli", "proxy", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def http_passes(
    work: Path, lines: list[bytes], clients: int, seconds: float, passes: int
) -> dict[str, object]:
    """The proxy's http input against the bare endpoint, taking turns."""
    body = b"\n".join(lines[:10]) + b"\n"
    bare_port, proxy_port, api_port = free_port(), free_port(), free_port()
    bare = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "ingest.py"), "--serve-bare",
         str(bare_port), str(work / "bare")]
    )  # fmt: skip
    runs: dict[str, list[dict[str, object]]] = {"bare": [], "proxy": []}
    try:
        wait_port(bare_port)
        for _ in range(passes):
            url = f"http://127.0.0.1:{bare_port}/acme/events"
            runs["bare"].append(asyncio.run(drive(url, {}, body, seconds, clients)))
            proxy = start_proxy(work, proxy_port, api_port, "http")
            try:
                wait_port(proxy_port)
                url = f"http://127.0.0.1:{proxy_port}/"
                runs["proxy"].append(asyncio.run(drive(url, {}, body, seconds, clients)))
            finally:
                stop_process(proxy)
    finally:
        stop_process(bare)
    pairs = [
        float(p["requests_per_s"]) / float(b["requests_per_s"])  # type: ignore[arg-type]
        for b, p in zip(runs["bare"], runs["proxy"], strict=True)
    ]
    middle = sorted(range(passes), key=lambda i: pairs[i])[passes // 2]
    return {
        "clients": clients,
        "body_bytes": len(body),
        "proxy": runs["proxy"][middle],
        "bare": runs["bare"][middle],
        "ratio": round(statistics.median(pairs), 3),
        "pair_ratios": [round(r, 3) for r in pairs],
    }


def bare_tail(path: Path, spool: Path) -> float:
    """The baseline of the file input: the file read in 4 MiB chunks, its lines gathered into
    1 MiB batches, each gzip'd by ISA-L at level 2 and written to its own file with an fsync
    (the proxy's spool work, without records)."""
    started = time.perf_counter()
    with path.open("rb") as file:
        bare_spool(iter(lambda: file.read(4 << 20), b""), spool)
    return time.perf_counter() - started


def bare_s3(client: Any, bucket: str, key: str, spool: Path) -> float:
    """The baseline of the sqs input: the object read with botocore in 4 MiB chunks, inflated,
    and spooled as ``bare_tail`` spools a file's lines."""
    from isal import isal_zlib

    started = time.perf_counter()
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    inflater = isal_zlib.decompressobj(wbits=31)
    chunks = (inflater.decompress(raw) for raw in iter(lambda: body.read(4 << 20), b""))
    bare_spool(chunks, spool)
    return time.perf_counter() - started


_STATS_CLIENT: httpx.Client | None = None


def _stat(api_port: int, kind: str, key: str) -> Any:
    """One figure of the proxy's stats, for its one input of ``kind``. The requests share one
    client: ``httpx.get`` makes a client a call, and a client's TLS context (the CA bundle
    loaded) cost 100 ms of CPU here, so polling every 10 ms took a core from the proxy timed."""
    global _STATS_CLIENT
    if _STATS_CLIENT is None:
        _STATS_CLIENT = httpx.Client()
    response = _STATS_CLIENT.get(f"http://127.0.0.1:{api_port}/api/v1/stats")
    return response.json()[kind][kind][key]


def _await_stat(api_port: int, kind: str, key: str, count: int) -> None:
    """Poll the proxy's stats until its one input of ``kind`` counts ``count`` under ``key``
    (120 s at most)."""
    deadline = time.perf_counter() + 120
    while _stat(api_port, kind, key) < count:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the {kind} input's {key} did not reach {count} in 120 s")
        time.sleep(0.01)


def bare_spool(chunks: Iterator[bytes], spool: Path) -> None:
    """Lines of ``chunks`` gathered into 1 MiB batches, each gzip'd by ISA-L at level 2 and
    written to its own file in ``spool`` with an fsync."""
    from isal import igzip

    spool.mkdir(parents=True, exist_ok=True)
    batch: list[bytes] = []
    size = written = 0
    rest = b""

    def flush() -> None:
        nonlocal batch, size, written
        with open(spool / f"{written:06d}.gz", "wb") as out:
            out.write(igzip.compress(b"\n".join(batch) + b"\n", compresslevel=2))
            out.flush()
            os.fsync(out.fileno())
        batch, size, written = [], 0, written + 1

    for chunk in chunks:
        data = rest + chunk
        end = data.rfind(b"\n") + 1
        rest = data[end:]
        for line in data[:end].split(b"\n")[:-1]:
            batch.append(line)
            size += len(line) + 1
            if size >= 1 << 20:
                flush()
    if batch:
        flush()


def file_passes(
    work: Path, lines: list[bytes], passes: int, container_format: str | None = None
) -> dict[str, object]:
    """The proxy's file input following a file as it appears, against ``bare_tail``; with
    ``container_format`` "cri", the file is the events as a container runtime writes them (each
    a line `<time> stdout F <event>`) and the input reads it as such."""
    source = work / "events.log"
    if container_format == "cri":
        stamps = [b"2026-01-01T00:%02d:%02d.%09dZ" % (n // 60 % 60, n % 60, n) for n in range(len(lines))]  # fmt: skip
        cri = b"".join(b"%s stdout F %s\n" % pair for pair in zip(stamps, lines, strict=True))
        source.write_bytes(cri)
    else:
        source.write_bytes(b"\n".join(lines) + b"\n")
    extra = {"container_format": container_format} if container_format else {}
    logs = work / "logs"
    runs: dict[str, list[float]] = {"bare": [], "proxy": []}
    proxy_port, api_port = free_port(), free_port()
    for _ in range(passes):
        shutil.rmtree(work / "bare-spool", ignore_errors=True)
        runs["bare"].append(bare_tail(source, work / "bare-spool"))
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir()
        # the input's default poll interval (0.25 s): a file with lines is read again at once
        proxy = start_proxy(
            work, proxy_port, api_port, "file", paths=[str(logs / "*.log")], **extra
        )
        try:
            wait_port(api_port)
            started = time.perf_counter()
            os.link(source, logs / "events.log")  # the whole file appears at once
            _await_stat(api_port, "file", "lines", len(lines))
            runs["proxy"].append(time.perf_counter() - started)
        finally:
            stop_process(proxy)
    mb = source.stat().st_size / 1e6
    proxy_s, bare_s, ratios = _paired(runs)
    return {
        "records": len(lines),
        "mb": round(mb, 1),
        "proxy_records_per_s": round(len(lines) / proxy_s),
        "proxy_mb_per_s": round(mb / proxy_s, 1),
        "bare_mb_per_s": round(mb / bare_s, 1),
        **ratios,
    }


def sqs_passes(work: Path, lines: list[bytes], passes: int) -> dict[str, object]:
    """The proxy's sqs input reading an object S3 announces, against ``bare_s3``; moto's
    server is both S3 and SQS."""
    import boto3
    from isal import igzip

    moto = Path(sys.executable).parent / "moto_server"
    port, proxy_port, api_port = free_port(), free_port(), free_port()
    server = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_port(port)
        options = {"endpoint_url": url, "region_name": "us-east-1"}
        s3, sqs = boto3.client("s3", **options), boto3.client("sqs", **options)
        s3.create_bucket(Bucket="logs")
        body = igzip.compress(b"\n".join(lines) + b"\n", compresslevel=3)
        s3.put_object(Bucket="logs", Key="events.ndjson.gz", Body=body)
        queue = sqs.create_queue(QueueName="s3-events")["QueueUrl"]
        notice = orjson.dumps({"Records": [{
            "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "logs"}, "object": {"key": "events.ndjson.gz"}},
        }]}).decode()  # fmt: skip
        runs: dict[str, list[float]] = {"bare": [], "proxy": []}
        for _ in range(passes):
            shutil.rmtree(work / "bare-spool", ignore_errors=True)
            runs["bare"].append(bare_s3(s3, "logs", "events.ndjson.gz", work / "bare-spool"))
            proxy = start_proxy(
                work, proxy_port, api_port, "sqs", queue_url=queue, endpoint_url=url,
                s3_endpoint_url=url, region="us-east-1", s3_notifications=True, wait_seconds=1,
            )  # fmt: skip
            try:
                wait_port(api_port)
                started = time.perf_counter()
                sqs.send_message(QueueUrl=queue, MessageBody=notice)
                _await_stat(api_port, "sqs", "records", len(lines))
                runs["proxy"].append(time.perf_counter() - started)
            finally:
                stop_process(proxy)
    finally:
        stop_process(server)
    mb = sum(len(line) + 1 for line in lines) / 1e6
    proxy_s, bare_s, ratios = _paired(runs)
    return {
        "records": len(lines),
        "mb": round(mb, 1),
        "object_mb": round(len(body) / 1e6, 1),
        "proxy_records_per_s": round(len(lines) / proxy_s),
        "proxy_mb_per_s": round(mb / proxy_s, 1),
        "bare_mb_per_s": round(mb / bare_s, 1),
        **ratios,
    }


def _counted_chunks(stream: Any, sizes: list[int]) -> Iterator[bytes]:
    while chunk := stream.read(4 << 20):
        sizes.append(len(chunk))
        yield chunk


def journald_passes(work: Path, entries: int, passes: int) -> dict[str, object]:
    """The proxy's journald input reading journal files, against journalctl's own output
    spooled by ``bare_spool``."""
    journal = work / "journal"
    shutil.rmtree(journal, ignore_errors=True)
    journal.mkdir()
    per_file = 5_000  # systemd-journal-remote slows down past ~5,000 entries a file
    for first in range(0, entries, per_file):
        stream = b"".join(
            b"__REALTIME_TIMESTAMP=%d\n__MONOTONIC_TIMESTAMP=%d\n_BOOT_ID=%s\n"
            b"_HOSTNAME=web-%d\n_SYSTEMD_UNIT=app.service\nPRIORITY=6\nSYSLOG_IDENTIFIER=app\n"
            b"MESSAGE=GET /api/items/%d 200 %d bytes in %d ms\n\n"
            % (EPOCH * 10**6 + n * 1000, 1000 + n, b"0123456789abcdef" * 2, n % 8, n, n * 7, n % 97)
            for n in range(first, min(first + per_file, entries))
        )
        subprocess.run(
            ["/lib/systemd/systemd-journal-remote", f"--output={journal}/{first}.journal", "-"],
            input=stream,
            check=True,
            capture_output=True,
        )
    command = ["journalctl", f"--directory={journal}", "--output=json", "--all", "--no-pager"]
    runs: dict[str, list[float]] = {"bare": [], "proxy": []}
    proxy_port, api_port = free_port(), free_port()
    size = 0
    for _ in range(passes):
        shutil.rmtree(work / "bare-spool", ignore_errors=True)
        started = time.perf_counter()
        reader = subprocess.Popen([*command, "--no-tail"], stdout=subprocess.PIPE)
        assert reader.stdout is not None
        sizes: list[int] = []
        bare_spool(_counted_chunks(reader.stdout, sizes), work / "bare-spool")
        reader.wait()
        runs["bare"].append(time.perf_counter() - started)
        size = sum(sizes)
        proxy = start_proxy(work, proxy_port, api_port, "journald", journal_directory=str(journal))
        try:
            wait_port(api_port)
            started = time.perf_counter()  # journalctl starts with the input
            _await_stat(api_port, "journald", "entries", entries)
            runs["proxy"].append(time.perf_counter() - started)
        finally:
            stop_process(proxy)
    mb = size / 1e6
    proxy_s, bare_s, ratios = _paired(runs)
    return {
        "entries": entries,
        "mb": round(mb, 1),
        "proxy_entries_per_s": round(entries / proxy_s),
        "proxy_mb_per_s": round(mb / proxy_s, 1),
        "bare_entries_per_s": round(entries / bare_s),
        **ratios,
    }


def _mqtt_publish(port: int, payloads: list[bytes]) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-publisher")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    sent = [client.publish("sensors/bench", payload, qos=1) for payload in payloads]
    for info in sent:
        info.wait_for_publish(timeout=60)
    client.disconnect()
    client.loop_stop()


def _bare_mqtt(port: int, expected: int, subscribed: threading.Event) -> float:
    """Seconds a bare subscriber takes from its first message to ``expected`` (each acked)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    done = threading.Event()
    seen: list[float] = []

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        seen.append(time.perf_counter())
        client.ack(message.mid, message.qos)
        if len(seen) == expected:
            done.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="bench-bare", clean_session=False, manual_ack=True
    )
    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect("127.0.0.1", port)
    client.subscribe("sensors/#", qos=1)
    client.loop_start()
    finished = done.wait(120)
    client.disconnect()
    client.loop_stop()
    if not finished:
        raise RuntimeError(f"the bare subscriber got {len(seen)} of {expected} messages")
    return seen[-1] - seen[0]


def mqtt_passes(work: Path, lines: list[bytes], passes: int) -> dict[str, object]:
    """The proxy's mqtt input against a bare subscriber, the same messages published."""
    payloads = lines[:20_000]
    port, proxy_port, api_port = free_port(), free_port(), free_port()
    config = work / "mosquitto.conf"
    config.write_text(  # past max_queued_messages (1,000) mosquitto drops a slow reader's
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 1000000\n"
    )
    broker = subprocess.Popen(
        ["/usr/sbin/mosquitto", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    runs: dict[str, list[float]] = {"bare": [], "proxy": []}
    try:
        wait_port(port)
        for _ in range(passes):
            subscribed = threading.Event()
            with ThreadPoolExecutor(1) as pool:
                bare = pool.submit(_bare_mqtt, port, len(payloads), subscribed)
                subscribed.wait(10)
                started = time.perf_counter()
                _mqtt_publish(port, payloads)
                bare.result()
                runs["bare"].append(time.perf_counter() - started)
            proxy = start_proxy(
                work, proxy_port, api_port, "mqtt", servers=[f"mqtt://127.0.0.1:{port}"],
                subject="sensors/#", durable=f"bench-proxy-{len(runs['proxy'])}",
            )  # fmt: skip
            try:
                wait_port(api_port)
                while not _stat(api_port, "mqtt", "connected"):
                    time.sleep(0.01)
                time.sleep(0.2)  # subscribed
                started = time.perf_counter()
                _mqtt_publish(port, payloads)
                _await_stat(api_port, "mqtt", "messages", len(payloads))
                runs["proxy"].append(time.perf_counter() - started)
            finally:
                stop_process(proxy)
    finally:
        stop_process(broker)
    proxy_s, bare_s, ratios = _paired(runs)
    return {
        "messages": len(payloads),
        "proxy_messages_per_s": round(len(payloads) / proxy_s),
        "bare_messages_per_s": round(len(payloads) / bare_s),
        **ratios,
    }


# The mock cluster keeps at most 5 MB of messages a partition and drops the oldest beyond it.
KAFKA_PARTITIONS = 16


def _kafka_cluster(lines: list[bytes]) -> tuple[subprocess.Popen[str], str]:
    """``tests/kafka_broker.py`` (librdkafka's mock cluster) with ``lines`` produced to a topic
    of ``KAFKA_PARTITIONS`` partitions, a message each; the process and its bootstrap
    servers."""
    from confluent_kafka import Producer

    broker = Path(__file__).resolve().parents[1] / "tests" / "kafka_broker.py"
    process = subprocess.Popen(
        [sys.executable, str(broker)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdin is not None and process.stdout is not None
    servers = process.stdout.readline().strip()
    process.stdin.write(f"events {KAFKA_PARTITIONS}\n")
    process.stdin.flush()
    if process.stdout.readline().strip() != "ok":
        raise RuntimeError("the Kafka cluster did not create its topic")
    producer = Producer({"bootstrap.servers": servers, "linger.ms": 20})
    for at, line in enumerate(lines):
        while True:
            try:  # spread evenly: the sticky partitioner fills a few partitions past the limit
                producer.produce("events", line, partition=at % KAFKA_PARTITIONS)
                break
            except BufferError:  # the producer's queue is full: let it send
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("the Kafka cluster did not take every message")
    return process, servers


def _bare_kafka(servers: str, group: str, expected: int, spool: Path) -> float:
    """Seconds a bare confluent-kafka consumer takes from its partitions' assignment to having
    read ``expected`` messages and spooled their values as ``bare_spool`` does, then committed."""
    from confluent_kafka import Consumer

    consumer = Consumer(
        {"bootstrap.servers": servers, "group.id": group, "auto.offset.reset": "earliest",
         "enable.auto.commit": False}
    )  # fmt: skip
    assigned: list[float] = []
    consumer.subscribe(["events"], on_assign=lambda *_: assigned.append(time.perf_counter()))

    def values() -> Iterator[bytes]:
        read = 0
        while read < expected:
            first = consumer.poll(1.0)  # as the input reads: what has come once one has
            if first is None:
                continue
            messages = [first, *consumer.consume(9_999, 0)]
            read += len(messages)
            yield b"".join(m.value() + b"\n" for m in messages)

    try:
        bare_spool(values(), spool)
        consumer.commit(asynchronous=False)
        return time.perf_counter() - assigned[0]
    finally:
        consumer.close()


def kafka_passes(work: Path, lines: list[bytes], passes: int) -> dict[str, object]:
    """The proxy's kafka input reading a topic from its beginning in a new group each pass,
    against ``_bare_kafka``; both timed from the partitions' assignment."""
    cluster, servers = _kafka_cluster(lines)
    proxy_port, api_port = free_port(), free_port()
    runs: dict[str, list[float]] = {"bare": [], "proxy": []}
    try:
        for turn in range(passes):
            shutil.rmtree(work / "bare-spool", ignore_errors=True)
            runs["bare"].append(
                _bare_kafka(servers, f"bench-bare-{turn}", len(lines), work / "bare-spool")
            )
            proxy = start_proxy(
                work, proxy_port, api_port, "kafka", servers=[servers], topics=["events"],
                group_id=f"bench-proxy-{turn}",
            )  # fmt: skip
            try:
                wait_port(api_port)
                _await_stat(api_port, "kafka", "partitions", KAFKA_PARTITIONS)
                started = time.perf_counter()
                _await_stat(api_port, "kafka", "messages", len(lines))
                runs["proxy"].append(time.perf_counter() - started)
            finally:
                stop_process(proxy)
    finally:
        stop_process(cluster)
    mb = sum(len(line) + 1 for line in lines) / 1e6
    proxy_s, bare_s, ratios = _paired(runs)
    return {
        "messages": len(lines),
        "mb": round(mb, 1),
        "proxy_messages_per_s": round(len(lines) / proxy_s),
        "proxy_mb_per_s": round(mb / proxy_s, 1),
        "bare_messages_per_s": round(len(lines) / bare_s),
        **ratios,
    }


SFLOW_FLOWS = 64  # distinct TCP flows the capture cycles through

BARE_UDP = r"""
import os, socket, sys, time
from isal import igzip
port, spool, expected = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
sock.bind(("127.0.0.1", port))
os.makedirs(spool, exist_ok=True)
batch, size, received, written = [], 0, 0, 0
def flush():
    global batch, size, written
    with open(os.path.join(spool, f"{written:06d}.gz"), "wb") as out:
        out.write(igzip.compress(b"".join(batch), compresslevel=2))
        out.flush()
        os.fsync(out.fileno())
    batch, size, written = [], 0, written + 1
print(time.process_time(), flush=True)
while received < expected:
    data = sock.recv(65535)
    batch.append(len(data).to_bytes(4, "big") + data)
    size += len(data) + 4
    received += 1
    if size >= 1 << 20:
        flush()
if batch:
    flush()
print(time.process_time(), flush=True)
"""


def _sflow_capture(work: Path, packets: int) -> list[bytes]:
    """sFlow datagrams from pmacct's ``pmacctd`` (its sfprobe plugin, a sample per packet)
    replaying a capture file of ``packets`` TCP packets over ``SFLOW_FLOWS`` flows, as fast as
    it can, caught by a socket with a large receive buffer."""
    pcap = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for i in range(packets):
        flow = i % SFLOW_FLOWS
        tcp = struct.pack("!HHIIBBHHH", 40000 + flow, 443, i, 0, 0x50, 0x18, 1000, 0, 0)
        ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(tcp) + 400, i & 0xFFFF, 0, 64, 6, 0)
        ip += bytes([10, 0, flow // 250, flow % 250 + 1, 192, 168, 1, 1])
        frame = bytes.fromhex("020000000002020000000001") + b"\x08\x00" + ip + tcp + b"x" * 400
        pcap += struct.pack("<IIII", 1_772_600_000, i % 1_000_000, len(frame), len(frame))
        pcap += frame
    (work / "flows.pcap").write_bytes(bytes(pcap))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2.0)
    (work / "pmacctd.conf").write_text(
        f"daemonize: false\npcap_savefile: {work / 'flows.pcap'}\npcap_savefile_wait: false\n"
        f"plugins: sfprobe\nsfprobe_receiver: 127.0.0.1:{sock.getsockname()[1]}\n"
        "sampling_rate: 1\n"
    )
    agent = subprocess.Popen(
        [shutil.which("pmacctd") or "/usr/sbin/pmacctd", "-f", str(work / "pmacctd.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    datagrams = []
    try:
        while True:
            try:
                datagrams.append(sock.recv(65535))
            except TimeoutError:
                if agent.poll() is not None:
                    break
    finally:
        stop_process(agent)
        sock.close()
    return datagrams


def _udp_backlog(port: int) -> int:
    """Bytes waiting in the receive queue of the UDP socket bound to ``port`` on 127.0.0.1."""
    local = f"0100007F:{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local:
            return int(fields[4].split(":")[1], 16)
    return 0


def _send_paced(port: int, datagrams: list[bytes]) -> None:
    """``datagrams`` to ``port`` in bursts of 64, each once the receiver's queue holds less
    than 512 KB: as fast as it reads, without the kernel dropping any."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for start in range(0, len(datagrams), 64):
        while _udp_backlog(port) > 512 << 10:
            time.sleep(0.001)
        for datagram in datagrams[start : start + 64]:
            sock.sendto(datagram, ("127.0.0.1", port))
    sock.close()


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sflow_passes(work: Path, packets: int, passes: int) -> dict[str, object]:
    """CPU per sample of the proxy's sflow input (decoded to JSON records, spooled) against a
    bare UDP receiver spooling the same datagrams raw, gzip'd and fsync'd in 1 MiB batches."""
    datagrams = _sflow_capture(work, packets)
    samples = sum(struct.unpack_from("!I", d, 24)[0] for d in datagrams)
    runs: dict[str, list[float]] = {"bare": [], "proxy": []}
    for _ in range(passes):
        port = free_port()
        shutil.rmtree(work / "bare-spool", ignore_errors=True)
        bare = subprocess.Popen(
            [sys.executable, "-c", BARE_UDP, str(port), str(work / "bare-spool"),
             str(len(datagrams))],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert bare.stdout is not None
            before = float(bare.stdout.readline())
            _send_paced(port, datagrams)
            runs["bare"].append(float(bare.stdout.readline()) - before)
        finally:
            stop_process(bare)
        port, api_port = free_port(), free_port()
        proxy = start_proxy(work, port, api_port, "sflow")
        try:
            wait_port(api_port)
            before = _cpu_seconds(proxy.pid)
            _send_paced(port, datagrams)
            deadline = time.perf_counter() + 120
            while _stat(api_port, "sflow", "flow_samples") < samples:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"the sflow input did not decode {samples} in 120 s")
                time.sleep(0.25)  # seldom: the stats requests cost the proxy CPU too
            runs["proxy"].append(_cpu_seconds(proxy.pid) - before)
        finally:
            stop_process(proxy)
    proxy_s, bare_s, ratios = _paired(runs)
    return {
        "datagrams": len(datagrams),
        "samples": samples,
        "proxy_samples_per_cpu_s": round(samples / proxy_s),
        "bare_samples_per_cpu_s": round(samples / bare_s),
        **ratios,
    }


def _paired(runs: dict[str, list[float]]) -> tuple[float, float, dict[str, object]]:
    """Median seconds of the proxy's and the bare passes, and the ratio of the pairs (bare over
    proxy: above 1 the proxy is faster) with each pair's."""
    pairs = [b / p for b, p in zip(runs["bare"], runs["proxy"], strict=True)]
    ratios: dict[str, object] = {
        "ratio": round(statistics.median(pairs), 3),
        "pair_ratios": [round(r, 3) for r in pairs],
    }
    return statistics.median(runs["proxy"]), statistics.median(runs["bare"]), ratios


def _pairs_text(result: dict[str, object]) -> str:
    """``pairs 0.40, 0.44, 0.39``: a result's ratio pass by pass."""
    ratios = result["pair_ratios"]
    assert isinstance(ratios, list)
    return "pairs " + ", ".join(f"{r:.2f}" for r in ratios)


def timed(port: int, messages: list[bytes], connections: int) -> float:
    started = time.perf_counter()
    asyncio.run(send_all(port, messages, connections))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=32)
    parser.add_argument("--chunk-records", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--http-clients", type=int, default=32)
    parser.add_argument("--http-seconds", type=float, default=5.0)
    args = parser.parse_args()
    lines = generate(int(args.mb * 1024 * 1024))
    messages = chunks(lines, args.chunk_records)
    work = Path(tempfile.mkdtemp(prefix="bf-forward-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        bare_port, proxy_port, api_port = free_port(), free_port(), free_port()
        processes.append(subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(bare_port)]))
        seconds: dict[str, list[float]] = {"bare": [], "proxy": []}
        for _ in range(args.passes):
            proxy = start_proxy(work, proxy_port, api_port, "forward")
            try:
                wait_port(bare_port)
                wait_port(proxy_port)
                seconds["bare"].append(timed(bare_port, messages, args.connections))
                seconds["proxy"].append(timed(proxy_port, messages, args.connections))
            finally:
                stop_process(proxy)
        records = len(lines)
        mb = sum(len(line) + 1 for line in lines) / 1e6
        bare_s, proxy_s = (statistics.median(seconds[k]) for k in ("bare", "proxy"))
        pairs = [b / p for b, p in zip(seconds["bare"], seconds["proxy"], strict=True)]
        result = {
            "records": records,
            "mb_as_ndjson": round(mb, 1),
            "chunk_records": args.chunk_records,
            "connections": args.connections,
            "proxy_records_per_s": round(records / proxy_s),
            "proxy_mb_per_s": round(mb / proxy_s, 1),
            "bare_records_per_s": round(records / bare_s),
            "ratio": round(statistics.median(pairs), 3),
            "pair_ratios": [round(r, 3) for r in pairs],
        }
        print(
            f"{records} events ({mb:.1f} MB as NDJSON) in chunks of {args.chunk_records}, "
            f"{args.connections} connections, an ack per chunk"
        )
        print(
            f"proxy forward input → spool: {result['proxy_records_per_s']:,} records/s "
            f"({result['proxy_mb_per_s']} MB/s)"
        )
        print(f"bare msgpack server (read, ack): {result['bare_records_per_s']:,} records/s")
        print(f"ratio: {result['ratio']:.2f}x (pairs {', '.join(f'{r:.2f}' for r in pairs)})")
        http = http_passes(work, lines, args.http_clients, args.http_seconds, args.passes)
        proxy_http, bare_http = http["proxy"], http["bare"]
        print(
            f"proxy http input, {args.http_clients} clients, {http['body_bytes']}-byte bodies, "
            f"answered once spooled: {proxy_http['requests_per_s']} req/s, "  # type: ignore[index]
            f"p99 {proxy_http['p99_ms']} ms; bare endpoint {bare_http['requests_per_s']} req/s, "  # type: ignore[index]
            f"p99 {bare_http['p99_ms']} ms; ratio {http['ratio']:.2f}x"  # type: ignore[index]
        )
        tail = file_passes(work, lines, args.passes)
        print(
            f"proxy file input, a {tail['mb']} MB file of {tail['records']:,} lines → spool: "
            f"{tail['proxy_mb_per_s']} MB/s ({tail['proxy_records_per_s']:,} lines/s); bare "
            f"read + gzip + fsync {tail['bare_mb_per_s']} MB/s; ratio {tail['ratio']:.2f}x "
            f"({_pairs_text(tail)})"
        )
        pods = file_passes(work, lines, args.passes, container_format="cri")
        print(
            f"proxy file input reading CRI container logs, a {pods['mb']} MB file of "
            f"{pods['records']:,} lines → records in the spool: {pods['proxy_mb_per_s']} MB/s "
            f"({pods['proxy_records_per_s']:,} lines/s); bare read + gzip + fsync "
            f"{pods['bare_mb_per_s']} MB/s; ratio {pods['ratio']:.2f}x ({_pairs_text(pods)})"
        )
        queued = sqs_passes(work, lines, args.passes)
        print(
            f"proxy sqs input, a {queued['object_mb']} MB gzip'd object of {queued['records']:,} "
            f"lines announced by S3 → spool: {queued['proxy_mb_per_s']} MB/s "
            f"({queued['proxy_records_per_s']:,} lines/s); bare get + inflate + gzip + fsync "
            f"{queued['bare_mb_per_s']} MB/s; ratio {queued['ratio']:.2f}x "
            f"({_pairs_text(queued)})"
        )
        journal = journald_passes(work, 50_000, args.passes)
        print(
            f"proxy journald input, {journal['entries']:,} journal entries ({journal['mb']} MB as "
            f"journalctl's JSON) → spool: {journal['proxy_entries_per_s']:,} entries/s; bare "
            f"journalctl + gzip + fsync {journal['bare_entries_per_s']:,} entries/s; ratio "
            f"{journal['ratio']:.2f}x ({_pairs_text(journal)})"
        )
        subscribed = mqtt_passes(work, lines, args.passes)
        print(
            f"proxy mqtt input, {subscribed['messages']:,} QoS 1 messages → spool, each "
            f"acknowledged after: {subscribed['proxy_messages_per_s']:,} messages/s; bare "
            f"subscriber acknowledging on arrival {subscribed['bare_messages_per_s']:,} messages/s; "
            f"ratio {subscribed['ratio']:.2f}x "
            f"({_pairs_text(subscribed)})"
        )
        consumed = kafka_passes(work, lines, args.passes)
        print(
            f"proxy kafka input, {consumed['messages']:,} messages ({consumed['mb']} MB) from "
            f"{KAFKA_PARTITIONS} partitions → spool, offsets stored after: {consumed['proxy_messages_per_s']:,} "
            f"messages/s ({consumed['proxy_mb_per_s']} MB/s); bare consumer + gzip + fsync "
            f"{consumed['bare_messages_per_s']:,} messages/s; ratio {consumed['ratio']:.2f}x "
            f"({_pairs_text(consumed)})"
        )
        sampled = sflow_passes(work, 20_000, args.passes)
        print(
            f"proxy sflow input, {sampled['samples']:,} flow samples in {sampled['datagrams']:,} "
            f"datagrams from pmacctd → JSON records in the spool: "
            f"{sampled['proxy_samples_per_cpu_s']:,} samples per CPU-second; bare UDP receiver "
            f"spooling the datagrams raw {sampled['bare_samples_per_cpu_s']:,}; ratio "
            f"{sampled['ratio']:.2f}x ({_pairs_text(sampled)})"
        )
        merge_results(
            {"forward": result, "proxy_http": http, "proxy_file": tail,
             "proxy_containers": pods, "proxy_sqs": queued,
             "proxy_journald": journal, "proxy_mqtt": subscribed, "proxy_kafka": consumed,
             "proxy_sflow": sampled}
        )  # fmt: skip
    finally:
        for process in processes:
            stop_process(process)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
