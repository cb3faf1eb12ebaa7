"""Shared helpers for the test suite: free ports, servers in threads, waiting, Parquet reads."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from hypercorn.asyncio import serve

from bytefreezer.servers import hypercorn_config


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, below Linux's ephemeral range (32768-60999): a
    port the kernel picked (bind to 0) could be handed to an outgoing connection before the
    server it is for binds it ("Address already in use" under the load tests' churn)."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 32768)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port found in 20000-32767")


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the thing waited for may not exist yet
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last error: {last_exc!r})")


def stop_process(process: subprocess.Popen[Any], timeout: float = 30) -> int:
    """SIGTERM a child process if it still runs, wait for it, SIGKILL it after ``timeout``;
    return its exit code (-9 when it had to be killed)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return -9


def up_process(
    data_dir: Path, log: IO[bytes] | int, port: int, **env: str
) -> subprocess.Popen[bytes]:
    """``bytefreezer up`` on 127.0.0.1 with its webhook on ``port`` and the other ports free,
    otherwise with its defaults; ``env`` adds or overrides BYTEFREEZER_* variables."""
    return subprocess.Popen(
        [sys.executable, "-m", "bytefreezer.cli", "up", "--data-dir", str(data_dir)],
        env={
            **os.environ,
            "BYTEFREEZER_RECEIVER__HOST": "127.0.0.1",
            "BYTEFREEZER_RECEIVER__PORT": str(port),
            "BYTEFREEZER_RECEIVER__API_HOST": "127.0.0.1",
            "BYTEFREEZER_RECEIVER__API_PORT": str(free_port()),
            "BYTEFREEZER_CONTROL__PORT": str(free_port()),
            **env,
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def start_up(data_dir: Path, log: IO[bytes], port: int, **env: str) -> subprocess.Popen[bytes]:
    """``up_process`` with the short poll intervals tests use."""
    short = {
        "BYTEFREEZER_PIPER__POLL_INTERVAL_SECONDS": "0.3",
        "BYTEFREEZER_PACKER__POLL_INTERVAL_SECONDS": "0.3",
        "BYTEFREEZER_PACKER__BUFFER_SECONDS": "0",
    }
    return up_process(data_dir, log, port, **{**short, **env})


def first_run_key(data_dir: Path) -> str:
    """The ingest key ``bytefreezer up`` printed on its first run."""
    text = (data_dir / "first-run.txt").read_text()
    return next(word for word in text.split() if word.startswith("bfk_"))


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:port."""

    def open_() -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex(("127.0.0.1", port)) == 0

    wait_for(open_, timeout)


@contextmanager
def serve_app(app: Any, port: int | None = None, tls: Any = None) -> Iterator[str]:
    """Serve an ASGI app on 127.0.0.1 in a background thread; yield its base URL."""
    port = port or free_port()
    scheme = "https" if tls is not None and tls.enabled else "http"
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(
            serve(app, hypercorn_config("127.0.0.1", port, tls), shutdown_trigger=stop.wait)
        )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_for_port(port)
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=15)


def read_parquet_dir(root: Path) -> pa.Table | None:
    """Every Parquet file under ``root`` (local) concatenated, or None when there is none."""
    files = sorted(root.rglob("*.parquet"))
    if not files:
        return None
    from bytefreezer.pipelines.schema import unify

    return unify([pq.read_table(f) for f in files])


T = TypeVar("T")


def scraped(component: str, run: Callable[[Any], T]) -> tuple[T, str]:
    """``run(telemetry)`` with a Prometheus-mode telemetry of ``component`` on a free port of
    127.0.0.1: its result, and the /metrics text scraped right after."""
    from bytefreezer.settings import load_settings
    from bytefreezer.telemetry import Telemetry

    port = free_port()
    monitoring = {"mode": "prometheus", "metrics_host": "127.0.0.1"}
    telemetry = Telemetry(load_settings(monitoring=monitoring), component, metrics_port=port)
    try:
        result = run(telemetry)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
            return result, response.read().decode()
    finally:
        telemetry.shutdown()


def promtool() -> str:
    """Prometheus's promtool (Debian's prometheus package, which `make test` installs)."""
    binary = shutil.which("promtool")
    if binary is None:
        import pytest

        pytest.fail("`promtool` is missing: `make test` installs Debian's prometheus package")
    return binary


def s3_client(server: dict[str, str]) -> Any:
    """A boto3 S3 client of the tests' SeaweedFS server, with its endpoint and keys."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=server["endpoint"],
        aws_access_key_id=server["access_key"],
        aws_secret_access_key=server["secret_key"],
        region_name="us-east-1",
    )
