"""TLS on the receiver, the control service and the proxy, with a locally generated certificate."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import trustme

from bytefreezer.control import HttpControl
from bytefreezer.control.app import create_app as control_app
from bytefreezer.errors import ControlUnavailable
from bytefreezer.ingress.proxy.config import ProxyConfig
from bytefreezer.ingress.proxy.service import ProxyService
from bytefreezer.ingress.receiver import build_state, create_app
from bytefreezer.settings import TlsSettings
from tests.conftest import fast_settings
from tests.helpers import free_port, serve_app, wait_for, wait_for_port
from tests.ingress.conftest import seeded_control


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    paths = {
        "ca": directory / "ca.pem",
        "cert": directory / "cert.pem",
        "key": directory / "key.pem",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    issued.private_key_pem.write_to_path(str(paths["key"]))
    with open(paths["cert"], "wb") as out:
        for blob in issued.cert_chain_pems:
            out.write(blob.bytes())
    return paths


def test_receiver_control_and_proxy_over_tls(tmp_path: Path, certificate: dict[str, Path]) -> None:
    tls = TlsSettings(cert_file=certificate["cert"], key_file=certificate["key"])
    settings = fast_settings(
        tmp_path / "data", tls={"cert_file": certificate["cert"], "key_file": certificate["key"]}
    )
    store = seeded_control(settings)
    admin = store.create_key(None, role="admin").key
    key = store.create_key("acme").key
    with ExitStack() as stack:
        control_url = stack.enter_context(serve_app(control_app(store), tls=tls))
        assert control_url.startswith("https://")
        trusted = HttpControl(control_url, admin, timeout=5, ca_file=str(certificate["ca"]))
        assert [t.name for t in trusted.list_tenants()] == ["acme", "other"]
        with pytest.raises(ControlUnavailable):  # an unknown CA is refused
            HttpControl(control_url, admin, timeout=5).list_tenants()

        from bytefreezer.storage import Storage

        storage = Storage(settings)
        storage.ensure_buckets()
        state = build_state(settings, trusted, storage)
        url = stack.enter_context(
            serve_app(create_app(settings, trusted, storage, state=state), tls=tls)
        )
        answer = httpx.post(
            f"{url}/acme/web",
            content=b'{"a": 1}\n',
            headers={"Authorization": f"Bearer {key}"},
            verify=str(certificate["ca"]),
        )
        assert answer.status_code == 200, answer.text
        with pytest.raises(httpx.HTTPError):  # plain HTTP to the TLS port gets nothing
            httpx.post(url.replace("https://", "http://") + "/acme/web", content=b"{}", timeout=5)

        config = ProxyConfig.model_validate(
            {
                "receiver_url": url,
                "receiver_ca_file": str(certificate["ca"]),
                "tls_cert_file": str(certificate["cert"]),
                "tls_key_file": str(certificate["key"]),
                "spool_dir": str(tmp_path / "spool"),
                "dead_letter_dir": str(tmp_path / "dead"),
                "batch_max_age_seconds": 0.1,
                "api_host": "127.0.0.1",
                "api_port": 0,
                "inputs": [
                    {
                        "name": "hooks",
                        "type": "http",
                        "host": "127.0.0.1",
                        "port": 0,
                        "tenant": "acme",
                        "dataset": "web",
                        "api_key": key,
                    }
                ],
            }
        )

        async def through_proxy() -> None:
            service = ProxyService(config)
            await service.start()
            try:
                async with httpx.AsyncClient(verify=str(certificate["ca"])) as client:
                    sent = await client.post(
                        f"https://127.0.0.1:{service.ports['hooks']}/",
                        content=b'{"via": "proxy"}\n',
                    )
                    assert sent.status_code == 200
                    health = await client.get(f"https://127.0.0.1:{service.ports['api']}/health")
                    assert health.json() == {"status": "ok"}
                deadline = asyncio.get_running_loop().time() + 20
                while (
                    service.stats.batches_delivered < 1
                    and asyncio.get_running_loop().time() < deadline
                ):
                    await asyncio.sleep(0.05)
                assert service.stats.batches_delivered == 1, service.stats
            finally:
                await service.stop()

        asyncio.run(through_proxy())
    import gzip

    bodies = [gzip.decompress(storage.intake.get(o.key)) for o in storage.intake.list("acme/web/")]
    assert any(b'"via":"proxy"' in body.replace(b" ", b"") for body in bodies)


def test_control_command_serves_https(tmp_path: Path, certificate: dict[str, Path]) -> None:
    port = free_port()
    env = {
        **os.environ,
        "BYTEFREEZER_DATA_DIR": str(tmp_path),
        "BYTEFREEZER_CONTROL__PORT": str(port),
        "BYTEFREEZER_TLS__CERT_FILE": str(certificate["cert"]),
        "BYTEFREEZER_TLS__KEY_FILE": str(certificate["key"]),
    }
    with open(tmp_path / "control.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bytefreezer.cli", "control"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, timeout=60)
        health = wait_for(
            lambda: httpx.get(
                f"https://127.0.0.1:{port}/api/v1/health", verify=str(certificate["ca"])
            ),
            timeout=20,
        )
        assert json.loads(health.text) == {"status": "ok"}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
