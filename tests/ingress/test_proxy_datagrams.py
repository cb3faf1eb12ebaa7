"""The proxy's datagram inputs.

- `sflow`: sFlow version 5 datagrams over UDP become one JSON record per flow or counter
  sample, through the receiver, piper and packer to Parquet. The end-to-end test's datagrams
  come from a real sFlow agent, pmacct's `pmacctd` with its `sfprobe` plugin, sampling packets
  it reads from a capture file; a datagram or sample that cannot be read goes on as a record
  saying why, never dropped.
- `ebpf`: a JSON document a datagram, pretty-printed or compact.
- Every UDP input: what the kernel drops is counted."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import shutil
import socket
import struct
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pyarrow.compute as pc
import pytest

from bytefreezer.control.models import DatasetSpec
from bytefreezer.errors import ConfigError
from bytefreezer.ingress.proxy.config import load_proxy_config
from bytefreezer.ingress.proxy.records import datagram_records
from bytefreezer.ingress.proxy.service import ProxyService
from bytefreezer.ingress.proxy.sflow import SflowDecoder
from tests.ingress.conftest import Receiver
from tests.ingress.test_proxy import proxy_config, serving, until

PMACCTD = shutil.which("pmacctd") or "/usr/sbin/pmacctd"  # Debian's pmacct (make system-deps)
MACS = bytes.fromhex("020000000002020000000001")  # destination, source


# Frames, as a capture file holds them ------------------------------------------------------


def ethernet(kind: int, payload: bytes, vlan: int | None = None) -> bytes:
    tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
    return MACS + tag + struct.pack("!H", kind) + payload


def ipv4(src: str, dst: str, protocol: int, payload: bytes) -> bytes:
    addresses = socket.inet_aton(src) + socket.inet_aton(dst)
    return struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(payload), 1, 0, 64, protocol, 0) + (
        addresses + payload
    )


def ipv6(src: str, dst: str, protocol: int, payload: bytes) -> bytes:
    addresses = ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
    return struct.pack("!IHBB", 6 << 28, len(payload), protocol, 64) + addresses + payload


def tcp(sport: int, dport: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x02, 1000, 0, 0) + b"x" * 40


def udp(sport: int, dport: int) -> bytes:
    return struct.pack("!HHHH", sport, dport, 48, 0) + b"y" * 40


ICMP_ECHO = struct.pack("!BBHHH", 8, 0, 0, 1, 1) + b"z" * 32
ARP = struct.pack("!HHBBH", 1, 0x800, 6, 4, 1) + b"\2" * 6 + bytes(4) + bytes(6) + bytes(4)

# (frame, what its flow sample should say); ARP is not IP, and pmacctd samples IP only.
FRAMES: list[tuple[bytes, dict[str, Any] | None]] = [
    (
        ethernet(0x0800, ipv4("10.0.0.1", "10.0.0.2", 6, tcp(1000, 80))),
        {"src_addr": "10.0.0.1", "dst_addr": "10.0.0.2", "ip_protocol": 6, "src_port": 1000,
         "dst_port": 80, "tcp_flags": 2, "ip_version": 4},
    ),
    (
        ethernet(0x0800, ipv4("10.0.0.3", "10.0.0.4", 17, udp(2000, 53))),
        {"src_addr": "10.0.0.3", "dst_addr": "10.0.0.4", "ip_protocol": 17, "src_port": 2000,
         "dst_port": 53, "tcp_flags": None, "ip_version": 4},
    ),
    (
        ethernet(0x0800, ipv4("10.0.0.5", "10.0.0.6", 1, ICMP_ECHO)),
        {"src_addr": "10.0.0.5", "ip_protocol": 1, "icmp_type": 8, "icmp_code": 0,
         "src_port": None},
    ),
    (
        ethernet(0x86DD, ipv6("2001:db8::1", "2001:db8::2", 6, tcp(3000, 443))),
        {"src_addr": "2001:db8::1", "dst_addr": "2001:db8::2", "ip_version": 6,
         "ip_protocol": 6, "src_port": 3000, "dst_port": 443, "ether_type": 0x86DD},
    ),
    (
        ethernet(0x0800, ipv4("10.0.0.7", "10.0.0.8", 17, udp(4000, 514)), vlan=42),
        {"src_addr": "10.0.0.7", "vlan": 42, "src_vlan": 42, "dst_port": 514},
    ),
    (ethernet(0x0806, ARP), None),
]  # fmt: skip


def write_capture(path: Path, count: int, seconds: float) -> list[dict[str, Any]]:
    """A pcap file of ``count`` frames cycling through FRAMES over ``seconds``; what the flow
    samples of its IP frames should say, in order."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    expected = []
    for i in range(count):
        frame, sample = FRAMES[i % len(FRAMES)]
        at = 1_772_600_000 + i * seconds / count
        out += struct.pack("<IIII", int(at), int(at % 1 * 1e6), len(frame), len(frame)) + frame
        if sample is not None:
            expected.append({**sample, "frame_length": len(frame) + 4})  # with the FCS
    path.write_bytes(bytes(out))
    return expected


def test_sflow_from_pmacct_through_proxy_receiver_piper_packer(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.control.create_dataset("acme", DatasetSpec(name="flows"))
    config = proxy_config(
        tmp_path, receiver.url, receiver.key, {"name": "sf", "type": "sflow", "dataset": "flows"}
    )
    capture = tmp_path / "traffic.pcap"
    expected = write_capture(capture, 60, 3.0)

    async def scenario(service: ProxyService) -> None:
        agent = tmp_path / "pmacctd.conf"
        agent.write_text(
            "daemonize: false\n"
            f"pcap_savefile: {capture}\n"
            "pcap_savefile_wait: false\n"
            "plugins: sfprobe\n"
            f"sfprobe_receiver: 127.0.0.1:{service.ports['sf']}\n"
            "sfprobe_agentip: 192.0.2.77\n"
            "sampling_rate: 1\n"
        )
        run = await asyncio.to_thread(
            subprocess.run, [PMACCTD, "-f", str(agent)], capture_output=True, text=True, timeout=60
        )
        decoder = service.sflow["sf"]
        try:
            # sfprobe also sends a counter sample each interval it runs through: one more record
            # when the machine is slow enough for the capture's replay to span one
            await until(
                lambda: (
                    decoder.flow_samples == len(expected)
                    and sum(service.stats.lines_in.values())
                    == len(expected) + decoder.counter_samples
                    and service.stats.batches_delivered >= 1
                    and not service.spool.paths()
                )
            )
        except AssertionError:
            raise AssertionError(f"{service.stats.lines_in}; pmacctd: {run.stderr}") from None
        counters.append(decoder.counter_samples)
        api = f"http://127.0.0.1:{service.ports['api']}"
        async with httpx.AsyncClient() as client:
            stats = (await client.get(f"{api}/api/v1/stats")).json()
            exposition = (await client.get(f"{api}/metrics")).text
        assert stats["sflow"] == {
            "sf": {
                "flow_samples": len(expected),
                "counter_samples": decoder.counter_samples,
                "undecoded": 0,
            }
        }
        assert 'bytefreezer_proxy_sflow_samples_total{input="sf",kind="flow"} 50' in exposition
        assert 'bytefreezer_proxy_sflow_undecoded_total{input="sf"} 0' in exposition

    counters: list[int] = []
    asyncio.run(serving(ProxyService(config), scenario))
    table = receiver.pack("flows")
    assert len(expected) == 50
    assert table is not None and table.num_rows == len(expected) + counters[0]
    table = table.filter(pc.equal(table["sflow_sample"], "flow"))
    assert table.num_rows == len(expected)
    rows = sorted(table.to_pylist(), key=lambda r: r["sample_sequence"])
    assert [r["sample_sequence"] for r in rows] == list(range(1, 51))  # each sample once
    for row, want in zip(rows, expected, strict=True):
        assert {k: row[k] for k in want} == want, row
    first = rows[0]
    assert (first["agent"], first["exporter"], first["sflow_sample"]) == (
        "192.0.2.77", "127.0.0.1", "flow",
    )  # fmt: skip
    assert (first["sampling_rate"], first["src_mac"], first["dst_mac"]) == (
        1, "02:00:00:00:00:01", "02:00:00:00:00:02",
    )  # fmt: skip
    assert "sflow_error" not in table.column_names and "header" not in table.column_names


# Datagrams built by hand, for what pmacctd does not send -----------------------------------


def item(format_: int, body: bytes, enterprise: int = 0) -> bytes:
    """An XDR item of sFlow: its format (enterprise << 12 | format), length and body."""
    return struct.pack("!II", enterprise << 12 | format_, len(body)) + body


def datagram(*samples: bytes, agent: bytes = b"\x00\x00\x00\x01\xc0\x00\x02\x01") -> bytes:
    return (
        struct.pack("!I", 5)
        + agent
        + struct.pack("!IIII", 3, 99, 123_456, len(samples))
        + (b"".join(samples))
    )


def generic_interface(index: int, in_octets: int) -> bytes:
    return struct.pack(
        "!IIQIIQIIIIIIQIIIIII",
        index, 6, 10**10, 1, 3, in_octets, 1, 2, 3, 4, 5, 6, 2**40, 7, 8, 9, 10, 11, 0,
    )  # fmt: skip


def counter_sample(sequence: int, index: int, *records: bytes) -> bytes:
    body = struct.pack("!III", sequence, index, len(records)) + b"".join(records)
    return item(2, body)


def expanded_flow_sample(*records: bytes) -> bytes:
    head = struct.pack("!IIIIIIIIIII", 7, 0, 12, 1000, 700_000, 2, 0, 3, 0, 4, len(records))
    return item(3, head + b"".join(records))


def decoded(records: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(r) for r in records]


def test_counter_samples_become_records_of_their_counters() -> None:
    decoder = SflowDecoder()
    ethernet_counters = struct.pack("!13I", *range(1, 14))
    processor = struct.pack("!IIIQQ", 1250, 900, 875, 16 * 2**30, 3 * 2**30)
    vlan = struct.pack("!IQIIII", 42, 5000, 1, 2, 3, 4)
    data = datagram(
        counter_sample(1, 17, item(1, generic_interface(17, 2**33)), item(2, ethernet_counters)),
        counter_sample(2, 2 << 24 | 1, item(1001, processor), item(5, vlan)),
    )
    first, second = decoded(decoder.decode(data, "198.51.100.7"))
    assert (first["agent"], first["exporter"], first["sub_agent_id"]) == (
        "192.0.2.1", "198.51.100.7", 3,
    )  # fmt: skip
    assert (first["datagram_sequence"], first["uptime_ms"], first["sflow_sample"]) == (
        99, 123_456, "counter",
    )  # fmt: skip
    assert (first["if_index"], first["if_speed"], first["if_in_octets"]) == (17, 10**10, 2**33)
    assert (first["if_admin_up"], first["if_oper_up"], first["if_out_octets"]) == (
        True, True, 2**40,
    )  # fmt: skip
    assert first["dot3_stats_alignment_errors"] == 1 and first["dot3_stats_symbol_errors"] == 13
    assert (second["source_id_type"], second["source_id_index"]) == (2, 1)
    assert (second["cpu_5s_percent"], second["memory_free"]) == (1250, 3 * 2**30)
    assert (second["vlan_id"], second["vlan_octets"], second["vlan_discards"]) == (42, 5000, 4)
    assert (decoder.counter_samples, decoder.flow_samples, decoder.undecoded) == (2, 0, 0)


def test_expanded_flow_samples_with_router_gateway_and_sampled_ip_records() -> None:
    sampled_ipv4 = struct.pack(
        "!II4s4sIIII", 1500, 6, socket.inet_aton("10.1.1.1"), socket.inet_aton("10.2.2.2"),
        40000, 22, 0x12, 0,
    )  # fmt: skip
    router = struct.pack("!I4sII", 1, socket.inet_aton("10.0.0.254"), 24, 16)
    path = struct.pack("!IIIIII", 1, 2, 3, 64499, 64500, 64511)  # a segment: a sequence of 3
    gateway = (
        struct.pack("!I4sIII", 1, socket.inet_aton("192.0.2.1"), 64496, 64497, 64498)
        + path
        + struct.pack("!II", 1, 0xFDE80001)
        + struct.pack("!I", 100)
    )
    header_v6_udp = ethernet(0x86DD, ipv6("2001:db8::5", "2001:db8::6", 17, udp(5353, 5353)))
    raw = struct.pack("!IIII", 1, len(header_v6_udp) + 4, 4, len(header_v6_udp)) + header_v6_udp
    raw += bytes(-len(header_v6_udp) % 4)
    decoder = SflowDecoder()
    first, second = decoded(
        decoder.decode(
            datagram(
                expanded_flow_sample(
                    item(3, sampled_ipv4), item(1002, router), item(1003, gateway)
                ),
                expanded_flow_sample(item(1, raw)),
            ),
            "198.51.100.7",
        )
    )
    assert (first["sflow_sample"], first["sample_sequence"], first["source_id_index"]) == (
        "flow", 7, 12,
    )  # fmt: skip
    assert (first["sampling_rate"], first["input_interface"], first["output_interface"]) == (
        1000, 3, 4,
    )  # fmt: skip
    assert (first["src_addr"], first["dst_addr"], first["src_port"], first["dst_port"]) == (
        "10.1.1.1", "10.2.2.2", 40000, 22,
    )  # fmt: skip
    assert (first["tcp_flags"], first["ip_length"], first["next_hop"]) == (0x12, 1500, "192.0.2.1")
    assert (first["src_mask_len"], first["dst_mask_len"]) == (24, 16)
    assert (first["as"], first["src_as"], first["src_peer_as"]) == (64496, 64497, 64498)
    assert first["dst_as_path"] == [64499, 64500, 64511]
    assert (first["dst_peer_as"], first["dst_as"]) == (64499, 64511)
    assert (first["communities"], first["local_pref"]) == ([0xFDE80001], 100)
    assert (second["src_addr"], second["ip_protocol"], second["src_port"]) == (
        "2001:db8::5", 17, 5353,
    )  # fmt: skip
    assert second["frame_length"] == len(header_v6_udp) + 4 and "header" not in second


def test_what_is_not_decoded_is_kept_not_dropped() -> None:
    decoder = SflowDecoder()
    arp = ethernet(0x0806, ARP)
    raw = struct.pack("!IIII", 1, 64, 4, len(arp)) + arp + bytes(-len(arp) % 4)
    vendor = item(7, b"\x01\x02\x03\x04", enterprise=4413)  # a vendor's flow record
    vendor_sample = item(5, b"\xaa\xbb\xcc\xdd", enterprise=9)  # a vendor's sample
    data = datagram(expanded_flow_sample(item(1, raw), vendor), vendor_sample)
    flow, other = decoded(decoder.decode(data, "198.51.100.7"))
    assert flow["ether_type"] == 0x0806 and bytes.fromhex(flow["header"]) == arp
    assert flow["unknown_records"] == [{"format": "4413:7", "data": "01020304"}]
    assert (other["sflow_sample"], other["sample_data"]) == ("9:5", "aabbccdd")
    assert decoder.undecoded == 0


def test_datagrams_and_samples_that_cannot_be_read_are_kept_with_the_reason() -> None:
    decoder = SflowDecoder()
    (wrong,) = decoded(decoder.decode(b"\x00\x00\x00\x04rest", "198.51.100.7"))
    assert "version 4" in wrong["sflow_error"]
    assert base64.b64decode(wrong["sflow_datagram"]) == b"\x00\x00\x00\x04rest"
    (short,) = decoded(decoder.decode(b"\x00\x00\x00\x05\x00\x00\x00\x01\x0a", "198.51.100.7"))
    assert "1 left" in short["sflow_error"]
    # The middle sample says it holds a record longer than itself: that sample alone is kept
    # with the reason, and the sample after it is read.
    good = counter_sample(1, 1, item(1, generic_interface(1, 10)))
    lying = item(2, struct.pack("!IIIII", 2, 1, 1, 1, 400) + bytes(8))
    data = datagram(good, lying, counter_sample(3, 3, item(1, generic_interface(3, 30))))
    first, bad, third = decoded(decoder.decode(data, "198.51.100.7"))
    assert first["if_in_octets"] == 10 and third["if_in_octets"] == 30
    assert bad["sflow_error"].startswith("sample 2 of 3") and bad["datagram_sequence"] == 99
    assert base64.b64decode(bad["sflow_datagram"]) == lying
    # A sample longer than what is left of the datagram: the rest goes on as one record.
    (cut,) = decoded(decoder.decode(datagram(good)[:-8], "198.51.100.7"))
    assert cut["sflow_error"].startswith("sample 1 of 1")
    assert (decoder.counter_samples, decoder.undecoded) == (2, 4)


# What the kernel drops before a UDP input reads ---------------------------------------------


def test_datagrams_the_kernel_drops_are_counted_not_silent(tmp_path: Path) -> None:
    """A burst larger than a UDP input's receive buffer, sent while the proxy cannot read:
    every datagram is either read or counted as dropped by the kernel, in the stats and the
    metrics; the input's receive buffer is what the configuration asked for."""
    config = proxy_config(
        tmp_path,
        "http://127.0.0.1:9",
        "bfk_0123456789ab_key",
        {"name": "tiny", "type": "udp", "receive_buffer_bytes": 4096},
        {"name": "roomy", "type": "syslog"},
    )
    sent = 300

    async def scenario(service: ProxyService) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(sent):  # the event loop is not running its reads meanwhile
            sock.sendto(b"line %d " % i + b"x" * 200, ("127.0.0.1", service.ports["tiny"]))
        sock.close()
        lines = lambda: service.stats.lines_in.get("tiny", 0)  # noqa: E731
        drops = lambda: service._udp_drops().get("tiny", 0)  # noqa: E731
        await until(lambda: lines() + drops() == sent)
        await asyncio.sleep(0.3)  # nothing more arrives
        assert lines() + drops() == sent and lines() > 0 and drops() > 0
        api = f"http://127.0.0.1:{service.ports['api']}"
        async with httpx.AsyncClient() as client:
            stats = (await client.get(f"{api}/api/v1/stats")).json()
            exposition = (await client.get(f"{api}/metrics")).text
        assert stats["udp"]["tiny"]["drops"] == drops()
        assert f'bytefreezer_proxy_udp_drops_total{{input="tiny"}} {drops()}' in exposition
        assert 'bytefreezer_proxy_udp_drops_total{input="roomy"} 0' in exposition
        # 4 KB asked (the kernel's floor may be a little more); the default is far larger
        assert 4096 <= stats["udp"]["tiny"]["receive_buffer_bytes"] < 16384
        assert stats["udp"]["roomy"]["receive_buffer_bytes"] >= 200_000

    asyncio.run(serving(ProxyService(config), scenario))


def test_receive_buffer_is_for_udp_inputs(tmp_path: Path) -> None:
    (tmp_path / "proxy.yaml").write_text(
        "receiver_url: http://127.0.0.1:9\n"
        "inputs:\n"
        "  - {name: logs, type: syslog, protocol: tcp, port: 601, tenant: a, dataset: b,\n"
        "     api_key: k, receive_buffer_bytes: 1048576}\n"
    )
    with pytest.raises(ConfigError, match=r"receive_buffer_bytes is for UDP inputs.*over TCP"):
        load_proxy_config(tmp_path / "proxy.yaml")


# `ebpf`: a JSON document a datagram ----------------------------------------------------------


def test_a_json_document_a_datagram() -> None:
    pretty = b'{\n  "event": "exec",\n  "pid": 4242,\n  "argv": ["ls", "-l"]\n}\n\x00\x00\x00'
    assert [json.loads(r) for r in datagram_records(pretty)] == [
        {"event": "exec", "pid": 4242, "argv": ["ls", "-l"]}
    ]
    assert datagram_records(b'{"a": 1}') == [b'{"a":1}']
    assert datagram_records(b'[{"a": 1}, {"a": 2}]') == [b'{"a":1}', b'{"a":2}']
    assert datagram_records(b'{"a":1}\n{"a":2}\n') == [b'{"a":1}', b'{"a":2}']  # NDJSON
    assert datagram_records(b"\x00\x00 \n") == []
    (text,) = [json.loads(r) for r in datagram_records(b"not json\nat all")]
    assert text["raw"] == "not json\nat all" and text["timestamp"]  # one record, as it came
    (number,) = [json.loads(r) for r in datagram_records(b"42")]
    assert number["raw"] == "42"


def test_ebpf_input_through_proxy_receiver_piper_packer(receiver: Receiver, tmp_path: Path) -> None:
    receiver.control.create_dataset("acme", DatasetSpec(name="kernel"))
    config = proxy_config(
        tmp_path,
        receiver.url,
        receiver.key,
        {"name": "probes", "type": "ebpf", "dataset": "kernel"},
    )
    events = [
        {"event": "tcp_connect", "pid": 100 + i, "comm": "curl", "daddr": f"10.0.0.{i}"}
        for i in range(20)
    ]

    async def scenario(service: ProxyService) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i, event in enumerate(events):  # pretty-printed and compact, as agents send them
            body = json.dumps(event, indent=2 if i % 2 else None).encode()
            sock.sendto(body + b"\x00" * (i % 3), ("127.0.0.1", service.ports["probes"]))
        sock.sendto(b"agent restarted", ("127.0.0.1", service.ports["probes"]))
        sock.close()
        await until(
            lambda: (
                service.stats.lines_in.get("probes") == len(events) + 1
                and service.stats.batches_delivered >= 1
                and not service.spool.paths()
            )
        )

    asyncio.run(serving(ProxyService(config), scenario))
    table = receiver.pack("kernel")
    assert table is not None and table.num_rows == len(events) + 1
    rows = table.to_pylist()
    got = sorted((r["pid"], r["daddr"]) for r in rows if r["pid"] is not None)
    assert got == [(e["pid"], e["daddr"]) for e in events]
    assert [r["raw"] for r in rows if r["pid"] is None] == ["agent restarted"]
