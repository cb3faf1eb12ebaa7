"""Shared by the benchmarks: generated security events and a stack on a temporary directory."""

from __future__ import annotations

import bisect
import gzip
import json
import random
import signal
import socket
import statistics
import subprocess
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from bytefreezer.control import ControlStore
from bytefreezer.control.models import DatasetSpec, Tenant
from bytefreezer.ingress.receiver import IntakeWriter
from bytefreezer.settings import Settings, load_settings
from bytefreezer.storage import Storage

ACTIONS = ["login", "logout", "read", "write", "delete", "connect"]
STATUSES = ["success", "failure", "blocked", "noise"]


RESULTS = Path(__file__).parent / "results" / "latest.json"


def median_seconds(step: Callable[[], object], repeat: int) -> float:
    """The median wall time of ``repeat`` calls of ``step``."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def merge_results(figures: dict[str, Any]) -> None:
    """Merge ``figures`` (top-level sections) into benchmarks/results/latest.json."""
    RESULTS.parent.mkdir(exist_ok=True)
    current = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    RESULTS.write_text(json.dumps({**current, **figures}, indent=2) + "\n")


def stop_process(process: subprocess.Popen[Any], timeout: float = 30) -> None:
    """SIGTERM a child process if it runs, SIGKILL it after ``timeout``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def receiver_process(
    data_dir: Path, port: int, api_port: int, *, dataset_key: bool = False
) -> tuple[subprocess.Popen[bytes], str]:
    """`bytefreezer receiver` on 127.0.0.1 over ``data_dir``, with tenant "bench" and its
    dataset "events" made first; the process and an ingest key (the dataset's, or the
    tenant's)."""
    import os
    import sys

    settings = load_settings(data_dir=data_dir)
    control = ControlStore(settings.control_db_path())
    control.create_tenant(Tenant(name="bench"))
    control.create_dataset("bench", DatasetSpec(name="events"))
    key = control.create_key("bench", "events" if dataset_key else None).key
    env = {
        **os.environ,
        "BYTEFREEZER_DATA_DIR": str(data_dir),
        "BYTEFREEZER_RECEIVER__HOST": "127.0.0.1",
        "BYTEFREEZER_RECEIVER__PORT": str(port),
        "BYTEFREEZER_RECEIVER__API_HOST": "127.0.0.1",
        "BYTEFREEZER_RECEIVER__API_PORT": str(api_port),
        "BYTEFREEZER_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "bytefreezer.cli", "receiver"]
    return subprocess.Popen(command, env=env), key


def wait_port(port: int, timeout: float = 60) -> None:
    """Wait until something listens on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


PROCESSES = ["sshd", "nginx", "postgres", "java"]
PORTS = [22, 80, 443, 3306, 8080]
BASE_TIME = 1767225600  # 2026-01-01T00:00:00Z


class _Events:
    """The NDJSON events of one seed and time span, generated as far as asked so far: one
    block of bytes (every line ending in a newline) and each line's end offset. Bytes and an
    array, not a list of lines, so that the garbage collector has nothing to scan in what a
    benchmark keeps while it times."""

    def __init__(self, seed: int, span_seconds: int) -> None:
        self._rng = random.Random(seed)
        self._span = span_seconds
        self._dates: dict[int, str] = {}
        self.data = bytearray()
        self.ends = array("q")

    def _below(self, n: int) -> int:
        """``random.Random._randbelow(n)`` as CPython 3.11 draws it (``randrange(n)`` and
        ``choice`` use it): the events are those the earlier per-event ``json.dumps`` generator
        made from the same seed, at 2.5x its speed."""
        k = n.bit_length()
        r = self._rng.getrandbits(k)
        while r >= n:
            r = self._rng.getrandbits(k)
        return r

    def extend(self, target_bytes: int) -> None:
        below, rand, out = self._below, self._rng.random, self.data
        while len(out) < target_bytes:
            day, second = divmod(BASE_TIME + below(self._span), 86400)
            date = self._dates.get(day)
            if date is None:
                date = self._dates[day] = time.strftime("%Y-%m-%dT", time.gmtime(day * 86400))
            hour, rest = divmod(second, 3600)
            # a third from a range the benchmark GeoIP database knows
            if rand() < 0.34:
                source = f"81.2.69.{below(256)}"
            else:
                source = f"10.{below(256)}.{below(256)}.{below(256)}"
            dest = f"192.168.{below(256)}.{below(256)}"
            source_port = 1024 + below(65535 - 1024)
            dest_port = PORTS[below(len(PORTS))]
            user = below(5000)
            action = ACTIONS[below(len(ACTIONS))]
            status = STATUSES[below(len(STATUSES))]
            process = PROCESSES[below(len(PROCESSES))]
            sent, received = below(1 << 20), below(1 << 20)
            duration = round(rand() * 5000, 3)
            session = self._rng.getrandbits(64)
            out += (
                f'{{"timestamp": "{date}{hour:02d}:{rest // 60:02d}:{rest % 60:02d}Z", '
                f'"source_ip": "{source}", "dest_ip": "{dest}", "source_port": {source_port}, '
                f'"dest_port": {dest_port}, "username": "user{user}", "action": "{action}", '
                f'"status": "{status}", "process": "{process}", "bytes_sent": {sent}, '
                f'"bytes_recv": {received}, "duration_ms": {duration!r}, '
                f'"session_id": "{session:016x}"}}\n'
            ).encode()
            self.ends.append(len(out))


_EVENTS: dict[tuple[int, int], _Events] = {}


def _generated(target_bytes: int, seed: int, span_seconds: int) -> tuple[_Events, int]:
    """The store of events of ``seed`` and ``span_seconds`` holding at least ``target_bytes``,
    and how many of its lines make up that target."""
    events = _EVENTS.get((seed, span_seconds))
    if events is None:
        events = _EVENTS[seed, span_seconds] = _Events(seed, span_seconds)
    events.extend(target_bytes)
    return events, bisect.bisect_left(events.ends, target_bytes) + 1


def generate(target_bytes: int, seed: int = 7, span_seconds: int = 86400 * 2) -> list[bytes]:
    """NDJSON lines of security events (the original system's test data shape), their times at
    random over ``span_seconds`` (two days: a backfill's spread), until they take
    ``target_bytes`` with their newlines. The lines of a smaller target are the first lines of
    a larger one's (same seed and span): the process keeps what it generated and serves
    prefixes, so that benchmark passes asking for the same events again do not wait for
    Python to make them again (generating was most of scale.py's time)."""
    if target_bytes <= 0:
        return []
    events, count = _generated(target_bytes, seed, span_seconds)
    return bytes(memoryview(events.data)[: events.ends[count - 1] - 1]).split(b"\n")


def generated_ndjson(target_bytes: int, seed: int = 7, span_seconds: int = 86400 * 2) -> bytes:
    """``generate``'s lines as one NDJSON document (each line ending in a newline)."""
    if target_bytes <= 0:
        return b""
    events, count = _generated(target_bytes, seed, span_seconds)
    return bytes(memoryview(events.data)[: events.ends[count - 1]])


def tenant_objects(
    target_bytes: int,
    tenants: int,
    object_bytes: int,
    seed: int = 7,
    span_seconds: int = 86400 * 2,
) -> list[Iterator[bytes]]:
    """``generate``'s lines shared evenly by count among ``tenants`` (lines past the even split
    left out), each share's objects cut as ``split_objects`` cuts them. An object is sliced
    from the generated bytes when its share is iterated: no bytes object per line (a list of a
    GiB of lines took 1.4 GiB besides the bytes), nor all objects at once."""
    if target_bytes <= 0:
        return [iter(()) for _ in range(tenants)]
    events, count = _generated(target_bytes, seed, span_seconds)
    per_tenant = max(1, count // tenants)

    def share(first: int, last: int) -> Iterator[bytes]:
        ends = events.ends
        start = ends[first - 1] if 0 < first < last else 0
        while first < last:
            # the first line at which the object reaches object_bytes, else the share's last
            cut = min(bisect.bisect_left(ends, start + object_bytes, first, last), last - 1)
            yield bytes(memoryview(events.data)[start : ends[cut]])
            first, start = cut + 1, ends[cut]

    return [
        share(index * per_tenant, min((index + 1) * per_tenant, count)) for index in range(tenants)
    ]


def forget_generated() -> None:
    """Drop the events generated so far (``generate`` makes them again when asked)."""
    _EVENTS.clear()


def split_objects(lines: list[bytes], object_bytes: int) -> list[bytes]:
    """Lines grouped into NDJSON objects of about ``object_bytes``."""
    objects, current, size = [], [], 0
    for line in lines:
        current.append(line)
        size += len(line) + 1
        if size >= object_bytes:
            objects.append(b"\n".join(current) + b"\n")
            current, size = [], 0
    if current:
        objects.append(b"\n".join(current) + b"\n")
    return objects


def stack(
    data_dir: Path, chain: list[dict[str, Any]], tenants: list[str], **overrides: Any
) -> tuple[Settings, ControlStore, Storage]:
    """Settings, control and storage of a stack with one dataset per tenant: file-backed unless
    ``overrides`` (settings sections, ``piper`` and ``packer`` merged into the benchmarks'
    own) say otherwise."""
    settings = load_settings(
        data_dir=data_dir,
        instance_id="bench",
        **{
            **overrides,
            "piper": {"max_objects_per_run": 10_000, **overrides.get("piper", {})},
            # Packed as soon as staged: the benchmarks time the work, not the buffer's wait.
            "packer": {
                "max_input_mb_per_run": 4096,
                "buffer_seconds": 0,
                **overrides.get("packer", {}),
            },
        },
    )
    storage = Storage(settings)
    storage.ensure_buckets()
    control = ControlStore(settings.control_db_path(), destination_for=settings.destination_for)
    for tenant in tenants:
        control.create_tenant(Tenant(name=tenant))
        control.create_dataset(tenant, DatasetSpec(name="security", transforms=chain))
    return settings, control, storage


def gzipped(objects: Iterable[bytes]) -> list[bytes]:
    """Objects gzip'd as a client posts them (level 1)."""
    return [_gzip(obj) for obj in objects]


def _gzip(obj: bytes) -> bytes:
    return gzip.compress(obj, compresslevel=1)


def upload(
    storage: Storage, tenant: str, objects: Iterable[bytes], *, compressed: bool = False
) -> None:
    """Objects into the intake bucket, gzip'd (unless ``compressed`` says they are), as the
    receiver stores them."""
    writer = IntakeWriter(storage)
    for obj in objects:
        writer.write(tenant, "security", "ndjson", obj if compressed else _gzip(obj), {})
