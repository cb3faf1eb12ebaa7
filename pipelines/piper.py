"""Piper: intake objects → decode → transform chain → one staged Parquet object each.

The public surface is the ``ProcessIntake`` PTransform (one element per intake object) and
``run_piper_cycle``, which claims objects with leases and runs one bounded pipeline over them.
A crash at any point re-runs the same input to the same staged key, so nothing is lost or
duplicated; the input is deleted only after its outputs are durable and while its lease holds.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from bytefreezer.control import ControlClient, open_control
from bytefreezer.control.models import Dataset, Lease
from bytefreezer.errors import BytefreezerError, ConfigError, InvalidName, LeaseLost, StorageError
from bytefreezer.keys import DEAD_LETTER_PREFIX, RAW_PREFIX, IntakeKey, piper_lease_name
from bytefreezer.pipelines.decode import choose_format, decode_object
from bytefreezer.pipelines.failures import (
    failing_list,
    failure_text,
    report_outcome,
    stage_statuses,
    waiting_to_retry,
)
from bytefreezer.pipelines.parquet import parquet_bytes
from bytefreezer.pipelines.runner import (
    CycleStats,
    Distributed,
    ObjectFn,
    first_report,
    reuse_key_for,
    run_claimed,
)
from bytefreezer.settings import Settings
from bytefreezer.storage import BucketObjects, ObjectStore, Storage
from bytefreezer.telemetry import (
    TRACEPARENT,
    Telemetry,
    extract_context,
    inject_traceparent,
    null_telemetry,
    tracer_for,
)
from bytefreezer.transforms import Chain, Context, compile_chain
from bytefreezer.transforms.registry import registry_version
from bytefreezer.transforms.tables import JsonFields

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)
NAMESPACE = "piper"
# Staged objects live minutes: zstd at its fastest level. LZ4 writes a 1 MB NDJSON object of
# security events in 2.2 ms instead of 4.3 ms, but as 0.22 MB instead of 0.14 MB, and end to
# end it measured level with zstd (1.55 against 1.56 CPU-s of the stack, four pairs).
STAGED_COMPRESSION = "zstd"
STAGED_LEVEL = 1
STAGED_TRACE_KEY = b"bytefreezer.traceparent"
MAX_CACHED_CHAINS = 256  # compiled chains an instance keeps (datasets and their versions)

# What each dataset's NDJSON fields were read as, shared by the instances of a process (one per
# worker thread) with the same settings: an instance that had not yet seen a dataset parsed its
# next object twice, so with two threads a hundred datasets cost some 50 extra parses a pass
# until every instance had met every dataset. Keyed by (reuse key, tenant, dataset).
_FIELDS: dict[tuple[str, str, str], JsonFields] = {}
_FIELDS_LOCK = threading.Lock()
MAX_LEARNED_DATASETS = 4096


def staged_parquet(table: pa.Table) -> bytes:
    """``table`` as piper stages it: zstd at its fastest level, and no column statistics (only
    packer reads a staged object, and whole: 12% less time to write 4 MB of security events)."""
    return parquet_bytes(table, STAGED_COMPRESSION, level=STAGED_LEVEL, statistics=False)


@dataclass(frozen=True)
class PiperWork:
    """One claimed intake object: its key, its dataset, and the lease that guards it."""

    key: str
    dataset_json: str
    lease_json: str
    size: int | None = None  # from the listing: reading it then takes one request on S3
    status_json: str = ""  # its dataset's piper DatasetStatus, if control had one


def set_aside_letter(stage: str, error: str, size: int) -> bytes:
    """The dead letter of an object set aside whole (piper's intake objects, packer's staged
    ones): the stage, why, and its size; no line."""
    return orjson.dumps({"stage": stage, "error": error, "line": None, "bytes": size})


class _ProcessIntakeFn(ObjectFn):
    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self._settings = settings

    def setup(self) -> None:
        self._storage = Storage(self._settings)
        self._control: ControlClient = open_control(self._settings)
        self._chains: dict[tuple[int, str], Chain] = {}
        self._outcomes: dict[tuple[str, str], tuple[str, bool]] = {}  # reported per run
        self._destinations: dict[str, ObjectStore] = {}  # raw copies (keep_raw)
        self._fields_scope = self.reuse_key() or ""
        self._tracer, self._tracer_provider = tracer_for(self._settings, "piper")

    def finish_bundle(self) -> None:
        if self._tracer_provider is not None:
            self._tracer_provider.force_flush()

    def reuse_key(self) -> str | None:
        return reuse_key_for("piper", self._settings)

    def teardown(self) -> None:
        if self._tracer_provider is not None:
            self._tracer_provider.shutdown()

    def _chain(self, dataset: Dataset, dataset_json: str) -> Chain:
        """The dataset's compiled chain: compiled once per instance (which later runs reuse) and
        again when the dataset or the transforms registered in this process change."""
        key = (registry_version(), dataset_json)
        chain = self._chains.get(key)
        if chain is None:
            if len(self._chains) >= MAX_CACHED_CHAINS:
                self._chains.clear()
            context = Context(
                tenant=dataset.tenant, dataset=dataset.name, resources=BucketObjects(self._storage)
            )
            chain = self._chains[key] = compile_chain(dataset.transforms, context)
        return chain

    def _learned(self, dataset: Dataset) -> JsonFields:
        """What the dataset's NDJSON fields were read as in earlier objects, by any instance of
        this process with these settings (read once, then)."""
        key = (self._fields_scope, dataset.tenant, dataset.name)
        with _FIELDS_LOCK:
            learned = _FIELDS.get(key)
            if learned is None:
                if len(_FIELDS) >= MAX_LEARNED_DATASETS:
                    _FIELDS.clear()
                learned = _FIELDS[key] = JsonFields()
        return learned

    def _still_held(self, lease: Lease, key: str) -> bool:
        try:
            self._control.check_lease(lease)
        except LeaseLost:
            self.count("lease_lost")
            log.warning("lease on %s lost; leaving it to the new owner", key)
            return False
        return True

    def process(self, work: PiperWork) -> Any:
        parent = None
        if self._tracer_provider is not None:  # tracing on: continue the receiver's trace
            try:
                parent = extract_context(self._storage.intake.metadata(work.key).get(TRACEPARENT))
            except (FileNotFoundError, StorageError):
                parent = None
        with self._tracer.start_as_current_span("piper.process_object", context=parent) as span:
            span.set_attribute("bytefreezer.key", work.key)
            done = self._process(work, inject_traceparent(span))
        if done is not None:
            yield done

    def _process(self, work: PiperWork, trace: dict[str, str]) -> str | None:
        key = IntakeKey.parse(work.key)
        dataset = Dataset.model_validate_json(work.dataset_json)
        lease = Lease.model_validate_json(work.lease_json)
        intake, piper = self._storage.intake, self._storage.piper
        try:
            data = intake.get(work.key, size=work.size)
        except FileNotFoundError:
            return None  # another worker finished it
        try:
            staged, rows_in, rows_out, dead = self._stage(data, key, dataset, work, trace)
        except ConfigError as exc:
            # This dataset's chain cannot run (a GeoIP database not uploaded yet, a plugin not
            # installed): its objects wait for the fix, left alone for a growing wait (see
            # failures.py), and the other datasets' objects go on.
            self._dataset_waits(dataset, work, "config", "cannot be processed", exc)
            return None
        except (BytefreezerError, MemoryError):
            raise  # storage, control or memory: a later cycle tries it again
        except Exception as exc:
            # A defect this object's data meets (ours, a library's or a plugin's) would fail
            # every cycle on it: its bytes are set aside with the reason, the rest goes on.
            log.exception("piper cannot process %s; it goes to the dead-letter output", work.key)
            self.count("dead_lettered:internal")
            staged, rows_in, rows_out = b"", 0, 0
            dead = [self._set_aside(key, data, "piper", f"{type(exc).__name__}: {exc}")]
        if dataset.keep_raw and not self._keep_raw_copy(dataset, key, data, work):
            return None  # its destination refuses the copy: the object waits (failures.py)
        self.count("bytes_in", len(data))
        # Fencing: a worker that was paused past its lease writes nothing. The same check
        # before the delete covers a pause during the writes.
        if not self._still_held(lease, work.key):
            return None
        if rows_out:
            piper.put(key.staged_key, staged)
            self.count("bytes_out", len(staged))
        if dead:
            piper.put(key.dead_letter_key, b"\n".join(dead) + b"\n")
        if not self._still_held(lease, work.key):
            return None
        intake.delete(work.key)
        self._report_outcome(dataset, work, None)
        self.count("objects_processed")
        self.count("records_in", rows_in)
        self.count("records_out", rows_out)
        self.count("records_dead_lettered", len(dead))
        return work.key

    def _keep_raw_copy(
        self, dataset: Dataset, key: IntakeKey, data: bytes, work: PiperWork
    ) -> bool:
        """Write the object as received at its dataset's destination (``keep_raw``), before the
        intake copy can go; whether it was written. The key is the object's own, so a rerun
        after a crash rewrites the same bytes, and so would a worker that lost its lease."""
        destination = dataset.destination
        scope = json.dumps(destination.model_dump(mode="json"), sort_keys=True, default=str)
        try:
            store = self._destinations.get(scope)
            if store is None:
                store = self._storage.destination(**destination.model_dump())
                self._destinations[scope] = store
            store.put(key.raw_copy_key, data)
        except (StorageError, ConfigError, OSError) as exc:
            self._dataset_waits(
                dataset, work, "raw_copy", "cannot have its raw copies written", exc
            )
            return False
        return True

    def _dataset_waits(
        self, dataset: Dataset, work: PiperWork, kind: str, what: str, exc: Exception
    ) -> None:
        """A failure that keeps all of the dataset's objects waiting: counted as
        ``errors:{kind}``, logged once a minute, reported to control (its growing wait)."""
        self.count(f"errors:{kind}")
        name = f"{dataset.tenant}/{dataset.name}"
        if first_report(f"piper-{kind}:{name}"):
            log.error("dataset %s %s, its objects wait: %s", name, what, exc)
        self._report_outcome(dataset, work, failure_text(exc))

    def _report_outcome(self, dataset: Dataset, work: PiperWork, error: str | None) -> None:
        """Tell control how the dataset's objects fare, once per run and outcome: the objects of
        one run share the status they were claimed with."""
        owner = (dataset.tenant, dataset.name)
        if self._outcomes.get(owner) == (work.status_json, error is None):
            return
        self._outcomes[owner] = (work.status_json, error is None)
        report_outcome(self._control, self._settings, "piper", dataset, work.status_json, error)

    def _set_aside(self, key: IntakeKey, data: bytes, stage: str, error: str) -> bytes:
        """Keep an object no record can be read from as it came (``.raw.gz`` beside its dead
        letters); the dead letter that says why."""
        self._storage.piper.put(key.set_aside_intake_key, data)
        return set_aside_letter(stage, error, len(data))

    def _stage(
        self, data: bytes, key: IntakeKey, dataset: Dataset, work: PiperWork, trace: dict[str, str]
    ) -> tuple[bytes, int, int, list[bytes]]:
        """Decode, transform and encode one object: (staged Parquet, records in, records out,
        dead letters)."""
        dead: list[bytes] = []
        try:
            decoded = decode_object(
                data,
                choose_format(key.format_hint, dataset.format),
                self._learned(dataset),
                dataset.csv_delimiter,
            )
        except ValueError as exc:
            decoded = None
            dead.append(self._set_aside(key, data, "decode", str(exc)))
        rows_in = rows_out = 0
        staged = b""
        if decoded is not None:
            rows_in = decoded.lines
            if decoded.rejected:
                self.count("dead_lettered:decode", len(decoded.rejected))
            for line, reason in decoded.rejected:
                dead.append(orjson.dumps({"stage": "decode", "error": reason, "line": line}))
            result = self._chain(dataset, work.dataset_json).run(decoded.table)
            for row in result.rejected.to_pylist():
                row["stage"] = "transform"
                dead.append(orjson.dumps(row))
            self.count("records_dropped", result.dropped)
            for name, count in result.dropped_by.items():
                self.count(f"dropped:{name}", count)
            for name, count in result.rejected_by.items():
                self.count(f"dead_lettered:{name}", count)
            table = result.table
            if table.num_columns == 0 and table.num_rows:
                # Records without a single field cannot be a Parquet row: keep them as letters.
                empty = orjson.dumps(
                    {"stage": "decode", "error": "record has no fields", "line": "{}"}
                )
                dead.extend([empty] * table.num_rows)
                self.count("dead_lettered:decode", table.num_rows)
                table = table.slice(0, 0)
            if trace:  # packer links its files to this object's span
                table = table.replace_schema_metadata(
                    {**(table.schema.metadata or {}), STAGED_TRACE_KEY: trace[TRACEPARENT]}
                )
            staged = staged_parquet(table)
            rows_out = table.num_rows
        return staged, rows_in, rows_out, dead


class ProcessIntake(Distributed):
    """Decode, transform and stage each claimed intake object; outputs the processed keys."""

    def __init__(self, settings: Settings, spread: bool = True, concurrency: int = 1) -> None:
        super().__init__(
            "DecodeTransformStage", _ProcessIntakeFn(settings), NAMESPACE, spread, concurrency
        )


# A piper process looks for expired dead letters at most this often (a listing of the
# dead-letter prefix, which only grows between sweeps).
DEAD_LETTER_SWEEP_SECONDS = 3600.0
_SWEPT: dict[str, float] = {}  # piper bucket URL -> when this process last swept it
_SWEPT_LOCK = threading.Lock()


def expire_dead_letters(store: ObjectStore, retention_days: float, now: float | None = None) -> int:
    """Delete the dead letters under ``_dead-letter/`` of ``store`` last written more than
    ``retention_days`` ago; how many. Several pipers may sweep at once: a delete of an object
    already gone is fine."""
    cutoff = (time.time() if now is None else now) - retention_days * 86400
    expired = [
        info.key
        for info in store.iter(f"{DEAD_LETTER_PREFIX}/")
        if info.modified and info.modified < cutoff
    ]
    for start in range(0, len(expired), 1000):  # S3 deletes at most 1,000 keys per request
        store.delete_many(expired[start : start + 1000])
    if expired:
        log.info("deleted %d dead letters older than %g days", len(expired), retention_days)
    return len(expired)


def _sweep_dead_letters(settings: Settings, storage: Storage) -> None:
    """``expire_dead_letters`` once per ``DEAD_LETTER_SWEEP_SECONDS`` per bucket and process,
    when a retention is set; a failure is logged and tried again at the next sweep."""
    days = settings.piper.dead_letter_retention_days
    if not days:
        return
    now = time.monotonic()
    with _SWEPT_LOCK:
        last = _SWEPT.get(storage.piper.url)
        if last is not None and now - last < DEAD_LETTER_SWEEP_SECONDS:
            return
        _SWEPT[storage.piper.url] = now
    try:
        expire_dead_letters(storage.piper, days)
    except StorageError as exc:
        log.warning("expired dead letters were not deleted: %s", exc)


def _raw_day(key: str) -> str | None:
    """The UTC day in a raw copy's key (``_raw/date=YYYY-MM-DD/...``)."""
    part = key.split("/", 2)[1] if key.count("/") >= 2 else ""
    return part[5:] if part.startswith("date=") and len(part) == 15 else None


def expire_raw_copies(store: ObjectStore, days: int, now: float | None = None) -> int:
    """Delete the raw copies (``keep_raw``) at ``store`` of the UTC days that ended more than
    ``days`` days ago; how many were deleted."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    cutoff = (moment - timedelta(days=days)).strftime("%Y-%m-%d")  # days before it go
    expired = [
        info.key
        for info in store.iter(f"{RAW_PREFIX}/")
        if (day := _raw_day(info.key)) is not None and day < cutoff
    ]
    for start in range(0, len(expired), 1000):  # S3 deletes at most 1,000 keys per request
        store.delete_many(expired[start : start + 1000])
    if expired:
        log.info("deleted %d raw copies of days before %s", len(expired), cutoff)
    return len(expired)


def _sweep_raw_copies(storage: Storage, datasets: Iterable[Dataset]) -> None:
    """``expire_raw_copies`` for each dataset with ``keep_raw_days``, once per
    ``DEAD_LETTER_SWEEP_SECONDS`` per dataset and process; a failure is logged and tried again
    at the next sweep."""
    now = time.monotonic()
    for dataset in datasets:
        if not (dataset.keep_raw and dataset.keep_raw_days and dataset.destination):
            continue
        name = f"raw:{dataset.tenant}/{dataset.name}"
        with _SWEPT_LOCK:
            last = _SWEPT.get(name)
            if last is not None and now - last < DEAD_LETTER_SWEEP_SECONDS:
                continue
            _SWEPT[name] = now
        try:
            store = storage.destination(**dataset.destination.model_dump())
            expire_raw_copies(store, dataset.keep_raw_days)
        except (StorageError, ConfigError, OSError) as exc:
            log.warning("raw copies of %s were not expired: %s", name[4:], exc)


def run_piper_cycle(
    settings: Settings,
    control: ControlClient | None = None,
    storage: Storage | None = None,
    telemetry: Telemetry | None = None,
) -> CycleStats:
    """List intake objects, claim up to ``max_objects_per_run``, process them in one pipeline."""
    control = control or open_control(settings)
    storage = storage or Storage(settings)
    telemetry = telemetry or null_telemetry()
    started = time.monotonic()
    _sweep_dead_letters(settings, storage)
    every = {(d.tenant, d.name): d for d in control.list_datasets()}
    datasets = {name: d for name, d in every.items() if d.active}
    _sweep_raw_copies(storage, datasets.values())
    statuses = stage_statuses(control, "piper")
    now = time.time()
    # A dataset whose chain could not run waits out its retry time: its objects, oldest first,
    # would otherwise fill every run while the other datasets' objects waited.
    held = {owner for owner, status in statuses.items() if waiting_to_retry(status, now)}
    waiting_objects: dict[tuple[str, str], int] = {}
    oldest_waiting = 0
    candidates: list[tuple[int, str, Dataset]] = []
    sizes: dict[str, int] = {}
    unowned = {"inactive": 0, "no_dataset": 0}
    for info in storage.intake.iter():
        try:
            key = IntakeKey.parse(info.key)
        except InvalidName:
            continue
        found = datasets.get((key.tenant, key.dataset))
        if found is not None and (key.tenant, key.dataset) in held:
            owner = (key.tenant, key.dataset)
            waiting_objects[owner] = waiting_objects.get(owner, 0) + 1
            oldest_waiting = min(oldest_waiting or key.unixnano, key.unixnano)
        elif found is not None:
            candidates.append((key.unixnano, info.key, found))
            sizes[info.key] = info.size
        else:
            # Accepted before its dataset was deactivated or deleted: kept as it is (the
            # dataset may come back), counted and reported, never processed or dropped.
            reason = "inactive" if (key.tenant, key.dataset) in every else "no_dataset"
            unowned[reason] += 1
            if first_report(f"piper-unowned:{key.tenant}/{key.dataset}"):
                log.warning(
                    "intake objects of %s/%s wait: the dataset is %s",
                    key.tenant,
                    key.dataset,
                    "inactive" if reason == "inactive" else "gone",
                )
    for reason, count in unowned.items():
        telemetry.set("bytefreezer_piper_unowned_objects", count, reason=reason)
    candidates.sort(key=lambda c: c[0])
    with_objects = {(d.tenant, d.name) for _, _, d in candidates} | set(waiting_objects)
    for owner, status in statuses.items():
        if status.state == "failing" and owner not in with_objects and owner in every:
            # Nothing of it waits any more (an operator removed its objects): nothing fails.
            control.clear_dataset_status(*owner, stage="piper")
    failing = failing_list([s for owner, s in statuses.items() if owner in with_objects], now)
    telemetry.set("bytefreezer_piper_failing_datasets", len(failing))
    telemetry.set(
        "bytefreezer_piper_backlog_objects", len(candidates) + sum(waiting_objects.values())
    )
    firsts = [c[0] for c in candidates[:1]] + ([oldest_waiting] if oldest_waiting else [])
    oldest = (time.time_ns() - min(firsts)) / 1e9 if firsts else 0.0
    telemetry.set("bytefreezer_piper_backlog_age_seconds", max(oldest, 0.0))
    limit = settings.piper.max_objects_per_run
    claimed: list[tuple[str, Dataset, Lease]] = []
    for start in range(0, len(candidates), limit):
        if len(claimed) >= limit:
            break
        batch = candidates[start : start + limit]
        by_name = {piper_lease_name(k): (k, d) for _, k, d in batch}
        leases = control.acquire_leases(
            list(by_name), settings.instance_id, settings.piper.lease_ttl_seconds
        )
        telemetry.add("bytefreezer_piper_lease_conflicts", len(by_name) - len(leases))
        for lease in leases:
            key_str, dataset = by_name[lease.name]
            claimed.append((key_str, dataset, lease))
    extra, claimed = claimed[limit:], claimed[:limit]
    if extra:
        control.release_leases([lease for _, _, lease in extra])
    stats = CycleStats(claimed=len(claimed), failing=failing)
    if not claimed:
        return stats
    work = []
    for claimed_key, dataset, lease in claimed:
        known = statuses.get((dataset.tenant, dataset.name))
        work.append(
            PiperWork(
                claimed_key,
                dataset.model_dump_json(),
                lease.model_dump_json(),
                sizes[claimed_key],
                known.model_dump_json() if known is not None else "",
            )
        )
    stats.counters = run_claimed(
        settings.piper.beam_args,
        work,
        "Piper",
        lambda spread, concurrency: ProcessIntake(settings, spread, concurrency),
        NAMESPACE,
        control=control,
        leases=[lease for _, _, lease in claimed],
        telemetry=telemetry,
        max_workers=settings.piper.max_concurrent_jobs,
    )
    stats.seconds = time.monotonic() - started
    record_piper_counters(telemetry, stats)
    return stats


def record_piper_counters(telemetry: Telemetry, stats: CycleStats) -> None:
    """Turn one run's Beam counters into the piper's metrics."""
    counters = stats.counters
    telemetry.add("bytefreezer_records_received", counters.get("records_in", 0), stage="piper")
    telemetry.add("bytefreezer_records_sent", counters.get("records_out", 0), stage="piper")
    telemetry.add(
        "bytefreezer_received_bytes",
        counters.get("bytes_in", 0),
        stage="piper",
        encoding="compressed",
    )
    telemetry.add("bytefreezer_sent_bytes", counters.get("bytes_out", 0), stage="piper")
    telemetry.add("bytefreezer_piper_objects", counters.get("objects_processed", 0), result="done")
    telemetry.add("bytefreezer_piper_objects", counters.get("lease_lost", 0), result="lease_lost")
    for name, value in counters.items():
        kind, _, transform = name.partition(":")
        if kind == "errors":
            telemetry.add("bytefreezer_errors", value, stage="piper", error_type=transform)
        elif kind == "dropped":
            telemetry.add("bytefreezer_records_dropped", value, stage="piper", transform=transform)
        elif kind == "dead_lettered":
            telemetry.add(
                "bytefreezer_records_dead_lettered", value, stage="piper", transform=transform
            )
    telemetry.record("bytefreezer_piper_run_seconds", stats.seconds)
    telemetry.record("bytefreezer_stage_duration_seconds", stats.seconds, stage="piper")
