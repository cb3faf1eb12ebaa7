"""Prometheus remote write in: Debian's Prometheus (`make test` installs it) scrapes itself and
remote-writes to the receiver, with a bearer token to a dataset key's path and Basic auth to a
tenant's; the samples reach Parquet through piper and packer with their labels and metadata.
Requests built here check what Prometheus does not send by default: staleness markers,
infinities, exemplars, native histograms, and every refusal."""

from __future__ import annotations

import json
import math
import shutil
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cramjam
import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bytefreezer.control.models import DatasetSpec
from bytefreezer.ingress.prometheus import STALE_NAN, WriteRequest, _value
from tests.helpers import free_port, stop_process, wait_for, wait_for_port
from tests.ingress.conftest import Receiver


@pytest.fixture
def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("the `prometheus` binary is missing: `make test` installs Debian's package")
    return binary


@contextmanager
def run_prometheus(
    tmp_path: Path, binary: str, remote_writes: list[dict[str, Any]]
) -> Iterator[str]:
    """Prometheus scraping itself every second and remote-writing to ``remote_writes``."""
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [
            {"job_name": "self", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
        ],
        "remote_write": [
            {
                "queue_config": {"batch_send_deadline": "1s", "min_backoff": "100ms"},
                "metadata_config": {"send_interval": "1s"},
                **remote,
            }
            for remote in remote_writes
        ],
    }
    path = tmp_path / "prometheus.yml"
    path.write_text(json.dumps(config))  # JSON is YAML
    with open(tmp_path / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={path}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for_port(port, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process, timeout=20)


def stored(receiver: Receiver, dataset: str) -> list[dict[str, Any]]:
    import gzip

    return [
        json.loads(line)
        for obj in receiver.storage.intake.list(f"acme/{dataset}/")
        for line in gzip.decompress(receiver.storage.intake.get(obj.key)).split(b"\n")
        if line
    ]


def test_prometheus_remote_writes_its_own_metrics_to_parquet(
    receiver: Receiver, tmp_path: Path, prometheus_binary: str
) -> None:
    dataset_key = receiver.control.create_key("acme", "web").key
    receiver.control.create_dataset("acme", DatasetSpec(name="metrics"))
    remotes = [
        {"url": f"{receiver.url}/prometheus/api/v1/write", "authorization": {"credentials": dataset_key}},
        {
            "url": f"{receiver.url}/acme/metrics/prometheus/api/v1/write",
            "basic_auth": {"username": "prometheus", "password": receiver.key},
        },
    ]  # fmt: skip
    with run_prometheus(tmp_path, prometheus_binary, remotes):

        def written() -> bool:
            for dataset in ("web", "metrics"):
                records = stored(receiver, dataset)
                kinds = {r["kind"] for r in records}
                names = {r["metric"] for r in records}
                if not ({"sample", "metadata"} <= kinds and "prometheus_build_info" in names):
                    return False
            return True

        wait_for(written, timeout=60, interval=0.5)
    table = receiver.pack("web")
    assert table is not None
    rows = table.to_pylist()
    build = next(
        r for r in rows if r["metric"] == "prometheus_build_info" and r["kind"] == "sample"
    )
    assert build["value"] == 1.0 and build["labels"]["job"] == "self"
    assert build["labels"]["version"].startswith("2.")
    assert build["timestamp"].endswith("Z") and len(build["timestamp"]) == 24
    up = [r for r in rows if r["metric"] == "up" and r["kind"] == "sample"]
    assert up and {r["value"] for r in up} == {1.0}
    meta = next(
        r for r in rows if r["kind"] == "metadata" and r["metric"] == "prometheus_build_info"
    )
    assert meta["metadata"]["type"] == "gauge" and meta["metadata"]["help"]
    assert receiver.pack("metrics") is not None


def request(*series: dict[str, Any]) -> bytes:
    message = WriteRequest()
    for spec in series:
        added = message.timeseries.add()
        for name, value in spec["labels"].items():
            added.labels.add(name=name, value=value)
        for value, stamp in spec.get("samples", []):
            added.samples.add(value=value, timestamp=stamp)
        for labels, value, stamp in spec.get("exemplars", []):
            exemplar = added.exemplars.add(value=value, timestamp=stamp)
            for name, label in labels.items():
                exemplar.labels.add(name=name, value=label)
        for histogram in spec.get("histograms", []):
            added.histograms.add(**histogram)
    return bytes(cramjam.snappy.compress_raw(message.SerializeToString()))


def post(receiver: Receiver, body: bytes, **headers: str) -> httpx.Response:
    sent = {
        "Content-Type": "application/x-protobuf",
        "Content-Encoding": "snappy",
        "X-Prometheus-Remote-Write-Version": "0.1.0",
        "Authorization": f"Bearer {receiver.key}",
        **headers,
    }
    return httpx.post(
        f"{receiver.url}/acme/web/prometheus/api/v1/write", content=body, headers=sent
    )


def test_special_values_exemplars_and_native_histograms(receiver: Receiver) -> None:
    stale = struct.unpack("<d", struct.pack("<Q", STALE_NAN))[0]
    body = request(
        {
            "labels": {"__name__": "requests_total", "path": "/a"},
            "samples": [(5.0, 1_767_225_600_000), (stale, 1_767_225_601_000),
                        (math.inf, 1_767_225_602_000), (math.nan, 1_767_225_603_250)],
            "exemplars": [({"trace_id": "abc"}, 2.5, 1_767_225_600_500)],
        },
        {
            "labels": {"__name__": "latency_seconds"},
            "histograms": [{"count_int": 3, "sum": 1.5, "schema": 0, "zero_threshold": 0.001,
                            "positive_deltas": [1, 1], "timestamp": 1_767_225_600_000}],
        },
    )  # fmt: skip
    response = post(receiver, body)
    assert response.status_code == 204, response.text
    rows = stored(receiver, "web")
    samples = [r for r in rows if r["kind"] == "sample"]
    assert [(r["value"], r.get("value_special")) for r in samples] == [
        (5.0, None), (None, "stale"), (None, "+Inf"), (None, "NaN"),
    ]  # fmt: skip
    assert samples[3]["timestamp"] == "2026-01-01T00:00:03.250Z"
    assert samples[0]["labels"] == {"path": "/a"}
    (exemplar,) = [r for r in rows if r["kind"] == "exemplar"]
    assert (exemplar["exemplar_labels"], exemplar["value"]) == ({"trace_id": "abc"}, 2.5)
    (histogram,) = [r for r in rows if r["kind"] == "histogram"]
    assert histogram["metric"] == "latency_seconds"
    assert histogram["histogram"]["sum"] == 1.5 and histogram["histogram"]["positive_deltas"]
    table = receiver.pack("web")
    assert table is not None and table.num_rows == 6


@pytest.mark.parametrize(
    ("body", "headers", "status", "reason"),
    [
        (b"", {}, 400, "empty body"),
        (b"\xff\xff\xff\xff\xff", {}, 400, "snappy"),
        (bytes(cramjam.snappy.compress_raw(b"\x0a\x05\xff")), {}, 400, "WriteRequest"),
        (request({"labels": {}}), {"Content-Type": "application/json"}, 415, "x-protobuf"),
        (
            request({"labels": {}}),
            {"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request"},
            415,
            "remote write 1.0",
        ),
        (request({"labels": {}}), {"Authorization": ""}, 401, "bearer"),
    ],
)
def test_refusals_store_nothing(
    receiver: Receiver, body: bytes, headers: dict[str, str], status: int, reason: str
) -> None:
    response = post(receiver, body, **headers)
    assert response.status_code == status, response.text
    assert reason in response.text
    assert not receiver.storage.intake.list("acme/")


@settings(max_examples=500, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_finite_value_is_a_json_number_of_the_same_value(value: float) -> None:
    text = _value(value)
    assert orjson.loads(text) == value and str(orjson.loads(text))[0] == str(value)[0]
