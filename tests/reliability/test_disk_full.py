"""The receiver's spool on a disk that really fills up (a 256 KiB tmpfs, so the kernel answers
ENOSPC), while storage is down: every body is either acknowledged and later lands in Parquet
exactly once, or refused with 503 and ``Retry-After``. The spool's own byte limit is set far
above the disk's size so that the disk, not the limit, is what refuses."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.conftest import SeaweedServer
from tests.helpers import free_port, wait_for
from tests.ingress.test_faults import (
    found_ids,
    pipeline_until_done,
    receiver_process,
    settings_for,
    setup_control,
)

# Mounts a small tmpfs over the spool directory in a private mount namespace, then runs the
# receiver there: the host's mounts are untouched and the mount goes away with the process.
_MOUNT_SPOOL = 'mkdir -p "$0" && mount -t tmpfs -o size=256k tmpfs "$0" && exec "$@"'


def _namespace_prefix() -> list[str]:
    """``unshare`` arguments that give the receiver its own mounts, or skip when impossible."""
    options = ["--mount"] if os.geteuid() == 0 else ["--user", "--map-root-user", "--mount"]
    probe = subprocess.run(
        ["unshare", *options, "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:  # pragma: no cover - depends on the machine's kernel settings
        pytest.skip(f"cannot mount a tmpfs in a private namespace: {probe.stderr.strip()}")
    return ["unshare", *options]


@pytest.mark.s3
def test_spool_disk_full_answers_503_and_loses_nothing_acknowledged(
    tmp_path: Path, own_s3_server: SeaweedServer
) -> None:
    settings = settings_for(tmp_path, own_s3_server)
    control, key = setup_control(settings)
    spool = settings.spool_path()
    prefix = [*_namespace_prefix(), "sh", "-c", _MOUNT_SPOOL, str(spool)]
    own_s3_server.stop()
    api_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    headers = {"Authorization": f"Bearer {key}"}
    acked: list[int] = []
    refused: list[int] = []
    with receiver_process(
        settings,
        tmp_path / "receiver.log",
        prefix=prefix,
        api_port=api_port,
        extra_env={"BYTEFREEZER_RECEIVER__SPOOL_MAX_BYTES": str(1 << 30)},
    ) as (process, url):
        with httpx.Client(timeout=30) as client:
            assert client.get(f"{api}/api/v1/spool").json()["max_bytes"] == 1 << 30
            next_id = 0
            while len(refused) < 5 * 10:  # five bodies refused
                assert next_id < 2_000, "the spool never filled up"
                ids = list(range(next_id, next_id + 10))  # about 20 KB gzipped: random padding
                next_id += 10
                body = "\n".join(json.dumps({"id": i, "pad": secrets.token_hex(2000)}) for i in ids)
                response = client.post(f"{url}/acme/web", content=body, headers=headers)
                if response.status_code == 200:
                    assert response.json()["status"] == "spooled", response.text
                    acked.extend(ids)
                else:
                    assert response.status_code == 503, response.text
                    assert int(response.headers["retry-after"]) >= 1
                    assert "spool full" in response.json()["error"], response.text
                    refused.extend(ids)
            stats = client.get(f"{api}/api/v1/spool").json()
            assert stats["write_errors"] >= 5, stats
            assert "No space left on device" in stats["last_write_error"], stats
            assert stats["bytes"] < 256 * 1024, stats  # the failed writes left nothing
            assert client.get(f"{api}/api/v1/health").status_code == 200
            assert len(acked) >= 30  # a few bodies fit on 256 KiB before the disk is full

            own_s3_server.start()
            wait_for(
                lambda: client.get(f"{api}/api/v1/spool").json()["objects"] == 0,
                timeout=60,
            )
            # With storage back, the disk that was full no longer matters.
            ids = list(range(next_id, next_id + 10))
            body = "\n".join(json.dumps({"id": i}) for i in ids)
            response = client.post(f"{url}/acme/web", content=body, headers=headers)
            assert response.status_code == 200, response.text
            assert response.json()["status"] == "stored"
            acked.extend(ids)
        assert process.poll() is None, "the receiver died on a full disk"
    pipeline_until_done(settings, control)
    found = found_ids(settings)
    print(
        f"disk full: acknowledged {len(acked)}, refused {len(refused)} (503), found "
        f"{len(found)}, duplicated {sum(1 for n in found.values() if n > 1)}"
    )
    assert found == Counter(acked), "an acknowledged record was lost or doubled"
    assert not set(refused) & set(found), "a refused body was stored anyway"
