"""Shared by the benchmarks: generated security events and a stack on a temporary directory."""

from __future__ import annotations

import gzip
import json
import random
import signal
import socket
import subprocess
import time
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


def wait_port(port: int, timeout: float = 60) -> None:
    """Wait until something listens on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def generate(target_bytes: int, seed: int = 7, span_seconds: int = 86400 * 2) -> list[bytes]:
    """NDJSON lines of security events (the original system's test data shape), their times at
    random over ``span_seconds`` (two days: a backfill's spread)."""
    rng = random.Random(seed)
    lines, size = [], 0
    base = 1767225600
    while size < target_bytes:
        event = {
            "timestamp": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(base + rng.randrange(0, span_seconds))
            ),
            # a third from a range the benchmark GeoIP database knows
            "source_ip": f"81.2.69.{rng.randrange(256)}"
            if rng.random() < 0.34
            else f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
            "dest_ip": f"192.168.{rng.randrange(256)}.{rng.randrange(256)}",
            "source_port": rng.randrange(1024, 65535),
            "dest_port": rng.choice([22, 80, 443, 3306, 8080]),
            "username": f"user{rng.randrange(5000)}",
            "action": rng.choice(ACTIONS),
            "status": rng.choice(STATUSES),
            "process": rng.choice(["sshd", "nginx", "postgres", "java"]),
            "bytes_sent": rng.randrange(0, 1 << 20),
            "bytes_recv": rng.randrange(0, 1 << 20),
            "duration_ms": round(rng.random() * 5000, 3),
            "session_id": f"{rng.getrandbits(64):016x}",
        }
        line = json.dumps(event).encode()
        lines.append(line)
        size += len(line) + 1
    return lines


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


def upload(storage: Storage, tenant: str, objects: list[bytes]) -> None:
    """Objects into the intake bucket, gzip'd, as the receiver stores them."""
    writer = IntakeWriter(storage)
    for obj in objects:
        writer.write(tenant, "security", "ndjson", gzip.compress(obj, compresslevel=1), {})
