"""The proxy's `relp` input: rsyslog's omrelp (Debian's rsyslog-relp, installed by `make test`)
sends syslog messages over RELP through the receiver, piper and packer to Parquet, each once;
acknowledgements only once a message is spooled; frames parsed as the protocol says."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from bytefreezer.ingress.proxy.relp import Frame, FrameReader, RelpError, opened, response
from bytefreezer.ingress.proxy.service import ProxyService
from tests import rsyslog
from tests.helpers import free_port, stop_process
from tests.ingress.conftest import Receiver
from tests.ingress.test_proxy import intake_records, proxy_config, spooled_records, until


def frame(txnr: int, command: str, data: bytes = b"") -> bytes:
    if not data:
        return b"%d %s 0\n" % (txnr, command.encode())
    return b"%d %s %d %s\n" % (txnr, command.encode(), len(data), data)


OPEN = frame(1, "open", b"relp_version=0\nrelp_software=test\ncommands=syslog")


def test_frames_split_anywhere_in_the_stream() -> None:
    stream = OPEN + frame(2, "syslog", b"<13>hello\nworld") + frame(3, "close")
    for size in (1, 2, 7, len(stream)):
        reader = FrameReader(1 << 20)
        frames = []
        for at in range(0, len(stream), size):
            frames += reader.feed(stream[at : at + size])
        assert frames == [
            Frame(1, "open", b"relp_version=0\nrelp_software=test\ncommands=syslog"),
            Frame(2, "syslog", b"<13>hello\nworld"),  # the length counts, not the newline
            Frame(3, "close", b""),
        ]


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (b"x1 syslog 1 a\n", "transaction number"),
        (b"1 sys-log 1 a\n", "not a RELP command"),
        (b"1 syslog 3 abcX", "does not end with LF"),
        (b"1 close 0 \n", "without data must end with LF"),
        (b"1 syslog 5x", "followed by a space"),
        (b"1 syslog 99999 " + b"a" * 10, "exceeds the limit"),
        (b"1234567890123 syslog", "missing or too long"),
        (b"1 syslog 1234567890 a", "too many digits"),
    ],
)
def test_what_is_not_relp_ends_the_session(stream: bytes, reason: str) -> None:
    with pytest.raises(RelpError, match=reason):
        FrameReader(1000).feed(stream)


def test_answers() -> None:
    assert response(7, b"200 OK") == b"7 rsp 6 200 OK\n"
    assert response(9, b"") == b"9 rsp 0\n"
    answer = opened(Frame(1, "open", b"relp_version=0\ncommands=syslog"))
    assert answer.startswith(b"1 rsp ") and b"200 OK\nrelp_version=0\n" in answer
    assert answer.endswith(b"commands=syslog\n")
    refused = opened(Frame(1, "open", b"relp_version=0\ncommands=other"))
    assert b" 500 " in refused


def relp_service(receiver_url: str, key: str, tmp_path: Path, **extra: Any) -> ProxyService:
    return ProxyService(
        proxy_config(
            tmp_path,
            receiver_url,
            key,
            {"name": "relp", "type": "relp", "syslog_format": "rfc5424"},
            **extra,
        )
    )


@rsyslog.needs("omrelp")
def test_rsyslog_omrelp_to_parquet(receiver: Receiver, tmp_path: Path) -> None:
    service = relp_service(receiver.url, receiver.key, tmp_path)
    tcp = free_port()

    async def scenario() -> str:
        await service.start()
        process = rsyslog.start(
            f'global(workDirectory="{tmp_path}")\n'
            'module(load="imtcp")\nmodule(load="omrelp")\n'
            'ruleset(name="ship") {\n'
            f'  action(type="omrelp" target="127.0.0.1" port="{service.ports["relp"]}"\n'
            '         template="RSYSLOG_SyslogProtocol23Format")\n}\n'
            f'input(type="imtcp" port="{tcp}" ruleset="ship")\n',
            tmp_path,
            "omrelp",
        )
        try:
            await until(lambda: _accepts(tcp))
            _, writer = await asyncio.open_connection("127.0.0.1", tcp)
            for i in range(300):
                writer.write(
                    f"<134>1 2026-01-01T10:00:{i % 60:02d}Z web-1 checkout 42 - - order {i}\n".encode()
                )
            await writer.drain()
            writer.close()
            await until(lambda: len(intake_records(receiver)) == 300, timeout=30)
        finally:
            await asyncio.to_thread(stop_process, process)  # the proxy answers its close
            await service.stop()
        return rsyslog.output(tmp_path)

    output = asyncio.run(scenario())
    records = intake_records(receiver)
    assert len(records) == 300, output
    assert service.relp_stats["relp"]["malformed"] == 0
    table = receiver.pack("web")
    assert table is not None
    rows = sorted(table.to_pylist(), key=lambda r: int(str(r["message"]).split()[1]))
    assert [r["message"] for r in rows] == [f"order {i}" for i in range(300)]
    assert {(r["hostname"], r["app_name"]) for r in rows} == {("web-1", "checkout")}


def _accepts(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_a_message_is_acknowledged_only_once_spooled(receiver: Receiver, tmp_path: Path) -> None:
    # the receiver is unreachable: what is acknowledged must be in the proxy's spool
    service = relp_service(
        "http://127.0.0.1:9",
        receiver.key,
        tmp_path,
        batch_max_age_seconds=3600,
        spool_max_bytes=4096,
    )

    async def scenario() -> None:
        await service.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", service.ports["relp"])
            writer.write(OPEN)
            await writer.drain()
            assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"1 rsp ")
            await asyncio.wait_for(reader.readuntil(b"commands=syslog\n"), 10)
            messages = [b"<13>1 2026-01-01T00:00:00Z h app - - - line %d" % n for n in range(5)]
            writer.write(b"".join(frame(n + 2, "syslog", m) for n, m in enumerate(messages)))
            await writer.drain()
            acks = [await asyncio.wait_for(reader.readline(), 10) for _ in messages]
            assert acks == [b"%d rsp 6 200 OK\n" % (n + 2) for n in range(5)]
            spooled = [r["message"] for r in spooled_records(service)]
            assert spooled == [f"line {n}" for n in range(5)]
            # a message the full spool refuses is not acknowledged: the session ends
            # unanswered, and the client sends it again
            big = b"<13>1 2026-01-01T00:00:00Z h app - - - " + os.urandom(5000).hex().encode()
            writer.write(frame(7, "syslog", big))
            await writer.drain()
            assert await asyncio.wait_for(reader.read(1024), 10) == b""
            writer.close()
            assert service.stats.lines_refused == {"relp": 1}
        finally:
            await service.stop()

    asyncio.run(scenario())


def test_close_other_commands_and_a_broken_stream(receiver: Receiver, tmp_path: Path) -> None:
    service = relp_service(receiver.url, receiver.key, tmp_path)

    async def session(data: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.ports["relp"])
        writer.write(data)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)  # until the server closes
        writer.close()
        return answer

    async def scenario() -> None:
        await service.start()
        try:
            answer = await session(
                OPEN + frame(2, "starttls") + frame(3, "syslog", b"<13>x") + frame(4, "close")
            )
            lines = answer.split(b"\n")
            assert lines[-4:] == [
                b"2 rsp 34 500 command starttls not supported",
                b"3 rsp 6 200 OK",
                b"4 rsp 0",
                b"",
            ]
            assert await session(frame(1, "syslog", b"<13>x")) == b"0 serverclose 0\n"
            # frames read with a broken one are not answered: the client sends them again
            assert await session(OPEN + b"2 syslog 3 abcX") == b"0 serverclose 0\n"
            await until(lambda: len(intake_records(receiver)) == 1)
            assert service.relp_stats["relp"] == {"sessions": 3, "malformed": 2}
        finally:
            await service.stop()

    asyncio.run(scenario())
