"""The receiver's compatibility endpoints (Elasticsearch's bulk API, Loki's push API, Datadog's
log intake, Firehose's HTTP endpoint delivery, Prometheus remote write, Splunk HEC) against
its own NDJSON endpoint, on the same documents, in the same run.

    python benchmarks/compat.py [--seconds 5] [--rounds 3] [--clients 16] [--body-kb 64]

One receiver process on 127.0.0.1; one load generator posts the same security events to each
endpoint in turn from concurrent clients: as a gzip NDJSON body to `/{tenant}/{dataset}`; as a
gzip bulk body (an `index` action line before each document, as Fluent Bit's `es` output and
Vector's `elasticsearch` sink send) to `/_bulk`; and as a Loki push (each document a line of one
stream, protobuf compressed with snappy, as Promtail and Alloy send) to `/loki/api/v1/push`; and
as a gzip JSON array of Datadog log objects (each document its `message`, with `ddsource`,
`service` and `hostname`, as the Datadog Agent sends) to `/api/v2/logs`; and as a gzip Firehose
delivery request (each document a record's base64 data, as a Direct PUT stream delivers; each
request its own request id, as Firehose sends them, since a repeated one is not stored again) to
`/firehose`; and as many samples as documents in a Prometheus remote-write request (series of
ten samples with six labels each, protobuf compressed with snappy, as Prometheus sends) to
`/prometheus/api/v1/write`, each sample a record; and as a gzip HEC event body (each document
an event's `event`, with `sourcetype` and `time`, the events one after another as Splunk's
logging libraries send them) to `/services/collector/event`. The
compatibility endpoints parse each document or entry and write the records as a new body; the
NDJSON endpoint stores the body as sent. Prints documents/s, p99 and the receiver process's
CPU time a request (user and system over the run, by the requests answered) of each, and the
median over rounds of each endpoint's documents/s as a ratio of the NDJSON endpoint's; merges
the figures
into benchmarks/results/latest.json under "elastic", "loki", "datadog", "firehose",
"remote_write" and "hec".
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import orjson
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from common import free_port, merge_results, receiver_process, stop_process, wait_port
from ingest import drive, make_body


def loki_push(documents: list[bytes]) -> bytes:
    """The documents as the lines of one Loki stream, protobuf compressed with snappy."""
    import time

    import cramjam

    from bytefreezer.ingress.loki import PushRequest

    request = PushRequest()
    stream = request.streams.add(labels='{job="bench", env="prod"}')
    now = time.time_ns()
    for n, doc in enumerate(documents):
        entry = stream.entries.add(line=doc.decode())
        entry.timestamp.seconds, entry.timestamp.nanos = divmod(now + n, 10**9)
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


def remote_write(samples: int) -> bytes:
    """A remote-write request of ``samples`` samples: series of ten, six labels each."""
    import cramjam

    from bytefreezer.ingress.prometheus import WriteRequest

    request = WriteRequest()
    start = 1_767_225_600_000
    for number in range(0, samples, 10):
        series = request.timeseries.add()
        labels = {"__name__": f"http_requests_{number % 40}_total", "job": "api",
                  "instance": f"10.0.{number % 7}.{number % 250}:9100", "method": "GET",
                  "code": "200", "path": f"/v1/items/{number % 97}"}  # fmt: skip
        for name, value in labels.items():
            series.labels.add(name=name, value=value)
        for step in range(min(10, samples - number)):
            series.samples.add(value=float(number * 10 + step), timestamp=start + step * 15_000)
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--body-kb", type=int, default=64)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bf-compat-"))
    process = None
    try:
        ndjson = make_body(args.body_kb)
        documents = [line for line in gzip.decompress(ndjson).split(b"\n") if line]
        action = b'{"index":{"_index":"events"}}'
        bulk = gzip.compress(
            b"".join(action + b"\n" + doc + b"\n" for doc in documents), compresslevel=6
        )
        push = loki_push(documents)
        dd_logs = gzip.compress(
            orjson.dumps(
                [
                    {"message": doc.decode(), "ddsource": "bench", "service": "events",
                     "hostname": "h1"}
                    for doc in documents
                ]
            ),
            compresslevel=6,
        )  # fmt: skip
        delivery = gzip.compress(
            orjson.dumps(
                {
                    "requestId": "bench",
                    "timestamp": 1_767_225_600_000,
                    "records": [
                        {"data": base64.b64encode(doc + b"\n").decode()} for doc in documents
                    ],
                }
            ),
            compresslevel=6,
        )
        writes = remote_write(len(documents))
        events = gzip.compress(
            b"".join(
                b'{"event":%s,"sourcetype":"bench","time":%d.%03d}'
                % (doc, 1_767_225_600 + n, n % 1000)
                for n, doc in enumerate(documents)
            ),
            compresslevel=6,
        )
        port, api_port = free_port(), free_port()
        process, key = receiver_process(work / "bf", port, api_port, dataset_key=True)
        wait_port(port)
        receiver = psutil.Process(process.pid)  # its CPU time a request, beside the rates
        headers = {"Content-Encoding": "gzip", "Authorization": f"Bearer {key}"}
        targets = {
            "ndjson": (f"http://127.0.0.1:{port}/bench/events", headers, ndjson),
            "bulk": (
                f"http://127.0.0.1:{port}/_bulk",
                {**headers, "Content-Type": "application/x-ndjson"},
                bulk,
            ),
            "loki": (
                f"http://127.0.0.1:{port}/loki/api/v1/push",
                {"Authorization": f"Bearer {key}", "Content-Type": "application/x-protobuf"},
                push,
            ),
            "datadog": (
                f"http://127.0.0.1:{port}/api/v2/logs",
                {"DD-API-KEY": key, "Content-Type": "application/json", "Content-Encoding": "gzip"},
                dd_logs,
            ),
            "firehose": (
                f"http://127.0.0.1:{port}/firehose",
                {
                    "X-Amz-Firehose-Access-Key": key,
                    "Content-Type": "application/json",
                    "Content-Encoding": "gzip",
                },
                delivery,
            ),
            "remote_write": (
                f"http://127.0.0.1:{port}/prometheus/api/v1/write",
                {
                    "Authorization": f"Bearer {key}",
                    "Content-Type": "application/x-protobuf",
                    "Content-Encoding": "snappy",
                },
                writes,
            ),
            "hec": (
                f"http://127.0.0.1:{port}/services/collector/event",
                {"Authorization": f"Splunk {key}", "Content-Encoding": "gzip"},
                events,
            ),
        }
        print(
            f"{len(documents)} documents a request: NDJSON {len(ndjson) / 1024:.0f} KB gzip, "
            f"bulk {len(bulk) / 1024:.0f} KB gzip, Loki {len(push) / 1024:.0f} KB snappy, "
            f"Datadog {len(dd_logs) / 1024:.0f} KB gzip, "
            f"Firehose {len(delivery) / 1024:.0f} KB gzip, "
            f"remote write {len(writes) / 1024:.0f} KB snappy, HEC {len(events) / 1024:.0f} KB gzip; "
            f"{args.clients} clients, {args.seconds:g} s "
            f"per run, {args.rounds} rounds"
        )
        rounds = []
        for index in range(args.rounds):
            order = list(targets)[index % len(targets) :] + list(targets)[: index % len(targets)]
            figures = {}
            for name in order:
                url, sent_headers, body = targets[name]
                unique = "X-Amz-Firehose-Request-Id" if name == "firehose" else None
                spent = receiver.cpu_times()
                run = asyncio.run(
                    drive(url, sent_headers, body, args.seconds, args.clients, unique)
                )
                now = receiver.cpu_times()
                answered = sum(run["statuses"].values())
                cpu = now.user + now.system - spent.user - spent.system
                run["documents_per_s"] = round(run["requests_per_s"] * len(documents))
                run["receiver_cpu_ms_per_request"] = round(cpu * 1000 / max(answered, 1), 2)
                figures[name] = run
                print(
                    f"round {index + 1} {name:6s} {run['documents_per_s']:>9,} docs/s "
                    f"{run['requests_per_s']:7.1f} req/s p99 {run['p99_ms']:7.1f} ms "
                    f"receiver CPU {run['receiver_cpu_ms_per_request']:6.2f} ms a request "
                    f"{run['statuses']}"
                )
            for name in ("bulk", "loki", "datadog", "firehose", "remote_write", "hec"):
                figures[f"{name}_ratio"] = round(
                    figures[name]["documents_per_s"] / figures["ndjson"]["documents_per_s"], 3
                )
            rounds.append(figures)
        results = {}
        for name, label in (
            ("bulk", "elastic"),
            ("loki", "loki"),
            ("datadog", "datadog"),
            ("firehose", "firehose"),
            ("remote_write", "remote_write"),
            ("hec", "hec"),
        ):
            ratio = statistics.median(r[f"{name}_ratio"] for r in rounds)
            middle = min(rounds, key=lambda r: abs(r[f"{name}_ratio"] - ratio))
            print(
                f"{name} / NDJSON documents/s: {ratio:.2f}x, median of "
                + ", ".join(f"{r[f'{name}_ratio']:.2f}" for r in rounds)
            )
            results[label] = {
                "documents_per_request": len(documents),
                "clients": args.clients,
                name: middle[name],
                "ndjson": middle["ndjson"],
                "ratio": ratio,
                "pair_ratios": [r[f"{name}_ratio"] for r in rounds],
            }
        merge_results(results)
    finally:
        if process is not None:
            stop_process(process, timeout=20)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
