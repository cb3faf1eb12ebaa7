"""A `file` input woken by inotify: lines written, and files created, in the directories it
follows are read at once, not at its next poll; without inotify (switched off, or none to be
had) it polls as before. The polls here are a minute apart, so a line read within seconds was
read because inotify woke the input."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from bytefreezer.ingress.proxy import inotify
from bytefreezer.ingress.proxy.inotify import DirectoryWatch, pattern_directory
from bytefreezer.ingress.proxy.tail import Tailer
from tests.ingress.conftest import Receiver
from tests.ingress.test_proxy import until
from tests.ingress.test_proxy_file import append, file_service


def test_pattern_directories() -> None:
    assert pattern_directory("/var/log/app/*.log") == "/var/log/app"
    assert pattern_directory("/var/log/*/app.log") == "/var/log"
    assert pattern_directory("/var/log/app.log") == "/var/log"
    assert pattern_directory("/srv/[ab]/x/*.log") == "/srv"
    assert pattern_directory("*.log") == "."
    assert pattern_directory("logs/*.log") == "logs"
    assert pattern_directory("/*.log") == "/"


def test_a_tailer_names_the_directories_of_its_patterns_and_files(tmp_path: Path) -> None:
    (tmp_path / "a" / "x").mkdir(parents=True)
    (tmp_path / "a" / "x" / "one.log").write_text("1\n")
    tailer = Tailer([str(tmp_path / "a" / "*" / "*.log")], tmp_path / "cp.json")
    assert tailer.directories() == {str(tmp_path / "a")}
    tailer.poll()
    assert tailer.directories() == {str(tmp_path / "a"), str(tmp_path / "a" / "x")}
    tailer.close()


def test_a_watch_wakes_on_changes_and_follows_its_directories(tmp_path: Path) -> None:
    async def scenario() -> None:
        watch = DirectoryWatch()
        assert watch.available
        loop = asyncio.get_running_loop()
        watch.attach(loop)
        try:
            first, second = tmp_path / "first", tmp_path / "second"
            first.mkdir()
            watch.watch([str(first), str(second)])  # second is not there yet
            assert watch.watched == {str(first)}
            (first / "a.log").write_text("line\n")
            await asyncio.wait_for(watch.wake.wait(), 10)
            watch.wake.clear()
            shutil.rmtree(first)  # its watch ends with it
            await asyncio.wait_for(watch.wake.wait(), 10)
            await until(lambda: not watch.watched, timeout=10)
            second.mkdir()
            first.mkdir()
            watch.watch([str(first), str(second)])  # both again
            assert watch.watched == {str(first), str(second)}
            watch.wake.clear()
            (second / "b.log").write_text("line\n")
            await asyncio.wait_for(watch.wake.wait(), 10)
            watch.watch([str(second)])  # first let go
            assert watch.watched == {str(second)}
        finally:
            watch.close(loop)
        assert not watch.available

    asyncio.run(scenario())


@pytest.mark.parametrize("change", ["append", "new file", "rename into"])
def test_lines_are_read_when_written_not_at_the_next_poll(
    receiver: Receiver, tmp_path: Path, change: str
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    append(logs / "app.log", '{"n": 0}')
    service = file_service(
        "http://127.0.0.1:9", receiver.key, tmp_path, input={"poll_interval_seconds": 60}
    )

    async def scenario() -> None:
        await service.start()
        try:
            tailer = service.tailers["logs"]
            await until(lambda: tailer.lines_read == 1, timeout=30)
            await until(lambda: service.watches["logs"].watched == {str(logs)}, timeout=10)
            if change == "append":
                append(logs / "app.log", '{"n": 1}')
            elif change == "new file":
                append(logs / "new.log", '{"n": 1}')
            else:  # written elsewhere, then renamed into the directory
                append(tmp_path / "elsewhere.log", '{"n": 1}')
                os.rename(tmp_path / "elsewhere.log", logs / "moved.log")
            await until(lambda: tailer.lines_read == 2, timeout=20)  # the poll is a minute away
        finally:
            await service.stop()
        assert "logs" in service.watches and not service.watches["logs"].available

    asyncio.run(scenario())


@pytest.mark.parametrize("why", ["switched off", "no inotify"])
def test_without_inotify_the_input_polls(
    receiver: Receiver, tmp_path: Path, why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    append(logs / "app.log", '{"n": 0}')
    settings = {"poll_interval_seconds": 0.5}
    if why == "switched off":
        settings["inotify"] = False
    else:
        monkeypatch.setattr(inotify, "_libc", lambda: None)
    service = file_service("http://127.0.0.1:9", receiver.key, tmp_path, input=settings)

    async def scenario() -> None:
        await service.start()
        try:
            tailer = service.tailers["logs"]
            await until(lambda: tailer.lines_read == 1, timeout=30)
            watch = service.watches.get("logs")
            assert (watch is None) if why == "switched off" else (not watch.available)
            append(logs / "app.log", '{"n": 1}')
            await until(lambda: tailer.lines_read == 2, timeout=20)  # found by a poll
        finally:
            await service.stop()

    asyncio.run(scenario())
