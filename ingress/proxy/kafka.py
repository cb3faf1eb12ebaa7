"""Kafka topics read by the proxy's `kafka` input (Vector's `kafka` source, Fluent Bit's `kafka`
input, Firehose reading from MSK), as a member of a consumer group: proxies of one group share
the topics' partitions, and Kafka moves them when one comes or goes.

Offsets move only once records are durable: a message's offset is stored (librdkafka's offset
store, committed every `auto.commit.interval.ms`, on a rebalance and on close) only after its
records are in the spool. A proxy that crashes, or loses its partitions, before that has them
read again from the last committed offset: at least once, nothing lost. While the spool is full
the partitions are paused, not abandoned, so the proxy stays in its group.

A message's value is a record per line (a JSON object line as it is, other text wrapped), each
with `kafka_topic`, `kafka_partition`, `kafka_offset`, and `kafka_key`, `kafka_timestamp`
(milliseconds) and `kafka_headers` (an object of text) where the message has them, unless the
line has a field of that name.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from bytefreezer.errors import ConfigError
from bytefreezer.ingress.proxy.records import records_with, split_lines
from bytefreezer.lines import is_blank

log = logging.getLogger(__name__)

BATCH_MESSAGES = 10_000  # the most one read takes; a read also ends after its timeout

# Set by the input itself: offsets must move only once spooled.
_OWN = ("enable.auto.commit", "enable.auto.offset.store", "group.id", "bootstrap.servers")


def consumer_settings(
    servers: list[str],
    *,
    group_id: str,
    read_from: str,
    username: str | None = None,
    password: str | None = None,
    sasl_mechanism: str | None = None,
    tls: bool = False,
    ca_file: str | None = None,
    options: dict[str, str] | None = None,
) -> dict[str, Any]:
    """librdkafka's configuration of a `kafka` input's consumer."""
    settings: dict[str, Any] = dict(options or {})
    taken = sorted(set(settings) & set(_OWN))
    if taken:
        raise ConfigError(
            f"kafka_options cannot set {', '.join(taken)}: the input sets them (servers, "
            "group_id; offsets are stored only once spooled)"
        )
    settings.update(
        {
            "bootstrap.servers": ",".join(servers),
            "group.id": group_id,
            "auto.offset.reset": "earliest" if read_from == "beginning" else "latest",
            "enable.auto.commit": True,  # commits what is stored, every 5 s and on rebalance
            "enable.auto.offset.store": False,  # stored by the input once spooled
            "enable.partition.eof": False,
        }
    )
    if username is not None:
        settings["sasl.mechanism"] = sasl_mechanism or "PLAIN"
        settings["sasl.username"] = username
        settings["sasl.password"] = password or ""
    protocol = ("SASL_" if username is not None else "") + ("SSL" if tls else "PLAINTEXT")
    if protocol != "PLAINTEXT":  # librdkafka's own default
        settings.setdefault("security.protocol", protocol)
    if ca_file is not None:
        settings["ssl.ca.location"] = ca_file
    return settings


def _headers(headers: list[tuple[str, bytes | None]]) -> dict[str, str | None]:
    """A message's headers as an object of text (the last of a repeated name)."""
    return {name: None if value is None else value.decode("utf-8", "replace")
            for name, value in headers}  # fmt: skip


def message_records(messages: list[Any], max_line_bytes: int) -> list[bytes]:
    """The records of messages' values, each with where it came from (as ``records_with``
    makes them). A value that is one ASCII JSON object line naming no `kafka_` field, the usual
    message, is spliced as bytes: it took 14 µs a message through ``records_with``."""
    records: list[bytes] = []
    topics: dict[str, bytes] = {}
    for message in messages:
        value = message.value()
        if not value:
            continue  # a tombstone (null value) or an empty message holds no record
        topic, key, headers = message.topic(), message.key(), message.headers()
        kind, stamp = message.timestamp()
        body = value.strip()
        if (
            body[:1] == b"{"
            and body[-1:] == b"}"
            and len(body) <= max_line_bytes
            and body.isascii()
            and b"\n" not in body
            and b'"kafka_' not in body
        ):
            head = topics.get(topic)
            if head is None:
                head = topics[topic] = b'{"kafka_topic":' + orjson.dumps(topic)
            parts = [
                head,
                b',"kafka_partition":%d,"kafka_offset":%d'
                % (message.partition(), message.offset()),
            ]
            if key is not None:
                parts.append(b',"kafka_key":' + orjson.dumps(key.decode("utf-8", "replace")))
            if kind != 0:
                parts.append(b',"kafka_timestamp":%d' % stamp)
            if headers:
                parts.append(b',"kafka_headers":' + orjson.dumps(_headers(headers)))
            rest = body[1:].lstrip()
            parts.append(rest if rest[:1] == b"}" else b"," + rest)
            records.append(b"".join(parts))
            continue
        meta: dict[str, Any] = {
            "kafka_topic": topic,
            "kafka_partition": message.partition(),
            "kafka_offset": message.offset(),
        }
        if key is not None:
            meta["kafka_key"] = key.decode("utf-8", "replace")
        if kind != 0:  # TIMESTAMP_NOT_AVAILABLE
            meta["kafka_timestamp"] = stamp
        if headers:
            meta["kafka_headers"] = _headers(headers)
        text = value.decode("utf-8", "replace")
        lines = [line[:max_line_bytes] for line in split_lines(text) if not is_blank(line)]
        records += records_with(lines, meta)
    return records


class TopicReader:
    """A consumer group member: its reads, offsets stored once spooled, and pauses while the
    spool is full. Its methods block (librdkafka's calls) and are called from one thread at a
    time."""

    def __init__(self, settings: dict[str, Any], topics: list[str], *, name: str) -> None:
        from confluent_kafka import Consumer, KafkaException

        self.name = name
        self.messages_read = 0
        self.lag = 0  # messages behind the partitions' ends, as of the last read
        self.assigned: list[Any] = []
        self.paused = False
        self._pending: list[Any] = []  # taken while paused (a partition assigned meanwhile)
        self._said = ""
        try:
            self._consumer = Consumer(settings, logger=log)
        except KafkaException as exc:
            raise ConfigError(f"kafka input {name}: {exc.args[0].str()}") from None
        self._consumer.subscribe(
            topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        consumer.assign(partitions)
        self.assigned = list(partitions)
        if self.paused and partitions:
            consumer.pause(partitions)  # the spool is still full

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        # what was spooled is stored, and librdkafka commits it before it lets them go
        self.assigned = []

    def take(self, timeout: float) -> list[Any]:
        """Messages read: those already fetched, up to ``BATCH_MESSAGES``, once the first has
        come (waiting up to ``timeout`` seconds for it); errors of the cluster are logged, not
        returned."""
        taken, self._pending = self._pending, []
        if not taken:  # wait for the first only: a batch is what has come by then
            first = self._consumer.poll(timeout)
            taken = [] if first is None else [first]
        if taken:
            taken += self._consumer.consume(BATCH_MESSAGES - len(taken), 0)
        messages = []
        for message in taken:
            error = message.error()
            if error is None:
                messages.append(message)
            elif str(error) != self._said:  # a broker that stays away is not logged every read
                self._said = str(error)
                log.error("kafka input %s: %s", self.name, error)
        if messages:
            self._said = ""
        return messages

    def done(self, messages: list[Any]) -> None:
        """Store the offsets past ``messages``, which are spooled (so the partitions, if the
        spool had paused them, read on); librdkafka commits them. A partition revoked meanwhile
        refuses them: its new owner reads those again."""
        from confluent_kafka import KafkaException, TopicPartition

        self.resume()
        ends: dict[tuple[str, int], int] = {}
        for message in messages:
            at = (message.topic(), message.partition())
            ends[at] = max(ends.get(at, -1), message.offset() + 1)
        if ends:
            offsets = [TopicPartition(topic, part, end) for (topic, part), end in ends.items()]
            try:
                self._consumer.store_offsets(offsets=offsets)
            except KafkaException as exc:
                log.warning("kafka input %s: offsets not stored (%s)", self.name, exc)
        self.messages_read += len(messages)
        self._measure_lag()

    def _measure_lag(self) -> None:
        from confluent_kafka import KafkaException

        try:
            lag = 0
            for position in self._consumer.position(self.assigned):
                _, high = self._consumer.get_watermark_offsets(position, cached=True)
                if position.offset >= 0 and high >= 0:
                    lag += max(high - position.offset, 0)
            self.lag = lag
        except KafkaException:
            pass  # a partition moved meanwhile: measured at the next read

    def hold(self) -> None:
        """The spool is full: pause the partitions (once) and serve the group meanwhile, so the
        proxy is not taken for dead and its partitions moved."""
        if not self.paused:
            self.paused = True
            self._consumer.pause(self._consumer.assignment())
        message = self._consumer.poll(0)
        if message is not None:
            self._pending.append(message)

    def resume(self) -> None:
        """Room again: read on from where the spooled messages end."""
        if self.paused:
            self.paused = False
            self._consumer.resume(self._consumer.assignment())

    def close(self) -> None:
        """Leave the group, committing what was stored; what was read and not spooled is read
        again by whoever takes the partitions."""
        self._consumer.close()
