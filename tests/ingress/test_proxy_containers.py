"""The proxy's `file` input reading container runtimes' logs (`container_format`): CRI and Docker
json-file lines, a line's parts joined, Kubernetes' path metadata, open parts kept in the file
across polls and restarts, and through the receiver, piper and packer to Parquet."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bytefreezer.ingress.proxy.containers import container_records, kubernetes_fields
from bytefreezer.ingress.proxy.tail import Tailer
from tests.ingress.conftest import Receiver
from tests.ingress.test_proxy import intake_records, proxy_config, until
from tests.ingress.test_proxy_file import file_service

UID = "0b8f7f0a-3c1e-4c55-9a2b-5d3c1f2e4a6b"
CID = "ab" * 32


def test_kubernetes_fields_from_both_log_layouts() -> None:
    assert kubernetes_fields(f"/var/log/pods/shop_web-7d9f_{UID}/nginx/0.log") == {
        "namespace_name": "shop",
        "pod_name": "web-7d9f",
        "pod_id": UID,
        "container_name": "nginx",
    }
    assert kubernetes_fields(f"/var/log/containers/web-7d9f_shop_nginx-{CID}.log") == {
        "namespace_name": "shop",
        "pod_name": "web-7d9f",
        "container_name": "nginx",
        "docker_id": CID,
    }
    assert kubernetes_fields("/var/log/syslog") == {}
    # only the file's name and its two directories count, whatever the directories above
    assert kubernetes_fields(f"/srv/node_a/x_y/web-1_shop_nginx-{CID}.log")["pod_name"] == "web-1"
    assert kubernetes_fields(f"/var/lib/docker/containers/{CID}/{CID}-json.log") == {}


def _records(
    fmt: str, lines: list[str], *, close_open: bool = False, limit: int = 100
) -> tuple[list[dict], int]:
    ends, at = [], 0
    for line in lines:
        at += len(line) + 1
        ends.append(at)
    made = container_records(
        fmt,  # type: ignore[arg-type]
        lines,
        ends,
        "/var/log/app.log",
        limit,
        close_open=close_open,
    )
    return [json.loads(r) for r in made.records], made.used


def test_cri_lines_and_their_parts() -> None:
    lines = [
        "2026-01-01T10:00:00.000000001Z stdout F hello world",
        "2026-01-01T10:00:01.5Z stderr P first part, ",
        "2026-01-01T10:00:01.6Z stderr P second, ",
        "2026-01-01T10:00:01.7Z stderr F last",
        "2026-01-01T10:00:02Z stdout F",  # an empty line of the container's
        "not a cri line",
        "2026-01-01T10:00:03Z stdout F:x tagged",
    ]
    records, used = _records("cri", lines)
    assert used == sum(len(line) + 1 for line in lines)
    assert [(r.get("timestamp"), r.get("stream"), r.get("log")) for r in records[:3]] == [
        ("2026-01-01T10:00:00.000000001Z", "stdout", "hello world"),
        ("2026-01-01T10:00:01.5Z", "stderr", "first part, second, last"),  # the first's time
        ("2026-01-01T10:00:02Z", "stdout", ""),
    ]
    assert (
        records[3]["raw"] == "not a cri line" and "not a CRI" in records[3]["container_log_error"]
    )
    assert records[4]["log"] == "tagged"
    assert all(r["file"] == "/var/log/app.log" and "kubernetes" not in r for r in records)
    assert all("partial" not in r for r in records[:3])


def test_open_parts_wait_until_their_last_part_or_until_closed() -> None:
    lines = [
        "2026-01-01T10:00:00Z stdout F done",
        "2026-01-01T10:00:01Z stdout P still ",
        "2026-01-01T10:00:02Z stdout P writing",
    ]
    records, used = _records("cri", lines)
    assert [r["log"] for r in records] == ["done"] and used == len(lines[0]) + 1
    records, used = _records("cri", lines, close_open=True)
    assert records[-1]["log"] == "still writing" and records[-1]["partial"] is True
    assert used == sum(len(line) + 1 for line in lines)
    # parts past the line limit (100 here) close as a partial record
    long = [f"2026-01-01T10:00:0{n}Z stdout P " + "x" * 40 for n in range(3)]
    records, _ = _records("cri", long)
    assert len(records) == 1 and len(records[0]["log"]) == 100 and records[0]["partial"]


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(
        st.tuples(
            st.sampled_from(["stdout", "stderr"]),
            st.text(
                st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"),
                max_size=30,
            ),
            st.booleans(),
        ),
        max_size=12,
    ),
    close_open=st.booleans(),
)
def test_cri_parts_join_as_the_runtime_split_them(
    parts: list[tuple[str, str, bool]], close_open: bool
) -> None:
    """Any run of parts: each line the container wrote is its parts joined, in order, with the
    time of its first part; a line still open waits (its bytes not used) unless closed."""
    lines = [f"2026-01-01T10:00:00.{n:09d}Z {s} {'F' if last else 'P'} {t}" for n, (s, t, last) in enumerate(parts)]  # fmt: skip
    expected, group, used, at = [], [], 0, 0
    for n, (line, (_, text, last)) in enumerate(zip(lines, parts, strict=True)):
        at += len(line) + 1
        group.append((n, text))
        if last:
            expected.append((group[0][0], "".join(t for _, t in group), False))
            group, used = [], at
    if group and close_open:
        expected.append((group[0][0], "".join(t for _, t in group), True))
        used = at
    records, got_used = _records("cri", lines, close_open=close_open, limit=1 << 20)
    assert [(int(r["timestamp"][20:29]), r["log"], r.get("partial", False)) for r in records] == (
        expected
    )
    assert got_used == used


def test_docker_json_file_lines_and_their_parts() -> None:
    lines = [
        json.dumps({"log": "hello\n", "stream": "stdout", "time": "2026-01-01T10:00:00.1Z"}),
        json.dumps({"log": "a long ", "stream": "stderr", "time": "2026-01-01T10:00:01Z"}),
        json.dumps({"log": "line\r\n", "stream": "stderr", "time": "2026-01-01T10:00:02Z"}),
        '{"log": 5}',
        "",
    ]
    records, _ = _records("docker", lines)
    assert [(r.get("timestamp"), r.get("stream"), r.get("log")) for r in records[:2]] == [
        ("2026-01-01T10:00:00.1Z", "stdout", "hello"),
        ("2026-01-01T10:00:01Z", "stderr", "a long line"),
    ]
    assert (
        records[2]["raw"] == '{"log": 5}' and 'no "log" text' in records[2]["container_log_error"]
    )
    assert len(records) == 3  # the blank line is no record


def test_open_parts_are_not_checkpointed_and_a_restart_reads_them_whole(tmp_path: Path) -> None:
    pod = tmp_path / "pods" / f"shop_web-1_{UID}" / "app"
    pod.mkdir(parents=True)
    log = pod / "0.log"
    pattern = str(tmp_path / "pods" / "*" / "*" / "*.log")

    def tailer() -> Tailer:
        return Tailer(
            [pattern], tmp_path / "cp.json", container_format="cri", multiline_timeout=0.3
        )

    def take(t: Tailer) -> list[dict]:
        records = []
        for read in t.poll():
            records += [json.loads(r) for r in read.records or []]
            t.commit(read)
        t.save()
        return records

    log.write_text("2026-01-01T10:00:00Z stdout F one\n2026-01-01T10:00:01Z stdout P tw\n")
    first = tailer()
    records = take(first)
    assert [r["log"] for r in records] == ["one"]
    assert records[0]["kubernetes"]["pod_name"] == "web-1"
    assert records[0]["kubernetes"]["container_name"] == "app"
    first.close()
    again = tailer()  # a restart while the line is open: its part is read again
    with log.open("a") as file:
        file.write("2026-01-01T10:00:02Z stdout F o\n")
    assert [r["log"] for r in take(again)] == ["two"]
    with log.open("a") as file:
        file.write("2026-01-01T10:00:03Z stdout P never finished\n")
    assert take(again) == []
    time.sleep(0.4)  # no part came for the timeout: the line so far is a record
    (closed,) = take(again)
    assert closed["log"] == "never finished" and closed["partial"] is True
    assert take(again) == []
    again.close()


def test_container_format_is_checked(tmp_path: Path) -> None:
    base = {"name": "f", "tenant": "acme", "dataset": "web", "api_key": "k"}
    cases = [
        ({"type": "file", "paths": ["/x"], "container_format": "podman"}, "container_format"),
        ({"type": "tcp", "port": 1, "container_format": "cri"}, "are for file inputs"),
        (
            {"type": "file", "paths": ["/x"], "container_format": "cri", "multiline_start": "^"},
            "joins a container's lines itself",
        ),
    ]
    for extra, message in cases:
        with pytest.raises(ValidationError, match=message):
            proxy_config(tmp_path, "http://r", "k", {**base, **extra})


def test_kubernetes_pod_logs_to_parquet(receiver: Receiver, tmp_path: Path) -> None:
    pods = tmp_path / "logs"  # file_service follows logs/*.log: the containers' layout
    pods.mkdir()
    log = pods / f"web-1_shop_nginx-{CID}.log"
    log.write_text(
        "2026-01-01T10:00:00.000000001Z stdout F GET / 200\n"
        "2026-01-01T10:00:01Z stderr P upstream timed out, \n"
    )
    service = file_service(receiver.url, receiver.key, tmp_path, input={"container_format": "cri"})

    async def scenario() -> None:
        await service.start()
        try:
            await until(lambda: len(intake_records(receiver)) == 1)
            with log.open("a") as file:
                file.write("2026-01-01T10:00:02Z stderr F retrying\n")
            await until(lambda: len(intake_records(receiver)) == 2)
        finally:
            await service.stop()

    asyncio.run(scenario())
    table = receiver.pack("web")
    assert table is not None
    rows = sorted(table.to_pylist(), key=lambda r: r["log"])
    assert [(r["stream"], r["log"]) for r in rows] == [
        ("stdout", "GET / 200"),
        ("stderr", "upstream timed out, retrying"),
    ]
    assert rows[0]["kubernetes"] == {
        "namespace_name": "shop",
        "pod_name": "web-1",
        "container_name": "nginx",
        "docker_id": CID,
    }
    assert rows[0]["file"] == str(log)
    # partitioned by the runtime's time of each line (nanoseconds and all)
    part = receiver.settings.data_dir / "destination" / "acme" / "web" / "year=2026"
    assert (part / "month=01" / "day=01" / "hour=10").is_dir()
