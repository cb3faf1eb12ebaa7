"""The proxy's `forward` input: Fluent Bit's and Fluentd's protocol, sent by real clients (the
Python fluent-logger in Message mode, the Node.js fluent-logger in every mode with acks and the
shared-key handshake) through the receiver, piper and packer to Parquet; each mode and each kind
of bad input decoded as the protocol says."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import shutil
import socket
import struct
import subprocess
from pathlib import Path
from typing import Any
from unittest import mock

import msgpack
import pytest
from fluent import sender as fluent_sender
from hypothesis import given, settings
from hypothesis import strategies as st

from bytefreezer.ingress.proxy import forward
from bytefreezer.ingress.proxy.forward import decode_message, event_time, unpacker
from bytefreezer.ingress.proxy.service import ProxyService
from tests.ingress.conftest import Receiver
from tests.ingress.test_proxy import intake_records, proxy_config, spooled_records, until

FLUENT_CLIENT = Path(__file__).parents[1] / "clients" / "fluent"
EPOCH = 1_764_250_000  # 2025-11-27T13:26:40Z


def et(seconds: int, nanoseconds: int) -> msgpack.ExtType:
    return msgpack.ExtType(0, struct.pack(">II", seconds, nanoseconds))


def decoded(message: Any) -> tuple[list[dict[str, Any]], str | None]:
    """A message as a client packs it, read back as the proxy's reader reads it."""
    reader = unpacker(1 << 20)
    reader.feed(msgpack.packb(message, use_bin_type=True))
    records, chunk = decode_message(next(reader), 1 << 20)
    return [json.loads(r) for r in records], chunk


def test_every_mode_gives_one_record_per_entry_with_tag_and_time() -> None:
    record = {"id": 1, "msg": "hello"}
    message, _ = decoded(["app.web", EPOCH, record])
    assert message == [
        {"id": 1, "msg": "hello", "tag": "app.web", "timestamp": "2025-11-27T13:26:40.000000000Z"}
    ]
    with_nanos, chunk = decoded(["app.web", et(EPOCH, 5), record, {"chunk": "c1"}])
    assert with_nanos[0]["timestamp"] == "2025-11-27T13:26:40.000000005Z" and chunk == "c1"
    forward, chunk = decoded(["t", [[EPOCH, {"n": 1}], [et(EPOCH + 1, 0), {"n": 2}]]])
    assert [r["n"] for r in forward] == [1, 2] and chunk is None
    entries = b"".join(msgpack.packb([et(EPOCH, n), {"n": n}]) for n in range(3))
    packed, chunk = decoded(["t", entries, {"size": 3, "chunk": "p"}])
    assert [r["n"] for r in packed] == [0, 1, 2] and chunk == "p"
    # Fluent Bit appends a gzip member per flush: every member is read
    two_members = gzip.compress(entries) + gzip.compress(entries)
    compressed, _ = decoded(["t", two_members, {"compressed": "gzip", "chunk": "z"}])
    assert [r["n"] for r in compressed] == [0, 1, 2, 0, 1, 2]
    # a record's own tag and timestamp are kept; its own time field is not overwritten
    own, _ = decoded(["t", EPOCH, {"tag": "mine", "timestamp": "yesterday"}])
    assert own == [{"tag": "mine", "timestamp": "yesterday"}]


def test_values_json_cannot_hold_are_kept() -> None:
    records, _ = decoded(
        [
            "t",
            1.5,
            {
                "bin": b"\xff\x00",
                "text": "ü",
                b"raw key": b"ok",
                7: [et(EPOCH, 0)],
                "big": 2**64 - 1,
                "ext": msgpack.ExtType(5, b"ab"),
            },
        ]
    )
    (record,) = records
    assert record["bin"] == "/wA=" and record["text"] == "ü" and record["raw key"] == "ok"
    assert record["7"] == ["2025-11-27T13:26:40.000000000Z"]
    assert record["big"] == 2**64 - 1 and record["ext"] == {"ext_type": 5, "data": "YWI="}
    assert record["timestamp"] == "1970-01-01T00:00:01.500000000Z"


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"not": "an array"}, "message is not an array"),
        ([42, EPOCH, {}], "tag is not a string"),
        (["t", EPOCH, "not a map"], "record is a string, not a map"),
        (["t", "soon", {}], None),
        (["t", None, {}], "time is nil"),
        (["t", EPOCH], "message has a time but no record"),
        (["t", [[EPOCH, {"ok": 1}], ["x"], [et(EPOCH, 2 * 10**9), {}]]], None),
        (["t", b"\x93\x01", {"compressed": "gzip"}], "gzip"),
        (["t", b"\x92", {}], None),
        (["t", b"x", {"compressed": "lz4"}], "unsupported compression 'lz4'"),
    ],
)
def test_what_is_not_the_protocol_is_kept_with_the_reason(message: Any, reason: str | None) -> None:
    records, _ = decoded(message)
    errors = [r for r in records if "forward_error" in r]
    assert errors, records
    if reason is not None:
        assert reason in errors[0]["forward_error"]
    assert all("forward_message" in r and r["timestamp"] for r in errors)
    if isinstance(message, list) and isinstance(message[1], list):  # good entries still go
        assert [r for r in records if "ok" in r] == [
            {"ok": 1, "tag": "t", "timestamp": "2025-11-27T13:26:40.000000000Z"}
        ]
        assert len(errors) == 2


def test_a_message_whose_entries_cannot_be_read_is_kept_and_acked() -> None:
    # compressed entries that are not gzip: one error record holding the message, and the
    # chunk is acked (the record is kept; the client would only send the same bytes again);
    # a Message-mode record's own "chunk" field asks for nothing
    records, chunk = decoded(["t", b"\x93\x01", {"compressed": "gzip", "chunk": "c9"}])
    assert chunk == "c9" and "forward_error" in records[0]
    records, chunk = decoded(["t", EPOCH, {"chunk": "a field"}])
    assert chunk is None and records[0]["chunk"] == "a field"


def test_event_times() -> None:
    from bytefreezer.ingress.proxy.forward import EventTime, ForwardError

    assert event_time(EventTime(0, 999_999_999)) == "1970-01-01T00:00:00.999999999Z"
    assert event_time(EPOCH) == "2025-11-27T13:26:40.000000000Z"
    for bad in (True, float("nan"), 10**30, EventTime(1, 10**9)):
        with pytest.raises(ForwardError):
            event_time(bad)


def forward_service(
    receiver: Receiver, tmp_path: Path, age: float = 3600, **extra: Any
) -> ProxyService:
    """A proxy with one forward input; by default only an ack, or its end, spools a batch."""
    return ProxyService(
        proxy_config(
            tmp_path,
            receiver.url,
            receiver.key,
            {"name": "fluent", "type": "forward", **extra},
            batch_max_age_seconds=age,
        )
    )


def test_python_fluent_logger_to_parquet(receiver: Receiver, tmp_path: Path) -> None:
    service = forward_service(receiver, tmp_path, age=0.2)

    async def scenario() -> None:
        await service.start()
        try:
            port = service.ports["fluent"]

            def send() -> None:
                client = fluent_sender.FluentSender(
                    "app", host="127.0.0.1", port=port, nanosecond_precision=True
                )
                for i in range(50):
                    assert client.emit_with_time(
                        "web",
                        fluent_sender.EventTime(EPOCH + i, 250_000_000),
                        {"id": i, "user": {"name": f"u{i}"}},
                    ), client.last_error
                client.close()

            await asyncio.to_thread(send)
            await until(lambda: len(intake_records(receiver)) == 50)
        finally:
            await service.stop()

    asyncio.run(scenario())
    table = receiver.pack("web")
    assert table is not None
    rows = sorted(table.select(["id", "tag", "timestamp"]).to_pylist(), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == list(range(50))
    assert {r["tag"] for r in rows} == {"app.web"}
    assert rows[0]["timestamp"] == "2025-11-27T13:26:40.250000000Z"
    # partitioned by the event's time (a year before this test's ingest time)
    destination = receiver.settings.data_dir / "destination" / "acme" / "web"
    assert {
        p.parent.relative_to(destination).as_posix() for p in destination.rglob("*.parquet")
    } == {"year=2025/month=11/day=27/hour=13"}


needs_node = pytest.mark.skipif(
    shutil.which("node") is None or not (FLUENT_CLIENT / "node_modules").is_dir(),
    reason="Node.js and tests/clients/fluent's packages come with `make test` (system-deps)",
)


def node_send(port: int, **args: Any) -> subprocess.CompletedProcess[str]:
    payload = {"port": port, "count": 200, "epoch": EPOCH, **args}
    return subprocess.run(
        ["node", str(FLUENT_CLIENT / "send.js"), json.dumps(payload)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@needs_node
@pytest.mark.parametrize("mode", ["Message", "PackedForward", "CompressedPackedForward"])
def test_node_fluent_logger_with_acks_and_a_shared_key(
    receiver: Receiver, tmp_path: Path, mode: str
) -> None:
    service = forward_service(receiver, tmp_path, shared_key="s3cret-shared")

    async def scenario() -> None:
        await service.start()
        try:
            port = service.ports["fluent"]
            wrong = await asyncio.to_thread(node_send, port, mode=mode, sharedKey="wrong", ack=True)
            assert wrong.returncode != 0 and "shared key mismatch" in wrong.stderr, wrong.stderr
            assert service.forward_stats["fluent"]["auth_failures"] == 1
            assert service.stats.lines_in.get("fluent", 0) == 0
            sent = await asyncio.to_thread(
                node_send, port, mode=mode, sharedKey="s3cret-shared", ack=True
            )
            assert sent.returncode == 0, sent.stderr
            # every acknowledged event is on the proxy's disk by the time of its ack (batches
            # flush by age only after an hour here)
            spooled = sum(
                len(gzip.decompress(service.spool.read(p)[1]).splitlines())
                for p in service.spool.paths()
            )
            delivered = len(intake_records(receiver))
            assert spooled + delivered >= 200, (spooled, delivered)  # none missing
            await until(lambda: len(intake_records(receiver)) == 200)
        finally:
            await service.stop()

    asyncio.run(scenario())
    records = intake_records(receiver)
    assert sorted(r["id"] for r in records) == list(range(200))
    assert records[0]["nested"] == {"level": "info", "n": records[0]["id"]}
    assert records[0]["timestamp"].endswith(".123456789Z")
    assert {r["tag"] for r in records} == {"app.events"}


@needs_node
def test_node_fluent_logger_proves_a_user(receiver: Receiver, tmp_path: Path) -> None:
    users = [{"username": "edge", "password": "pw-1"}, {"username": "other", "password": "pw-2"}]
    service = forward_service(receiver, tmp_path, shared_key="s3cret-shared", users=users)

    async def scenario() -> None:
        await service.start()
        try:
            port = service.ports["fluent"]
            common = {"mode": "PackedForward", "sharedKey": "s3cret-shared", "ack": True}
            for username, password in (("edge", "wrong"), ("nobody", "pw-1"), ("", "")):
                refused = await asyncio.to_thread(
                    node_send, port, username=username, password=password, **common
                )
                assert refused.returncode != 0, refused.stderr
                assert "username/password mismatch" in refused.stderr, refused.stderr
            assert service.forward_stats["fluent"]["auth_failures"] == 3
            sent = await asyncio.to_thread(
                node_send, port, username="edge", password="pw-1", **common
            )
            assert sent.returncode == 0, sent.stderr
            await until(lambda: len(intake_records(receiver)) == 200)
        finally:
            await service.stop()

    asyncio.run(scenario())


def test_users_need_the_shared_key_handshake(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="set shared_key"):
        proxy_config(
            tmp_path, "http://r", "k",
            {"name": "f", "type": "forward", "users": [{"username": "u", "password": "p"}]},
        )  # fmt: skip


def test_an_ack_comes_only_once_the_records_are_spooled(receiver: Receiver, tmp_path: Path) -> None:
    # the receiver is unreachable: what is acked must be in the proxy's spool
    service = ProxyService(
        proxy_config(
            tmp_path,
            "http://127.0.0.1:9",
            receiver.key,
            {"name": "fluent", "type": "forward"},
            batch_max_age_seconds=3600,
            spool_max_bytes=4096,
        )
    )

    async def scenario() -> None:
        await service.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", service.ports["fluent"])
            entries = [[EPOCH, {"n": n}] for n in range(5)]
            writer.write(msgpack.packb(["t", entries, {"chunk": "first"}]))
            await writer.drain()
            answer = msgpack.unpackb(await asyncio.wait_for(reader.read(1024), 10))
            assert answer == {"ack": "first"}
            assert [r["n"] for r in spooled_records(service)] == [0, 1, 2, 3, 4]
            # a chunk the full spool refuses is not acked: the connection closes unanswered,
            # and the client sends it again
            big = [[EPOCH, {"blob": os.urandom(5000).hex()}]]
            writer.write(msgpack.packb(["t", big, {"chunk": "second"}]))
            await writer.drain()
            assert await asyncio.wait_for(reader.read(1024), 10) == b""
            writer.close()
            assert service.stats.lines_refused == {"fluent": 1}
        finally:
            await service.stop()

    asyncio.run(scenario())


def test_a_message_past_the_size_limit_closes_the_connection(
    receiver: Receiver, tmp_path: Path
) -> None:
    service = forward_service(receiver, tmp_path, max_body_bytes=10_000)

    async def scenario() -> None:
        await service.start()
        try:
            with socket.create_connection(("127.0.0.1", service.ports["fluent"])) as sock:
                sock.sendall(msgpack.packb(["t", EPOCH, {"blob": "x" * 50_000}]))
                sock.settimeout(10)
                assert await asyncio.to_thread(sock.recv, 10) == b""
            assert service.forward_stats["fluent"]["malformed"] == 1
        finally:
            await service.stop()

    asyncio.run(scenario())


@needs_node
def test_forward_over_tls_with_the_proxys_certificate(receiver: Receiver, tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    issued.private_key_pem.write_to_path(str(key_file))
    cert_file.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    service = ProxyService(
        proxy_config(
            tmp_path,
            receiver.url,
            receiver.key,
            {"name": "fluent", "type": "forward"},
            tls_cert_file=str(cert_file),
            tls_key_file=str(key_file),
        )
    )

    async def scenario() -> None:
        await service.start()
        try:
            port = service.ports["fluent"]
            # a plain-text client gets nothing through
            plain = await asyncio.to_thread(
                node_send, port, mode="PackedForward", ack=True, ackTimeout=2000
            )
            assert plain.returncode != 0
            sent = await asyncio.to_thread(
                node_send, port, mode="PackedForward", ack=True, caFile=str(ca_file)
            )
            assert sent.returncode == 0, sent.stderr
            await until(lambda: len(intake_records(receiver)) == 200)
            exposition = service._exposition()
            assert 'bytefreezer_proxy_forward_malformed_total{input="fluent"} 0' in exposition
        finally:
            await service.stop()

    asyncio.run(scenario())
    assert sorted(r["id"] for r in intake_records(receiver)) == list(range(200))


def test_entries_and_text_packed_as_str_by_older_clients() -> None:
    # Fluentd before v1 packs binary as MessagePack's str: PackedForward's entries are read
    # back byte for byte, and a str value that is not UTF-8 has its bad bytes replaced
    entries = b"".join(msgpack.packb([EPOCH, {"n": n, "ü": "ä"}]) for n in range(3))
    reader = unpacker(1 << 20)
    reader.feed(msgpack.packb(["old", entries, {"chunk": "x"}], use_bin_type=False))
    records, chunk = decode_message(next(reader), 1 << 20)
    assert [json.loads(r)["n"] for r in records] == [0, 1, 2] and chunk == "x"
    assert json.loads(records[0])["ü"] == "ä"
    reader.feed(msgpack.packb(["old", EPOCH, {"bad": b"ok \xff"}], use_bin_type=False))
    (record,), _ = decode_message(next(reader), 1 << 20)
    assert json.loads(record)["bad"] == "ok \ufffd"


# PackedForward's fast path (msgspec) against the general one (msgpack) ---------------------

TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=8)
SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | TEXT
ODD_VALUES = (
    st.binary(max_size=6)
    | st.builds(msgpack.ExtType, st.integers(1, 127), st.binary(max_size=4))
    | st.builds(msgpack.Timestamp, st.integers(0, 2**34 - 1), st.integers(0, 10**9 - 1))
    | st.builds(et, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
)


ODD_KEYS = TEXT | st.integers(-5, 5) | st.binary(max_size=3)


def values(odd: bool) -> st.SearchStrategy[Any]:
    leaves = SCALARS | ODD_VALUES if odd else SCALARS
    keys = ODD_KEYS if odd else TEXT
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
        max_leaves=8,
    )


TIMES = (
    st.builds(et, st.integers(0, 2**32 - 1), st.integers(0, 10**9 - 1))  # the usual: EventTime
    | st.integers(0, 2**33)
    | st.floats(0, 2**33)
    | st.builds(et, st.integers(0, 2**32 - 1), st.integers(10**9, 2**32 - 1))  # bad nanos
    | st.builds(msgpack.Timestamp, st.integers(0, 2**33), st.integers(0, 10**9 - 1))
    | st.none()
    | TEXT
)


@st.composite
def packed_entries(draw: st.DrawFn) -> bytes:
    odd = draw(st.booleans())
    records = st.dictionaries(ODD_KEYS if odd else TEXT, values(odd), max_size=5)
    entry = (
        st.tuples(TIMES, records).map(list)
        if not odd
        else (st.tuples(TIMES, records | values(True)).map(list) | values(True))
    )
    entries = draw(st.lists(entry, max_size=6))
    old_client = odd and draw(st.booleans())  # binary packed as str: bad UTF-8 when it is not
    data = b"".join(msgpack.packb(e, use_bin_type=not old_client, datetime=False) for e in entries)
    if odd and draw(st.booleans()):
        data += draw(st.binary(max_size=4))  # what a client cut off leaves
    return data


def steady(records: list[bytes]) -> list[Any]:
    """Records as JSON, an error record's time of arrival left out."""
    out = [json.loads(r) for r in records]
    for r in out:
        if "forward_error" in r:
            del r["timestamp"]
    return out


@settings(max_examples=400, deadline=None)
@given(packed_entries())
def test_packed_entries_read_fast_give_the_general_ways_records(data: bytes) -> None:
    message = ["app", data, {"chunk": "c"}]
    records, chunk = decode_message(message, 1 << 20)
    with mock.patch.object(forward, "_fast_records", lambda tag, data: None):
        general, general_chunk = decode_message(message, 1 << 20)
    assert steady(records) == steady(general) and chunk == general_chunk == "c"
    fast = forward._fast_records("app", data)
    if fast is not None:  # never an error record: those are the general way's
        assert fast == general


def test_what_fluent_bit_sends_takes_the_fast_path() -> None:
    entries = b"".join(
        msgpack.packb([et(EPOCH + n, n), {"n": n, "msg": "ü", "tags": ["a"], "x": 1.5}])
        for n in range(100)
    ) + msgpack.packb([EPOCH, {"int_time": True}])
    fast = forward._fast_records("app", entries)
    assert fast is not None and fast == forward._packed_records("app", entries)
    assert json.loads(fast[7]) == {
        "n": 7, "msg": "ü", "tags": ["a"], "x": 1.5,
        "tag": "app", "timestamp": "2025-11-27T13:26:47.000000007Z",
    }  # fmt: skip
    # binary, another extension type, a key that is not text, bad UTF-8: the general way
    for odd in (b"\xff", msgpack.ExtType(9, b"x"), msgpack.Timestamp(EPOCH, 1)):
        data = entries + msgpack.packb([et(EPOCH, 0), {"odd": odd}], datetime=False)
        assert forward._fast_records("app", data) is None
    assert forward._fast_records("app", entries + msgpack.packb([EPOCH, {1: 2}])) is None
    bad_text = entries + msgpack.packb([EPOCH, {"b": b"\xff"}], use_bin_type=False)
    assert forward._fast_records("app", bad_text) is None


def test_entries_cut_off_inside_an_entry_keep_the_good_ones_and_the_rest() -> None:
    entries = b"".join(msgpack.packb([et(EPOCH, 0), {"n": n}]) for n in range(3))
    cut = msgpack.packb([et(EPOCH, 0), {"n": 3, "msg": "lost?"}])[:-4]
    records, chunk = decoded(["t", entries + cut, {"chunk": "c"}])
    assert [r["n"] for r in records[:3]] == [0, 1, 2] and chunk == "c"
    (error,) = records[3:]
    assert error["forward_error"] == f"entries end inside an entry ({len(cut)} bytes left over)"
    assert base64.b64decode(error["forward_message"]) == cut and error["tag"] == "t"


def test_messagepack_timestamps_and_unhashable_keys() -> None:
    # MessagePack's own timestamp (extension -1) is a time, as a record's time or a value
    ts = msgpack.Timestamp(EPOCH, 42)
    packed = msgpack.packb([ts, {"at": ts}], datetime=False)
    for message in (["t", ts, {"at": ts}], ["t", packed, {}], ["t", [[ts, {"at": ts}]]]):
        (record,), _ = decoded(message)
        stamp = "2025-11-27T13:26:40.000000042Z"
        assert record == {"at": stamp, "tag": "t", "timestamp": stamp}
    # a map keyed by an array: msgpack cannot hash it; the message is kept with the reason
    array_key = b"\x92\x00\x81\x91\x01\x02"  # [0, {[1]: 2}]
    (error,), _ = decoded(["t", array_key, {}])
    assert "unhashable" in error["forward_error"] and error["tag"] == "t"


def test_a_stream_msgpack_cannot_read_closes_its_connection_only(
    receiver: Receiver, tmp_path: Path
) -> None:
    service = forward_service(receiver, tmp_path)

    async def scenario() -> None:
        await service.start()
        try:
            port = service.ports["fluent"]
            with socket.create_connection(("127.0.0.1", port)) as sock:
                # Message mode whose record is keyed by an array
                sock.sendall(b"\x93\xa1t\x00\x81\x91\x01\x02")
                sock.settimeout(10)
                assert await asyncio.to_thread(sock.recv, 10) == b""
            assert service.forward_stats["fluent"]["malformed"] == 1
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(msgpack.packb(["t", [[EPOCH, {"n": 1}]], {"chunk": "ok"}]))
            assert msgpack.unpackb(await asyncio.wait_for(reader.read(1024), 10)) == {"ack": "ok"}
            writer.close()
        finally:
            await service.stop()

    asyncio.run(scenario())
