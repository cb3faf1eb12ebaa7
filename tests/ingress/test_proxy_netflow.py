"""The proxy's `netflow` input: NetFlow v5, v9 and IPFIX export packets over UDP become one
JSON record per flow, through the receiver, piper and packer to Parquet; a packet that cannot be
decoded, or whose template never comes, goes on as a record saying why, never dropped."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import struct
from pathlib import Path

import httpx

from bytefreezer.control.models import DatasetSpec
from bytefreezer.ingress.proxy import netflow as netflow_module
from bytefreezer.ingress.proxy.netflow import NetflowDecoder
from bytefreezer.ingress.proxy.service import ProxyService
from tests.ingress.conftest import Receiver
from tests.ingress.test_proxy import proxy_config, until

EXPORTED = 1_772_600_000  # 2026-03-04T04:53:20Z


def v5_record(src: str, dst: str, sport: int, dport: int, octets: int) -> bytes:
    addresses = (socket.inet_aton(src), socket.inet_aton(dst), socket.inet_aton("0.0.0.0"))
    counters = (1, 2, 3, octets, 500, 900, sport, dport)  # interfaces, packets, bytes, times
    rest = (0, 0x18, 6, 0, 0, 0, 24, 24, 0)  # pad, TCP flags, TCP, ToS, AS, masks, pad
    return struct.pack("!4s4s4sHHIIIIHHBBBBHHBBH", *addresses, *counters, *rest)


def v5_packet(flows: list[tuple[str, str, int, int, int]]) -> bytes:
    """A NetFlow v5 packet of (source, destination, source port, destination port, bytes)."""
    header = struct.pack("!HHIIIIBBH", 5, len(flows), 1000, EXPORTED, 0, 1, 0, 0, 0)
    return header + b"".join(v5_record(*flow) for flow in flows)


# v9 template 256: source, destination (IPv4), source and destination port, protocol, bytes.
V9_FIELDS = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (1, 4)]


def v9_packet(*, template: bool, flows: list[tuple[str, str, int, int, int]], source_id: int = 7,
              fields: list[tuple[int, int]] = V9_FIELDS) -> bytes:  # fmt: skip
    sets = b""
    if template:
        body = struct.pack("!HH", 256, len(fields)) + b"".join(
            struct.pack("!HH", kind, size) for kind, size in fields
        )
        sets += struct.pack("!HH", 0, 4 + len(body)) + body
    if flows:
        data = b""
        for src, dst, sport, dport, octets in flows:
            values = {8: socket.inet_aton(src), 12: socket.inet_aton(dst), 7: sport, 11: dport}
            values.update({4: 6, 1: octets})
            for kind, size in fields:
                value = values[kind]
                data += value if isinstance(value, bytes) else value.to_bytes(size, "big")
        data += b"\0" * ((4 - (4 + len(data)) % 4) % 4)
        sets += struct.pack("!HH", 256, 4 + len(data)) + data
    count = int(template) + len(flows)
    return struct.pack("!HHIIII", 9, count, 1000, EXPORTED, 1, source_id) + sets


def decoded(records: list[bytes]) -> list[dict[str, object]]:
    return [json.loads(r) for r in records]


def test_v5_flows_become_records_with_dotted_addresses() -> None:
    decoder = NetflowDecoder()
    (flow,) = decoded(
        decoder.decode(v5_packet([("10.0.0.1", "10.0.0.2", 1234, 80, 1500)]), "192.0.2.9")
    )
    assert flow["timestamp"] == "2026-03-04T04:53:20Z" and flow["exporter"] == "192.0.2.9"
    assert flow["netflow_version"] == 5 and flow["proto"] == 6
    assert (flow["ipv4_src_addr"], flow["ipv4_dst_addr"]) == ("10.0.0.1", "10.0.0.2")
    assert (flow["src_port"], flow["dst_port"], flow["in_octets"]) == (1234, 80, 1500)


def test_v9_data_waits_for_its_template_and_exporters_keep_their_own() -> None:
    decoder = NetflowDecoder()
    early = v9_packet(template=False, flows=[("10.1.1.1", "10.2.2.2", 5000, 443, 1200)])
    assert decoder.decode(early, "192.0.2.1") == []  # waits: no template yet
    # Another exporter numbers a different layout 256 too: no mix-up.
    other = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (1, 8)]
    mine = v9_packet(template=True, flows=[("10.9.9.9", "10.8.8.8", 1, 2, 2**40)], fields=other)
    (theirs,) = decoded(decoder.decode(mine, "192.0.2.2"))
    assert theirs["in_bytes"] == 2**40 and theirs["exporter"] == "192.0.2.2"
    later = v9_packet(template=True, flows=[("10.3.3.3", "10.4.4.4", 6000, 53, 80)])
    flows = decoded(decoder.decode(later, "192.0.2.1"))
    assert sorted((f["ipv4_src_addr"], f["l4_dst_port"], f["in_bytes"]) for f in flows) == [
        ("10.1.1.1", 443, 1200), ("10.3.3.3", 53, 80),
    ]  # fmt: skip
    assert decoder.flows == 3 and decoder.undecoded == 0


def test_packets_that_cannot_be_decoded_are_kept_with_the_reason() -> None:
    now = [0.0]
    decoder = NetflowDecoder(clock=lambda: now[0])
    (garbage,) = decoded(decoder.decode(b"\x00\x63not netflow", "192.0.2.1"))
    assert "netflow_error" in garbage and garbage["exporter"] == "192.0.2.1"
    assert base64.b64decode(str(garbage["netflow_packet"])) == b"\x00\x63not netflow"
    orphan = v9_packet(template=False, flows=[("10.1.1.1", "10.2.2.2", 1, 2, 3)], source_id=99)
    assert decoder.decode(orphan, "192.0.2.5") == []
    now[0] = netflow_module.PENDING_SECONDS - 1
    assert decoder.expired() == []
    now[0] = netflow_module.PENDING_SECONDS + 1
    (waited,) = decoded(decoder.expired())
    assert "no template arrived within" in str(waited["netflow_error"])
    assert base64.b64decode(str(waited["netflow_packet"])) == orphan
    # A flood of template-less packets: the oldest goes on as a record, the rest wait.
    for _ in range(netflow_module.PENDING_PACKETS):
        assert decoder.decode(orphan, "192.0.2.6") == []
    (evicted,) = decoded(decoder.decode(orphan, "192.0.2.6"))
    assert "more packets waited" in str(evicted["netflow_error"])
    assert len(decoder.drain("stopping")) == netflow_module.PENDING_PACKETS
    assert decoder.undecoded == 3 + netflow_module.PENDING_PACKETS


def test_netflow_through_proxy_receiver_piper_packer(receiver: Receiver, tmp_path: Path) -> None:
    receiver.control.create_dataset("acme", DatasetSpec(name="flows"))
    config = proxy_config(
        tmp_path, receiver.url, receiver.key, {"name": "nf", "type": "netflow", "dataset": "flows"}
    )
    v5 = v5_packet([(f"10.0.0.{i}", "10.0.1.1", 1000 + i, 443, 100 * i) for i in range(1, 6)])
    v9_early = v9_packet(template=False, flows=[("10.5.5.5", "10.6.6.6", 7, 8, 9)])
    v9 = v9_packet(template=True, flows=[("10.7.7.7", "10.6.6.6", 7, 8, 10)])

    async def scenario() -> None:
        service = ProxyService(config)
        await service.start()
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for packet in (v5, v9_early, v9, b"junk"):
                sock.sendto(packet, ("127.0.0.1", service.ports["nf"]))
            sock.close()
            await until(
                lambda: (
                    sum(service.stats.lines_in.values()) == 8
                    and service.stats.batches_delivered >= 1
                    and not service.spool.paths()
                )
            )
            api = f"http://127.0.0.1:{service.ports['api']}"
            async with httpx.AsyncClient() as client:
                stats = (await client.get(f"{api}/api/v1/stats")).json()
                exposition = (await client.get(f"{api}/metrics")).text
            assert stats["netflow"] == {"nf": {"flows": 7, "undecoded": 1}}
            assert 'bytefreezer_proxy_netflow_flows_total{input="nf"} 7' in exposition
            assert 'bytefreezer_proxy_netflow_undecoded_total{input="nf"} 1' in exposition
        finally:
            await service.stop()

    asyncio.run(scenario())
    table = receiver.pack("flows")
    assert table is not None and table.num_rows == 8
    rows = table.to_pylist()
    flows = {r["ipv4_src_addr"]: r for r in rows if r["ipv4_src_addr"]}
    assert sorted(flows) == [f"10.0.0.{i}" for i in range(1, 6)] + ["10.5.5.5", "10.7.7.7"]
    assert flows["10.0.0.3"]["in_octets"] == 300 and flows["10.0.0.3"]["netflow_version"] == 5
    assert flows["10.5.5.5"]["in_bytes"] == 9 and flows["10.5.5.5"]["l4_dst_port"] == 8
    (junk,) = [r for r in rows if r["netflow_error"]]
    assert base64.b64decode(junk["netflow_packet"]) == b"junk"
    assert {r["exporter"] for r in rows} == {"127.0.0.1"}
    partitions = {
        p.parent.parent.name + "/" + p.parent.name
        for p in (receiver.settings.data_dir / "destination" / "acme" / "flows").rglob("*.parquet")
    }
    assert "day=04/hour=04" in partitions  # by the packets' export time


def ipfix_packet(flows: list[tuple[str, str, int, int, int]], domain: int = 3) -> bytes:
    """An IPFIX message with template 300 (sourceIPv4Address, destinationIPv4Address,
    sourceTransportPort, destinationTransportPort, protocolIdentifier, octetDeltaCount) and
    its data set."""
    fields = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (1, 8)]
    body = struct.pack("!HH", 300, len(fields)) + b"".join(struct.pack("!HH", *f) for f in fields)
    template = struct.pack("!HH", 2, 4 + len(body)) + body
    data = b"".join(
        socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HHBQ", sport, dport, 17, n)
        for src, dst, sport, dport, n in flows
    )
    records = struct.pack("!HH", 300, 4 + len(data)) + data
    sets = template + records
    return struct.pack("!HHIII", 10, 16 + len(sets), EXPORTED, 1, domain) + sets


def test_ipfix_flows_become_records() -> None:
    decoder = NetflowDecoder()
    packet = ipfix_packet(
        [("192.168.1.10", "8.8.8.8", 53000, 53, 76), ("10.0.0.7", "1.1.1.1", 1, 2, 3)]
    )
    flows = decoded(decoder.decode(packet, "198.51.100.4"))
    assert [f["netflow_version"] for f in flows] == [10, 10]
    first = flows[0]
    assert first["timestamp"] == "2026-03-04T04:53:20Z" and first["exporter"] == "198.51.100.4"
    assert {k: v for k, v in first.items() if k not in ("timestamp", "exporter")} == {
        "netflow_version": 10,
        "sourceipv4address": "192.168.1.10",
        "destinationipv4address": "8.8.8.8",
        "sourcetransportport": 53000,
        "destinationtransportport": 53,
        "protocolidentifier": 17,
        "octetdeltacount": 76,
    }
