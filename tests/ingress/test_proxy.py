"""The edge proxy against a real receiver: syslog over UDP to Parquet, TCP and HTTP inputs,
the receiver down, and batches the receiver refuses for good."""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import socket
import time
import zlib
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import zstandard
from pydantic import SecretStr

from bytefreezer.control import ControlStore
from bytefreezer.control.models import DatasetSpec, Usage, utc_day
from bytefreezer.ingress.api import create_api_app
from bytefreezer.ingress.proxy.config import ProxyConfig
from bytefreezer.ingress.proxy.delivery import Batcher, ProxyStats
from bytefreezer.ingress.proxy.records import parse_syslog, wrap_line
from bytefreezer.ingress.proxy.service import ProxyService
from bytefreezer.ingress.receiver import build_state, create_app
from bytefreezer.settings import Settings
from bytefreezer.storage import Storage
from tests.conftest import fast_settings
from tests.helpers import free_port, serve_app
from tests.ingress.conftest import Receiver, seeded_control


def proxy_config(
    tmp_path: Path, receiver_url: str, key: str, *inputs: dict[str, Any], **extra: Any
) -> ProxyConfig:
    return ProxyConfig.model_validate(
        {
            "receiver_url": receiver_url,
            "spool_dir": str(tmp_path / "proxy-spool"),
            "dead_letter_dir": str(tmp_path / "proxy-dead"),
            "batch_max_age_seconds": 0.2,
            "retry_initial_seconds": 0.1,
            "retry_max_seconds": 0.5,
            "api_host": "127.0.0.1",
            "api_port": 0,
            "inputs": [
                {
                    "host": "127.0.0.1",
                    "port": 0,
                    "tenant": "acme",
                    "dataset": "web",
                    "api_key": key,
                    **i,
                }
                for i in inputs
            ],
            **extra,
        }
    )


def intake_records(receiver: Receiver) -> list[dict[str, Any]]:
    """Every record the proxy delivered to acme/web, in the order of the intake objects."""
    return [
        json.loads(line)
        for obj in receiver.storage.intake.list("acme/web/")
        for line in gzip.decompress(receiver.storage.intake.get(obj.key)).split(b"\n")
        if line
    ]


def spooled_records(service: ProxyService) -> list[dict[str, Any]]:
    """Every record waiting in the proxy's spool, in the order of its batches."""
    return [
        json.loads(line)
        for path in service.spool.paths()
        for line in gzip.decompress(service.spool.read(path)[1]).splitlines()
    ]


async def serving(service: ProxyService, then: Callable[[ProxyService], Awaitable[None]]) -> None:
    """Start ``service``, await ``then(service)``, and stop it whatever happens."""
    await service.start()
    try:
        await then(service)
    finally:
        await service.stop()


async def until(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_wrapping_and_syslog_parsing() -> None:
    assert json.loads(wrap_line('{"a": 1}')) == {"a": 1}
    wrapped = json.loads(wrap_line("plain text"))
    assert wrapped["raw"] == "plain text" and wrapped["timestamp"].endswith("Z")
    assert json.loads(wrap_line("[1, 2]"))["raw"] == "[1, 2]"
    record = parse_syslog("<34>1 2026-01-02T03:04:05Z host app 77 ID9 - boom", "auto", "10.1.1.1")
    assert record == {
        "rfc": "rfc5424", "priority": 34, "facility": 4, "severity": 2, "version": 1,
        "timestamp": "2026-01-02T03:04:05Z", "hostname": "host", "app_name": "app", "proc_id": "77",
        "msg_id": "ID9", "structured_data": None, "message": "boom", "source_ip": "10.1.1.1",
    }  # fmt: skip
    old = parse_syslog("<13>Feb  5 17:32:18 h sshd[4]: hi", "auto", "::1")
    assert (old["rfc"], old["app_name"], old["proc_id"], old["message"]) == (
        "rfc3164",
        "sshd",
        "4",
        "hi",
    )
    assert parse_syslog("<13>Feb  5 17:32:18 h sshd[4]: hi", "rfc5424", "x")["rfc"] is None


def test_udp_syslog_through_proxy_receiver_piper_packer(receiver: Receiver, tmp_path: Path) -> None:
    receiver.control.create_dataset("acme", DatasetSpec(name="syslog", timestamp_field="timestamp"))
    config = proxy_config(
        tmp_path,
        receiver.url,
        receiver.key,
        {"name": "syslog", "type": "syslog", "protocol": "udp", "dataset": "syslog"},
    )

    async def scenario() -> None:
        service = ProxyService(config)
        await service.start()
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for i in range(20):
                line = f"<{8 * 4 + i % 8}>1 2026-03-04T05:06:{i:02d}Z web{i % 2} sshd {100 + i} LOGIN - attempt {i}"
                sock.sendto(line.encode(), ("127.0.0.1", service.ports["syslog"]))
            sock.sendto(
                b"<13>Mar  4 05:06:59 gw kernel: legacy line",
                ("127.0.0.1", service.ports["syslog"]),
            )
            sock.close()
            await until(
                lambda: (
                    service.stats.batches_delivered >= 1
                    and not service.spool.paths()
                    and sum(service.stats.lines_in.values()) == 21
                )
            )
        finally:
            await service.stop()

    asyncio.run(scenario())
    table = receiver.pack("syslog")
    assert table is not None and table.num_rows == 21
    rows = {r["message"]: r for r in table.to_pylist()}
    first = rows["attempt 0"]
    assert (
        first["rfc"],
        first["facility"],
        first["severity"],
        first["hostname"],
        first["app_name"],
    ) == (
        "rfc5424",
        4,
        0,
        "web0",
        "sshd",
    )
    assert (
        first["proc_id"] == "100"
        and first["msg_id"] == "LOGIN"
        and first["source_ip"] == "127.0.0.1"
    )
    assert rows["legacy line"]["rfc"] == "rfc3164" and rows["legacy line"]["app_name"] == "kernel"
    partitions = {
        p.parent.parent.name + "/" + p.parent.name
        for p in (receiver.settings.data_dir / "destination").rglob("*.parquet")
    }
    assert "day=04/hour=05" in partitions


def test_tcp_and_http_inputs(receiver: Receiver, tmp_path: Path) -> None:
    config = proxy_config(
        tmp_path,
        receiver.url,
        receiver.key,
        {"name": "tcp", "type": "tcp"},
        {"name": "http", "type": "http", "auth_token": "edge-token", "max_body_bytes": 1000},
        {"name": "tcp-syslog", "type": "syslog", "protocol": "tcp"},
    )

    async def scenario() -> None:
        service = ProxyService(config)
        await service.start()
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", service.ports["tcp"])
            writer.write(b'{"id": 1}\nplain line\n{"id": 2}\n')
            await writer.drain()
            writer.close()
            _, writer2 = await asyncio.open_connection("127.0.0.1", service.ports["tcp-syslog"])
            framed = b"<34>1 2026-01-01T00:00:00Z h a - - - octet counted"
            writer2.write(
                str(len(framed)).encode()
                + b" "
                + framed
                + b"<13>Jan  1 00:00:00 h b: newline framed\n"
            )
            await writer2.drain()
            writer2.close()
            http = f"http://127.0.0.1:{service.ports['http']}/"
            async with httpx.AsyncClient() as client:
                denied = await client.post(http, content=b"x\n")
                assert denied.status_code == 401
                big = await client.post(
                    http, content=b"x" * 2000, headers={"Authorization": "Bearer edge-token"}
                )
                assert big.status_code == 413
                ok = await client.post(
                    http, content=b'{"id": 3}\n', headers={"Authorization": "Bearer edge-token"}
                )
                assert ok.status_code == 200
            await until(
                lambda: (
                    sum(service.stats.lines_in.values()) == 6
                    and not service.spool.paths()
                    and service.stats.batches_delivered >= 3
                )
            )
        finally:
            await service.stop()

    asyncio.run(scenario())
    lines = intake_records(receiver)
    assert sorted(r["id"] for r in lines if "id" in r) == [1, 2, 3]
    assert [r["raw"] for r in lines if "raw" in r] == ["plain line"]
    messages = sorted(r["message"] for r in lines if "message" in r)
    assert messages == ["newline framed", "octet counted"]
    obj = receiver.storage.intake.list("acme/web/")[0]
    metadata = receiver.storage.intake.metadata(obj.key)
    assert metadata["proxy-filename"].startswith("acme--web--") and metadata["proxy-batch-id"]


def test_http_input_bodies_in_every_encoding(receiver: Receiver, tmp_path: Path) -> None:
    # A gzip body of several members (`cat a.gz b.gz`) lost all but its first, answered 200;
    # zstd and deflate bodies were taken for text.
    source = {"name": "http", "type": "http", "max_body_bytes": 10_000}
    config = proxy_config(tmp_path, receiver.url, receiver.key, source)
    two_members = gzip.compress(b'{"id": 1}\n') + gzip.compress(b'{"id": 2}\n')
    bodies = [
        ({"Content-Encoding": "gzip"}, two_members, 200),
        ({"Content-Encoding": "zstd"}, zstandard.ZstdCompressor().compress(b'{"id": 3}\n'), 200),
        ({"Content-Encoding": "deflate"}, zlib.compress(b'{"id": 4}\n'), 200),
        ({}, b'{"id": 5}\n', 200),
        ({"Content-Encoding": "br"}, b"\x0b\x02\x80", 415),
        ({"Content-Encoding": "gzip"}, two_members[:-5], 400),
        ({"Content-Encoding": "gzip"}, gzip.compress(b"x" * 200_000), 413),
    ]

    async def scenario() -> None:
        service = ProxyService(config)
        await service.start()
        try:
            url = f"http://127.0.0.1:{service.ports['http']}/"
            async with httpx.AsyncClient() as client:
                for headers, body, status in bodies:
                    answer = await client.post(url, content=body, headers=headers)
                    assert answer.status_code == status, (headers, answer.text)
            await until(lambda: sum(service.stats.lines_in.values()) == 5)
            await until(lambda: not service.spool.paths() and service.stats.batches_delivered)
        finally:
            await service.stop()

    asyncio.run(scenario())
    assert sorted(r["id"] for r in intake_records(receiver)) == [1, 2, 3, 4, 5]


def test_tcp_syslog_frames_counted_or_not(receiver: Receiver, tmp_path: Path) -> None:
    # A line starting with digits (no priority, its time first) was taken for an octet count:
    # int() failed and the connection dropped with every later message; a count was trusted
    # whatever its size, buffered whole in memory.
    source = {"name": "tcp-syslog", "type": "syslog", "protocol": "tcp", "max_line_bytes": 200}
    config = proxy_config(tmp_path, receiver.url, receiver.key, source)
    counted = b"<34>1 2026-01-01T00:00:00Z h a - - - counted"
    huge = b"<34>1 2026-01-01T00:00:00Z h a - - - " + b"x" * 5000
    stream = (
        str(len(counted)).encode() + b" " + counted
        + b"2026-01-01T10:00:00 host app: starts with its time\n"
        + b"12345678901234 more digits than a count\n"
        + str(len(huge)).encode() + b" " + huge
        + b"\n"  # a newline after a counted frame is a blank line, not a record
        + b"<13>Jan  1 00:00:00 h b: last\n"
        + b"300 <13>Jan  1 00:00:00 h b: cut short"  # the stream ends inside a counted frame
    )  # fmt: skip

    async def scenario() -> None:
        service = ProxyService(config)
        await service.start()
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", service.ports["tcp-syslog"])
            writer.write(stream)
            await writer.drain()
            writer.close()
            await until(lambda: sum(service.stats.lines_in.values()) == 6)
            await until(lambda: not service.spool.paths() and service.stats.batches_delivered)
        finally:
            await service.stop()

    asyncio.run(scenario())
    records = intake_records(receiver)
    assert len(records) == 6
    text = [json.dumps(r) for r in records]
    assert "counted" in text[0] and "starts with its time" in text[1]
    assert "more digits than a count" in text[2] and "last" in text[4]
    assert "cut short" in text[5]  # was dropped with the connection's end
    assert "x" * 100 in text[3] and "x" * 200 not in text[3]  # cut to max_line_bytes


def test_lines_split_at_newlines_only(receiver: Receiver, tmp_path: Path) -> None:
    # str.splitlines split these records at U+2028, U+0085 and a form feed, so each became two
    # records wrapped as raw text.
    config = proxy_config(
        tmp_path,
        receiver.url,
        receiver.key,
        {"name": "http", "type": "http", "auth_token": "edge-token"},
        {"name": "udp", "type": "udp"},
    )
    texts = ["a\u2028b", "c\x85d", "e\u2029f"]
    body = "".join(
        json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\r\n" for i, t in enumerate(texts)
    )
    body += "\r\n \n\u00a0\n"  # blank lines are no records; a no-break space is one
    datagram = "raw\x0cline\nsecond\n"

    def delivered() -> list[dict[str, Any]]:
        return intake_records(receiver)

    async def scenario() -> None:
        service = ProxyService(config)
        await service.start()
        try:
            async with httpx.AsyncClient() as client:
                ok = await client.post(
                    f"http://127.0.0.1:{service.ports['http']}/",
                    content=body.encode(),
                    headers={"Authorization": "Bearer edge-token"},
                )
                assert ok.status_code == 200 and ok.json()["lines"] == 4
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.sendto(datagram.encode(), ("127.0.0.1", service.ports["udp"]))
            await until(lambda: len(delivered()) == 6)
        finally:
            await service.stop()

    asyncio.run(scenario())
    records = delivered()
    assert sorted((r["id"], r["text"]) for r in records if "id" in r) == list(enumerate(texts))
    assert sorted(r["raw"] for r in records if "raw" in r) == ["raw\x0cline", "second", "\u00a0"]


def test_receiver_down_batches_spool_and_are_delivered_once_back(
    make_receiver: Callable[..., Receiver], tmp_path: Path
) -> None:
    port = free_port()
    config = proxy_config(
        tmp_path, f"http://127.0.0.1:{port}", "placeholder", {"name": "tcp", "type": "tcp"}
    )

    async def send(service: ProxyService, start: int, count: int) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", service.ports["tcp"])
        writer.write(
            b"".join(json.dumps({"id": i}).encode() + b"\n" for i in range(start, start + count))
        )
        await writer.drain()
        writer.close()

    async def while_down() -> None:
        service = ProxyService(config)
        await service.start()
        try:
            await send(service, 0, 50)
            await until(
                lambda: service.stats.batches_spooled >= 1 and service.stats.delivery_retries >= 2
            )
            assert service.stats.batches_delivered == 0
        finally:
            await service.stop()  # the proxy restarts too: the spool is on disk

    asyncio.run(while_down())
    assert config.spool_dir.exists() and list(config.spool_dir.glob("*.spool"))

    with ExitStack() as stack:
        settings = fast_settings(tmp_path / "rdata")
        control = seeded_control(settings)
        key = SecretStr(control.create_key("acme").key)
        receiver = _receiver_on_port(stack, settings, control, port)  # on the proxy's target port
        first = config.inputs[0].model_copy(update={"api_key": key})
        config_up = config.model_copy(update={"inputs": [first]})

        async def once_up() -> None:
            service = ProxyService(config_up)
            await service.start()
            try:
                await send(service, 50, 10)
                await until(
                    lambda: (
                        not service.spool.paths()
                        and service.stats.batches_delivered >= 2
                        and sum(service.stats.lines_in.values()) == 10
                    )
                )
            finally:
                await service.stop()

        asyncio.run(once_up())
        ids = sorted(r["id"] for r in intake_records(receiver))
        assert ids == list(range(60))


def _receiver_on_port(
    stack: ExitStack, settings: Settings, control: ControlStore, port: int
) -> Receiver:
    storage = Storage(settings)
    storage.ensure_buckets()
    state = build_state(settings, control, storage)
    url = stack.enter_context(
        serve_app(create_app(settings, control, storage, state=state), port=port)
    )
    api = stack.enter_context(serve_app(create_api_app(state)))
    return Receiver(url, api, settings, control, storage, state, "")


def test_permanent_refusals_go_to_dead_letters_and_can_be_retried(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.control.update_tenant("acme", active=False)  # 410: permanent until an operator acts
    config = proxy_config(tmp_path, receiver.url, receiver.key, {"name": "tcp", "type": "tcp"})

    async def scenario() -> None:
        service = ProxyService(config)
        await service.start()
        api = f"http://127.0.0.1:{service.ports['api']}"
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", service.ports["tcp"])
            writer.write(b'{"id": 7}\n')
            await writer.drain()
            writer.close()
            await until(lambda: service.stats.batches_dead_lettered == 1)
            async with httpx.AsyncClient() as client:
                (dead,) = (await client.get(f"{api}/api/v1/dead-letters")).json()
                assert (
                    dead["status"] == 410
                    and "inactive" in dead["reason"]
                    and dead["tenant"] == "acme"
                )
                stats = (await client.get(f"{api}/api/v1/stats")).json()
                assert stats["batches_dead_lettered"] == 1 and stats["spool"]["objects"] == 0
                receiver.control.update_tenant("acme", active=True)
                receiver.state.keys._entries.clear()  # the receiver would re-verify after its cache TTL
                retried = await client.post(f"{api}/api/v1/dead-letters/{dead['id']}/retry")
                assert retried.status_code == 200
                await until(lambda: service.stats.batches_delivered == 1)
                assert (await client.get(f"{api}/api/v1/dead-letters")).json() == []
                assert (
                    await client.post(f"{api}/api/v1/dead-letters/nope/retry")
                ).status_code == 404
                assert (await client.get(f"{api}/health")).json() == {"status": "ok"}
                exposition = (await client.get(f"{api}/metrics")).text
                assert "bytefreezer_proxy_batches_delivered_total 1" in exposition
                assert 'bytefreezer_proxy_lines_received_total{input="tcp"} 1' in exposition
        finally:
            await service.stop()

    asyncio.run(scenario())
    (obj,) = receiver.storage.intake.list("acme/web/")
    assert json.loads(gzip.decompress(receiver.storage.intake.get(obj.key))) == {"id": 7}


def test_a_tenant_held_back_till_tomorrow_does_not_hold_up_the_others(
    receiver: Receiver, tmp_path: Path
) -> None:
    """acme is past its daily ingest limit: the receiver answers its batch 429 with a
    Retry-After of hours. The proxy keeps that batch and holds acme's dataset until then,
    and delivers another tenant's batches spooled after it meanwhile."""
    receiver.control.set_daily_ingest_limit("acme", 1)
    used = Usage(tenant="acme", dataset="web", day=utc_day(), requests=1, bytes=2 * 1024 * 1024)
    receiver.control.report_usage([used])
    other_key = receiver.control.create_key("other").key
    config = proxy_config(
        tmp_path,
        receiver.url,
        receiver.key,
        {"name": "acme-tcp", "type": "tcp"},
        {"name": "other-tcp", "type": "tcp", "tenant": "other", "api_key": other_key},
    )

    async def send(port: int, payload: bytes) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        service = ProxyService(config)
        await service.start()
        try:
            await send(service.ports["acme-tcp"], b'{"id": 1}\n')
            await until(lambda: service.stats.delivery_retries >= 1)
            for delivered, line in enumerate((b'{"id": 2}\n', b'{"id": 3}\n'), start=1):
                await send(service.ports["other-tcp"], line)
                await until(lambda n=delivered: service.stats.batches_delivered >= n)
            await asyncio.sleep(0.5)  # acme's batch is not tried again meanwhile
            assert service.stats.delivery_retries == 1
            (kept,) = service.spool.paths()
            assert service.spool.metadata(kept)["tenant"] == "acme"
        finally:
            await service.stop()

    asyncio.run(scenario())
    delivered = receiver.storage.intake.list("other/web/")
    assert len(delivered) == 2 and receiver.storage.intake.list("acme/web/") == []


def test_a_retry_after_that_is_not_a_number_of_seconds_is_waited_out_as_none(
    tmp_path: Path,
) -> None:
    """A balancer in front of the receivers answers 503 with a Retry-After that is not a whole
    number of seconds ("²" is a digit to ``str.isdigit``, not to ``float``): the proxy retries on
    its own backoff and delivers, as it does for a Retry-After that is a date."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    bodies: list[bytes] = []

    async def front(request: Request) -> Response:
        body = await request.body()
        if not bodies:
            bodies.append(b"")
            return Response("busy", status_code=503, headers={"Retry-After": "\u00b2"})
        bodies.append(gzip.decompress(body))
        return Response(status_code=204)

    app = Starlette(routes=[Route("/{tenant}/{dataset}", front, methods=["POST"])])
    with serve_app(app) as url:
        config = proxy_config(tmp_path, url, "bfk_key", {"name": "tcp", "type": "tcp"})

        async def scenario() -> None:
            service = ProxyService(config)
            await service.start()
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", service.ports["tcp"])
                writer.write(b'{"id": 1}\n')
                await writer.drain()
                writer.close()
                await until(lambda: service.stats.batches_delivered >= 1)
                assert service.stats.delivery_retries >= 1
            finally:
                await service.stop()

        asyncio.run(scenario())
    assert [json.loads(line) for line in bodies[1].splitlines()] == [{"id": 1}]


def test_records_added_together_are_batched_as_one_by_one() -> None:
    """``add_many`` (a poll's or a request's records at once) closes each batch on the record
    that brings it to ``batch_max_bytes`` (newlines counted) or ``batch_max_lines``, as adding
    them one by one does; random sizes and limits."""
    rng = random.Random(3)
    for _ in range(500):
        config = SimpleNamespace(
            batch_max_bytes=rng.choice([1, 10, 50, 200, 1 << 20]),
            batch_max_lines=rng.choice([1, 2, 3, 7, 10_000]),
        )
        source = SimpleNamespace(name="in")
        together = Batcher(config, source, None, ProxyStats())  # type: ignore[arg-type]
        alone = Batcher(config, source, None, ProxyStats())  # type: ignore[arg-type]
        for _ in range(rng.randint(1, 5)):
            records = [b"r" * rng.randint(0, 30) for _ in range(rng.randint(0, 40))]
            together.add_many(records)
            with alone._lock:
                for record in records:
                    alone._add(record)
            assert list(together._sealed) == list(alone._sealed)
            assert (together._records, together._size) == (alone._records, alone._size)


def _batches(sealed: object) -> list[tuple[int, bytes, int]]:
    """Sealed batches as ``_write`` spools them: number, the lines' bytes and their count."""
    return [(number, b"\n".join(items), count) for number, items, count in sealed]  # type: ignore[attr-defined]


def test_a_block_of_records_is_batched_as_its_records_are() -> None:
    """``add_lines`` (a file input's records as one block) cuts the same batches, with the same
    bytes and counts, as ``add_many`` of its records, whatever was open before; random sizes
    and limits, records added both ways in turn."""
    rng = random.Random(5)
    for _ in range(500):
        config = SimpleNamespace(
            batch_max_bytes=rng.choice([1, 10, 50, 200, 1 << 20]),
            batch_max_lines=rng.choice([1, 2, 3, 7, 10_000]),
        )
        source = SimpleNamespace(name="in")
        blocks = Batcher(config, source, None, ProxyStats())  # type: ignore[arg-type]
        records = Batcher(config, source, None, ProxyStats())  # type: ignore[arg-type]
        for _ in range(rng.randint(1, 5)):
            added = [b"r" * rng.randint(0, 30) for _ in range(rng.randint(1, 40))]
            if rng.random() < 0.3:  # some records one by one between the blocks
                assert blocks.add_many(added) == records.add_many(added)
            else:
                spans = blocks.add_lines(b"\n".join(added), len(added))
                assert spans == records.add_many(added)
            assert _batches(blocks._sealed) == _batches(records._sealed)
            assert (b"\n".join(blocks._records), blocks._count, blocks._size) == (
                b"\n".join(records._records),
                records._count,
                records._size,
            )
        assert blocks._stats.lines_in == records._stats.lines_in


def test_a_block_must_hold_the_records_it_is_said_to() -> None:
    config = SimpleNamespace(batch_max_bytes=1 << 20, batch_max_lines=10_000)
    batcher = Batcher(config, SimpleNamespace(name="in"), None, ProxyStats())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a block of 2 lines given as 3 records"):
        batcher.add_lines(b'{"a":1}\n{"a":2}', 3)
    assert not batcher._records and not batcher._sealed
