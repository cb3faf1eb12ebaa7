"""An MQTT topic filter subscribed to by the proxy's `mqtt` input (Fluent Bit's `mqtt` input,
Telegraf's `mqtt_consumer`): a persistent session (clean session off, the client id kept), so
the broker keeps QoS 1 messages published while the proxy is away, and each QoS 1 message is
acknowledged (PUBACK) only once its records are in the spool, so a crash gets it again from the
broker (at least once) and nothing is lost. QoS 0 messages are at most once, as MQTT delivers
them. The broker's limit of unacknowledged messages a client has in flight (mosquitto's
`max_inflight_messages`, 20) holds publishers back while the spool is full.

A message's payload is a record per line (a JSON object line as it is, other text wrapped),
each with `mqtt_topic` unless it has a field of that name.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bytefreezer.ingress.proxy.records import records_with, split_lines
from bytefreezer.lines import is_blank

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Received:
    """One message taken from the broker, not yet acknowledged."""

    mid: int
    qos: int
    topic: str
    payload: bytes
    connection: int  # which connection it came on: a message id means nothing on another


def message_records(messages: list[Received], max_line_bytes: int) -> list[bytes]:
    """The records of messages' payloads."""
    records: list[bytes] = []
    for message in messages:
        text = message.payload.decode("utf-8", "replace")
        lines = [line[:max_line_bytes] for line in split_lines(text) if not is_blank(line)]
        records += records_with(lines, {"mqtt_topic": message.topic})
    return records


def broker_address(url: str) -> tuple[str, int, bool]:
    """Host, port and TLS of ``mqtt://host:1883`` or ``mqtts://host:8883``."""
    parts = urlsplit(url if "://" in url else f"mqtt://{url}")
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError(f"an MQTT broker is mqtt://host:port or mqtts://host:port, not {url!r}")
    tls = parts.scheme in ("mqtts", "ssl")
    return parts.hostname or "localhost", parts.port or (8883 if tls else 1883), tls


class Subscription:
    """A paho-mqtt client on its own network thread, handing messages to the event loop."""

    def __init__(
        self,
        server: str,
        topic: str,
        *,
        client_id: str,
        qos: int,
        username: str | None,
        password: str | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.host, self.port, tls = broker_address(server)
        self.topic, self.qos = topic, qos
        self.queue: asyncio.Queue[Received] = asyncio.Queue()
        self.messages_read = 0
        self.connected = False
        self.connection = 0
        self._loop = loop
        self._said = ""
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,  # the broker keeps the subscription and QoS 1 messages
            manual_ack=True,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls:
            self._client.tls_set()
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    def start(self) -> None:
        """Connect (retried in the background while the broker is away) and subscribe."""
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._log(f"broker {self.host}:{self.port} refused the connection: {reason}")
            return
        self.connected = True
        self.connection += 1  # unacknowledged messages of the last one come again
        self._said = ""
        client.subscribe(self.topic, qos=self.qos)  # again after a reconnect: harmless

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.connected = False
        if reason.is_failure:
            self._log(f"disconnected from {self.host}:{self.port}: {reason}")

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        received = Received(
            message.mid, message.qos, message.topic, bytes(message.payload), self.connection
        )
        self._loop.call_soon_threadsafe(self.queue.put_nowait, received)

    def _log(self, said: str) -> None:
        if said != self._said:  # a broker that stays away is not logged every retry
            self._said = said
            log.error("mqtt input: %s", said)

    def ack(self, messages: list[Received]) -> None:
        """Acknowledge spooled QoS 1 messages (PUBACK); QoS 0 ones need none. A message taken
        on an earlier connection is not acknowledged: the broker sends it again (its id may be
        another message's now), and it is spooled twice rather than lost."""
        for message in messages:
            if message.qos > 0 and message.connection == self.connection:
                self._client.ack(message.mid, message.qos)
        self.messages_read += len(messages)

    def close(self) -> None:
        """Disconnect; what was taken and not acknowledged the broker sends again."""
        self._client.disconnect()
        self._client.loop_stop()
