"""Each component alone, wired by configuration only: control over HTTP, S3 storage."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from tests.helpers import free_port, s3_client, stop_process, wait_for, wait_for_port

pytestmark = pytest.mark.s3
ADMIN_KEY = "bfk_0123456789ab_components-test-admin-secret"


@contextmanager
def component(name: str, env: dict[str, str], log_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = open(log_dir / f"{name}.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "bytefreezer.cli", name],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        stop_process(process)
        log.close()


def run_once(name: str, env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "bytefreezer.cli", name, "--once"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    result: dict[str, object] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


def test_components_alone_against_s3_and_remote_control(
    tmp_path: Path, s3_server: dict[str, str]
) -> None:
    suffix = uuid.uuid4().hex[:8]
    control_port, receiver_port = free_port(), free_port()
    env = {
        **os.environ,
        "BYTEFREEZER_STORAGE__BACKEND": "s3",
        "BYTEFREEZER_STORAGE__S3__ENDPOINT": s3_server["endpoint"].removeprefix("http://"),
        "BYTEFREEZER_STORAGE__S3__ACCESS_KEY": s3_server["access_key"],
        "BYTEFREEZER_STORAGE__S3__SECRET_KEY": s3_server["secret_key"],
        "BYTEFREEZER_BUCKETS__INTAKE": f"in-{suffix}",
        "BYTEFREEZER_BUCKETS__PIPER": f"pp-{suffix}",
        "BYTEFREEZER_DEFAULT_DESTINATION": f"s3://out-{suffix}/{{tenant}}/{{dataset}}",
        "BYTEFREEZER_CONTROL__URL": f"http://127.0.0.1:{control_port}",
        "BYTEFREEZER_CONTROL__API_KEY": ADMIN_KEY,
    }
    control_env = {
        **env,
        "BYTEFREEZER_CONTROL__PORT": str(control_port),
        "BYTEFREEZER_CONTROL__ADMIN_KEY": ADMIN_KEY,
        "BYTEFREEZER_CONTROL__DB_PATH": str(tmp_path / "control.db"),
    }
    control_env.pop("BYTEFREEZER_CONTROL__URL")
    receiver_env = {
        **env,
        "BYTEFREEZER_RECEIVER__HOST": "127.0.0.1",
        "BYTEFREEZER_RECEIVER__PORT": str(receiver_port),
        "BYTEFREEZER_RECEIVER__API_HOST": "127.0.0.1",
        "BYTEFREEZER_RECEIVER__API_PORT": str(free_port()),
    }
    s3 = s3_client(s3_server)
    for bucket in ("in", "pp", "out"):
        s3.create_bucket(Bucket=f"{bucket}-{suffix}")

    with component("control", control_env, tmp_path):
        wait_for_port(control_port, timeout=60)
        cli = [sys.executable, "-m", "bytefreezer.cli"]
        for args in (["tenants", "create", "acme"], ["datasets", "create", "acme", "web"]):
            subprocess.run([*cli, *args], env=env, check=True, capture_output=True, timeout=60)
        created = subprocess.run(
            [*cli, "keys", "create", "acme"], env=env, check=True, capture_output=True, timeout=60
        )
        key = json.loads(created.stdout)["key"]
        with component("receiver", receiver_env, tmp_path):
            wait_for_port(receiver_port, timeout=60)
            lines = "\n".join(
                json.dumps({"timestamp": "2026-05-01T08:00:00Z", "id": i}) for i in range(25)
            )
            response = httpx.post(
                f"http://127.0.0.1:{receiver_port}/acme/web",
                content=gzip.compress(lines.encode()),
                headers={"Authorization": f"Bearer {key}", "Content-Encoding": "gzip"},
            )
            assert response.status_code == 200, response.text
        assert run_once("piper", env)["claimed"] == 1
        # With the default buffer (60 s, 64 MB) the fresh staged object waits, durable, in
        # the piper bucket; a packer that packs every cycle takes it at once.
        assert run_once("packer", env)["claimed"] == 0
        assert s3.list_objects_v2(Bucket=f"out-{suffix}").get("KeyCount", 0) == 0
        assert (
            run_once("packer", {**env, "BYTEFREEZER_PACKER__BUFFER_SECONDS": "0"})["claimed"] == 1
        )
        components = httpx.get(
            f"http://127.0.0.1:{control_port}/api/v1/components",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ).json()
        assert {c["component"] for c in components} >= {"piper", "packer"}

    def output_ids() -> list[int]:
        listed = s3.list_objects_v2(Bucket=f"out-{suffix}", Prefix="acme/web/")
        ids: list[int] = []
        for obj in listed.get("Contents", []):
            body = s3.get_object(Bucket=f"out-{suffix}", Key=obj["Key"])["Body"].read()
            ids.extend(pq.read_table(io.BytesIO(body)).column("id").to_pylist())
        return ids

    ids = wait_for(output_ids, timeout=10)
    assert sorted(ids) == list(range(25))
