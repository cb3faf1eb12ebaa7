"""Compaction: a partition's small Parquet files at a dataset's destination merged into fewer,
larger ones (`bytefreezer datasets compact`).

A dataset packed every minute (a stream with a short buffer), or late events arriving for an
hour already packed, leaves many small files in a partition; table readers pay per file. A
partition whose files have all been left alone for ``min_age_seconds`` (closed: nothing is
packed into it any more) is compacted: its files smaller than half the dataset's size limit are
merged, in name order, into files of up to 90% of the limit. Rows and columns are kept as they
are (schemas of different files are unified as packer unifies them), and each file written is
checked to hold its inputs' rows before they are deleted.

Each record stays exactly once, through crashes: the compaction holds the dataset's packer lease
(packer leaves the dataset alone meanwhile, and a compaction does not start while packer has an
unfinished run of it), and each merge is a manifest in the piper bucket written before its file
(``planned``) and again before its inputs are deleted (``written``). A compaction run after a
crash finishes what the manifest says: a ``planned`` merge's file, complete or not, is removed
(its inputs are still there), a ``written`` one's inputs are. Between a merged file's appearance
and its inputs' deletion (one listing and one delete request) a reader listing the partition can
see both, as with any table of plain files that are rewritten.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bytefreezer.control.models import Dataset, Lease
from bytefreezer.errors import BytefreezerError, Conflict
from bytefreezer.keys import (
    compaction_key,
    compaction_prefix,
    manifest_prefix,
    output_file_name,
    packer_lease_name,
)
from bytefreezer.pipelines.packer import file_size_limit, run_id_for
from bytefreezer.pipelines.parquet import parquet_file, read_parquet, writable, writer_options
from bytefreezer.pipelines.schema import conform, unified_schema
from bytefreezer.settings import Settings
from bytefreezer.storage import ObjectInfo, ObjectStore, Storage
from bytefreezer.telemetry import Telemetry

log = logging.getLogger(__name__)

SMALL_SHARE = 0.5  # a file below this share of the size limit is worth merging
FILL_SHARE = 0.9  # a merged file is planned up to this share of the limit


class CompactionError(BytefreezerError):
    """A merged file does not hold what its inputs held; nothing was deleted."""


@dataclass
class Merge:
    """Files of one partition merged into one."""

    partition: str
    inputs: list[str]
    bytes: int


@dataclass
class CompactionReport:
    """What a compaction did (or, dry, would do)."""

    tenant: str
    dataset: str
    dry_run: bool = False
    recovered: int = 0  # unfinished merges of an earlier compaction finished
    partitions: int = 0
    files_in: int = 0
    files_out: int = 0
    rows: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    merges: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def is_data_file(key: str) -> bool:
    """A Parquet file of the dataset's table: not under a folder or named with a leading ``_``
    or ``.`` (raw copies, probes, a writer's temporary files), which table readers skip too."""
    return key.endswith(".parquet") and not any(part[:1] in "_." for part in key.split("/"))


def plan_merges(files: list[ObjectInfo], limit: int, now: float, min_age: float) -> list[Merge]:
    """The merges worth doing among a destination's ``files``: per partition untouched for
    ``min_age`` seconds, its files under ``SMALL_SHARE`` of ``limit`` in name order, grouped up
    to ``FILL_SHARE`` of it; a group of one file is left as it is."""
    by_partition: dict[str, list[ObjectInfo]] = {}
    for info in files:
        if is_data_file(info.key):
            by_partition.setdefault(info.key.rpartition("/")[0], []).append(info)
    merges: list[Merge] = []
    for partition in sorted(by_partition):
        infos = by_partition[partition]
        if any(now - info.modified < min_age for info in infos):
            continue  # still being packed into
        group: list[ObjectInfo] = []
        for info in sorted(infos, key=lambda i: i.key):
            if info.size >= limit * SMALL_SHARE:
                continue
            if group and sum(i.size for i in group) + info.size > limit * FILL_SHARE:
                if len(group) > 1:
                    merges.append(
                        Merge(partition, [i.key for i in group], sum(i.size for i in group))
                    )
                group = []
            group.append(info)
        if len(group) > 1:
            merges.append(Merge(partition, [i.key for i in group], sum(i.size for i in group)))
    return merges


def compact_dataset(
    settings: Settings,
    control: Any,
    storage: Storage,
    dataset: Dataset,
    *,
    min_age_seconds: float = 3600.0,
    dry_run: bool = False,
) -> CompactionReport:
    """Compact ``dataset``'s closed partitions (see the module's text); ``Conflict`` when packer
    is working on the dataset."""
    report = CompactionReport(dataset.tenant, dataset.name, dry_run=dry_run)
    dest = storage.destination(**dataset.destination.model_dump())
    piper = storage.piper
    ttl = settings.packer.lease_ttl_seconds
    owner = f"compaction:{settings.instance_id}"
    leases = control.acquire_leases([packer_lease_name(dataset.tenant, dataset.name)], owner, ttl)
    if not leases:
        raise Conflict(
            f"packer is packing {dataset.tenant}/{dataset.name} now; compact it again in a moment"
        )
    lease: Lease = leases[0]
    try:
        if piper.list(manifest_prefix(dataset.tenant, dataset.name)):
            raise Conflict(
                f"packer has an unfinished run of {dataset.tenant}/{dataset.name}, which its "
                "next cycle finishes; compact it after that"
            )
        for info in piper.list(compaction_prefix(dataset.tenant, dataset.name)):
            _finish(json.loads(piper.get(info.key, size=info.size)), dest, piper, info.key)
            report.recovered += 1
        limit = file_size_limit(dataset, settings.packer.max_file_size_mb)
        merges = plan_merges(dest.list(), limit, time.time(), min_age_seconds)
        report.partitions = len({m.partition for m in merges})
        for merge in merges:
            report.files_in += len(merge.inputs)
            report.bytes_in += merge.bytes
            report.merges.append({"partition": merge.partition, "files": len(merge.inputs)})
            if dry_run:
                continue
            lease = control.renew_lease(lease, ttl)
            rows, written = _merge(merge, dataset, dest, piper, control, lease)
            report.files_out += 1
            report.rows += rows
            report.bytes_out += written
    finally:
        control.release_leases([lease])
    return report


def _merge(
    merge: Merge,
    dataset: Dataset,
    dest: ObjectStore,
    piper: ObjectStore,
    control: Any,
    lease: Lease,
) -> tuple[int, int]:
    run_id = "c" + run_id_for(merge.inputs)
    name = output_file_name(run_id, 0)
    output = f"{merge.partition}/{name}" if merge.partition else name
    key = compaction_key(dataset.tenant, dataset.name, run_id)
    manifest = {"run_id": run_id, "inputs": merge.inputs, "output": output, "state": "planned"}
    piper.put(key, json.dumps(manifest).encode())
    tables = [read_parquet(dest.get(k)) for k in merge.inputs]
    rows = sum(t.num_rows for t in tables)
    schema = unified_schema([t.schema for t in tables])
    table = writable(pa.concat_tables([conform(t, schema) for t in tables]))
    del tables
    pending = dest.open_write(output, durable=False)
    try:
        with pq.ParquetWriter(
            pending.file,
            table.schema,
            **writer_options(table.schema, dataset.parquet.compression, table),
        ) as writer:
            writer.write_table(table)
        written = pending.commit()
    except BaseException:
        pending.abort()
        raise
    del table
    dest.sync()
    found = parquet_file(dest.get(output)).metadata.num_rows
    if found != rows:  # pragma: no cover - a defect, never the inputs' deletion
        dest.delete_many([output])
        piper.delete_many([key])
        raise CompactionError(f"{output} holds {found} rows, its inputs {rows}; inputs kept")
    control.check_lease(lease)  # packer has not taken the dataset over
    manifest["state"] = "written"
    piper.put(key, json.dumps(manifest).encode())
    dest.delete_many(merge.inputs)
    piper.delete_many([key])
    log.info(
        "compacted %d files of %s/%s %s into %s (%d rows)",
        len(merge.inputs),
        dataset.tenant,
        dataset.name,
        merge.partition or "/",
        output,
        rows,
    )
    return rows, written


def _finish(manifest: dict[str, Any], dest: ObjectStore, piper: ObjectStore, key: str) -> None:
    """Finish an interrupted merge: a planned one is undone (its inputs are all there), a
    written one's inputs are deleted."""
    if manifest.get("state") == "written":
        dest.delete_many(manifest["inputs"])
    else:
        dest.delete_many([manifest["output"]])
        dest.discard_partial_writes([manifest["output"]])
    piper.delete_many([key])
    log.info("finished interrupted compaction %s (%s)", manifest["run_id"], manifest.get("state"))


# When each process next looks for partitions to compact, per piper bucket (one stack's).
_NEXT_CHECK: dict[str, float] = {}
_NEXT_CHECK_LOCK = threading.Lock()


def compact_due(
    settings: Settings, control: Any, storage: Storage, telemetry: Telemetry
) -> list[CompactionReport]:
    """Compact the datasets that ask for it (``parquet.compact_after_minutes``), at most every
    ``packer.compaction_check_seconds``: packer calls it after each cycle. A dataset packer is
    at just then is tried at the next check; a failure is logged and counted, never packer's."""
    now = time.monotonic()
    with _NEXT_CHECK_LOCK:
        if now < _NEXT_CHECK.get(storage.piper.url, 0.0):
            return []
        _NEXT_CHECK[storage.piper.url] = now + settings.packer.compaction_check_seconds
    reports = []
    for dataset in control.list_datasets():
        minutes = dataset.parquet.compact_after_minutes
        if minutes is None or not dataset.active:
            continue
        try:
            report = compact_dataset(
                settings, control, storage, dataset, min_age_seconds=minutes * 60
            )
        except Conflict as busy:
            log.debug("compaction of %s/%s waits: %s", dataset.tenant, dataset.name, busy)
            continue
        except Exception:
            log.exception("cannot compact %s/%s", dataset.tenant, dataset.name)
            telemetry.add("bytefreezer_errors", 1, stage="packer", error_type="compaction")
            continue
        telemetry.add("bytefreezer_packer_files_compacted", report.files_in)
        reports.append(report)
    return reports
