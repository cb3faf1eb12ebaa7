"""The proxy's `file` input: files followed as they grow, through the receiver, piper and packer
to Parquet; rotation by rename and by truncation, new files, checkpoints that survive a restart
(nothing read twice, nothing skipped), a full spool that moves no checkpoint, long lines."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bytefreezer.ingress.proxy.service import ProxyService
from bytefreezer.ingress.proxy.tail import Tailer
from tests.helpers import stop_process
from tests.ingress.conftest import Receiver
from tests.ingress.test_proxy import intake_records, proxy_config, until


def file_service(receiver_url: str, key: str, tmp_path: Path, **extra: Any) -> ProxyService:
    inputs = {"name": "logs", "type": "file", "paths": [str(tmp_path / "logs" / "*.log")]}
    inputs.update(extra.pop("input", {}))
    return ProxyService(
        proxy_config(tmp_path, receiver_url, key, inputs, **{"batch_max_age_seconds": 0.1, **extra})
    )


def append(path: Path, *lines: str) -> None:
    with path.open("a") as file:
        file.write("".join(line + "\n" for line in lines))


def test_files_to_parquet_through_rotation_and_a_restart(
    receiver: Receiver, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    append(app, '{"n": 0, "level": "info"}', "plain 1")

    async def run(steps: Any) -> None:
        service = file_service(receiver.url, receiver.key, tmp_path)
        await service.start()
        try:
            await steps(service)
        finally:
            await service.stop()

    def numbers() -> list[int]:
        return sorted(
            int(r["n"]) if "n" in r else int(r["raw"].split()[1]) for r in intake_records(receiver)
        )

    async def first(service: ProxyService) -> None:
        await until(lambda: numbers() == [0, 1])
        append(app, "plain 2", "plain 3")
        await until(lambda: numbers() == [0, 1, 2, 3])
        # rotation by rename: the old file is read to its end, the new one from its start
        app.rename(logs / "app.log.1")
        append(logs / "app.log.1", "plain 4")  # written before the writer reopened
        append(app, "plain 5")
        await until(lambda: numbers() == [0, 1, 2, 3, 4, 5])
        assert service.tailers["logs"].followed >= 1

    asyncio.run(run(first))
    # lines written while the proxy is down are read after its restart, none twice
    append(app, "plain 6")
    other = logs / "other.log"
    append(other, "plain 7")

    async def second(service: ProxyService) -> None:
        await until(lambda: numbers() == [0, 1, 2, 3, 4, 5, 6, 7])
        # copytruncate: the file starts again from its beginning
        with app.open("w") as file:
            file.write("plain 8\n")
        await until(lambda: numbers() == list(range(9)))

    asyncio.run(run(second))
    assert numbers() == list(range(9))
    table = receiver.pack("web")
    assert table is not None
    rows = table.to_pylist()
    assert len(rows) == 9
    first_row = next(r for r in rows if r.get("n") == 0)
    assert first_row["level"] == "info" and first_row["file"] == str(app)
    assert {r["file"] for r in rows if r.get("raw") == "plain 7"} == {str(other)}


def test_a_full_spool_moves_no_checkpoint(receiver: Receiver, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    append(app, *(f"line {n} " + os.urandom(3000).hex() for n in range(3)))  # incompressible
    # the receiver is unreachable and the spool small: some lines wait in the file
    service = file_service(
        "http://127.0.0.1:9",
        receiver.key,
        tmp_path,
        spool_max_bytes=4096,
        batch_max_age_seconds=3600,
    )
    checkpoints = tmp_path / "proxy-spool-checkpoints" / "logs.json"

    async def scenario() -> None:
        await service.start()
        try:
            await until(lambda: service.stats.lines_refused.get("logs", 0) >= 1)
            await asyncio.sleep(0.6)  # more polls: the same lines, refused again
            assert not checkpoints.exists()  # no checkpoint moved
        finally:
            await service.stop()

    asyncio.run(scenario())


def test_read_from_end_long_lines_and_partial_lines(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    old = logs / "old.log"
    append(old, "before the first start")
    tailer = Tailer([str(logs / "*.log")], tmp_path / "cp.json", read_from="end", max_line_bytes=10)
    assert tailer.poll() == []  # files found at the first start are read from their end

    def take() -> list[str]:
        lines = []
        for read in tailer.poll():
            lines += read.lines
            tailer.commit(read)
        tailer.save()
        return lines

    with old.open("a") as file:
        file.write("short\n" + "y" * 25 + "\nnext\npartial")
    assert take() == ["short", "y" * 10, "next"]  # cut to the limit; the partial line waits
    with old.open("a") as file:
        file.write(" line\n" + "z" * 30)  # a long line whose end has not come
    assert take() == ["partial li", "z" * 10]
    with old.open("a") as file:
        file.write("zzz\nafter\n")
    assert take() == ["after"]  # the rest of the cut line is dropped
    new = logs / "new.log"
    append(new, "a new file is read from its start")
    assert take() == ["a new file"]
    # a restart takes up the checkpoints
    again = Tailer([str(logs / "*.log")], tmp_path / "cp.json", read_from="end", max_line_bytes=10)
    append(new, "more")
    assert [line for read in again.poll() for line in read.lines] == ["more"]


def test_a_new_file_on_a_reused_inode_is_read_from_its_start(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    path = logs / "a.log"
    append(path, "first file line one", "first file line two")
    tailer = Tailer([str(logs / "*.log")], tmp_path / "cp.json")
    for read in tailer.poll():
        tailer.commit(read)
    inode = os.stat(path).st_ino
    # the same inode, other bytes at the start, longer than the old offset
    with path.open("r+") as file:
        file.write("SECOND FILE LINE ONE\nsecond file line two\nsecond file line three\n")
    assert os.stat(path).st_ino == inode
    assert [line for read in tailer.poll() for line in read.lines] == [
        "SECOND FILE LINE ONE",
        "second file line two",
        "second file line three",
    ]


def test_a_proxy_killed_while_following_loses_no_line(receiver: Receiver, tmp_path: Path) -> None:
    import signal

    from tests.helpers import free_port, wait_for, wait_for_port
    from tests.ingress.test_proxy_durability import proxy_config_file, proxy_process

    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    api_port = free_port()
    source = {
        "name": "logs",
        "type": "file",
        "paths": [str(logs / "*.log")],
        "poll_interval_seconds": 0.02,
    }
    config = proxy_config_file(tmp_path, receiver, api_port, source, batch_max_age_seconds=0.05)
    process = proxy_process(config, tmp_path / "proxy.log")
    try:
        wait_for_port(api_port)
        delivered = lambda: {int(r["n"]) for r in intake_records(receiver)}  # noqa: E731
        before_kill = 0
        for n in range(2000):  # written while the proxy follows, killed in the middle
            append(app, json.dumps({"n": n}))
            if n % 20 == 0:
                time.sleep(0.01)
            if n == 1000:
                wait_for(lambda: len(delivered()) > 0, 30)
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)
                before_kill = len(delivered())
                process = proxy_process(config, tmp_path / "proxy.log")
        wait_for(lambda: delivered() == set(range(2000)), 60)
    finally:
        stop_process(process)
    numbers = [int(r["n"]) for r in intake_records(receiver)]
    # at least once: what was spooled but not checkpointed when killed is read again
    assert set(numbers) == set(range(2000))
    assert 0 < before_kill < 2000
    assert len(numbers) - 2000 <= 1001, len(numbers)


def test_multiline_records_for_stack_traces(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    app = logs / "app.log"
    tailer = Tailer(
        [str(logs / "*.log")],
        tmp_path / "cp.json",
        multiline_start=r"^\d{4}-\d{2}-\d{2} ",
        multiline_timeout=0.3,
        max_line_bytes=120,
    )

    def take() -> list[str]:
        records = []
        for read in tailer.poll():
            records += read.lines
            tailer.commit(read)
        return records

    append(
        app,
        "2026-01-01 10:00:00 ERROR boom",
        "Traceback (most recent call last):",
        '  File "app.py", line 1',
        "2026-01-01 10:00:01 INFO next",
    )
    # the first record is complete (the next one began); the second waits for more lines
    assert take() == [
        '2026-01-01 10:00:00 ERROR boom\nTraceback (most recent call last):\n  File "app.py", line 1'
    ]
    append(app, "  continued")
    assert take() == []
    time.sleep(0.4)  # no line joined it for the timeout: complete
    assert take() == ["2026-01-01 10:00:01 INFO next\n  continued"]
    # a record stops growing at max_line_bytes
    frames = [f"  frame {n:02d} " + "." * 20 for n in range(4)]
    append(app, "2026-01-01 10:00:02 a", *frames)
    assert take() == ["\n".join(["2026-01-01 10:00:02 a", *frames[:3]])]
    time.sleep(0.4)
    assert take() == [frames[3]]
    # an open record is not checkpointed: a restart reads it whole
    append(app, "2026-01-01 10:00:03 WARN x", "  detail")
    assert take() == []
    tailer.save()
    again = Tailer(
        [str(logs / "*.log")],
        tmp_path / "cp.json",
        multiline_start=r"^\d{4}-",
        multiline_timeout=0.1,
    )
    assert [line for read in again.poll() for line in read.lines] == []
    time.sleep(0.2)
    assert [line for read in again.poll() for line in read.lines] == [
        "2026-01-01 10:00:03 WARN x\n  detail"
    ]


def test_file_input_configuration_is_checked(tmp_path: Path) -> None:
    base = {"name": "f", "tenant": "acme", "dataset": "web", "api_key": "k"}
    cases = [
        ({"type": "file"}, "needs paths"),
        ({"type": "file", "paths": ["/x"], "multiline_start": "(["}, "not a regular expression"),
        ({"type": "tcp", "port": 1, "paths": ["/x"]}, "are for file inputs"),
    ]
    for extra, message in cases:
        with pytest.raises(ValidationError, match=message.replace("(", r"\(")):
            proxy_config(tmp_path, "http://r", "k", {**base, **extra})


def test_multiline_through_the_proxy(receiver: Receiver, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    append(logs / "app.log", "E1 boom", "  at a()", "  at b()", "E2 next")
    service = file_service(
        receiver.url,
        receiver.key,
        tmp_path,
        input={"multiline_start": "^E", "multiline_timeout_seconds": 0.2},
    )

    async def scenario() -> None:
        await service.start()
        try:
            await until(lambda: len(intake_records(receiver)) == 2)
        finally:
            await service.stop()

    asyncio.run(scenario())
    assert sorted(r["raw"] for r in intake_records(receiver)) == [
        "E1 boom\n  at a()\n  at b()",
        "E2 next",
    ]


def test_file_records() -> None:
    from bytefreezer.ingress.proxy.records import file_record

    assert file_record("{}", "/x") == b'{"file":"/x"}'
    assert json.loads(file_record(' { "a": {"b": 1} } ', '/a "b"')) == {
        "file": '/a "b"',
        "a": {"b": 1},
    }
    assert file_record('{"file": "own", "a": 1}', "/x") == b'{"file": "own", "a": 1}'
    assert json.loads(file_record('{"kind": "file"}', "/x")) == {"file": "/x", "kind": "file"}
    plain = json.loads(file_record("plain text", "/x"))
    assert (plain["raw"], plain["file"]) == ("plain text", "/x") and plain["timestamp"]
    # not parsed: a line that only looks like an object reaches piper, which dead-letters it
    assert file_record("{oops}", "/x") == b'{"file":"/x",oops}'


def test_a_backlog_is_read_without_waiting_a_poll_per_read(
    receiver: Receiver, tmp_path: Path
) -> None:
    # 10 MiB take three reads of 4 MiB; with a poll every 60 s only the first read would come
    # before the wait below ends if the input slept between reads that found lines
    logs = tmp_path / "logs"
    logs.mkdir()
    line = json.dumps({"pad": "x" * 1000})
    append(logs / "big.log", *([line] * 10_000))
    service = file_service(
        "http://127.0.0.1:9", receiver.key, tmp_path, input={"poll_interval_seconds": 60}
    )

    async def scenario() -> None:
        await service.start()
        try:
            await until(lambda: service.tailers["logs"].lines_read == 10_000, timeout=30)
        finally:
            await service.stop()

    asyncio.run(scenario())


def test_line_endings_and_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    """CRLF lines lose the CR; bytes that are not UTF-8 become U+FFFD, line by line, whether a
    read has a line to cut (read line by line) or not (decoded at once)."""
    raw = [b"crlf\r", b"caf\xc3\xa9", b"bad \xff\xfe", b"cut \xe2\x82", b"\r", b""]
    expected = [line.decode("utf-8", "replace").removesuffix("\r") for line in raw]
    for limit, extra in ((1 << 20, []), (12, ["y" * 12])):  # the second read has a long line
        logs = tmp_path / f"logs-{limit}"
        logs.mkdir()
        tail = [b"y" * 20] if extra else []
        (logs / "a.log").write_bytes(b"\n".join(raw + tail) + b"\n")
        tailer = Tailer([str(logs / "*.log")], tmp_path / f"cp-{limit}.json", max_line_bytes=limit)
        assert [line for read in tailer.poll() for line in read.lines] == expected + extra


def test_a_line_at_the_limit_is_whole_and_one_past_it_is_cut(tmp_path: Path) -> None:
    """Lines read as they are (no line to cut) and lines cut agree at the limit's edge: a line
    of ``max_line_bytes`` is whole, one byte more is cut, in reads longer than the limit."""
    for extra, expected in ((0, "x" * 8), (1, "x" * 8)):
        logs = tmp_path / f"logs-{extra}"
        logs.mkdir()
        lines = [b"ab", b"x" * (8 + extra), b"cd"]
        (logs / "a.log").write_bytes(b"\n".join(lines) + b"\n")
        tailer = Tailer([str(logs / "*.log")], tmp_path / f"cp-{extra}.json", max_line_bytes=8)
        (read,) = tailer.poll()
        assert read.lines == ["ab", expected, "cd"]
        assert (read.cut is None) == (extra == 0)  # whole lines are kept as read
        tailer.commit(read)
        assert tailer.lines_read == 3
