"""sFlow version 5 datagrams to JSON records (the proxy's `sflow` input).

An sFlow agent (a switch, a router, hsflowd, pmacct's sfprobe) sends UDP datagrams of samples:
a flow sample holds a sampled packet's header and what the agent knew about its forwarding; a
counter sample holds an interface's (or the host's) counters. Each sample becomes one record:

- every record: ``timestamp`` (when the proxy received the datagram; sFlow carries only the
  agent's uptime), ``exporter`` (the sending address), ``agent`` (the agent address inside the
  datagram), ``sub_agent_id``, ``datagram_sequence``, ``uptime_ms``, ``sflow_sample`` (``flow``
  or ``counter``), ``sample_sequence``, ``source_id_type`` and ``source_id_index``;
- a flow sample: ``sampling_rate``, ``sample_pool``, ``drops``, ``input_interface``,
  ``output_interface`` and, from its records, the sampled packet decoded (``frame_length``,
  ``src_mac``, ``dst_mac``, ``ether_type``, ``vlan``, ``ip_version``, ``src_addr``,
  ``dst_addr``, ``ip_protocol``, ``ip_tos``, ``ip_ttl``, ``src_port``, ``dst_port``,
  ``tcp_flags``, ``icmp_type``, ``icmp_code``) and the switch, router and gateway data
  (``src_vlan``, ``next_hop``, ``src_as``, ``dst_as_path``, ...). Multiply by
  ``sampling_rate`` to estimate the traffic a sample stands for;
- a counter sample: the generic interface counters (``if_index``, ``if_in_octets``, ...),
  Ethernet's (``dot3_*``), a VLAN's and the processor's.

Nothing is dropped. A record format this decoder does not know is kept in ``unknown_records``
(its ``enterprise:format`` and data in hex); a sampled header that is not Ethernet or IP keeps
its bytes in ``header`` (hex); a datagram (or the rest of one) that cannot be read becomes one
record with ``sflow_error`` and the bytes in base64 in ``sflow_datagram``.
"""

from __future__ import annotations

import base64
import socket
import struct
from collections.abc import Callable
from typing import Any

import orjson

from bytefreezer.ingress.proxy.records import now_rfc3339

_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_TWO = struct.Struct("!II")
_FLOW = struct.Struct("!IIIIIII")  # sequence, source id, rate, pool, drops, input, output
_FLOW_EXPANDED = struct.Struct("!IIIIIIIIII")  # as _FLOW with the source id and ports split
_COUNTER = struct.Struct("!II")  # sequence, source id
_RAW_HEADER = struct.Struct("!IIII")  # protocol, frame length, stripped, header length
_ETHERNET = struct.Struct("!I6s2x6s2xI")  # length, source MAC, destination MAC, type
_SAMPLED_IPV4 = struct.Struct("!II4s4sIIII")
_SAMPLED_IPV6 = struct.Struct("!II16s16sIIII")
_SWITCH = struct.Struct("!IIII")
_GENERIC_INTERFACE = struct.Struct("!IIQIIQIIIIIIQIIIIII")
_ETHERNET_COUNTERS = struct.Struct("!13I")
_VLAN_COUNTERS = struct.Struct("!IQIIII")
_PROCESSOR = struct.Struct("!IIIQQ")
_THREE = struct.Struct("!III")
_IPV4_HEADER = struct.Struct("!BBHHHBB2x4s4s")
_IPV6_HEADER = struct.Struct("!IHBB16s16s")

_GENERIC_NAMES = (
    "if_index",
    "if_type",
    "if_speed",
    "if_direction",
    "if_status",
    "if_in_octets",
    "if_in_ucast_pkts",
    "if_in_multicast_pkts",
    "if_in_broadcast_pkts",
    "if_in_discards",
    "if_in_errors",
    "if_in_unknown_protos",
    "if_out_octets",
    "if_out_ucast_pkts",
    "if_out_multicast_pkts",
    "if_out_broadcast_pkts",
    "if_out_discards",
    "if_out_errors",
    "if_promiscuous_mode",
)
_ETHERNET_NAMES = tuple(
    "dot3_stats_" + name
    for name in (
        "alignment_errors",
        "fcs_errors",
        "single_collision_frames",
        "multiple_collision_frames",
        "sqe_test_errors",
        "deferred_transmissions",
        "late_collisions",
        "excessive_collisions",
        "internal_mac_transmit_errors",
        "carrier_sense_errors",
        "frame_too_longs",
        "internal_mac_receive_errors",
        "symbol_errors",
    )
)
_VLAN_NAMES = (
    "vlan_id",
    "vlan_octets",
    "vlan_ucast_pkts",
    "vlan_multicast_pkts",
    "vlan_broadcast_pkts",
    "vlan_discards",
)
_PROCESSOR_NAMES = ("cpu_5s_percent", "cpu_1m_percent", "cpu_5m_percent", "memory_total",
                    "memory_free")  # fmt: skip
_EXPANDED_COUNTER = ("sample_sequence", "source_id_type", "source_id_index")
_EXPANDED_FLOW = (
    *_EXPANDED_COUNTER,
    "sampling_rate",
    "sample_pool",
    "drops",
    "input_interface_format",
    "input_interface",
    "output_interface_format",
    "output_interface",
)
_PORTED = (6, 17, 132)  # TCP, UDP, SCTP
_VLAN_TAGS = (0x8100, 0x88A8, 0x9100)
_MAX_VLAN_TAGS = 4


class Malformed(ValueError):
    """Bytes that do not hold what sFlow version 5 says they should."""


class _Reader:
    """A cursor over XDR-encoded bytes (big-endian, each item padded to four bytes)."""

    __slots__ = ("data", "end", "offset")

    def __init__(self, data: bytes, offset: int = 0, end: int | None = None) -> None:
        self.data = data
        self.offset = offset
        self.end = len(data) if end is None else end

    def unpack(self, layout: struct.Struct) -> tuple[Any, ...]:
        if self.offset + layout.size > self.end:
            raise Malformed(f"{layout.size} bytes needed at offset {self.offset}, {self.left} left")
        values = layout.unpack_from(self.data, self.offset)
        self.offset += layout.size
        return values

    def u32(self) -> int:
        return int(self.unpack(_U32)[0])

    def opaque(self, length: int) -> bytes:
        """``length`` bytes, and the padding after them."""
        if length > self.left:
            raise Malformed(f"{length} bytes of data at offset {self.offset}, {self.left} left")
        value = bytes(self.data[self.offset : self.offset + length])
        self.offset += (length + 3) & ~3
        return value

    def address(self) -> str | None:
        kind = self.u32()
        if kind == 1:
            return _ipv4(self.opaque(4))
        if kind == 2:
            return _ipv6(self.opaque(16))
        if kind == 0:
            return None
        raise Malformed(f"address type {kind} is neither IPv4 (1) nor IPv6 (2)")

    def section(self, length: int) -> _Reader:
        """A reader of the next ``length`` bytes; this one moves past them."""
        if length > self.left:
            raise Malformed(f"a {length}-byte item at offset {self.offset}, {self.left} left")
        inner = _Reader(self.data, self.offset, self.offset + length)
        self.offset += length
        return inner

    @property
    def left(self) -> int:
        return self.end - self.offset


def _source(sequence: int, source: int, record: dict[str, Any]) -> None:
    """A compact sample's sequence number and source id (type in the top byte, index below)."""
    record.update(sample_sequence=sequence, source_id_type=source >> 24)
    record["source_id_index"] = source & 0xFFFFFF


def _ipv4(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET, raw)


def _ipv6(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, raw)


def _mac(raw: bytes) -> str:
    return raw.hex(":")


def _interface(value: int, record: dict[str, Any], name: str) -> None:
    """A compact flow sample's interface: the low 30 bits, and their meaning when the top two
    bits give one (1: the packet was discarded, the value its reason; 2: sent to that many
    interfaces)."""
    record[name] = value & 0x3FFFFFFF
    kind = value >> 30
    if kind:
        record[name + "_format"] = kind


def _transport(data: bytes, offset: int, protocol: int, record: dict[str, Any]) -> None:
    if protocol in _PORTED and len(data) >= offset + 4:
        record["src_port"], record["dst_port"] = struct.unpack_from("!HH", data, offset)
        if protocol == 6 and len(data) >= offset + 14:
            record["tcp_flags"] = data[offset + 13]
    elif protocol in (1, 58) and len(data) >= offset + 2:  # ICMP, ICMPv6
        record["icmp_type"], record["icmp_code"] = data[offset], data[offset + 1]


def _ip(data: bytes, offset: int, record: dict[str, Any]) -> bool:
    """An IP header at ``offset`` into ``record``; False when there is none to read."""
    if len(data) <= offset:
        return False
    version = data[offset] >> 4
    if version == 4 and len(data) >= offset + _IPV4_HEADER.size:
        first, tos, length, _, fragment, ttl, protocol, src, dst = _IPV4_HEADER.unpack_from(
            data, offset
        )
        record.update(
            ip_version=4,
            src_addr=_ipv4(src),
            dst_addr=_ipv4(dst),
            ip_protocol=protocol,
            ip_tos=tos,
            ip_ttl=ttl,
            ip_length=length,
        )
        if fragment & 0x1FFF == 0:  # only a first fragment has the transport header
            _transport(data, offset + (first & 0x0F) * 4, protocol, record)
        return True
    if version == 6 and len(data) >= offset + _IPV6_HEADER.size:
        first, length, next_header, hops, src, dst = _IPV6_HEADER.unpack_from(data, offset)
        record.update(
            ip_version=6,
            src_addr=_ipv6(src),
            dst_addr=_ipv6(dst),
            ip_protocol=next_header,
            ip_tos=(first >> 20) & 0xFF,
            ip_ttl=hops,
            ip_length=length + 40,
            ipv6_flow_label=first & 0xFFFFF,
        )
        _transport(data, offset + 40, next_header, record)
        return True
    return False


def _sampled_header(data: bytes, start: int, stop: int, record: dict[str, Any]) -> None:
    """A raw packet header record (the usual flow record: a switch's sampled packet)."""
    if stop - start < _RAW_HEADER.size:
        raise Malformed(f"a {stop - start}-byte raw packet header record at offset {start}")
    protocol, frame_length, stripped, length = _RAW_HEADER.unpack_from(data, start)
    start += _RAW_HEADER.size
    if length > stop - start:
        raise Malformed(f"{length} bytes of data at offset {start}, {stop - start} left")
    header = data[start : start + length]
    record.update(
        header_protocol=protocol, frame_length=frame_length, stripped=stripped, header_length=length
    )
    decoded = False
    if protocol == 1 and len(header) >= 14:  # Ethernet
        record["dst_mac"], record["src_mac"] = _mac(header[0:6]), _mac(header[6:12])
        (kind,) = struct.unpack_from("!H", header, 12)
        offset, vlans = 14, list[int]()
        while kind in _VLAN_TAGS and len(header) >= offset + 4 and len(vlans) < _MAX_VLAN_TAGS:
            tag, kind = struct.unpack_from("!HH", header, offset)
            vlans.append(tag & 0x0FFF)
            offset += 4
        record["ether_type"] = kind
        if vlans:
            record["vlan"] = vlans[0]
        decoded = kind in (0x0800, 0x86DD) and _ip(header, offset, record)
    elif protocol in (11, 12):  # an IPv4 or IPv6 header without a link layer
        decoded = _ip(header, 0, record)
    if not decoded:  # ARP, LLDP, a header cut short: its bytes as they came
        record["header"] = header.hex()


def _sampled_ip(reader: _Reader, record: dict[str, Any], layout: struct.Struct, v: int) -> None:
    length, protocol, src, dst, src_port, dst_port, flags, tos = reader.unpack(layout)
    address = _ipv4 if v == 4 else _ipv6
    record.update(
        ip_version=v,
        ip_length=length,
        ip_protocol=protocol,
        src_addr=address(src),
        dst_addr=address(dst),
        ip_tos=tos,
    )
    if protocol in _PORTED:
        record.update(src_port=src_port, dst_port=dst_port)
        if protocol == 6:
            record["tcp_flags"] = flags


def _gateway(reader: _Reader, record: dict[str, Any]) -> None:
    record["next_hop"] = reader.address()
    record["as"], record["src_as"], record["src_peer_as"] = reader.unpack(_THREE)
    path: list[int] = []
    for _ in range(reader.u32()):
        _kind, count = reader.unpack(_TWO)  # segment type (set or sequence), its length
        if count > reader.left // 4:
            raise Malformed(f"an AS path segment of {count} at offset {reader.offset}")
        path.extend(reader.unpack(struct.Struct(f"!{count}I")))
    record["dst_as_path"] = path
    if path:
        record["dst_peer_as"], record["dst_as"] = path[0], path[-1]
    count = reader.u32()
    if count > reader.left // 4:
        raise Malformed(f"{count} communities at offset {reader.offset}")
    record["communities"] = list(reader.unpack(struct.Struct(f"!{count}I")))
    record["local_pref"] = reader.u32()


_SWITCH_NAMES = ("src_vlan", "src_priority", "dst_vlan", "dst_priority")


def _flow_record(kind: int, data: bytes, start: int, stop: int, record: dict[str, Any]) -> bool:
    """One flow record (``data[start:stop]``) into ``record``; False for a format not decoded
    here. The two a switch sends with every sample are read straight from the bytes; the rest
    through a reader."""
    if kind == 1:
        _sampled_header(data, start, stop, record)
        return True
    if kind == 1001:
        if stop - start < _SWITCH.size:
            raise Malformed(f"a {stop - start}-byte extended switch record at offset {start}")
        record.update(zip(_SWITCH_NAMES, _SWITCH.unpack_from(data, start), strict=True))
        return True
    reader = _Reader(data, start, stop)
    if kind == 2:
        length, src, dst, ether_type = reader.unpack(_ETHERNET)
        record.update(frame_length=length, src_mac=_mac(src), dst_mac=_mac(dst))
        record["ether_type"] = ether_type
    elif kind == 3:
        _sampled_ip(reader, record, _SAMPLED_IPV4, 4)
    elif kind == 4:
        _sampled_ip(reader, record, _SAMPLED_IPV6, 6)
    elif kind == 1002:
        record["next_hop"] = reader.address()
        record["src_mask_len"], record["dst_mask_len"] = reader.unpack(_TWO)
    elif kind == 1003:
        _gateway(reader, record)
    else:
        return False
    return True


def _counter_record(kind: int, data: bytes, start: int, stop: int, record: dict[str, Any]) -> bool:
    """One counter record (``data[start:stop]``) into ``record``; False for a format not
    decoded here."""
    reader = _Reader(data, start, stop)
    if kind == 1:
        values = reader.unpack(_GENERIC_INTERFACE)
        record.update(zip(_GENERIC_NAMES, values, strict=True))
        status = record.pop("if_status")
        record["if_admin_up"], record["if_oper_up"] = bool(status & 1), bool(status & 2)
    elif kind == 2:
        record.update(zip(_ETHERNET_NAMES, reader.unpack(_ETHERNET_COUNTERS), strict=True))
    elif kind == 5:
        record.update(zip(_VLAN_NAMES, reader.unpack(_VLAN_COUNTERS), strict=True))
    elif kind == 1001:
        record.update(zip(_PROCESSOR_NAMES, reader.unpack(_PROCESSOR), strict=True))
    else:
        return False
    return True


class SflowDecoder:
    """Records of one input's sFlow datagrams."""

    def __init__(self) -> None:
        self.flow_samples = 0
        self.counter_samples = 0
        self.undecoded = 0

    def decode(self, data: bytes, exporter: str) -> list[bytes]:
        """The JSON records of one datagram from ``exporter``."""
        received = now_rfc3339()
        reader = _Reader(data)
        try:
            version = reader.u32()
            if version != 5:
                raise Malformed(f"sFlow version {version}; only version 5 is read")
            agent = reader.address()
            sub_agent, sequence, uptime = reader.unpack(_THREE)
            count = reader.u32()
        except Malformed as exc:
            return [self._undecoded(data, exporter, received, str(exc))]
        head = {
            "timestamp": received,
            "exporter": exporter,
            "agent": agent,
            "sub_agent_id": sub_agent,
            "datagram_sequence": sequence,
            "uptime_ms": uptime,
        }
        out: list[bytes] = []
        for index in range(count):
            start = reader.offset
            try:
                kind, length = reader.unpack(_TWO)
                section = reader.section(length)
            except Malformed as exc:  # the rest cannot be told apart: kept as one record
                reason = f"sample {index + 1} of {count}: {exc}"
                return [*out, self._undecoded(data[start:], exporter, received, reason, head)]
            try:
                out.append(orjson.dumps(self._sample(kind, section, head)))
            except Malformed as exc:  # this sample alone; the next starts where it says
                reason = f"sample {index + 1} of {count}: {exc}"
                sample = data[start : reader.offset]
                out.append(self._undecoded(sample, exporter, received, reason, head))
        if reader.left:
            reason = f"{reader.left} bytes after the datagram's {count} samples"
            out.append(self._undecoded(data[reader.offset :], exporter, received, reason, head))
        return out

    def expired(self) -> list[bytes]:
        """Nothing waits in an sFlow decoder (no templates)."""
        return []

    def drain(self, reason: str) -> list[bytes]:
        """Nothing waits in an sFlow decoder (no templates)."""
        return []

    def _sample(self, format_: int, reader: _Reader, head: dict[str, Any]) -> dict[str, Any]:
        enterprise, kind = format_ >> 12, format_ & 0xFFF
        record = dict(head)
        if enterprise == 0 and kind in (1, 3):  # flow sample, compact or expanded
            record["sflow_sample"] = "flow"
            if kind == 1:
                sample, source, rate, pool, drops, inp, outp = reader.unpack(_FLOW)
                _source(sample, source, record)
                record.update(sampling_rate=rate, sample_pool=pool, drops=drops)
                _interface(inp, record, "input_interface")
                _interface(outp, record, "output_interface")
            else:
                record.update(zip(_EXPANDED_FLOW, reader.unpack(_FLOW_EXPANDED), strict=True))
            self._records(reader, record, _flow_record)
            self.flow_samples += 1
        elif enterprise == 0 and kind in (2, 4):  # counter sample, compact or expanded
            record["sflow_sample"] = "counter"
            if kind == 2:
                sample, source = reader.unpack(_COUNTER)
                _source(sample, source, record)
            else:
                record.update(zip(_EXPANDED_COUNTER, reader.unpack(_THREE), strict=True))
            self._records(reader, record, _counter_record)
            self.counter_samples += 1
        else:
            record["sflow_sample"] = f"{enterprise}:{kind}"
            record["sample_data"] = reader.opaque(reader.left).hex()
        return record

    @staticmethod
    def _records(
        reader: _Reader,
        record: dict[str, Any],
        decode: Callable[[int, bytes, int, int, dict[str, Any]], bool],
    ) -> None:
        """A sample's records into ``record``, each bounded by its own length."""
        unknown = []
        data, end = reader.data, reader.end
        for _ in range(reader.u32()):
            format_, length = reader.unpack(_TWO)
            start = reader.offset
            stop = reader.offset = start + length
            if stop > end:
                raise Malformed(f"a {length}-byte item at offset {start}, {end - start} left")
            if format_ >> 12 or not decode(format_, data, start, stop, record):
                kind = f"{format_ >> 12}:{format_ & 0xFFF}"
                unknown.append({"format": kind, "data": data[start:stop].hex()})
        if unknown:
            record["unknown_records"] = unknown

    def _undecoded(
        self,
        data: bytes,
        exporter: str,
        received: str,
        reason: str,
        head: dict[str, Any] | None = None,
    ) -> bytes:
        self.undecoded += 1
        record = dict(head) if head else {"timestamp": received, "exporter": exporter}
        record.update(sflow_error=reason, sflow_datagram=base64.b64encode(data).decode())
        return orjson.dumps(record)
