"""Each component started locally with exactly the environment and arguments its rendered
Deployment gives it (host names mapped to local test servers) becomes ready."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.deploy.charts import BYTEFREEZER, env_of, find, render
from tests.helpers import free_port, stop_process, wait_for, wait_for_port

pytestmark = pytest.mark.s3


def local_env(
    deployment: dict[str, Any],
    secrets: dict[str, dict[str, str]],
    hosts: dict[str, str],
    data: Path,
) -> dict[str, str]:
    """The Deployment's environment as a local process gets it."""
    env: dict[str, str] = {}
    for name, value in env_of(deployment).items():
        if isinstance(value, dict) and "secret" in value:
            value = secrets[value["secret"]][value["key"]]
        elif isinstance(value, dict):
            value = (
                deployment["metadata"]["name"] + "-local"
            )  # fieldRef metadata.name: the pod name
        for cluster, local in hosts.items():
            value = value.replace(cluster, local)
        if value == "/data" or value.startswith("/data/"):
            value = str(data) + value[len("/data") :]
        env[name] = value
    return env


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BYTEFREEZER_")}
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bytefreezer.cli", *args],
            env={**base, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_rendered_deployments_start_and_become_ready(
    tmp_path: Path, s3_server: dict[str, str]
) -> None:
    values = {"minio": {"enabled": True, "rootUser": S3_ACCESS_KEY, "rootPassword": S3_SECRET_KEY}}
    objects = render(BYTEFREEZER, values)
    secrets = {
        o["metadata"]["name"]: o.get("stringData", {}) for o in objects if o["kind"] == "Secret"
    }
    control_port = free_port()
    hosts = {
        "minio:9000": s3_server["endpoint"].removeprefix("http://"),
        "bf-bytefreezer-control:8082": f"127.0.0.1:{control_port}",
    }
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_server["endpoint"],
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
        region_name="us-east-1",
    )
    for bucket in ("intake", "piper", "geoip"):  # what the chart's bucket job does
        if bucket not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
            s3.create_bucket(Bucket=bucket)

    control = find(objects, "Deployment", "bf-bytefreezer-control")
    env = local_env(control, secrets, hosts, tmp_path / "control")
    env["BYTEFREEZER_CONTROL__PORT"] = str(control_port)  # the Service's port, mapped like its host
    args = control["spec"]["template"]["spec"]["containers"][0]["args"]
    control_process = start(args, env, tmp_path / "control.log")
    try:
        wait_for_port(control_port, timeout=60)
        for name, api_port in (("receiver", 8081), ("piper", 8082), ("packer", 8083)):
            deployment = find(objects, "Deployment", f"bf-bytefreezer-{name}")
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            probe = container["readinessProbe"]["httpGet"]
            assert (
                probe["port"] == "api"
                and {"name": "api", "containerPort": api_port, "protocol": "TCP"}
                in container["ports"]
            )
            process = start(
                container["args"],
                local_env(deployment, secrets, hosts, tmp_path / name),
                tmp_path / f"{name}.log",
            )
            try:
                wait_for(
                    lambda port=api_port, path=probe["path"]: (
                        httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).status_code == 200
                    ),
                    timeout=90,
                )
                live = container["livenessProbe"]["httpGet"]["path"]
                assert httpx.get(f"http://127.0.0.1:{api_port}{live}").json() == {"status": "ok"}
            finally:
                assert stop_process(process) == 0, (tmp_path / f"{name}.log").read_text()[-2000:]
    finally:
        stop_process(control_process)
