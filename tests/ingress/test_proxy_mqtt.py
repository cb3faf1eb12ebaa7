"""The proxy's `mqtt` input against Debian's mosquitto (`make test` installs it), published to by
paho-mqtt: messages through the receiver, piper and packer to Parquet; QoS 1 messages published
while the proxy is down kept by the broker for its persistent session; a proxy killed while
messages flow loses none; a broker that wants a password; configuration errors."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bytefreezer.errors import ConfigError
from bytefreezer.ingress.proxy.config import load_proxy_config
from bytefreezer.ingress.proxy.service import ProxyService
from tests.helpers import free_port, stop_process, wait_for, wait_for_port
from tests.ingress.conftest import Receiver
from tests.ingress.test_proxy import intake_records, proxy_config, until


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """mosquitto on a free port (anonymous, or with the password file the test writes)."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        pytest.fail("mosquitto is missing: `make test` installs Debian's package")
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 100000\n"
    )
    with open(tmp_path / "mosquitto.log", "wb") as log:
        process = subprocess.Popen([binary, "-c", str(config)], stdout=log, stderr=log)
    try:
        wait_for_port(port)
        yield port, config
    finally:
        stop_process(process)


def publish(port: int, messages: list[tuple[str, bytes]], qos: int = 1, **auth: str) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="publisher")
    if auth:
        client.username_pw_set(auth["username"], auth["password"])
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=qos).wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


def mqtt_service(receiver: Receiver, tmp_path: Path, port: int, **source: Any) -> ProxyService:
    return ProxyService(
        proxy_config(
            tmp_path, receiver.url, receiver.key,
            {"name": "sensors", "type": "mqtt", "servers": [f"mqtt://127.0.0.1:{port}"],
             "subject": "sensors/#", **source},
        )
    )  # fmt: skip


def numbers(receiver: Receiver) -> list[int]:
    return sorted(
        int(r["n"]) if "n" in r else int(r["raw"].split()[1]) for r in intake_records(receiver)
    )


def test_messages_to_parquet_and_those_published_while_the_proxy_is_down(
    receiver: Receiver, tmp_path: Path, broker: tuple[int, Path]
) -> None:
    port, _ = broker

    async def run(then: Any) -> None:
        service = mqtt_service(receiver, tmp_path, port)
        await service.start()
        try:
            await until(lambda: service.subscriptions["sensors"].connected)
            await asyncio.sleep(0.2)  # subscribed
            await then(service)
        finally:
            await service.stop()

    async def first(service: ProxyService) -> None:
        messages = [(f"sensors/room{n % 3}", json.dumps({"n": n}).encode()) for n in range(100)]
        messages.append(("sensors/text", b"plain 100\nplain 101\n"))
        messages.append(("other/topic", b'{"n": -1}'))  # not under sensors/#
        await asyncio.to_thread(publish, port, messages)
        await until(lambda: numbers(receiver) == list(range(102)))
        assert service.subscriptions["sensors"].messages_read == 101

    asyncio.run(run(first))
    # the proxy is down: its persistent session keeps what is published meanwhile
    publish(port, [("sensors/late", json.dumps({"n": n}).encode()) for n in range(102, 150)])

    async def second(service: ProxyService) -> None:
        await until(lambda: numbers(receiver) == list(range(150)))

    asyncio.run(run(second))
    table = receiver.pack("web")
    assert table is not None
    rows = table.to_pylist()
    assert len(rows) == 150
    assert {r["mqtt_topic"] for r in rows} == {
        "sensors/room0", "sensors/room1", "sensors/room2", "sensors/text", "sensors/late",
    }  # fmt: skip


def test_proxies_sharing_a_subscription_take_each_message_once(
    receiver: Receiver, tmp_path: Path, broker: tuple[int, Path]
) -> None:
    """Two proxies subscribed to `$share/edge/sensors/#` (a shared subscription: mosquitto
    hands each message to one member of the group), each with its own session: every message
    lands once, and both take some."""
    port, _ = broker
    first, second = (
        mqtt_service(receiver, tmp_path / name, port, subject="$share/edge/sensors/#",
                     durable=f"edge-{name}")
        for name in ("a", "b")
    )  # fmt: skip

    async def scenario() -> None:
        await first.start()
        await second.start()
        try:
            await until(
                lambda: (
                    first.subscriptions["sensors"].connected
                    and second.subscriptions["sensors"].connected
                )
            )
            await asyncio.sleep(0.3)  # subscribed
            messages = [(f"sensors/room{n % 4}", json.dumps({"n": n}).encode()) for n in range(200)]
            await asyncio.to_thread(publish, port, messages)
            await until(lambda: numbers(receiver) == list(range(200)), timeout=30)
            taken = [p.subscriptions["sensors"].messages_read for p in (first, second)]
            assert sum(taken) == 200 and min(taken) > 0, taken
        finally:
            await first.stop()
            await second.stop()

    asyncio.run(scenario())
    assert {r["mqtt_topic"] for r in intake_records(receiver)} == {
        f"sensors/room{n}" for n in range(4)
    }


def test_a_proxy_killed_while_messages_flow_loses_none(
    receiver: Receiver, tmp_path: Path, broker: tuple[int, Path]
) -> None:
    from tests.ingress.test_proxy_durability import proxy_config_file, proxy_process

    port, _ = broker
    api_port = free_port()
    source = {
        "name": "sensors", "type": "mqtt", "servers": [f"mqtt://127.0.0.1:{port}"],
        "subject": "sensors/#",
    }  # fmt: skip
    config = proxy_config_file(tmp_path, receiver, api_port, source, batch_max_age_seconds=0.05)
    process = proxy_process(config, tmp_path / "proxy.log")
    total = 3000
    try:
        wait_for_port(api_port)
        import httpx

        stats = f"http://127.0.0.1:{api_port}/api/v1/stats"
        wait_for(lambda: httpx.get(stats).json()["mqtt"]["sensors"]["connected"], 30)
        messages = [("sensors/a", json.dumps({"n": n}).encode()) for n in range(total)]
        publisher = asyncio.new_event_loop()
        sending = publisher.run_in_executor(None, publish, port, messages)
        wait_for(lambda: len(intake_records(receiver)) > 200, 30)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        process = proxy_process(config, tmp_path / "proxy.log")
        publisher.run_until_complete(sending)
        publisher.close()
        wait_for(lambda: set(numbers(receiver)) == set(range(total)), 60)
    finally:
        stop_process(process)
    found = numbers(receiver)
    assert set(found) == set(range(total))  # at least once: spooled, not acknowledged, again
    assert len(found) - total < total


def test_a_broker_that_wants_a_password(receiver: Receiver, tmp_path: Path) -> None:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    passwords = tmp_path / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwords), "edge", "s3cret"],
        check=True,
        capture_output=True,
    )
    passwords.chmod(0o600)
    port = free_port()
    config = tmp_path / "auth.conf"
    # started as root, mosquitto reads the password file as the user it drops to: stay ours
    config.write_text(
        f"user {pwd.getpwuid(os.getuid()).pw_name}\nlistener {port} 127.0.0.1\n"
        f"allow_anonymous false\npassword_file {passwords}\n"
    )
    process = subprocess.Popen(
        [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port)

        async def scenario() -> None:
            refused = mqtt_service(receiver, tmp_path / "refused", port, password="wrong",
                                   username="edge")  # fmt: skip
            await refused.start()
            try:
                await asyncio.sleep(1.0)
                assert not refused.subscriptions["sensors"].connected
            finally:
                await refused.stop()
            service = mqtt_service(receiver, tmp_path, port, username="edge", password="s3cret")
            await service.start()
            try:
                await until(lambda: service.subscriptions["sensors"].connected)
                await asyncio.sleep(0.2)
                await asyncio.to_thread(
                    publish, port, [("sensors/x", b'{"n": 1}')], username="edge", password="s3cret"
                )
                await until(lambda: numbers(receiver) == [1])
            finally:
                await service.stop()

        asyncio.run(scenario())
    finally:
        stop_process(process)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("subject: a/#", "needs one broker in servers"),
        ("servers: [mqtt://a:1883, mqtt://b:1883], subject: a/#", "needs one broker"),
        ("servers: [mqtt://a:1883]", "and a subject"),
        ("servers: ['http://a:80'], subject: a/#", "mqtt://host:port or mqtts://host:port"),
        ("servers: [mqtt://a:1883], subject: a/#, qos: 2", "qos"),
    ],
)
def test_configuration_errors(tmp_path: Path, extra: str, message: str) -> None:
    config = tmp_path / "proxy.yaml"
    config.write_text(
        "receiver_url: http://127.0.0.1:8080\ninputs:\n"
        f"- {{name: m, type: mqtt, tenant: acme, dataset: web, api_key: k, {extra}}}\n"
    )
    with pytest.raises(ConfigError, match=message):
        load_proxy_config(config)
