"""SQLite store of the control service; also the in-process control client.

Every public method is one transaction. Leases use a global counter for fencing tokens, so a
newer holder of any lease always has a larger token than any older one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bytefreezer.control.models import (
    STAGES,
    ApiKeyInfo,
    Dataset,
    DatasetSpec,
    DatasetStatus,
    Destination,
    DestinationCheck,
    HealthReport,
    KeyScope,
    Lease,
    NewApiKey,
    Tenant,
    Usage,
    utc_day,
)
from bytefreezer.errors import (
    AuthError,
    BytefreezerError,
    ConfigError,
    Conflict,
    Forbidden,
    Gone,
    LeaseLost,
    NotFound,
)
from bytefreezer.keys import check_partition_template, validate_name

ChainValidator = Callable[[list[dict[str, Any]]], None]
DestinationFor = Callable[[str, str], str]
DestinationChecker = Callable[[Destination], None]  # raises, saying why it takes no writes

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY, active INTEGER NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS datasets (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    name TEXT NOT NULL, spec TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (tenant, name));
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, hash TEXT NOT NULL, role TEXT NOT NULL, tenant TEXT, dataset TEXT,
    description TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY, owner TEXT NOT NULL, token INTEGER NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS health (
    component TEXT NOT NULL, instance TEXT NOT NULL, status TEXT NOT NULL, details TEXT NOT NULL,
    reported_at REAL NOT NULL, PRIMARY KEY (component, instance));
CREATE TABLE IF NOT EXISTS dataset_status (
    tenant TEXT NOT NULL, dataset TEXT NOT NULL, stage TEXT NOT NULL, status TEXT NOT NULL,
    PRIMARY KEY (tenant, dataset, stage),
    FOREIGN KEY (tenant, dataset) REFERENCES datasets(tenant, name) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS usage (
    tenant TEXT NOT NULL REFERENCES tenants(name) ON DELETE CASCADE,
    dataset TEXT NOT NULL, day TEXT NOT NULL, requests INTEGER NOT NULL,
    records INTEGER NOT NULL, bytes INTEGER NOT NULL, compressed_bytes INTEGER NOT NULL,
    PRIMARY KEY (tenant, dataset, day));
"""
# Columns added after a table was first created, added to a database made before them.
_ADDED_COLUMNS = {"tenants": {"daily_ingest_mb": "INTEGER"}, "api_keys": {"expires_at": "REAL"}}


KEY_PREFIX = "bfk"


def hash_secret(secret: str) -> str:
    """The stored form of a key's secret part."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _split_key(key: str) -> tuple[str, str]:
    parts = key.split("_")
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        raise AuthError("malformed API key")
    return parts[1], parts[2]


_TENANT_COLUMNS = "name, active, daily_ingest_mb"


def _tenant(row: tuple[Any, ...]) -> Tenant:
    return Tenant(name=row[0], active=bool(row[1]), daily_ingest_mb=row[2])


class ControlStore:
    """Tenants, datasets, keys, leases, health and usage in one SQLite file."""

    def __init__(
        self,
        path: Path | str,
        *,
        destination_for: DestinationFor | None = None,
        validate_chain: ChainValidator | None = None,
        check_destination: DestinationChecker | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=10000")
        self._conn.executescript(_SCHEMA)
        for table, columns in _ADDED_COLUMNS.items():
            present = {row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")}
            for column, kind in columns.items():
                if column not in present:
                    self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        self._lock = threading.RLock()
        self._destination_for = destination_for or (
            lambda t, d: f"file://{Path('data/destination').resolve()}/{t}/{d}"
        )
        self._validate_chain = validate_chain
        self._check_destination = check_destination
        self._clock = clock

    def close(self) -> None:
        """Close the database."""
        self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # Tenants -----------------------------------------------------------------------------

    def create_tenant(self, tenant: Tenant) -> Tenant:
        """Create a tenant; ``Conflict`` if it exists."""
        with self._tx() as db:
            try:
                db.execute(
                    "INSERT INTO tenants (name, active, created_at, daily_ingest_mb) "
                    "VALUES (?, ?, ?, ?)",
                    (tenant.name, int(tenant.active), self._clock(), tenant.daily_ingest_mb),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"tenant {tenant.name!r} exists") from None
        return tenant

    def get_tenant(self, name: str) -> Tenant:
        """One tenant; ``NotFound`` when absent."""
        row = self._conn.execute(
            f"SELECT {_TENANT_COLUMNS} FROM tenants WHERE name=?", (name,)
        ).fetchone()
        if row is None:
            raise NotFound(f"tenant {name!r} not found")
        return _tenant(row)

    def list_tenants(self) -> list[Tenant]:
        """Every tenant, by name."""
        rows = self._conn.execute(f"SELECT {_TENANT_COLUMNS} FROM tenants ORDER BY name")
        return [_tenant(r) for r in rows.fetchall()]

    def update_tenant(self, name: str, *, active: bool) -> Tenant:
        """Activate or deactivate a tenant."""
        with self._tx() as db:
            cur = db.execute("UPDATE tenants SET active=? WHERE name=?", (int(active), name))
            if cur.rowcount == 0:
                raise NotFound(f"tenant {name!r} not found")
        return self.get_tenant(name)

    def set_daily_ingest_limit(self, name: str, daily_ingest_mb: int | None) -> Tenant:
        """Set (or, with None, remove) a tenant's daily ingest limit."""
        checked = Tenant(name=name, daily_ingest_mb=daily_ingest_mb)  # the same bounds
        with self._tx() as db:
            cur = db.execute(
                "UPDATE tenants SET daily_ingest_mb=? WHERE name=?",
                (checked.daily_ingest_mb, name),
            )
            if cur.rowcount == 0:
                raise NotFound(f"tenant {name!r} not found")
        return self.get_tenant(name)

    def delete_tenant(self, name: str) -> None:
        """Delete a tenant with its datasets and keys."""
        with self._tx() as db:
            db.execute("DELETE FROM api_keys WHERE tenant=?", (name,))
            db.execute("DELETE FROM datasets WHERE tenant=?", (name,))
            if db.execute("DELETE FROM tenants WHERE name=?", (name,)).rowcount == 0:
                raise NotFound(f"tenant {name!r} not found")

    # Datasets ----------------------------------------------------------------------------

    def _resolve(self, tenant: str, spec: DatasetSpec) -> Dataset:
        if self._validate_chain is not None:
            self._validate_chain(spec.transforms)
        if spec.parquet.partitioning == "custom":
            check_partition_template(spec.parquet.partition_template, tenant, spec.name)
        destination = spec.destination or Destination(url=self._destination_for(tenant, spec.name))
        data = spec.model_dump()
        data["destination"] = destination
        return Dataset(tenant=tenant, **data)

    def create_dataset(self, tenant: str, spec: DatasetSpec) -> Dataset:
        """Create a dataset; ``Conflict`` if it exists, ``NotFound`` for an unknown tenant."""
        dataset = self._resolve(tenant, spec)
        with self._tx() as db:
            if db.execute("SELECT 1 FROM tenants WHERE name=?", (tenant,)).fetchone() is None:
                raise NotFound(f"tenant {tenant!r} not found")
            try:
                db.execute(
                    "INSERT INTO datasets VALUES (?, ?, ?, ?)",
                    (tenant, spec.name, dataset.model_dump_json(), self._clock()),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"dataset {tenant}/{spec.name} exists") from None
        return dataset

    def put_dataset(self, tenant: str, spec: DatasetSpec) -> Dataset:
        """Replace a dataset's spec (create it when absent). Its status is cleared: a failing
        dataset (a destination fixed by this change, say) is packed again at once."""
        dataset = self._resolve(tenant, spec)
        with self._tx() as db:
            if db.execute("SELECT 1 FROM tenants WHERE name=?", (tenant,)).fetchone() is None:
                raise NotFound(f"tenant {tenant!r} not found")
            db.execute(
                "INSERT INTO datasets VALUES (?, ?, ?, ?) ON CONFLICT(tenant, name) "
                "DO UPDATE SET spec=excluded.spec",
                (tenant, spec.name, dataset.model_dump_json(), self._clock()),
            )
            db.execute(
                "DELETE FROM dataset_status WHERE tenant=? AND dataset=?", (tenant, spec.name)
            )
        return dataset

    def get_dataset(self, tenant: str, name: str) -> Dataset:
        """One dataset; ``NotFound`` when it or its tenant is absent."""
        row = self._conn.execute(
            "SELECT spec FROM datasets WHERE tenant=? AND name=?", (tenant, name)
        ).fetchone()
        if row is None:
            self.get_tenant(tenant)
            raise NotFound(f"dataset {tenant}/{name} not found")
        return Dataset.model_validate_json(row[0])

    def list_datasets(self, tenant: str | None = None) -> list[Dataset]:
        """Datasets of one tenant, or of all tenants."""
        if tenant is None:
            rows = self._conn.execute("SELECT spec FROM datasets ORDER BY tenant, name").fetchall()
        else:
            self.get_tenant(tenant)
            rows = self._conn.execute(
                "SELECT spec FROM datasets WHERE tenant=? ORDER BY name", (tenant,)
            ).fetchall()
        return [Dataset.model_validate_json(r[0]) for r in rows]

    def delete_dataset(self, tenant: str, name: str) -> None:
        """Delete a dataset and the keys limited to it."""
        with self._tx() as db:
            db.execute("DELETE FROM api_keys WHERE tenant=? AND dataset=?", (tenant, name))
            cur = db.execute("DELETE FROM datasets WHERE tenant=? AND name=?", (tenant, name))
            if cur.rowcount == 0:
                raise NotFound(f"dataset {tenant}/{name} not found")

    # Keys --------------------------------------------------------------------------------

    def create_key(
        self,
        tenant: str | None,
        dataset: str | None = None,
        *,
        role: str = "ingest",
        description: str = "",
        expires_in_days: float | None = None,
    ) -> NewApiKey:
        """Create a key; its secret is returned here once and only its hash is stored. With
        ``expires_in_days`` it stops working that long after now (rotate keys by creating the
        next one before the last expires)."""
        if expires_in_days is not None and not 0 < expires_in_days <= 36500:
            raise ConfigError("expires_in_days is more than 0 and at most 36500")
        if role == "ingest":
            if tenant is None:
                raise NotFound("an ingest key needs a tenant")
            self.get_tenant(tenant)
            if dataset is not None:
                self.get_dataset(tenant, dataset)
        elif role == "admin":
            tenant = dataset = None
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(24).replace("_", "x")
        info = ApiKeyInfo(
            id=key_id,
            tenant=tenant,
            dataset=dataset,
            role=role,  # type: ignore[arg-type]
            created_at=self._clock(),
            description=description,
            expires_at=None if expires_in_days is None else self._clock() + expires_in_days * 86400,
        )
        with self._tx() as db:
            db.execute(
                "INSERT INTO api_keys (id, hash, role, tenant, dataset, description, created_at, "
                "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key_id,
                    hash_secret(secret),
                    role,
                    tenant,
                    dataset,
                    description,
                    info.created_at,
                    info.expires_at,
                ),
            )
        return NewApiKey(info=info, key=f"{KEY_PREFIX}_{key_id}_{secret}")

    def import_admin_key(self, key: str) -> None:
        """Accept an externally chosen admin key (from settings); idempotent."""
        key_id, secret = _split_key(key)
        with self._tx() as db:
            db.execute(
                "INSERT INTO api_keys (id, hash, role, tenant, dataset, description, created_at) "
                "VALUES (?, ?, 'admin', NULL, NULL, 'from settings', ?) "
                "ON CONFLICT(id) DO UPDATE SET hash=excluded.hash, role='admin'",
                (key_id, hash_secret(secret), self._clock()),
            )

    def has_admin_key(self) -> bool:
        """Whether any admin key exists."""
        sql = "SELECT 1 FROM api_keys WHERE role='admin' LIMIT 1"
        return self._conn.execute(sql).fetchone() is not None

    def list_keys(self, tenant: str | None = None) -> list[ApiKeyInfo]:
        """Keys (without secrets) of one tenant, or all keys."""
        sql = "SELECT id, tenant, dataset, role, created_at, description, expires_at FROM api_keys"
        rows = (
            self._conn.execute(sql + " WHERE tenant=? ORDER BY created_at", (tenant,)).fetchall()
            if tenant is not None
            else self._conn.execute(sql + " ORDER BY created_at").fetchall()
        )
        return [
            ApiKeyInfo(
                id=r[0],
                tenant=r[1],
                dataset=r[2],
                role=r[3],
                created_at=r[4],
                description=r[5],
                expires_at=r[6],
            )
            for r in rows
        ]

    def revoke_key(self, key_id: str) -> None:
        """Delete a key."""
        with self._tx() as db:
            if db.execute("DELETE FROM api_keys WHERE id=?", (key_id,)).rowcount == 0:
                raise NotFound(f"key {key_id!r} not found")

    def authenticate(self, key: str) -> KeyScope:
        """The scope of ``key``; ``AuthError`` when malformed or unknown."""
        key_id, secret = _split_key(key)
        row = self._conn.execute(
            "SELECT hash, role, tenant, dataset, expires_at FROM api_keys WHERE id=?", (key_id,)
        ).fetchone()
        # Compare against a dummy hash when the id is unknown, so timing does not tell.
        stored = row[0] if row else hash_secret("")
        if not hmac.compare_digest(stored, hash_secret(secret)) or row is None:
            raise AuthError("unknown API key")
        if row[4] is not None and row[4] <= self._clock():
            expired = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row[4]))
            raise AuthError(f"API key {key_id} expired at {expired}")
        return KeyScope(key_id=key_id, role=row[1], tenant=row[2], dataset=row[3])

    def verify_ingest(self, key: str, tenant: str, dataset: str) -> KeyScope:
        """Check that ``key`` may write to ``tenant/dataset`` and that both are active.

        Raises ``AuthError`` (401), ``Forbidden`` (403), ``NotFound`` (404) or ``Gone`` (410).
        """
        scope = self.authenticate(key)
        if scope.role != "admin" and (
            scope.tenant != tenant or (scope.dataset is not None and scope.dataset != dataset)
        ):
            raise Forbidden(f"this key may not write to {tenant}/{dataset}")
        found = self.get_dataset(tenant, dataset)
        owner = self.get_tenant(tenant)
        if not owner.active:
            raise Gone(f"tenant {tenant!r} is inactive")
        if not found.active:
            raise Gone(f"dataset {tenant}/{dataset} is inactive")
        update: dict[str, Any] = {"format": found.format}
        if owner.daily_ingest_mb is not None:
            day = utc_day(self._clock())
            row = self._conn.execute(
                "SELECT COALESCE(SUM(bytes), 0) FROM usage WHERE tenant=? AND day=?", (tenant, day)
            ).fetchone()
            update.update(
                daily_ingest_bytes=owner.daily_ingest_mb * 1024 * 1024,
                ingested_today_bytes=int(row[0]),
                day=day,
            )
        return scope.model_copy(update=update)

    # Leases ------------------------------------------------------------------------------

    def _next_token(self, db: sqlite3.Connection) -> int:
        db.execute(
            "INSERT INTO counters VALUES ('lease_token', 1) "
            "ON CONFLICT(name) DO UPDATE SET value = value + 1"
        )
        value: int = db.execute("SELECT value FROM counters WHERE name='lease_token'").fetchone()[0]
        return value

    def acquire_leases(self, names: list[str], owner: str, ttl: float) -> list[Lease]:
        """Take every free or expired lease among ``names``; return those taken."""
        taken: list[Lease] = []
        with self._tx() as db:
            now = self._clock()
            for name in names:
                row = db.execute(
                    "SELECT owner, expires_at FROM leases WHERE name=?", (name,)
                ).fetchone()
                if row is not None and row[1] > now:
                    continue
                lease = Lease(
                    name=name, owner=owner, token=self._next_token(db), expires_at=now + ttl
                )
                db.execute(
                    "INSERT INTO leases VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                    "owner=excluded.owner, token=excluded.token, expires_at=excluded.expires_at",
                    (name, owner, lease.token, lease.expires_at),
                )
                taken.append(lease)
        return taken

    def renew_lease(self, lease: Lease, ttl: float) -> Lease:
        """Extend a held lease; ``LeaseLost`` if someone else holds it now."""
        with self._tx() as db:
            row = db.execute(
                "SELECT owner, token FROM leases WHERE name=?", (lease.name,)
            ).fetchone()
            if row is None or row[0] != lease.owner or row[1] != lease.token:
                raise LeaseLost(f"lease {lease.name!r} is no longer held by {lease.owner!r}")
            renewed = lease.model_copy(update={"expires_at": self._clock() + ttl})
            db.execute(
                "UPDATE leases SET expires_at=? WHERE name=?", (renewed.expires_at, lease.name)
            )
        return renewed

    def check_lease(self, lease: Lease) -> None:
        """Raise ``LeaseLost`` unless ``lease`` is still held and unexpired (a fencing check)."""
        row = self._conn.execute(
            "SELECT owner, token, expires_at FROM leases WHERE name=?", (lease.name,)
        ).fetchone()
        if row is None or (row[0], row[1]) != (lease.owner, lease.token) or row[2] <= self._clock():
            raise LeaseLost(f"lease {lease.name!r} is no longer held by {lease.owner!r}")

    def release_leases(self, leases: list[Lease]) -> None:
        """Release leases still held with these tokens (others are left alone)."""
        with self._tx() as db:
            for lease in leases:
                db.execute(
                    "DELETE FROM leases WHERE name=? AND owner=? AND token=?",
                    (lease.name, lease.owner, lease.token),
                )

    def list_leases(self, prefix: str = "") -> list[Lease]:
        """Leases whose name starts with ``prefix`` (expired ones included)."""
        rows = self._conn.execute(
            "SELECT name, owner, token, expires_at FROM leases WHERE name >= ? AND name < ? "
            "ORDER BY name",
            (prefix, prefix + "\uffff"),
        ).fetchall()
        return [Lease(name=r[0], owner=r[1], token=r[2], expires_at=r[3]) for r in rows]

    # Health ------------------------------------------------------------------------------

    # Usage -------------------------------------------------------------------------------

    def report_usage(self, reports: list[Usage]) -> None:
        """Add what a receiver accepted since its last report to each day's totals (a tenant
        deleted meanwhile is skipped)."""
        with self._tx() as db:
            for u in reports:
                db.execute(
                    "INSERT INTO usage SELECT ?, ?, ?, ?, ?, ?, ? "
                    "WHERE EXISTS (SELECT 1 FROM tenants WHERE name=?) "
                    "ON CONFLICT(tenant, dataset, day) DO UPDATE SET "
                    "requests=requests+excluded.requests, records=records+excluded.records, "
                    "bytes=bytes+excluded.bytes, "
                    "compressed_bytes=compressed_bytes+excluded.compressed_bytes",
                    (
                        u.tenant,
                        u.dataset,
                        u.day,
                        u.requests,
                        u.records,
                        u.bytes,
                        u.compressed_bytes,
                        u.tenant,
                    ),
                )

    def list_usage(self, tenant: str | None = None, days: int = 7) -> list[Usage]:
        """Each dataset's totals for the last ``days`` UTC days (today included), newest day
        first; one tenant's (``NotFound`` if there is no such tenant) or everyone's."""
        if tenant is not None:
            self.get_tenant(tenant)
        since = utc_day(self._clock() - 86400 * (max(days, 1) - 1))
        rows = self._conn.execute(
            "SELECT tenant, dataset, day, requests, records, bytes, compressed_bytes FROM usage "
            "WHERE day >= ? AND (? IS NULL OR tenant = ?) ORDER BY day DESC, tenant, dataset",
            (since, tenant, tenant),
        ).fetchall()
        names = ("tenant", "dataset", "day", "requests", "records", "bytes", "compressed_bytes")
        return [Usage(**dict(zip(names, row, strict=True))) for row in rows]

    def report_health(self, report: HealthReport) -> None:
        """Record a component instance's latest report."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO health VALUES (?, ?, ?, ?, ?) ON CONFLICT(component, instance) DO "
                "UPDATE SET status=excluded.status, details=excluded.details, "
                "reported_at=excluded.reported_at",
                (
                    validate_name(report.component, "component"),
                    report.instance,
                    report.status,
                    json.dumps(report.details),
                    self._clock(),
                ),
            )

    def list_components(self) -> list[HealthReport]:
        """Every component instance that reported, with the age of its last report."""
        now = self._clock()
        rows = self._conn.execute(
            "SELECT component, instance, status, details, reported_at FROM health "
            "ORDER BY component, instance"
        ).fetchall()
        return [
            HealthReport(
                component=r[0],
                instance=r[1],
                status=r[2],
                details=json.loads(r[3]),
                reported_at=r[4],
                age_seconds=round(now - r[4], 3),
            )
            for r in rows
        ]

    def check_destination(self, tenant: str, name: str) -> DestinationCheck:
        """Whether the dataset's destination takes writes now (a probe object written and
        deleted); ``ConfigError`` when this control service was set up without storage."""
        dataset = self.get_dataset(tenant, name)
        if self._check_destination is None:
            raise ConfigError("this control service was started without destination checks")
        started = time.monotonic()
        error = ""
        try:
            self._check_destination(dataset.destination)
        except BytefreezerError as exc:
            error = str(exc)
        return DestinationCheck(
            tenant=tenant,
            dataset=name,
            url=dataset.destination.url,
            ok=not error,
            error=error,
            seconds=round(time.monotonic() - started, 3),
            checked_at=self._clock(),
        )

    # Dataset status ----------------------------------------------------------------------

    def report_dataset_status(self, status: DatasetStatus) -> DatasetStatus:
        """Record how a stage's latest run of a dataset went; ``NotFound`` for an unknown one."""
        stored = status.model_copy(update={"reported_at": self._clock()})
        with self._tx() as db:
            known = db.execute(
                "SELECT 1 FROM datasets WHERE tenant=? AND name=?", (status.tenant, status.dataset)
            ).fetchone()
            if known is None:
                raise NotFound(f"dataset {status.tenant}/{status.dataset} not found")
            db.execute(
                "INSERT INTO dataset_status VALUES (?, ?, ?, ?) "
                "ON CONFLICT(tenant, dataset, stage) DO UPDATE SET status=excluded.status",
                (status.tenant, status.dataset, status.stage, stored.model_dump_json()),
            )
        return stored

    def get_dataset_status(self, tenant: str, name: str) -> list[DatasetStatus]:
        """A dataset's latest status at each stage, piper then packer (``unknown`` before a
        stage reports); ``NotFound`` when it or its tenant is absent."""
        self.get_dataset(tenant, name)
        rows = self._conn.execute(
            "SELECT stage, status FROM dataset_status WHERE tenant=? AND dataset=?", (tenant, name)
        ).fetchall()
        stored = {r[0]: DatasetStatus.model_validate_json(r[1]) for r in rows}
        return [
            stored.get(stage)
            or DatasetStatus(tenant=tenant, dataset=name, stage=stage, state="unknown")
            for stage in STAGES
        ]

    def list_dataset_statuses(
        self, tenant: str | None = None, state: str | None = None, stage: str | None = None
    ) -> list[DatasetStatus]:
        """The reported statuses of one tenant's datasets or of all, in ``state`` and of
        ``stage`` if given."""
        if tenant is not None:
            self.get_tenant(tenant)
        rows = self._conn.execute(
            "SELECT status FROM dataset_status WHERE (?1 IS NULL OR tenant=?1) "
            "AND (?2 IS NULL OR stage=?2) ORDER BY tenant, dataset, stage",
            (tenant, stage),
        ).fetchall()
        statuses = [DatasetStatus.model_validate_json(r[0]) for r in rows]
        return [s for s in statuses if state is None or s.state == state]

    def clear_dataset_status(self, tenant: str, name: str, stage: str | None = None) -> None:
        """Forget a dataset's status (at one ``stage``, or at both): a failing dataset is
        tried again at the stage's next cycle."""
        self.get_dataset(tenant, name)
        with self._tx() as db:
            db.execute(
                "DELETE FROM dataset_status WHERE tenant=? AND dataset=? AND (?3 IS NULL OR stage=?3)",
                (tenant, name, stage),
            )

    def ping(self) -> None:
        """Raise unless the store answers."""
        self._conn.execute("SELECT 1").fetchone()
