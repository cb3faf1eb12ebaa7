"""The control service's records: tenants, datasets, keys, leases, health reports."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bytefreezer.keys import NAME_PATTERN, validate_name
from bytefreezer.settings import ServerSideEncryption, check_kms_key

Partitioning = Literal["hive", "date", "date_hour", "none", "custom"]
InputFormat = Literal[
    "ndjson", "json", "csv", "tsv", "raw", "syslog",
    "apache", "nginx", "logfmt", "kv", "cef", "gelf",
]  # fmt: skip


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tenant(_Model):
    """A tenant: the owner of datasets and keys."""

    name: str = Field(
        description="Tenant name, `[a-z0-9][a-z0-9_-]{0,62}`.",
        json_schema_extra={"pattern": f"^{NAME_PATTERN}$"},
    )
    active: bool = Field(True, description="Inactive tenants are refused with 410.")
    daily_ingest_mb: int | None = Field(
        None,
        ge=1,
        le=2**40,  # an exabyte a day: within SQLite's integers as bytes
        description="Decompressed MB a UTC day the receivers accept for the tenant; beyond it "
        "429 with `Retry-After` until the next day (the receivers see each other's counts "
        "within `receiver.auth_cache_seconds`, so the limit is approximate by that much). "
        "Unset: no limit.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return validate_name(v, "tenant")


class Destination(_Model):
    """Where a dataset's Parquet goes: an fsspec URL and its options."""

    url: str = Field(description="fsspec URL, e.g. `s3://bucket/prefix` or `file:///data/out`.")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options (endpoint_url, key, secret, ...); for `s3://` an empty "
        "mapping means the stack's own S3 settings.",
    )
    server_side_encryption: ServerSideEncryption | None = Field(
        None,
        description="S3 server-side encryption of every object written here: `AES256`, "
        '`aws:kms` (with `kms_key_id`, e.g. a tenant\'s own key), `aws:kms:dsse`, or `""` '
        "for none; unset: the stack's `storage.s3.server_side_encryption` when `options` is "
        "empty, else what `options` ask for.",
    )
    kms_key_id: str = Field(
        "", description="KMS key (id, ARN or alias) for `aws:kms`; empty: the AWS-managed key."
    )

    @model_validator(mode="after")
    def _encryption(self) -> Destination:
        if self.server_side_encryption and self.url.split("://", 1)[0] not in ("s3", "s3a"):
            raise ValueError("server_side_encryption applies to s3:// destinations")
        check_kms_key(self.server_side_encryption, self.kms_key_id)
        return self


class ParquetOptions(_Model):
    """How packer writes a dataset's Parquet."""

    compression: Literal["zstd", "snappy", "gzip", "lz4", "brotli", "none"] = Field(
        "zstd", description="Parquet compression codec."
    )
    max_file_size_mb: int = Field(128, ge=1, le=4096, description="Upper bound of one file.")
    partitioning: Partitioning = Field(
        "hive",
        description="`hive`: year=/month=/day=/hour=; `date`: date=YYYY-MM-DD; `date_hour`: "
        "date=/hour=; `none`: no partition directories; `custom`: `partition_template`.",
    )
    partition_template: str = Field(
        "",
        description="The partition path for `custom`: strftime fields (`dt=%Y-%m-%d/hr=%H`) or "
        "the original ByteFreezer's placeholders (`{tenant}/{dataset}/{year}/{month}/{day}/"
        "{hour}`), and `{field:NAME}` for each record's value of a field, escaped as Hive "
        "escapes partition values (`kind={field:event.kind}/{year}`); checked when the "
        "dataset is saved.",
    )
    buffer_seconds: float | None = Field(
        None,
        ge=0,
        le=86400,
        description="Longest a record waits staged before packer writes it, counted from when "
        "the receiver stored it (0: at once); unset: packer's `packer.buffer_seconds`.",
    )
    buffer_mb: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="Staged MB that get the dataset packed before `buffer_seconds` have "
        "passed; unset: packer's `packer.buffer_mb`.",
    )
    max_partitions: int = Field(
        10_000,
        ge=1,
        le=10_000_000,
        description="Most partition directories one packer run may write when a custom "
        "template names record fields (`{field:NAME}`): a run past it fails with the reason "
        "and its data stays staged (a field of nearly unique values, an id, would otherwise "
        "make a directory and a file per record). Time partitions alone are not limited.",
    )
    compact_after_minutes: float | None = Field(
        None,
        ge=0.01,
        le=525_600,
        description="Packer merges the small files of a partition none of whose files changed "
        "for this many minutes (as `bytefreezer datasets compact` does); unset: only on "
        "demand. Merged files are new objects: a consumer notified of each new object reads "
        "their rows again.",
    )


class DatasetSpec(_Model):
    """What a client sends to create or replace a dataset."""

    name: str = Field(
        description="Dataset name, `[a-z0-9][a-z0-9_-]{0,62}`.",
        json_schema_extra={"pattern": f"^{NAME_PATTERN}$"},
    )
    format: InputFormat = Field(
        "ndjson",
        description="Input format of posted bodies (a request's data hint can override it): "
        "ndjson, json, csv, tsv, raw, syslog, apache, nginx, logfmt, kv, cef, gelf.",
    )
    csv_delimiter: str = Field(
        ",",
        min_length=1,
        max_length=1,
        description="Value separator of `csv` bodies, e.g. `;` for many spreadsheet exports "
        "(`tsv` is always a tab).",
    )
    transforms: list[dict[str, Any]] = Field(
        default_factory=list, description="The transform chain, one mapping per step."
    )
    timestamp_field: str = Field(
        "timestamp",
        description="Field holding each record's event time (partitions by it); a dotted path "
        "(`event.created`) names a field inside an object.",
    )
    destination: Destination | None = Field(
        None, description="Parquet destination; the stack's default destination when omitted."
    )
    parquet: ParquetOptions = Field(default_factory=ParquetOptions, description="Parquet options.")
    keep_raw: bool = Field(
        False,
        description="Also keep every intake object as received (its bodies, gzip) at the "
        "destination under `_raw/date=YYYY-MM-DD/`, for audit and replay; piper deletes an "
        "object from the intake only once its copy is written.",
    )
    keep_raw_days: int | None = Field(
        None,
        ge=1,
        le=36500,
        description="With `keep_raw`: piper deletes a day's raw copies once that UTC day ended "
        "more than this many days ago, looking once an hour; unset keeps them (or leave it to "
        "the bucket's lifecycle rules).",
    )
    active: bool = Field(True, description="Inactive datasets are refused with 410.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return validate_name(v, "dataset")

    @field_validator("csv_delimiter")
    @classmethod
    def _delimiter(cls, v: str) -> str:
        if v in ('"', "\n", "\r"):
            raise ValueError("a CSV delimiter cannot be a quote or a line break")
        return v


class Dataset(DatasetSpec):
    """A stored dataset: its spec with the owning tenant and a resolved destination."""

    tenant: str
    destination: Destination  # type: ignore[assignment]


class ApiKeyInfo(_Model):
    """A stored API key (never its secret)."""

    id: str
    tenant: str | None = Field(None, description="Tenant the key writes to; None for admin keys.")
    dataset: str | None = Field(None, description="The one dataset the key is limited to, if any.")
    role: Literal["ingest", "admin"] = "ingest"
    created_at: float
    description: str = ""
    expires_at: float | None = Field(
        None, description="When the key stops working (Unix seconds); None: it does not expire."
    )


class NewApiKey(_Model):
    """A key just created: the secret is shown here once and never again."""

    info: ApiKeyInfo
    key: str


class KeyScope(_Model):
    """What a verified key may do (and, for ingest checks, the dataset's input format)."""

    key_id: str
    role: Literal["ingest", "admin"]
    tenant: str | None
    dataset: str | None
    format: str = "ndjson"
    daily_ingest_bytes: int | None = None  # the tenant's daily limit (ingest checks)
    ingested_today_bytes: int = 0  # what the tenant's receivers had reported for today then
    day: str = ""  # the UTC day of ingested_today_bytes


class Lease(_Model):
    """A time-bounded claim on a named resource, with a fencing token."""

    name: str
    owner: str
    token: int = Field(
        ge=0,
        le=2**63 - 1,
        description="Globally increasing; a newer holder always has a larger one.",
    )
    expires_at: float


Stage = Literal["piper", "packer"]
STAGES: tuple[Stage, ...] = ("piper", "packer")


class DatasetStatus(_Model):
    """How one stage's latest runs of a dataset went: ``ok``, or ``failing`` (piper: its chain
    cannot run, a GeoIP database missing, say; packer: its destination refuses writes), retried
    with a growing wait while its data waits, durable, in the bucket before the stage."""

    tenant: str
    dataset: str
    stage: Stage = Field(description="`piper` or `packer`.")
    state: Literal["ok", "failing", "unknown"] = Field(
        description="`ok`: the last run went through; `failing`: the last run failed "
        "(`error` says why); `unknown`: no run of the stage has reported yet."
    )
    error: str = Field("", description="Why the last run failed (empty when ok).")
    failures: int = Field(0, ge=0, le=2**31, description="Runs failed in a row.")
    failing_since: float | None = Field(
        None, description="When the first of these failed runs ended (Unix seconds)."
    )
    last_success_at: float | None = Field(
        None, description="When a run last went through (Unix seconds)."
    )
    retry_at: float | None = Field(
        None,
        description="The stage leaves a failing dataset alone until then (Unix seconds); "
        "saving the dataset or clearing its status retries it at once.",
    )
    instance: str = Field("", description="The instance that reported.")
    reported_at: float = Field(0.0, description="When control stored the report.")


class DestinationCheck(_Model):
    """Whether a dataset's destination takes writes now: a probe object written and deleted at
    its root by the control service."""

    tenant: str
    dataset: str
    url: str
    ok: bool
    error: str = Field("", description="Why the probe failed (empty when ok).")
    seconds: float = Field(description="How long the probe took.")
    checked_at: float


def utc_day(at: float | None = None) -> str:
    """The UTC day of ``at`` (now) as usage is counted by: YYYY-MM-DD."""
    import time

    return time.strftime("%Y-%m-%d", time.gmtime(time.time() if at is None else at))


MAX_COUNT = 2**53  # a usage report's counts: far beyond any day, and summable in 64 bits


class Usage(_Model):
    """What the receivers accepted for one dataset on one UTC day (report: what one receiver
    accepted since its last report; stored: the day's totals)."""

    tenant: str = Field(json_schema_extra={"pattern": f"^{NAME_PATTERN}$"})
    dataset: str = Field(json_schema_extra={"pattern": f"^{NAME_PATTERN}$"})
    day: str = Field(
        description="UTC day, YYYY-MM-DD.",
        # A date: the pattern alone let the API fuzzing send "5234-61-79" as valid.
        json_schema_extra={"pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", "format": "date"},
    )
    # Bounded where SQLite's 64-bit integers hold them, and their sums, with room (the API
    # fuzzing sent 10^36 bytes, which SQLite could not store).
    requests: int = Field(0, ge=0, le=MAX_COUNT, description="Requests stored.")
    records: int = Field(
        0, ge=0, le=MAX_COUNT, description="Records in them, as piper will read them."
    )
    bytes: int = Field(0, ge=0, le=MAX_COUNT, description="Their bodies, decompressed.")
    compressed_bytes: int = Field(0, ge=0, le=MAX_COUNT, description="Their bodies as sent.")

    @field_validator("tenant", "dataset")
    @classmethod
    def _names(cls, v: str) -> str:
        return validate_name(v)

    @field_validator("day")
    @classmethod
    def _day(cls, v: str) -> str:
        import datetime

        datetime.date.fromisoformat(v)
        return v


class HealthReport(_Model):
    """One component instance's latest report."""

    component: str = Field(
        description="Component name, `[a-z0-9][a-z0-9_-]{0,62}`.",
        json_schema_extra={"pattern": f"^{NAME_PATTERN}$"},
    )
    instance: str
    status: Literal["ok", "degraded", "failing"] = "ok"
    details: dict[str, Any] = Field(default_factory=dict)
    reported_at: float = 0.0
    age_seconds: float | None = None
