"""Typed settings: environment variables ``BYTEFREEZER_*`` over an optional YAML file over defaults.

Nested settings use ``__`` in environment variables: ``BYTEFREEZER_STORAGE__S3__ENDPOINT``. The YAML
file (``--config FILE`` or ``BYTEFREEZER_CONFIG_FILE``) uses the same names as nested mappings.
This is the only module that reads the process environment.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bytefreezer.errors import ConfigError, validation_problems

ENV_PREFIX = "BYTEFREEZER_"
CONFIG_FILE_ENV = "BYTEFREEZER_CONFIG_FILE"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# S3 server-side encryption of the objects written: none (the bucket's default), S3-managed keys,
# KMS keys, or dual-layer KMS.
ServerSideEncryption = Literal["", "AES256", "aws:kms", "aws:kms:dsse"]


def check_kms_key(encryption: str | None, kms_key_id: str) -> None:
    """``ValueError`` for a KMS key given without KMS encryption (it would be ignored)."""
    if kms_key_id and not (encryption or "").startswith("aws:kms"):
        raise ValueError(
            f"a KMS key id is used with server_side_encryption 'aws:kms' or 'aws:kms:dsse', "
            f"not {encryption or 'none'!r}"
        )


class S3Settings(_Section):
    """How to reach an S3-compatible object store."""

    endpoint: str = Field("", description="host:port or URL of the S3 endpoint; empty for AWS S3.")
    region: str = Field("us-east-1", description="Region sent with every request.")
    access_key: SecretStr = Field(SecretStr(""), description="Access key id (unless use_iam_role).")
    secret_key: SecretStr = Field(SecretStr(""), description="Secret access key.")
    use_ssl: bool = Field(False, description="Use https for an endpoint given without a scheme.")
    use_iam_role: bool = Field(
        False, description="Ignore the keys and use the default AWS credential chain (pod role)."
    )
    connect_timeout_seconds: float = Field(
        2.0, gt=0, description="Connection timeout; a store that is down is noticed this fast."
    )
    read_timeout_seconds: float = Field(60.0, description="Timeout of one request's response.")
    request_timeout_seconds: float = Field(
        300.0,
        gt=0,
        description=(
            "Longest one request may take in all. It bounds what the connect and read "
            "timeouts do not: an upload to a peer that takes the request and never answers "
            "(botocore asks for `100 Continue` before sending a body, and nothing else times "
            "that wait)."
        ),
    )
    max_attempts: int = Field(
        2, ge=1, description="Attempts per request before a failure is reported (spool takes over)."
    )
    server_side_encryption: ServerSideEncryption = Field(
        "",
        description=(
            "Server-side encryption asked for on every object written to the buckets, and to "
            "destinations that use these settings: `AES256` (S3-managed keys), `aws:kms`, "
            "`aws:kms:dsse`; empty leaves it to the bucket's default encryption. Needed where a "
            "bucket policy refuses writes that do not ask for it."
        ),
    )
    kms_key_id: str = Field(
        "",
        description="KMS key (id, ARN or alias) for `aws:kms` / `aws:kms:dsse`; empty: the "
        "account's AWS-managed key.",
    )

    @model_validator(mode="after")
    def _kms(self) -> S3Settings:
        check_kms_key(self.server_side_encryption, self.kms_key_id)
        return self

    def endpoint_url(self) -> str | None:
        """The endpoint as a URL, or None for AWS's default endpoints."""
        if not self.endpoint:
            return None
        if "://" in self.endpoint:
            return self.endpoint
        return f"{'https' if self.use_ssl else 'http'}://{self.endpoint}"


class StorageSettings(_Section):
    """Where the intake, piper and geoip buckets live."""

    backend: Literal["file", "s3"] = Field(
        "file", description="`file`: buckets are directories under `root`; `s3`: S3 buckets."
    )
    root: Path | None = Field(
        None, description="Directory holding the buckets for `file` (default DATA_DIR/buckets)."
    )
    s3: S3Settings = Field(default_factory=S3Settings, description="S3 connection.")


class BucketSettings(_Section):
    """Bucket names."""

    intake: str = Field("intake", description="Raw objects written by the receiver.")
    piper: str = Field("piper", description="Staged Parquet, dead letters and packer manifests.")
    geoip: str = Field("geoip", description="MaxMind databases and lookup tables.")


class ControlSettings(_Section):
    """The control service, and how components reach it."""

    url: str = Field(
        "", description="Control service URL; empty runs it in-process over `db_path`."
    )
    api_key: SecretStr = Field(
        SecretStr(""), description="Key components and the CLI send to a remote control service."
    )
    admin_key: SecretStr = Field(
        SecretStr(""),
        description="Admin key the control service accepts for management calls "
        "(generated and printed on first start when empty).",
    )
    db_path: Path | None = Field(None, description="SQLite file (default DATA_DIR/control.db).")
    host: str = Field("127.0.0.1", description="Listen address of `bytefreezer control`.")
    port: int = Field(8082, ge=1, le=65535, description="Listen port of `bytefreezer control`.")
    timeout_seconds: float = Field(30.0, gt=0, description="HTTP timeout for calls to the service.")
    ca_file: Path | None = Field(
        None,
        description="CA bundle that signs an https control service's certificate (default: system CAs).",
    )


class ReceiverSettings(_Section):
    """The HTTP receiver."""

    host: str = Field("0.0.0.0", description="Listen address of the webhook port.")
    port: int = Field(8080, ge=1, le=65535, description="Webhook port.")
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1, description="Largest request body accepted as sent (413 above)."
    )
    max_decompressed_bytes: int = Field(
        128 * 1024 * 1024,
        ge=1,
        description="Largest body accepted after decompression (413 above).",
    )
    auth_cache_seconds: float = Field(
        60.0,
        description="How long a verified key is trusted without asking control again (and, for "
        "a tenant with a daily ingest limit, how old its total may be).",
    )
    usage_report_seconds: float = Field(
        10.0,
        gt=0,
        description="How often the receiver adds what it accepted to the control service's "
        "usage counts (`bytefreezer tenants usage`).",
    )
    api_host: str = Field("0.0.0.0", description="Listen address of the API port.")
    api_port: int = Field(
        8081, ge=1, le=65535, description="API port: health, readiness, config, spool, OpenAPI."
    )
    group_commit_max_bytes: int = Field(
        4 * 1024 * 1024, ge=1, description="Flush a shared intake object once it holds this much."
    )
    group_commit_max_age_ms: float = Field(
        0.0,
        ge=0,
        description="Wait at most this long to gather bodies into one intake object; 0 writes at "
        "once unless a write for the dataset is in flight, whose followers then share the next.",
    )
    max_inflight_bytes: int = Field(
        256 * 1024 * 1024, description="Bodies being received and stored at once; 429 above."
    )
    spool_dir: Path | None = Field(
        None, description="Local spool used while storage fails (default DATA_DIR/spool)."
    )
    spool_max_bytes: int = Field(
        1024 * 1024 * 1024, ge=0, description="Spool size bound; 503 with Retry-After when full."
    )
    spool_retry_seconds: float = Field(2.0, description="How often the spool uploader retries.")
    retry_after_seconds: int = Field(
        5, ge=0, description="Retry-After sent with 429 and 503 answers."
    )
    rate_limit_per_second: float = Field(
        0.0, ge=0, description="Requests per second allowed per API key (0: no limit); 429 above."
    )
    rate_limit_burst: int = Field(100, ge=1, description="Requests a key may send at once.")


class PiperSettings(_Section):
    """The piper poller and pipeline."""

    poll_interval_seconds: float = Field(
        2.0, ge=0, description="Sleep between cycles (with jitter)."
    )
    max_objects_per_run: int = Field(
        64, ge=1, description="Intake objects claimed per pipeline run."
    )
    max_concurrent_jobs: int = Field(
        2,
        ge=1,
        description="Objects each Beam worker processes at once, each in its own thread.",
    )
    lease_ttl_seconds: float = Field(120.0, gt=0, description="Lease TTL on each claimed object.")
    retry_backoff_seconds: float = Field(
        15.0,
        gt=0,
        description=(
            "Wait before piper takes a dataset's objects again after its chain could not run "
            "(a GeoIP database not uploaded yet, a plugin missing), doubled after each failure "
            "in a row up to `retry_backoff_max_seconds`; its objects wait in the intake "
            "meanwhile and other datasets' objects go on. Saving the dataset or `bytefreezer "
            "datasets retry` ends the wait."
        ),
    )
    retry_backoff_max_seconds: float = Field(
        120.0, gt=0, description="Longest wait between two tries of a failing dataset."
    )
    dead_letter_retention_days: float = Field(
        0.0,
        ge=0,
        description=(
            "Days a dead letter (rejected records with their reasons, an object set aside) is "
            "kept under `_dead-letter/` before piper deletes it, looking once an hour; 0 keeps "
            "them until an operator removes them (the original ByteFreezer kept them 7 days)."
        ),
    )
    beam_args: list[str] = Field(
        default_factory=list, description="Beam pipeline options, e.g. ['--runner=FlinkRunner']."
    )
    api_host: str = Field("0.0.0.0", description="Listen address of piper's API.")
    api_port: int = Field(
        8082, ge=1, le=65535, description="Piper's API: health, readiness, config, pipelines."
    )


class PackerSettings(_Section):
    """The packer poller and pipeline."""

    poll_interval_seconds: float = Field(
        5.0, ge=0, description="Sleep between cycles (with jitter)."
    )
    lease_ttl_seconds: float = Field(
        300.0, gt=0, description="Lease TTL on each dataset being packed."
    )
    max_input_mb_per_run: int = Field(
        256,
        ge=1,
        description=(
            "Staged MB packed for one dataset in one run: bounds what a crash makes it redo "
            "(memory does not grow with it: inputs are streamed one at a time)."
        ),
    )
    max_file_size_mb: int = Field(
        128, ge=1, description="Upper bound of any Parquet file (a dataset may set a smaller one)."
    )
    buffer_seconds: float = Field(
        60.0,
        ge=0,
        le=86400,
        description=(
            "Longest a record waits in the piper bucket before its dataset is packed, counted "
            "from when the receiver stored it: a dataset is packed once its oldest staged "
            "record is this old or its staged objects reach `buffer_mb`, whichever comes "
            "first (fewer, larger files than packing every cycle). 0 packs every cycle."
        ),
    )
    buffer_mb: int = Field(
        64,
        ge=1,
        description=(
            "Staged (compressed) MB that get a dataset packed before `buffer_seconds` have "
            "passed; staged Parquet is about the size of the files it becomes."
        ),
    )
    max_concurrent_jobs: int = Field(
        2,
        ge=1,
        description=(
            "Datasets each Beam worker reads and writes at once, each in its own thread; as "
            "many more list, commit and clean up meanwhile."
        ),
    )
    ledger_retention_seconds: float = Field(
        3600.0,
        gt=0,
        description=(
            "How long the stems of packed staged objects are remembered; a staged object "
            "rewritten within this time by a piper that lost its lease is discarded, not "
            "packed twice."
        ),
    )
    retry_backoff_seconds: float = Field(
        15.0,
        gt=0,
        description=(
            "Wait before packing a dataset again after a failed run (its destination refuses "
            "writes, say), doubled after each failure in a row up to "
            "`retry_backoff_max_seconds`; its data stays staged meanwhile and other datasets "
            "are packed as usual. Saving the dataset or `bytefreezer datasets retry` ends the "
            "wait."
        ),
    )
    retry_backoff_max_seconds: float = Field(
        600.0, gt=0, description="Longest wait between two runs of a failing dataset."
    )
    compaction_check_seconds: float = Field(
        300.0,
        ge=1,
        description="How often packer looks for partitions to compact in the datasets that ask "
        "for it (`parquet.compact_after_minutes`).",
    )
    beam_args: list[str] = Field(default_factory=list, description="Beam pipeline options.")
    api_host: str = Field("0.0.0.0", description="Listen address of packer's API.")
    api_port: int = Field(
        8083, ge=1, le=65535, description="Packer's API: health, readiness, config, status."
    )


class TlsSettings(_Section):
    """TLS for this process's HTTP listeners (receiver, control service, worker APIs)."""

    cert_file: Path | None = Field(
        None, description="PEM certificate (chain); set with key_file to serve HTTPS."
    )
    key_file: Path | None = Field(None, description="PEM private key of the certificate.")

    @property
    def enabled(self) -> bool:
        """Whether both files are given."""
        return self.cert_file is not None and self.key_file is not None


class MonitoringSettings(_Section):
    """Metrics and traces."""

    mode: Literal["none", "prometheus", "otlp_http", "otlp_grpc"] = Field(
        "none",
        description="`prometheus`: serve /metrics; `otlp_http` / `otlp_grpc`: push metrics and "
        "traces to `external_endpoint`; `none`: no export.",
    )
    metrics_host: str = Field("0.0.0.0", description="Listen address of /metrics (prometheus).")
    metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port of /metrics; 0 means each component's own (9091 receiver, 9092 piper, "
        "9093 packer); a set port is the receiver's, with piper on +1 and packer on +2.",
    )
    external_endpoint: str = Field(
        "", description="OTLP endpoint: `http://host:4318` (otlp_http) or `host:4317` (otlp_grpc)."
    )
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="Headers sent with every OTLP push (e.g. an API key)."
    )
    insecure: bool = Field(True, description="Plain-text gRPC (false: TLS) for otlp_grpc.")
    export_interval_seconds: float = Field(10.0, gt=0, description="How often metrics are pushed.")
    timeout_seconds: float = Field(10.0, gt=0, description="Timeout of one push.")
    tenant_label: bool = Field(False, description="Add a `tenant` label to per-tenant metrics.")
    tenant_label_limit: int = Field(
        100, ge=0, description="Distinct tenants labelled; the rest count as `_other`."
    )
    report_interval_seconds: float = Field(
        15.0, description="How often each component reports its health to the control service."
    )


class Settings(BaseSettings):
    """All settings of every component."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    config_file: Path | None = Field(None, description="Optional YAML file with these settings.")
    data_dir: Path = Field(Path("./data"), description="Working directory of the embedded default.")
    instance_id: str = Field(
        default_factory=socket.gethostname,
        description="This process's identity in leases and health reports (pod hostname).",
    )
    log_level: str = Field("INFO", description="Python log level.")
    storage: StorageSettings = Field(default_factory=StorageSettings, description="Buckets' store.")
    buckets: BucketSettings = Field(default_factory=BucketSettings, description="Bucket names.")
    control: ControlSettings = Field(
        default_factory=ControlSettings, description="Control service."
    )
    receiver: ReceiverSettings = Field(default_factory=ReceiverSettings, description="Receiver.")
    piper: PiperSettings = Field(default_factory=PiperSettings, description="Piper.")
    packer: PackerSettings = Field(default_factory=PackerSettings, description="Packer.")
    tls: TlsSettings = Field(default_factory=TlsSettings, description="HTTPS for the listeners.")
    monitoring: MonitoringSettings = Field(
        default_factory=MonitoringSettings, description="Metrics and traces."
    )
    default_destination: str = Field(
        "",
        description="Destination URL for datasets created without one; "
        "`{tenant}` and `{dataset}` are filled in (default file://DATA_DIR/destination/...).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls, init_settings))

    # Derived locations -------------------------------------------------------------------

    def bucket_root(self) -> Path:
        """The directory holding buckets for the ``file`` backend."""
        return (self.storage.root or self.data_dir / "buckets").resolve()

    def spool_path(self) -> Path:
        """The receiver's spool directory."""
        return (self.receiver.spool_dir or self.data_dir / "spool").resolve()

    def control_db_path(self) -> Path:
        """The SQLite file of the in-process control service."""
        return (self.control.db_path or self.data_dir / "control.db").resolve()

    def destination_for(self, tenant: str, dataset: str) -> str:
        """The destination URL a new dataset gets when none is given."""
        template = self.default_destination or (
            (self.data_dir / "destination").resolve().as_uri() + "/{tenant}/{dataset}"
        )
        return template.format(tenant=tenant, dataset=dataset)


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by ``config_file`` (argument or environment)."""

    def __init__(self, settings_cls: type[BaseSettings], init: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self._init = init

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = self._init().get("config_file") or os.environ.get(CONFIG_FILE_ENV)
        if not path:
            return {}
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of settings")
        return data


_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(text: str, source: str = "config") -> str:
    """``text`` with every ``${NAME}`` replaced by that environment variable (secrets from
    Kubernetes Secrets reach config files this way); ``ConfigError`` names a missing one."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(
                f"{source} refers to ${{{name}}}, but that environment variable is not set"
            )
        return os.environ[name]

    return _ENV_REFERENCE.sub(value, text)


def redacted(settings: Settings) -> dict[str, Any]:
    """The settings as JSON-ready data with every secret masked."""
    dumped: dict[str, Any] = settings.model_dump(mode="json")
    return dumped


def load_settings(**overrides: Any) -> Settings:
    """Load settings; raise ``ConfigError`` naming each invalid setting and why."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {validation_problems(exc)}") from None


def settings_reference() -> str:
    """A Markdown table of every setting, its environment variable, default and meaning."""
    rows = [
        "| setting | environment variable | default | description |",
        "| --- | --- | --- | --- |",
    ]

    def walk(model: type[BaseModel], path: list[str]) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, _Section):
                walk(annotation, [*path, name])
                continue
            dotted = ".".join([*path, name])
            env = ENV_PREFIX + "__".join([*path, name]).upper()
            if field.default_factory is not None:
                default: Any = "hostname" if name == "instance_id" else field.default_factory()  # type: ignore[call-arg]
            else:
                default = field.default
            if isinstance(default, SecretStr):
                default = ""
            shown = "`" + (str(default) if default not in (None, "") else '""') + "`"
            if default is None:
                shown = "(derived)"
            rows.append(f"| `{dotted}` | `{env}` | {shown} | {field.description or ''} |")

    walk(Settings, [])
    return "\n".join(rows) + "\n"
