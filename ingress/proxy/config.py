"""The proxy's configuration (`bytefreezer proxy --config proxy.yaml`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from bytefreezer.errors import ConfigError, validation_problems
from bytefreezer.ingress.proxy.containers import ContainerFormat
from bytefreezer.ingress.proxy.mqtt import broker_address
from bytefreezer.keys import validate_name
from bytefreezer.settings import expand_env


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


UDP_RECEIVE_BUFFER = 8 << 20  # a burst of ~3,000 full sFlow datagrams, not the kernel's 208 KB
DATAGRAM_TYPES = ("udp", "netflow", "sflow", "ebpf")


class ForwardUser(_Config):
    """A user a `forward` input's clients may prove in the handshake."""

    username: str = Field(min_length=1, description="User name.")
    password: SecretStr = Field(description="Its password.")


class InputConfig(_Config):
    """One listener and where its data goes."""

    name: str = Field(description="Name of the input (in stats and dead letters).")
    type: Literal[
        "udp",
        "tcp",
        "syslog",
        "http",
        "netflow",
        "sflow",
        "ebpf",
        "forward",
        "nats",
        "relp",
        "file",
        "kinesis",
        "sqs",
        "journald",
        "mqtt",
        "kafka",
    ] = Field(
        description="Listener kind; `netflow` takes NetFlow v5, v9 and IPFIX export packets "
        "over UDP, a JSON record per flow; `sflow` takes sFlow version 5 datagrams over UDP, a "
        "JSON record per flow or counter sample; `ebpf` takes UDP datagrams of one JSON "
        "document each (eBPF agents' events, pretty-printed or compact), a record per document;"
        " `forward` takes the Fluentd forward protocol over TCP (Fluent Bit's and Fluentd's "
        "`forward` outputs), a JSON record per event; `nats` subscribes to a NATS subject (or a"
        " JetStream stream), a record per line of each message; `relp` takes RELP over TCP "
        "(rsyslog's omrelp), a syslog record per message, each acknowledged once spooled; "
        "`file` follows the files `paths` match, a record per line; `kinesis` reads a Kinesis "
        "data stream's shards; `sqs` reads an SQS queue's messages (or, with "
        "`s3_notifications`, the S3 objects they announce), each deleted from the queue once "
        "its records are spooled; `journald` follows the systemd journal (journalctl), a record"
        " per entry, its cursor checkpointed once spooled; `mqtt` subscribes to an MQTT topic "
        "filter in a persistent session, each QoS 1 message acknowledged once spooled; `kafka` "
        "reads Kafka topics as a member of a consumer group, offsets committed only once "
        "spooled."
    )
    protocol: Literal["udp", "tcp"] = Field("udp", description="Transport of a `syslog` input.")
    host: str = Field("0.0.0.0", description="Listen address.")
    port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Listen port (0 picks a free one); not for `nats`, `file`, `kinesis`, `sqs`, "
        "`journald`, `mqtt` and `kafka`.",
    )
    tenant: str = Field(description="Tenant the data belongs to.")
    dataset: str = Field(description="Dataset the data goes to.")
    api_key: SecretStr = Field(description="Ingest key for the receiver.")
    syslog_format: Literal["auto", "rfc3164", "rfc5424"] = Field(
        "auto", description="Syslog flavour expected by a `syslog` or `relp` input."
    )
    auth_token: SecretStr | None = Field(
        None, description="Bearer token an `http` input requires from its clients."
    )
    servers: list[str] = Field(
        default_factory=list,
        description="NATS servers of a `nats` input (`nats://host:4222`); the broker of an "
        "`mqtt` input (one: `mqtt://host:1883`, or `mqtts://host:8883` for TLS); the bootstrap "
        "brokers of a `kafka` input (`host:9092`).",
    )
    topics: list[str] = Field(
        default_factory=list,
        description="Topics a `kafka` input reads; one starting with `^` is a regular "
        "expression (`^logs-.*`), topics created later that match it included.",
    )
    group_id: str | None = Field(
        None,
        description="Consumer group of a `kafka` input (default bytefreezer-<name>): proxies of "
        "one group share the topics' partitions, and the group's committed offsets say where a "
        "restarted proxy reads on.",
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None,
        description="SASL mechanism a `kafka` input proves `username` and `password` with "
        "(default PLAIN when a username is set).",
    )
    tls: bool = Field(False, description="A `kafka` input connects over TLS.")
    ca_file: Path | None = Field(
        None, description="CA bundle that signs a `kafka` input's brokers' certificates."
    )
    kafka_options: dict[str, str] = Field(
        default_factory=dict,
        description="Any other librdkafka consumer setting of a `kafka` input "
        "(`fetch.max.bytes`, `session.timeout.ms`, `client.rack`; Vector's `librdkafka_options`).",
    )
    subject: str | None = Field(
        None,
        description="Subject a `nats` input subscribes to; the topic filter an `mqtt` input "
        "subscribes to (`sensors/#`).",
    )
    qos: Literal[0, 1] = Field(
        1,
        description="QoS an `mqtt` input subscribes with: 1, each message acknowledged once "
        "spooled (at least once); 0, at most once.",
    )
    username: str | None = Field(
        None, description="User name an `mqtt` or `kafka` input connects with."
    )
    password: SecretStr | None = Field(
        None, description="Its password (an `mqtt` input's, or a `kafka` input's SASL password)."
    )
    queue: str | None = Field(
        None, description="Queue group of a `nats` input: proxies of one group share messages."
    )
    stream: str | None = Field(
        None,
        description="JetStream stream of a `nats` input: a durable consumer whose messages are "
        "acknowledged once spooled (at least once); without it, core NATS (at most once). The "
        "stream a `kinesis` input reads.",
    )
    region: str | None = Field(
        None,
        description="AWS region of a `kinesis` input's stream or an `sqs` input's queue "
        "(default $AWS_REGION).",
    )
    endpoint_url: str | None = Field(
        None,
        description="Kinesis or SQS endpoint of a `kinesis` or `sqs` input other than AWS's "
        "(LocalStack, kinesalite, ElasticMQ); credentials come from the environment as for any "
        "AWS client.",
    )
    queue_url: str | None = Field(None, description="URL of the queue an `sqs` input reads.")
    s3_notifications: bool = Field(
        False,
        description="An `sqs` input's messages are S3 event notifications (from S3, through SNS "
        "or EventBridge): each object announced as created is read, gzip'd or not, a record per "
        "line (a CloudTrail log file a record per event), with `s3_bucket` and `s3_key`.",
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="S3 endpoint the objects of an `sqs` input's notifications are read from, "
        "other than AWS's (MinIO, SeaweedFS; path-style requests).",
    )
    wait_seconds: int = Field(
        10,
        ge=0,
        le=20,
        description="How long an `sqs` input's receive waits for a message (SQS long polling).",
    )
    visibility_timeout_seconds: int = Field(
        300,
        ge=1,
        le=43200,
        description="How long a message an `sqs` input took stays invisible to other readers; "
        "extended while a large object is read. A message not deleted in that time (the proxy "
        "died) is read again.",
    )
    durable: str | None = Field(
        None,
        description="Durable consumer name with `stream` (default bytefreezer-<name>); the "
        "client id of an `mqtt` input's persistent session (default bytefreezer-<name>).",
    )
    nats_token: SecretStr | None = Field(None, description="Token a `nats` input connects with.")
    shared_key: SecretStr | None = Field(
        None,
        description="Shared key a `forward` input's clients must prove in the protocol's "
        "handshake (Fluent Bit's `Shared_Key`); none: no handshake.",
    )
    paths: list[str] = Field(
        default_factory=list,
        description="Glob patterns of the files a `file` input follows (`/var/log/app/*.log`).",
    )
    read_from: Literal["beginning", "end"] = Field(
        "beginning",
        description="Where a `file` input starts in the files it finds at its first start, "
        "without checkpoints (files that appear later are read from their beginning); where a "
        "`kinesis` input starts in its shards at its first start (TRIM_HORIZON or LATEST); where "
        "a `journald` input starts in the journal at its first start (all of it, or new entries); "
        "where a `kafka` input's group starts in a partition it has no committed offset of.",
    )
    multiline_start: str | None = Field(
        None,
        description="A `file` input joins lines into one record: a record begins at a line "
        "this regular expression matches (`^\\d{4}-\\d{2}-\\d{2}`), and the lines that "
        "follow (a stack trace) join it.",
    )
    multiline_timeout_seconds: float = Field(
        1.0,
        gt=0,
        le=3600,
        description="A `file` input's last record is complete once no line joined it for this "
        "long.",
    )
    container_format: ContainerFormat | None = Field(
        None,
        description="A `file` input reads container runtimes' log files: `cri` (containerd, "
        "CRI-O: `/var/log/pods/*/*/*.log`) or `docker` (Docker's json-file driver). Each "
        "container line is a record of its `timestamp`, `stream` and `log` (its parts joined), "
        "with `kubernetes` (namespace, pod, container) from a Kubernetes log path.",
    )
    inotify: bool = Field(
        True,
        description="A `file` input reads new lines and files as soon as Linux's inotify "
        "reports a change in their directories, besides looking every "
        "`poll_interval_seconds`; false: polling alone (inotify is also left alone where the "
        "system has none or refuses a watch).",
    )
    poll_interval_seconds: float = Field(
        0.25,
        gt=0,
        le=60,
        description="How often a `file` input looks for new lines and files, and a `kinesis` "
        "input for new records (Kinesis takes 5 reads a second per shard).",
    )
    journal_directory: Path | None = Field(
        None,
        description="A `journald` input reads the journal files in this directory (a host's "
        "/var/log/journal mounted elsewhere, or files systemd-journal-remote writes); none: the "
        "system journal.",
    )
    units: list[str] = Field(
        default_factory=list,
        description="A `journald` input keeps only the entries of these systemd units "
        "(`nginx.service`); none: every entry.",
    )
    journalctl: str = Field(
        "journalctl", description="The journalctl a `journald` input runs (a path, or on PATH)."
    )
    users: list[ForwardUser] = Field(
        default_factory=list,
        description="Users a `forward` input's clients must prove one of in the handshake, "
        "besides the shared key (Fluentd's `<user>`, Fluent Bit's `Username`/`Password`).",
    )
    max_body_bytes: int = Field(
        10 * 1024 * 1024,
        description="Largest body an `http` input takes, or message a `forward` or `relp` input "
        "takes.",
    )
    max_line_bytes: int = Field(1024 * 1024, description="Longer lines are cut to this size.")
    receive_buffer_bytes: int | None = Field(
        None,
        ge=4096,
        le=1 << 30,
        description="Socket receive buffer a UDP input (`udp`, `syslog` over UDP, `netflow`, "
        "`sflow`, `ebpf`) asks the kernel for (default 8 MiB): datagrams that arrive while it is "
        "full are dropped by the kernel, and counted in `bytefreezer_proxy_udp_drops_total`. "
        "Linux caps it at `net.core.rmem_max`; the proxy logs a warning when it gets less than "
        "a size set here.",
    )

    @field_validator("tenant", "dataset")
    @classmethod
    def _names(cls, value: str) -> str:
        return validate_name(value)

    @field_validator("multiline_start")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(
                    f"multiline_start {value!r} is not a regular expression: {exc}"
                ) from None
        return value

    @property
    def listen_port(self) -> int:
        """The port a listening input binds (the validator requires one)."""
        if self.port is None:  # pragma: no cover - refused when loaded
            raise ValueError(f"input {self.name} has no port")
        return self.port

    @model_validator(mode="after")
    def _fields_of_its_type(self) -> InputConfig:
        if self.users and self.shared_key is None:
            raise ValueError(
                f"input {self.name}: users are proven in the shared-key handshake; set shared_key"
            )
        if self.shared_key is not None and self.type != "forward":
            raise ValueError(f"shared_key is for forward inputs; input {self.name} is {self.type}")
        if (self.s3_notifications or self.s3_endpoint_url) and self.type != "sqs":
            raise ValueError(
                f"s3_notifications and s3_endpoint_url are for sqs inputs; input {self.name} is "
                f"{self.type}"
            )
        if (self.journal_directory or self.units) and self.type != "journald":
            raise ValueError(
                f"journal_directory and units are for journald inputs; input {self.name} is "
                f"{self.type}"
            )
        if (self.paths or self.multiline_start or self.container_format) and self.type != "file":
            raise ValueError(
                "paths, multiline_start and container_format are for file inputs; input "
                f"{self.name} is {self.type}"
            )
        if self.multiline_start and self.container_format:
            raise ValueError(
                f"input {self.name}: container_format joins a container's lines itself; "
                "multiline_start is for other files"
            )
        if (
            self.topics
            or self.group_id
            or self.sasl_mechanism
            or self.tls
            or self.ca_file
            or self.kafka_options
        ) and self.type != "kafka":
            raise ValueError(
                "topics, group_id, sasl_mechanism, tls, ca_file and kafka_options are for kafka "
                f"inputs; input {self.name} is {self.type}"
            )
        datagrams = self.type in DATAGRAM_TYPES or (
            self.type == "syslog" and self.protocol == "udp"
        )
        if self.receive_buffer_bytes is not None and not datagrams:
            raise ValueError(
                "receive_buffer_bytes is for UDP inputs (udp, syslog over UDP, netflow, sflow, "
                f"ebpf); input {self.name} is {self.type}"
                + (" over TCP" if self.type == "syslog" else "")
            )
        if self.type == "nats":
            if not self.servers or not self.subject:
                raise ValueError(f"nats input {self.name} needs servers and a subject")
        elif self.type == "file":
            if not self.paths:
                raise ValueError(f"file input {self.name} needs paths (glob patterns)")
        elif self.type == "kinesis":
            if not self.stream:
                raise ValueError(f"kinesis input {self.name} needs a stream")
        elif self.type == "sqs":
            if not self.queue_url:
                raise ValueError(f"sqs input {self.name} needs a queue_url")
        elif self.type == "journald":
            pass  # the system journal by default
        elif self.type == "mqtt":
            if len(self.servers) != 1 or not self.subject:
                raise ValueError(
                    f"mqtt input {self.name} needs one broker in servers and a subject (topic "
                    "filter)"
                )
            broker_address(self.servers[0])
        elif self.type == "kafka":
            if not self.servers or not self.topics:
                raise ValueError(f"kafka input {self.name} needs servers (brokers) and topics")
            if self.password is not None and self.username is None:
                raise ValueError(f"kafka input {self.name}: a password needs a username")
            for topic in self.topics:
                if topic.startswith("^"):
                    try:
                        re.compile(topic)
                    except re.error as exc:
                        raise ValueError(
                            f"kafka input {self.name}: topic pattern {topic!r} is not a regular "
                            f"expression: {exc}"
                        ) from None
        elif self.port is None:
            raise ValueError(f"input {self.name} needs a port")
        return self


class ProxyConfig(_Config):
    """Everything the proxy needs."""

    receiver_url: str = Field(description="Base URL of the receiver's webhook port.")
    inputs: list[InputConfig] = Field(min_length=1, description="Listeners.")
    spool_dir: Path = Field(Path("./proxy-spool"), description="Batches waiting for delivery.")
    spool_max_bytes: int = Field(
        1024 * 1024 * 1024, description="Spool bound; input is refused beyond it."
    )
    dead_letter_dir: Path = Field(
        Path("./proxy-dead-letters"), description="Batches refused for good."
    )
    dead_letter_max_bytes: int = Field(
        256 * 1024 * 1024, description="Dead-letter bound; the oldest are evicted beyond it."
    )
    batch_max_bytes: int = Field(1024 * 1024, description="Flush a batch at this many bytes.")
    batch_max_lines: int = Field(10_000, description="Flush a batch at this many lines.")
    batch_max_age_seconds: float = Field(1.0, description="Flush a batch at most this old.")
    retry_initial_seconds: float = Field(0.5, description="First retry delay.")
    retry_max_seconds: float = Field(30.0, description="Longest retry delay.")
    request_timeout_seconds: float = Field(30.0, description="Timeout of one delivery.")
    api_host: str = Field("0.0.0.0", description="Listen address of the proxy's API.")
    api_port: int = Field(
        8086, description="Port of the proxy's API (health, stats, dead letters)."
    )
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate: serve the http and forward inputs and the API over TLS."
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of that certificate.")
    receiver_ca_file: Path | None = Field(
        None,
        description="CA bundle that signs an https receiver's certificate (default: system CAs).",
    )


def load_proxy_config(path: Path | str) -> ProxyConfig:
    """Read and validate the YAML file; ``ConfigError`` names each problem."""
    try:
        data = yaml.safe_load(expand_env(Path(path).read_text(), f"proxy config {path}"))
    except OSError as exc:
        raise ConfigError(f"cannot read proxy config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"proxy config {path} is not valid YAML: {exc}") from None
    try:
        return ProxyConfig.model_validate(data or {})
    except ValidationError as exc:
        problems = validation_problems(exc)
        raise ConfigError(f"invalid proxy config {path}: {problems}") from None
