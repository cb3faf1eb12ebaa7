"""The proxy's `journald` input against real journal files: systemd-journal-remote (Debian's
package, which `make test` installs) writes them from journal export streams, and the input's
journalctl follows them. Entries reach the receiver with their fields, new files and appended
entries are followed, a restart reads on after the checkpointed cursor, a unit filter and
`read_from: end` keep what they should, and a killed journalctl is run again."""

from __future__ import annotations

import asyncio
import base64
import struct
import subprocess
from pathlib import Path
from typing import Any

import psutil
import pytest

from bytefreezer.ingress.proxy.journald import entry_record
from bytefreezer.ingress.proxy.service import ProxyService
from tests.ingress.conftest import Receiver
from tests.ingress.test_proxy import intake_records, proxy_config, spooled_records, until

JOURNAL_REMOTE = Path("/lib/systemd/systemd-journal-remote")
BOOT = "0123456789abcdef0123456789abcdef"
START_US = 1_767_225_600_000_000


@pytest.fixture(autouse=True)
def _journal_tools() -> None:
    if not JOURNAL_REMOTE.exists():
        pytest.fail("systemd-journal-remote is missing: `make test` installs Debian's package")


def export(entries: list[dict[str, str | bytes]]) -> bytes:
    """Entries in the journal export format (a binary field with its length)."""
    out = b""
    for entry in entries:
        for name, value in entry.items():
            if isinstance(value, bytes):
                out += name.encode() + b"\n" + struct.pack("<Q", len(value)) + value + b"\n"
            else:
                out += f"{name}={value}\n".encode()
        out += b"\n"
    return out


def write_journal(path: Path, numbers: range, **fields: str | bytes) -> None:
    """Entries numbered ``numbers`` into the journal file ``path`` (appended if it exists)."""
    entries = [
        {
            "__REALTIME_TIMESTAMP": str(START_US + n * 1_000_001),
            "__MONOTONIC_TIMESTAMP": str(1000 + n),
            "_BOOT_ID": BOOT,
            "_HOSTNAME": "web-1",
            "PRIORITY": "6",
            "SYSLOG_IDENTIFIER": "app",
            "MESSAGE": f"entry {n}",
            **fields,
        }
        for n in numbers
    ]
    subprocess.run(
        [str(JOURNAL_REMOTE), f"--output={path}", "-"],
        input=export(entries),
        check=True,
        capture_output=True,
    )


def journald_service(receiver: Receiver, tmp_path: Path, **source: Any) -> ProxyService:
    return ProxyService(
        proxy_config(
            tmp_path, receiver.url, receiver.key,
            {"name": "journal", "type": "journald", "journal_directory": str(tmp_path / "journal"),
             **source},
        )
    )  # fmt: skip


def messages(receiver: Receiver) -> list[str]:
    return sorted(str(r["message"]) for r in intake_records(receiver))


def test_entries_followed_and_read_on_after_a_restart(receiver: Receiver, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    journal.mkdir()
    write_journal(journal / "a.journal", range(3))
    write_journal(journal / "unit.journal", range(3, 4), _SYSTEMD_UNIT="nginx.service")
    write_journal(journal / "binary.journal", range(4, 5), MESSAGE=b"\xff\xfe raw", DATA=b"\x00ok")

    async def first() -> None:
        service = journald_service(receiver, tmp_path)
        await service.start()
        try:
            await until(lambda: len(intake_records(receiver)) == 5)
            write_journal(journal / "a.journal", range(5, 7))  # appended to a followed file
            write_journal(journal / "b.journal", range(7, 8))  # a new file
            await until(lambda: len(intake_records(receiver)) == 8)
            assert service.journals["journal"].entries_read == 8
        finally:
            await service.stop()

    asyncio.run(first())
    # while the proxy is down: more than the ten entries `journalctl --follow` shows by itself
    write_journal(journal / "b.journal", range(8, 30))

    async def second() -> None:
        service = journald_service(receiver, tmp_path)
        await service.start()
        try:
            await until(lambda: len(intake_records(receiver)) >= 30)
            await asyncio.sleep(0.5)  # nothing read twice after the cursor
        finally:
            await service.stop()

    asyncio.run(second())
    rows = {r["message"]: r for r in intake_records(receiver)}
    expected = {f"entry {n}" for n in range(30) if n != 4}
    assert set(rows) == expected | {base64.b64encode(b"\xff\xfe raw").decode()}
    assert len(intake_records(receiver)) == 30
    first_entry = rows["entry 0"]
    assert first_entry["timestamp"] == "2026-01-01T00:00:00.000000Z"
    assert (first_entry["PRIORITY"], first_entry["_HOSTNAME"]) == ("6", "web-1")
    assert first_entry["__CURSOR"] and "MESSAGE" not in first_entry
    assert rows["entry 3"]["_SYSTEMD_UNIT"] == "nginx.service"
    assert rows["entry 1"]["timestamp"] == "2026-01-01T00:00:01.000001Z"
    binary = rows[base64.b64encode(b"\xff\xfe raw").decode()]
    assert binary["DATA"] == "\x00ok"  # bytes that are UTF-8 come back as text
    table = receiver.pack("web")
    assert table is not None and table.num_rows == 30


def test_units_and_read_from_end(receiver: Receiver, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    journal.mkdir()
    write_journal(journal / "a.journal", range(3))
    write_journal(journal / "a.journal", range(3, 5), _SYSTEMD_UNIT="nginx.service")

    async def scenario() -> None:
        service = journald_service(receiver, tmp_path, units=["nginx.service"])
        await service.start()
        try:
            await until(lambda: len(intake_records(receiver)) == 2)
        finally:
            await service.stop()
        late = ProxyService(
            proxy_config(
                tmp_path / "late", receiver.url, receiver.key,
                {"name": "late", "type": "journald", "journal_directory": str(journal),
                 "read_from": "end"},
            )
        )  # fmt: skip
        await late.start()
        try:
            await asyncio.sleep(1.0)  # journalctl is following from the end
            write_journal(journal / "a.journal", range(5, 6))
            await until(lambda: len(intake_records(receiver)) == 3)
            await asyncio.sleep(0.3)
        finally:
            await late.stop()

    asyncio.run(scenario())
    assert messages(receiver) == ["entry 3", "entry 4", "entry 5"]


def test_a_journalctl_that_ends_is_run_again(receiver: Receiver, tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    journal.mkdir()
    write_journal(journal / "a.journal", range(2))

    async def scenario() -> None:
        service = journald_service(receiver, tmp_path)
        await service.start()
        try:
            await until(lambda: len(intake_records(receiver)) == 2)
            followers = [
                child
                for child in psutil.Process().children()
                if f"--directory={journal}" in child.cmdline()
            ]
            assert len(followers) == 1  # journalctl, run by the input
            followers[0].kill()
            write_journal(journal / "a.journal", range(2, 3))
            await until(lambda: len(intake_records(receiver)) == 3, timeout=30)
        finally:
            await service.stop()

    asyncio.run(scenario())
    assert messages(receiver) == ["entry 0", "entry 1", "entry 2"]


def test_lines_that_are_not_entries_are_kept() -> None:
    record, cursor = entry_record(b"Failed to open journal: Permission denied")
    assert cursor is None and b'"journald_error":"not a journal entry' in record
    record, cursor = entry_record(b'{"MESSAGE": [104, 105], "__CURSOR": "c1", "M": ["a", "b"]}')
    assert cursor == "c1" and b'"message":"hi"' in record and b'"M":["a","b"]' in record
    record, cursor = entry_record('{"MESSAGE": "m", "__REALTIME_TIMESTAMP": "\u00b2"}'.encode())
    assert b'"message":"m"' in record and b'"timestamp"' not in record


def test_a_proxy_killed_while_reading_the_journal_loses_nothing(
    receiver: Receiver, tmp_path: Path
) -> None:
    import signal

    from tests.helpers import free_port, stop_process, wait_for, wait_for_port
    from tests.ingress.test_proxy_durability import proxy_config_file, proxy_process

    journal = tmp_path / "journal"
    journal.mkdir()
    total = 20_000
    for part in range(4):  # journal-remote slows down past ~5,000 entries a file
        write_journal(journal / f"{part}.journal", range(part * 5_000, (part + 1) * 5_000))
    api_port = free_port()
    source = {"name": "journal", "type": "journald", "journal_directory": str(journal)}
    config = proxy_config_file(
        tmp_path, receiver, api_port, source,
        batch_max_age_seconds=0.05, batch_max_bytes=256 * 1024,  # the test receiver takes 1 MB
    )  # fmt: skip
    process = proxy_process(config, tmp_path / "proxy.log")
    delivered = lambda: {r["message"] for r in intake_records(receiver)}  # noqa: E731
    try:
        wait_for_port(api_port)
        wait_for(lambda: len(delivered()) > 0, 30)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        process = proxy_process(config, tmp_path / "proxy.log")
        wait_for(lambda: len(delivered()) == total, 60)
    finally:
        stop_process(process)
    messages = [r["message"] for r in intake_records(receiver)]
    assert set(messages) == {f"entry {n}" for n in range(total)}  # at least once
    assert len(messages) < 2 * total


def test_a_full_spool_holds_the_entries_and_the_cursor(receiver: Receiver, tmp_path: Path) -> None:
    import json
    import os

    journal = tmp_path / "journal"
    journal.mkdir()
    write_journal(journal / "a.journal", range(1))
    # the receiver is unreachable and the spool small: the big entries wait in the journal
    service = ProxyService(
        proxy_config(
            tmp_path, "http://127.0.0.1:9", receiver.key,
            {"name": "journal", "type": "journald", "journal_directory": str(journal)},
            spool_max_bytes=4096, batch_max_age_seconds=3600,
        )
    )  # fmt: skip
    checkpoint = tmp_path / "proxy-spool-checkpoints" / "journal.json"

    async def scenario() -> None:
        await service.start()
        try:
            await until(lambda: service.journals["journal"].entries_read == 1)
            saved = json.loads(checkpoint.read_text())
            write_journal(journal / "a.journal", range(1, 2), BLOB=os.urandom(3000).hex())
            await until(lambda: service.stats.lines_refused.get("journal", 0) >= 2)  # again
            assert json.loads(checkpoint.read_text()) == saved  # not past the refused entry
            assert service.journals["journal"].entries_read == 1
        finally:
            await service.stop()

    asyncio.run(scenario())
    assert [r["message"] for r in spooled_records(service)] == ["entry 0"]
