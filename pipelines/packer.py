"""Packer: staged Parquet → partitioned Parquet at each dataset's destination.

Commit protocol for one dataset (under its lease):

1. replay any unfinished manifest of the dataset (below);
2. take staged objects whose intake object is gone (piper committed them), oldest first,
   up to ``max_input_mb_per_run``; the run id is a hash of their keys;
3. read and unify them, partition by event time, split into files of at most
   ``max_file_size_mb``; write the manifest (inputs, planned outputs, state ``planned``);
4. upload every output (atomic, at names derived from the run id);
5. mark the manifest ``uploaded``, record the inputs' stems in the dataset's ledger of packed
   stems, delete the inputs, delete the manifest.

Replaying a ``planned`` manifest deletes its planned outputs and redoes 3-5 from the same
inputs; replaying an ``uploaded`` one only finishes step 5. Either way every row lands once.

The ledger closes the last fencing gap: a piper that checked its lease, then paused past its
TTL while another piper took the object over and the result was packed, would write the same
staged object again when it wakes. A staged object whose stem the ledger holds is such a late
copy; packer deletes it instead of packing it twice. Ledger entries older than
``packer.ledger_retention_seconds`` are pruned.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics.metric import Metrics

from bytefreezer.control import ControlClient, open_control
from bytefreezer.control.models import Dataset, Lease
from bytefreezer.errors import InvalidName, LeaseLost
from bytefreezer.keys import (
    IntakeKey,
    dataset_prefix,
    manifest_key,
    manifest_prefix,
    output_file_name,
    packed_key,
    packed_prefix,
    packer_lease_name,
)
from bytefreezer.pipelines.parquet import parquet_bytes, read_parquet
from bytefreezer.pipelines.partitioning import event_times, partition_paths
from bytefreezer.pipelines.piper import STAGED_TRACE_KEY
from bytefreezer.pipelines.runner import CycleStats, Distributed, run_claimed
from bytefreezer.pipelines.schema import unify
from bytefreezer.settings import Settings
from bytefreezer.storage import ObjectInfo, Storage
from bytefreezer.telemetry import Telemetry, null_telemetry, span_link, tracer_for

log = logging.getLogger(__name__)
NAMESPACE = "packer"

# Ledger entries never change once written, so each process reads each one once.
_LEDGER_LOCK = threading.Lock()
_LEDGER_CACHE: dict[str, frozenset[str]] = {}


@dataclass(frozen=True)
class PackWork:
    """One claimed dataset and the lease that guards it."""

    dataset_json: str
    lease_json: str


@dataclass
class PlannedFile:
    """One output file: its path under the destination and its rows."""

    path: str
    table: pa.Table


def plan_outputs(
    inputs: list[tuple[str, pa.Table, int]],
    dataset: Dataset,
    run_id: str,
    max_file_size_mb: int | None = None,
) -> list[PlannedFile]:
    """Deterministically turn staged tables (key, table, staged bytes) into output files."""
    tables = [t for _, t, _ in inputs if t.num_rows]
    if not tables:
        return []
    ingest = pa.chunked_array(
        [pa.array([IntakeKey.parse(k).unixnano] * t.num_rows, pa.int64()) for k, t, _ in inputs]
    ).combine_chunks()
    table = unify(tables)
    total_bytes = sum(size for _, _, size in inputs)
    bytes_per_row = max(total_bytes / max(table.num_rows, 1), 1.0)
    # Staged files are zstd Parquet too, so their bytes per row predict the output; keep 10% spare.
    limit_mb = min(
        dataset.parquet.max_file_size_mb, max_file_size_mb or dataset.parquet.max_file_size_mb
    )
    budget = limit_mb * 1024 * 1024 * 0.9
    rows_per_file = max(1, int(budget / bytes_per_row))
    times = event_times(table, dataset.timestamp_field, ingest)
    paths = partition_paths(times, dataset.parquet)
    groups: list[tuple[str, pa.Table]]
    if paths is None:
        groups = [("", table)]
    else:
        order = pc.sort_indices(paths)
        table, paths = table.take(order), paths.take(order).combine_chunks()
        groups = []
        runs = pc.run_end_encode(paths)
        start = 0
        for value, end in zip(runs.values.to_pylist(), runs.run_ends.to_pylist(), strict=True):
            groups.append((value, table.slice(start, end - start)))
            start = end
    planned: list[PlannedFile] = []
    for partition, rows in groups:
        for offset in range(0, rows.num_rows, rows_per_file):
            name = output_file_name(run_id, len(planned))
            path = f"{partition}/{name}" if partition else name
            planned.append(PlannedFile(path, rows.slice(offset, rows_per_file)))
    return planned


def run_id_for(keys: list[str]) -> str:
    """The run id of a set of inputs: the same inputs always give the same id."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:20]


class _PackDatasetFn(beam.DoFn):  # type: ignore[misc]
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._files = Metrics.counter(NAMESPACE, "files_written")
        self._rows = Metrics.counter(NAMESPACE, "rows_written")
        self._bytes = Metrics.counter(NAMESPACE, "bytes_written")
        self._inputs = Metrics.counter(NAMESPACE, "staged_objects_packed")
        self._recovered = Metrics.counter(NAMESPACE, "manifests_recovered")
        self._lost = Metrics.counter(NAMESPACE, "lease_lost")
        self._late = Metrics.counter(NAMESPACE, "late_staged_discarded")

    def setup(self) -> None:
        self._storage = Storage(self._settings)
        self._control: ControlClient = open_control(self._settings)
        self._tracer, self._tracer_provider = tracer_for(self._settings, "packer")

    def finish_bundle(self) -> None:
        if self._tracer_provider is not None:
            self._tracer_provider.force_flush()

    def teardown(self) -> None:
        if self._tracer_provider is not None:
            self._tracer_provider.shutdown()

    def process(self, work: PackWork) -> Any:
        yield from self._pack(work)

    def _pack(self, work: PackWork) -> list[str]:
        done: list[str] = []
        dataset = Dataset.model_validate_json(work.dataset_json)
        lease = Lease.model_validate_json(work.lease_json)
        piper = self._storage.piper
        try:
            for info in piper.list(manifest_prefix(dataset.tenant, dataset.name)):
                manifest = json.loads(piper.get(info.key))
                self._recovered.inc()
                log.info("replaying packer manifest %s", info.key)
                self._commit(manifest, dataset, lease, replay=True)
            while True:
                inputs = self._eligible(dataset)
                if not inputs:
                    break
                manifest = {
                    "run_id": run_id_for(inputs),
                    "tenant": dataset.tenant,
                    "dataset": dataset.name,
                    "destination": dataset.destination.model_dump(),
                    "inputs": inputs,
                    "outputs": [],
                    "state": "planned",
                }
                self._commit(manifest, dataset, lease, replay=False)
                done.append(f"{dataset.tenant}/{dataset.name}:{manifest['run_id']}")
        except LeaseLost:
            self._lost.inc()
            log.warning("packer lease on %s/%s lost; stopping", dataset.tenant, dataset.name)
        return done

    def _eligible(self, dataset: Dataset) -> list[str]:
        prefix = dataset_prefix(dataset.tenant, dataset.name)
        staged = [o for o in self._storage.piper.list(prefix) if o.key.endswith(".parquet")]
        if not staged:
            return []
        staged = self._discard_late_copies(dataset, staged)
        if not staged:
            return []
        pending = set()
        for info in self._storage.intake.iter(prefix):
            try:
                pending.add(IntakeKey.parse(info.key).stem)
            except InvalidName:
                continue
        budget = self._settings.packer.max_input_mb_per_run * 1024 * 1024
        chosen: list[tuple[int, str]] = []
        total = 0
        ordered = []
        for info in staged:
            try:
                key = IntakeKey.parse(info.key)
            except InvalidName:
                continue
            if key.stem not in pending:
                ordered.append((key.unixnano, info.key, info.size))
        for nano, key_str, size in sorted(ordered):
            if chosen and total + size > budget:
                break
            chosen.append((nano, key_str))
            total += size
        return [k for _, k in chosen]

    def _discard_late_copies(self, dataset: Dataset, staged: list[ObjectInfo]) -> list[ObjectInfo]:
        """Delete staged objects whose stem was already packed; return the others."""
        packed = self._packed_stems(dataset)
        keep: list[ObjectInfo] = []
        late: list[ObjectInfo] = []
        for info in staged:
            try:
                stem = IntakeKey.parse(info.key).stem
            except InvalidName:
                continue
            (late if stem in packed else keep).append(info)
        if late:
            log.warning(
                "discarding %d staged object(s) of %s/%s already packed (written late by a "
                "worker that lost its lease): %s",
                len(late),
                dataset.tenant,
                dataset.name,
                ", ".join(info.key for info in late[:5]),
            )
            self._storage.piper.delete_many([info.key for info in late])
            self._late.inc(len(late))
        return keep

    def _packed_stems(self, dataset: Dataset) -> set[str]:
        """The stems the dataset's ledger holds; prunes entries past their retention."""
        piper = self._storage.piper
        prefix = packed_prefix(dataset.tenant, dataset.name)
        horizon = time.time() - self._settings.packer.ledger_retention_seconds
        stems: set[str] = set()
        expired: list[str] = []
        live: set[str] = set()
        for info in piper.iter(prefix):
            if info.modified and info.modified < horizon:
                expired.append(info.key)
                continue
            cache_key = f"{piper.url}/{info.key}"
            with _LEDGER_LOCK:
                entry = _LEDGER_CACHE.get(cache_key)
            if entry is None:
                try:
                    entry = frozenset(json.loads(piper.get(info.key))["stems"])
                except FileNotFoundError:
                    continue  # pruned by another packer meanwhile
                with _LEDGER_LOCK:
                    _LEDGER_CACHE[cache_key] = entry
            live.add(cache_key)
            stems |= entry
        if expired:
            piper.delete_many(expired)
        scope = f"{piper.url}/{prefix}"
        with _LEDGER_LOCK:
            for cache_key in [k for k in _LEDGER_CACHE if k.startswith(scope)]:
                if cache_key not in live:
                    del _LEDGER_CACHE[cache_key]
        return stems

    def _commit(
        self, manifest: dict[str, Any], dataset: Dataset, lease: Lease, *, replay: bool
    ) -> None:
        piper = self._storage.piper
        key = manifest_key(dataset.tenant, dataset.name, manifest["run_id"])
        destination = manifest["destination"]
        dest = self._storage.destination(destination["url"], destination.get("options"))
        if manifest["state"] == "planned":
            if replay:
                dest.delete_many([planned["path"] for planned in manifest["outputs"]])
            inputs = []
            for input_key in manifest["inputs"]:
                staged = piper.get(input_key)
                inputs.append((input_key, read_parquet(staged), len(staged)))
                Metrics.counter(NAMESPACE, "staged_bytes").inc(len(staged))
            links = [
                link
                for _, table, _ in inputs
                if (
                    link := span_link(
                        (table.schema.metadata or {}).get(STAGED_TRACE_KEY, b"").decode()
                    )
                )
            ]
            with self._tracer.start_as_current_span("packer.write_files", links=links) as span:
                span.set_attribute("bytefreezer.dataset", f"{dataset.tenant}/{dataset.name}")
                span.set_attribute("bytefreezer.inputs", len(inputs))
                files = plan_outputs(
                    inputs, dataset, manifest["run_id"], self._settings.packer.max_file_size_mb
                )
                manifest["outputs"] = [{"path": f.path, "rows": f.table.num_rows} for f in files]
                piper.put(key, json.dumps(manifest).encode())
                compression = dataset.parquet.compression

                def encoded() -> Iterator[tuple[str, bytes]]:
                    for planned_file in files:
                        data = parquet_bytes(planned_file.table, compression)
                        self._files.inc()
                        self._rows.inc(planned_file.table.num_rows)
                        self._bytes.inc(len(data))
                        yield planned_file.path, data

                # Encoding the next file overlaps with writing (fsync or upload) the last ones.
                dest.put_many(encoded())
                span.set_attribute("bytefreezer.files", len(files))
            self._control.check_lease(lease)
            manifest["state"] = "uploaded"
            piper.put(key, json.dumps(manifest).encode())
        stems = sorted(IntakeKey.parse(k).stem for k in manifest["inputs"])
        ledger = {"run_id": manifest["run_id"], "packed_at": time.time(), "stems": stems}
        piper.put(
            packed_key(dataset.tenant, dataset.name, manifest["run_id"]),
            json.dumps(ledger).encode(),
        )
        piper.delete_many(list(manifest["inputs"]))
        piper.delete(key)
        self._inputs.inc(len(manifest["inputs"]))


class PackDatasets(Distributed):
    """Pack each claimed dataset's committed staged objects into its destination."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("PartitionAndWrite", _PackDatasetFn(settings))


def run_packer_cycle(
    settings: Settings,
    control: ControlClient | None = None,
    storage: Storage | None = None,
    telemetry: Telemetry | None = None,
) -> CycleStats:
    """Claim each dataset with staged objects and pack it in one bounded pipeline."""
    control = control or open_control(settings)
    storage = storage or Storage(settings)
    telemetry = telemetry or null_telemetry()
    started = time.monotonic()
    with_staged = set()
    backlog = 0
    for info in storage.piper.iter():
        parts = info.key.split("/")
        if len(parts) >= 3 and not parts[0].startswith("_"):
            with_staged.add((parts[0], parts[1]))
            backlog += 1
        elif len(parts) >= 4 and parts[0] == "_manifests":
            with_staged.add((parts[1], parts[2]))
    datasets = {
        packer_lease_name(d.tenant, d.name): d
        for d in control.list_datasets()
        if (d.tenant, d.name) in with_staged
    }
    telemetry.set("bytefreezer_packer_backlog_objects", backlog)
    stats = CycleStats()
    if not datasets:
        return stats
    leases = control.acquire_leases(
        list(datasets), settings.instance_id, settings.packer.lease_ttl_seconds
    )
    stats.claimed = len(leases)
    if not leases:
        return stats
    work = [PackWork(datasets[x.name].model_dump_json(), x.model_dump_json()) for x in leases]
    stats.counters = run_claimed(
        settings.packer.beam_args,
        lambda p: (
            p | "Claimed" >> beam.Create(work, reshuffle=False) | "Packer" >> PackDatasets(settings)
        ),
        NAMESPACE,
        control=control,
        leases=leases,
        telemetry=telemetry,
        workers=settings.packer.max_concurrent_jobs,
    )
    stats.seconds = time.monotonic() - started
    record_packer_counters(telemetry, stats)
    return stats


def record_packer_counters(telemetry: Telemetry, stats: CycleStats) -> None:
    """Turn one run's Beam counters into the packer's metrics."""
    counters = stats.counters
    rows, written = counters.get("rows_written", 0), counters.get("bytes_written", 0)
    telemetry.add("bytefreezer_records_received", rows, stage="packer")
    telemetry.add("bytefreezer_records_sent", rows, stage="packer")
    telemetry.add(
        "bytefreezer_received_bytes",
        counters.get("staged_bytes", 0),
        stage="packer",
        encoding="compressed",
    )
    telemetry.add("bytefreezer_sent_bytes", written, stage="packer")
    telemetry.add("bytefreezer_packer_files", counters.get("files_written", 0))
    telemetry.add("bytefreezer_packer_rows", rows)
    telemetry.add("bytefreezer_packer_bytes", written)
    telemetry.add("bytefreezer_packer_manifest_recoveries", counters.get("manifests_recovered", 0))
    telemetry.add(
        "bytefreezer_packer_late_staged_discarded", counters.get("late_staged_discarded", 0)
    )
    if written:
        telemetry.record(
            "bytefreezer_packer_compression_ratio", counters.get("staged_bytes", 0) / written
        )
    telemetry.record("bytefreezer_packer_run_seconds", stats.seconds)
    telemetry.record("bytefreezer_stage_duration_seconds", stats.seconds, stage="packer")
