"""`bytefreezer up` as a user runs it: post over HTTP, read Parquet at the destination."""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bytefreezer.control.client import HttpControl
from bytefreezer.errors import BytefreezerError
from tests.helpers import (
    first_run_key,
    free_port,
    read_parquet_dir,
    start_up,
    stop_process,
    wait_for,
    wait_for_port,
)


def _running_stack(where: Path) -> Iterator[dict[str, object]]:
    data_dir = where / "data"
    port = free_port()
    log = open(where / "up.log", "wb")
    process = start_up(data_dir, log, port, BYTEFREEZER_RECEIVER__MAX_BODY_BYTES="200000")
    try:
        wait_for_port(port, timeout=60)
        key = first_run_key(data_dir)
        yield {"url": f"http://127.0.0.1:{port}", "key": key, "data": data_dir, "process": process}
    finally:
        stop_process(process)
        log.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, object]]:
    yield from _running_stack(tmp_path)


@pytest.fixture(scope="module")
def refusing_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """One stack for the requests it refuses (each refused request stores nothing)."""
    yield from _running_stack(tmp_path_factory.mktemp("refusing"))


def test_posted_records_reach_parquet_and_bad_lines_reach_dead_letters(
    stack: dict[str, object],
) -> None:
    url, key, data_dir = stack["url"], stack["key"], stack["data"]
    assert isinstance(data_dir, Path)
    auth = {"Authorization": f"Bearer {key}"}
    plain = (
        '{"timestamp": "2026-01-01T12:00:00Z", "id": 1, "msg": "hello"}\n'
        "this is not json\n"
        '{"timestamp": "2026-01-01T13:30:00Z", "id": 2, "msg": "world"}\n'
    )
    response = httpx.post(f"{url}/demo/events", content=plain, headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["lines"] == 3
    lines = [json.dumps({"timestamp": 1767229200 + i, "id": 10 + i}) for i in range(5)]
    zipped = gzip.compress("\n".join(lines).encode())
    response = httpx.post(
        f"{url}/webhook/demo/events",
        content=zipped,
        headers={**auth, "Content-Encoding": "gzip"},
    )
    assert response.status_code == 200, response.text

    destination = data_dir / "destination" / "demo" / "events"

    def all_rows() -> list[dict[str, object]] | None:
        table = read_parquet_dir(destination)
        return table.to_pylist() if table is not None and table.num_rows == 7 else None

    rows = wait_for(all_rows, timeout=60)
    assert sorted(r["id"] for r in rows) == [1, 2, 10, 11, 12, 13, 14]
    assert (destination / "year=2026" / "month=01" / "day=01" / "hour=12").is_dir()
    assert (destination / "year=2026" / "month=01" / "day=01" / "hour=13").is_dir()

    dead = list((data_dir / "buckets" / "piper" / "_dead-letter").rglob("*.ndjson"))
    assert len(dead) == 1
    record = json.loads(dead[0].read_text().splitlines()[0])
    assert record["line"] == "this is not json"
    assert record["error"].startswith("invalid JSON")

    # Nothing is left behind once packed: intake and staged objects are gone.
    assert not list((data_dir / "buckets" / "intake").rglob("*.gz"))
    assert wait_for(lambda: not list((data_dir / "buckets" / "piper" / "demo").rglob("*.parquet")))


@pytest.mark.parametrize(
    ("path", "headers", "body", "status"),
    [
        ("/demo/events", {}, b'{"a":1}', 401),
        ("/demo/events", {"Authorization": "Bearer bfk_nope_nope"}, b'{"a":1}', 401),
        ("/demo/missing", None, b'{"a":1}', 403),  # the demo key is limited to demo/events
        ("/other/events", None, b'{"a":1}', 403),
        ("/Demo/events", None, b'{"a":1}', 400),
        ("/demo/events", None, b"", 400),
        ("/demo/events", None, b"x" * 200001, 413),
        ("/demo/events", {"Content-Encoding": "gzip"}, b"not gzip at all", 400),
    ],
)
def test_bad_requests_get_clear_errors(
    refusing_stack: dict[str, object],
    path: str,
    headers: dict[str, str] | None,
    body: bytes,
    status: int,
) -> None:
    stack = refusing_stack
    send = {"Authorization": f"Bearer {stack['key']}"} if headers is None else dict(headers)
    if headers and "Content-Encoding" in headers:
        send["Authorization"] = f"Bearer {stack['key']}"
    response = httpx.post(f"{stack['url']}{path}", content=body, headers=send)
    assert response.status_code == status, response.text
    assert response.json()["error"]
    data_dir = stack["data"]
    assert isinstance(data_dir, Path)
    assert not list((data_dir / "buckets" / "intake").rglob("*.gz"))  # nothing stored


def test_sigterm_stops_the_stack_cleanly(stack: dict[str, object]) -> None:
    process = stack["process"]
    assert isinstance(process, subprocess.Popen)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def test_each_stage_wakes_the_next_instead_of_waiting_for_its_poll(tmp_path: Path) -> None:
    """With poll intervals of ten minutes, a posted record still reaches Parquet at once: the
    receiver wakes piper and piper wakes packer."""
    data_dir = tmp_path / "data"
    port = free_port()
    with open(tmp_path / "up.log", "wb") as log:
        process = start_up(
            data_dir,
            log,
            port,
            BYTEFREEZER_PIPER__POLL_INTERVAL_SECONDS="600",
            BYTEFREEZER_PACKER__POLL_INTERVAL_SECONDS="600",
        )
        try:
            wait_for_port(port, timeout=60)
            response = httpx.post(
                f"http://127.0.0.1:{port}/demo/events",
                content='{"timestamp": "2026-01-01T12:00:00Z", "id": 1}\n',
                headers={"Authorization": f"Bearer {first_run_key(data_dir)}"},
            )
            assert response.status_code == 200, response.text
            destination = data_dir / "destination" / "demo" / "events"
            table = wait_for(lambda: read_parquet_dir(destination), timeout=60)
            assert table.column("id").to_pylist() == [1]
        finally:
            stop_process(process)


def test_packer_buffers_a_stream_then_packs_it_as_one_file(tmp_path: Path) -> None:
    """With a 3 s buffer, records posted one after another wait (no file before the first
    one's buffer is due) and are then packed together into one file, and `up` says so."""
    data_dir = tmp_path / "data"
    port = free_port()
    with open(tmp_path / "up.log", "wb") as log:
        process = start_up(data_dir, log, port, BYTEFREEZER_PACKER__BUFFER_SECONDS="3")
        try:
            wait_for_port(port, timeout=60)
            auth = {"Authorization": f"Bearer {first_run_key(data_dir)}"}
            destination = data_dir / "destination" / "demo" / "events"
            first_posted = time.time()
            for i in range(5):
                body = json.dumps({"timestamp": "2026-01-01T12:00:00Z", "id": i}) + "\n"
                response = httpx.post(
                    f"http://127.0.0.1:{port}/demo/events", content=body, headers=auth
                )
                assert response.status_code == 200, response.text
                time.sleep(0.2)
            while time.time() < first_posted + 2.5:
                assert read_parquet_dir(destination) is None, "packed before the buffer was due"
                time.sleep(0.1)
            table = wait_for(lambda: read_parquet_dir(destination), timeout=60)
            assert sorted(table.column("id").to_pylist()) == list(range(5))
            assert len(list(destination.rglob("*.parquet"))) == 1
        finally:
            stop_process(process)
    assert (
        "Packer writes a dataset's Parquet once its oldest record is 3 s old"
        in (tmp_path / "up.log").read_text()
    )


def test_integers_beyond_64_bits_reach_parquet_exactly(stack: dict[str, object]) -> None:
    url, key, data_dir = stack["url"], stack["key"], stack["data"]
    assert isinstance(data_dir, Path)
    auth = {"Authorization": f"Bearer {key}"}
    bodies = [  # separate requests: an int64 field in one, beyond 64 bits in the other
        '{"timestamp": "2026-01-01T12:00:00Z", "id": 9007199254740993, "n": 1}\n',
        '{"timestamp": "2026-01-01T12:00:01Z", "id": 18446744073709551617, "n": 2}\n'
        '{"timestamp": "2026-01-01T12:00:02Z", "id": 18446744073709551615, "n": 3}\n',
    ]
    for body in bodies:
        response = httpx.post(f"{url}/demo/events", content=body, headers=auth)
        assert response.status_code == 200, response.text
    destination = data_dir / "destination" / "demo" / "events"

    def all_rows() -> list[dict[str, object]] | None:
        table = read_parquet_dir(destination)
        return table.to_pylist() if table is not None and table.num_rows == 3 else None

    rows = sorted(wait_for(all_rows, timeout=60), key=lambda r: int(str(r["n"])))
    assert [r["id"] for r in rows] == [9007199254740993, 2**64 + 1, 2**64 - 1]


def test_a_null_line_at_a_block_boundary_is_dead_lettered_and_the_stack_lives_on(
    stack: dict[str, object],
) -> None:
    # pyarrow's JSON reader crashed the whole process (SIGSEGV) on a line of null starting one
    # of its 1 MiB blocks, and the object stayed in the intake to crash it again on restart.
    url, key, data_dir, process = stack["url"], stack["key"], stack["data"], stack["process"]
    assert isinstance(data_dir, Path) and isinstance(process, subprocess.Popen)
    record = '{"timestamp": "2026-01-01T12:00:00Z", "id": 1, "pad": "%s"}\n'
    line = record % ("x" * (64 - len(record % "")))
    assert len(line) == 64
    body = (line * (1 << 14) + "null\n" + line).encode()  # the null line starts at 1 MiB
    response = httpx.post(
        f"{url}/demo/events",
        content=gzip.compress(body),
        headers={"Authorization": f"Bearer {key}", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 200, response.text
    destination = data_dir / "destination" / "demo" / "events"

    def packed() -> int | None:
        table = read_parquet_dir(destination)
        return table.num_rows if table is not None and table.num_rows == (1 << 14) + 1 else None

    wait_for(packed, timeout=60)
    assert process.poll() is None
    dead = list((data_dir / "buckets" / "piper" / "_dead-letter").rglob("*.ndjson"))
    records = [json.loads(line) for path in dead for line in path.read_text().splitlines()]
    assert [(r["line"], r["error"]) for r in records] == [("null", "not a JSON object (NoneType)")]


ADMIN_KEY = "bfk_0123456789ab_embedded-test-admin-secret"


@pytest.mark.parametrize(("chosen", "expected"), [(None, "system"), ("mimalloc", "mimalloc")])
def test_the_stack_allocates_arrow_memory_from_malloc_unless_the_operator_chose_a_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chosen: str | None, expected: str
) -> None:
    """mimalloc, pyarrow's default, had the kernel clear pages for 17% of the stack's CPU time,
    and jemalloc made taking rows twice as slow (`bytefreezer.memory`); the pool in use is in
    piper's and packer's health reports."""
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    data_dir = tmp_path / "data"
    control_port = free_port()
    env = {
        "BYTEFREEZER_CONTROL__PORT": str(control_port),
        "BYTEFREEZER_CONTROL__ADMIN_KEY": ADMIN_KEY,
    }
    if chosen is not None:
        env["ARROW_DEFAULT_MEMORY_POOL"] = chosen
    with open(tmp_path / "up.log", "wb") as log:
        process = start_up(data_dir, log, free_port(), **env)
        try:
            control = HttpControl(f"http://127.0.0.1:{control_port}", ADMIN_KEY)

            def reports() -> dict[str, object] | None:
                try:
                    found = {r.component: r.details for r in control.list_components()}
                except BytefreezerError:  # not listening yet
                    return None
                return found if {"piper", "packer"} <= found.keys() else None

            found = wait_for(reports, timeout=60)
            assert found["piper"]["arrow_memory_pool"] == expected
            assert found["packer"]["arrow_memory_pool"] == expected
        finally:
            stop_process(process)
