"""NetFlow v5, v9 and IPFIX export packets to JSON flow records (the proxy's `netflow` input).

One record per flow: ``timestamp`` (the export time of its packet), ``exporter`` (the sending
address), ``netflow_version`` and the flow's fields, lower-cased (``ipv4_src_addr``,
``l4_dst_port``, ``in_bytes``, ...; IPFIX's ``sourceipv4address``, ...), addresses as text.

v9 and IPFIX describe their records by templates the exporter sends every so often. Templates
are kept per exporter and observation domain, since two exporters may number different layouts
alike. A packet whose template has not arrived yet waits (at most ``PENDING_PACKETS`` per
exporter and domain, ``PENDING_SECONDS`` long) and is decoded when it does. A packet that cannot
be decoded, or still has no template when its wait ends, is not dropped: it goes on as one
record holding the packet in base64 and the reason.
"""

from __future__ import annotations

import base64
import ipaddress
import struct
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

import netflow
import orjson
from netflow.ipfix import IPFIXTemplateNotRecognized
from netflow.v9 import V9TemplateNotRecognized

from bytefreezer.ingress.proxy.records import now_rfc3339

PENDING_PACKETS = 256  # per exporter and observation domain
PENDING_SECONDS = 60.0
_V5_ADDRESSES = ("IPV4_SRC_ADDR", "IPV4_DST_ADDR", "NEXT_HOP")
_ADDRESS_ENDINGS = ("addr", "address", "hop", "prefix")  # not ipv4_ident, a counter
_NO_TEMPLATE = (V9TemplateNotRecognized, IPFIXTemplateNotRecognized)


def _domain(data: bytes) -> tuple[int, int]:
    """The packet's version and observation domain (v9's source id, IPFIX's domain id)."""
    version = struct.unpack_from("!H", data)[0] if len(data) >= 2 else 0
    if version == 9 and len(data) >= 20:
        return version, struct.unpack_from("!I", data, 16)[0]
    if version == 10 and len(data) >= 16:
        return version, struct.unpack_from("!I", data, 12)[0]
    return version, 0


def _value(name: str, value: Any) -> Any:
    """A field's value for JSON: addresses as text (v5 and IPFIX give them as integers), other
    bytes as hex."""
    if isinstance(value, bytes | bytearray):
        return value.hex()
    if isinstance(value, int) and not isinstance(value, bool):
        lowered = name.lower()
        is_address = name in _V5_ADDRESSES or lowered.endswith(_ADDRESS_ENDINGS)
        if is_address and "ipv6" in lowered and 0 <= value < 2**128:
            return str(ipaddress.IPv6Address(value))
        if is_address and (name in _V5_ADDRESSES or "ipv4" in lowered) and 0 <= value < 2**32:
            return str(ipaddress.IPv4Address(value))
    return value


class NetflowDecoder:
    """Flow records of one input's packets, with the templates and waiting packets of each
    exporter."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._templates: dict[tuple[str, int, int], dict[str, Any]] = {}
        self._pending: dict[tuple[str, int, int], deque[tuple[float, bytes]]] = {}
        self._clock = clock
        self.flows = 0
        self.undecoded = 0

    def decode(self, data: bytes, exporter: str) -> list[bytes]:
        """The JSON records of one packet from ``exporter`` (and of packets that waited for a
        template it brought)."""
        version, domain = _domain(data)
        key = (exporter, version, domain)
        templates = self._templates.setdefault(key, {"netflow": {}, "ipfix": {}})
        known = len(templates["netflow"]) + len(templates["ipfix"])
        try:
            packet = netflow.parse_packet(data, templates)
        except _NO_TEMPLATE:
            return self._wait(key, data, exporter, version)
        except Exception as exc:  # not a packet this decoder can read
            return [self._undecoded(data, exporter, version, f"{type(exc).__name__}: {exc}")]
        records = self._records(packet, exporter)
        if len(templates["netflow"]) + len(templates["ipfix"]) > known:
            records.extend(self._retry(key, exporter))
        return records

    def expired(self) -> list[bytes]:
        """Packets whose wait for a template has ended, as undecoded records."""
        now = self._clock()
        out = []
        for (exporter, version, _), waiting in self._pending.items():
            while waiting and now - waiting[0][0] >= PENDING_SECONDS:
                _, data = waiting.popleft()
                reason = f"no template arrived within {PENDING_SECONDS:g} s"
                out.append(self._undecoded(data, exporter, version, reason))
        return out

    def drain(self, reason: str) -> list[bytes]:
        """Every waiting packet as an undecoded record (the proxy stops)."""
        out = []
        for (exporter, version, _), waiting in self._pending.items():
            while waiting:
                out.append(self._undecoded(waiting.popleft()[1], exporter, version, reason))
        return out

    def _wait(
        self, key: tuple[str, int, int], data: bytes, exporter: str, version: int
    ) -> list[bytes]:
        waiting = self._pending.setdefault(key, deque())
        out = []
        if len(waiting) >= PENDING_PACKETS:
            _, oldest = waiting.popleft()
            reason = f"no template arrived before {PENDING_PACKETS} more packets waited"
            out.append(self._undecoded(oldest, exporter, version, reason))
        waiting.append((self._clock(), data))
        return out

    def _retry(self, key: tuple[str, int, int], exporter: str) -> list[bytes]:
        waiting = self._pending.get(key)
        if not waiting:
            return []
        out = []
        for _ in range(len(waiting)):
            since, data = waiting.popleft()
            try:
                packet = netflow.parse_packet(data, self._templates[key])
            except _NO_TEMPLATE:
                waiting.append((since, data))  # still another template to come
                continue
            except Exception as exc:
                out.append(self._undecoded(data, exporter, key[1], f"{type(exc).__name__}: {exc}"))
                continue
            out.extend(self._records(packet, exporter))
        return out

    def _records(self, packet: Any, exporter: str) -> list[bytes]:
        header = packet.header
        version = int(header.version)
        # The export time: v5's and v9's `timestamp`; IPFIX's the package calls `export_uptime`,
        # though RFC 7011 makes it seconds since the epoch like the others.
        seconds = header.export_uptime if version == 10 else header.timestamp
        stamp = datetime.fromtimestamp(int(seconds), UTC)
        timestamp = stamp.isoformat().replace("+00:00", "Z")
        out = []
        for flow in packet.flows:
            record = {"timestamp": timestamp, "exporter": exporter, "netflow_version": version}
            record.update({name.lower(): _value(name, v) for name, v in flow.data.items()})
            out.append(orjson.dumps(record))
        self.flows += len(out)
        return out

    def _undecoded(self, data: bytes, exporter: str, version: int, reason: str) -> bytes:
        self.undecoded += 1
        return orjson.dumps(
            {
                "timestamp": now_rfc3339(),
                "exporter": exporter,
                "netflow_version": version,
                "netflow_error": reason,
                "netflow_packet": base64.b64encode(data).decode(),
            }
        )
