"""What the kernel does with a UDP input's datagrams before the proxy reads them: the receive
buffer it keeps them in, and the datagrams it dropped when that was full."""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_TABLES = (Path("/proc/net/udp"), Path("/proc/net/udp6"))
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", None)  # Linux, with CAP_NET_ADMIN


def receive_buffer(sock: Any, wanted: int, name: str, *, asked: bool) -> int:
    """Ask for a ``wanted``-byte receive buffer on ``sock``, past ``net.core.rmem_max`` where
    the proxy may (CAP_NET_ADMIN); the bytes it got. Less than asked for is a warning when
    ``asked`` (the input's configuration names a size), information otherwise."""
    for option in (_SO_RCVBUFFORCE, socket.SO_RCVBUF):
        if option is None:
            continue
        with suppress(OSError):  # FORCE without the capability: EPERM
            sock.setsockopt(socket.SOL_SOCKET, option, wanted)
            if _granted(sock) >= wanted:
                return _granted(sock)
    got = _granted(sock)
    (log.warning if asked else log.info)(
        "input %s: the kernel gave a %d-byte receive buffer of the %d asked for; raise "
        "net.core.rmem_max (sysctl) or run the proxy with CAP_NET_ADMIN, or datagrams of a "
        "burst may be dropped (bytefreezer_proxy_udp_drops_total counts them)",
        name,
        got,
        wanted,
    )
    return got


def _granted(sock: Any) -> int:
    """The receive buffer ``sock`` has; Linux reports twice what it grants (the rest is for
    its bookkeeping)."""
    value = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    return value // 2 if sys.platform.startswith("linux") else value


def socket_inode(sock: Any) -> int:
    """The inode that names ``sock`` in /proc/net/udp."""
    return os.fstat(sock.fileno()).st_ino


def kernel_drops(inodes: Mapping[str, int]) -> dict[str, int]:
    """Datagrams the kernel dropped for each input's socket (``inodes`` by input name): its
    receive buffer was full. Empty where the kernel does not say (not Linux)."""
    wanted = {inode: name for name, inode in inodes.items()}
    drops: dict[str, int] = {}
    for table in _TABLES:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if (
                len(fields) >= 13
                and fields[9].isascii()
                and fields[9].isdigit()
                and int(fields[9]) in wanted
            ):
                drops[wanted[int(fields[9])]] = int(fields[12])
    return drops
