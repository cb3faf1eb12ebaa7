"""Packer: staged Parquet → partitioned Parquet at each dataset's destination.

A cycle packs the datasets whose staged objects are due: the receiver stored the oldest
``packer.buffer_seconds`` ago, or they add up to ``packer.buffer_mb`` (0 seconds: every
cycle), so that a stream becomes a few large files rather than one per partition and cycle. A
dataset with an unfinished manifest is always due. The others wait, durable, for a later cycle.

Commit protocol for one dataset (under its lease):

1. replay any unfinished manifest of the dataset (below);
2. take staged objects whose intake object is gone (piper committed them), oldest first,
   up to ``max_input_mb_per_run``; the run id is a hash of their keys;
3. plan from each input's footer and event-time column only: the unified schema, rows per
   partition, files of at most ``max_file_size_mb``; write the manifest (inputs, planned
   outputs, state ``planned``);
4. stream the inputs, one in memory at a time, into the planned files (at most
   ``MAX_OPEN_OUTPUTS`` open; more partitions take more passes), each appearing atomically at a
   name derived from the run id; memory does not grow with the run's size;
5. record the inputs' stems in the dataset's ledger of packed stems under the run id (the
   run's commit point: its files are final), delete the inputs, delete the manifest.

Replaying a manifest whose run has a ledger entry only finishes step 5 (its inputs may be
partly deleted already); replaying one without deletes its planned outputs and redoes 3-5 from
the same inputs. Either way every row lands once. (A manifest marked ``uploaded``, as earlier
versions marked it before writing the ledger, is finished the same way.)

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
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import IO, Any, TypeAlias, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bytefreezer.control import ControlClient, open_control
from bytefreezer.control.models import Dataset, Lease
from bytefreezer.errors import ConfigError, InvalidName, LeaseLost
from bytefreezer.keys import (
    DEAD_LETTER_PREFIX,
    IntakeKey,
    dataset_prefix,
    manifest_key,
    manifest_prefix,
    output_file_name,
    packed_key,
    packed_prefix,
    packer_lease_name,
    partition_fields,
)
from bytefreezer.pipelines.failures import (
    failing_list,
    failure_text,
    report_outcome,
    stage_statuses,
    waiting_to_retry,
)
from bytefreezer.pipelines.parquet import (
    DICTIONARY_MIN_ROWS,
    DICTIONARY_SAMPLE_ROWS,
    codec,
    file_dictionaries,
    parquet_bytes,
    parquet_file,
    read_parquet,
    repeating_columns,
)
from bytefreezer.pipelines.partitioning import Partitions, event_times, partitions
from bytefreezer.pipelines.piper import STAGED_TRACE_KEY, set_aside_letter, staged_parquet
from bytefreezer.pipelines.runner import (
    CycleStats,
    Distributed,
    ObjectFn,
    first_report,
    reuse_key_for,
    run_claimed,
)
from bytefreezer.pipelines.schema import conform, unified_schema
from bytefreezer.settings import PackerSettings, Settings
from bytefreezer.storage import ObjectInfo, ObjectStore, PendingObject, Storage
from bytefreezer.telemetry import Telemetry, null_telemetry, span_link, tracer_for

log = logging.getLogger(__name__)
NAMESPACE = "packer"
MAX_OPEN_OUTPUTS = 64  # output files open at once in one run
# An output expected smaller than this is encoded in memory and written in one call
# (_BufferedWriter): at most MAX_OPEN_OUTPUTS of them are open in a run.
SMALL_FILE_BYTES = 1024 * 1024
PENDING_BYTES = 128 * 1024 * 1024  # decoded input rows held before a row group is written
# Staged bytes read for the plan are kept for the write up to this much per run (compressed),
# so a run that small reads each input once; larger runs read them again, one at a time.
KEPT_INPUT_BYTES = 64 * 1024 * 1024
OUTPUT_SAMPLE_ROWS = 16_384  # rows encoded to estimate the size of a large run's output
READ_AHEAD = 2  # staged objects read and decoded ahead of the one being written, per core
# A run of at most this many rows is encoded and (locally) committed on its own thread, and one
# of at most INLINE_BYTES staged reads its inputs there: handing each file and input to the
# encoder and commit threads cost more than it gained. 100 datasets of ~8,000 rows (4,800 files
# of ~170 rows) packed in 2.21-2.47 s instead of 2.56-2.94 s (on tmpfs), with 13,000 context
# switches instead of 40,000; a buffered stream of 100 datasets (20 inputs each) in 3.0-3.6 s
# instead of 3.7-4.3 s. Concurrent runs of other datasets keep the cores busy.
INLINE_ROWS = 32_768
INLINE_BYTES = 1024 * 1024
# Runs of a process at once per write slot: a run reads and writes its files in one of
# ``packer.max_concurrent_jobs`` slots (the memory and CPU a run takes), and as many more runs
# list, commit and clean up meanwhile, mostly waiting on storage (listings, fsyncs, requests).
RUNS_PER_WRITE_SLOT = 2

# Ledger entries never change once written, so each process reads each one once: per dataset
# (its ledger prefix in its bucket), each entry's stems and when each was packed.
_LEDGER_LOCK = threading.Lock()
_LEDGER_CACHE: dict[str, dict[str, dict[str, float]]] = {}
# Which text columns repeat, judged on a full sample, per dataset and schema: reused by the
# dataset's runs for this long.
JUDGMENT_SECONDS = 60.0
MAX_JUDGMENTS = 4096
_JUDGED_LOCK = threading.Lock()
_JUDGED: dict[tuple[str, pa.Schema], tuple[float, list[str]]] = {}
# A dataset's ledger entries are merged into one once there are more than this many: a run
# every few seconds kept an hour's entries (the default retention), hundreds per dataset, and
# every run listed and every cycle walked them (700 per dataset: 100 small datasets took 2.2 s
# to pack instead of 0.3 s).
LEDGER_MERGE_AT = 16


class _Unreadable(Exception):
    """A staged object whose rows cannot be read though its footer could."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True)
class PackWork:
    """One claimed dataset, the lease that guards it, and its status when it was claimed."""

    dataset_json: str
    lease_json: str
    status_json: str = ""  # its DatasetStatus, if control had one


@dataclass(frozen=True)
class StagedSummary:
    """What planning needs of one staged object, read without holding its rows."""

    key: str
    rows: int
    size: int
    plain_size: int  # its column chunks uncompressed, from the footer
    schema: pa.Schema
    partitions: dict[str, int]  # rows per partition path ("" when not partitioned)
    traceparent: str


@dataclass(frozen=True)
class PlannedFile:
    """One output file: its partition, its path under the destination and its row count."""

    partition: str
    path: str
    rows: int


def _partitioned(table: pa.Table, key: str, dataset: Dataset) -> Partitions | None:
    times = event_times(table, dataset.timestamp_field, IntakeKey.parse(key).unixnano)
    return partitions(times, dataset.parquet, dataset.tenant, dataset.name, table)


def _partition_columns(dataset: Dataset, names: list[str]) -> list[str]:
    """The columns of a staged object (``names``) that its rows' partitions are read from: the
    timestamp field's and any a custom template's ``{field:NAME}`` names (``event.time``: the
    column ``event``)."""
    fields = [dataset.timestamp_field]
    if dataset.parquet.partitioning == "custom":
        fields += partition_fields(dataset.parquet.partition_template)
    wanted = [f if f in names else f.partition(".")[0] for f in fields]
    return [c for c in dict.fromkeys(wanted) if c in names]


def partition_runs(codes: pa.Array, partitions: int) -> pa.RunEndEncodedArray | None:
    """The runs of partition ``codes`` (one of ``partitions``) when each partition's rows are
    together already, as in an object of events within one hour or arriving in time order: the
    rows are then written as they are, without a sorted copy of the object (the copy cost
    0.8 ms for 4 MB of NDJSON, this check 0.02 ms). ``None`` when a partition's rows lie
    apart."""
    if codes.null_count:
        return None
    runs = pc.run_end_encode(codes)
    if len(runs.values) > partitions:  # more runs than partitions: some partition is split
        return None
    values = runs.values.to_pylist()
    return runs if len(values) == len(set(values)) else None


def summarize(key: str, data: bytes, dataset: Dataset) -> StagedSummary:
    """Schema, rows per partition and trace of a staged object (reads one column only)."""
    return _summarized(key, data, dataset)[0]


def _summarized(key: str, data: bytes, dataset: Dataset) -> tuple[StagedSummary, Partitions | None]:
    """``summarize``, and the partition of each row it found (kept with the object's bytes,
    the write does not work it out again: a third of a small object's cost when event times
    are text)."""
    file = parquet_file(data)
    schema = file.schema_arrow
    rows = file.metadata.num_rows
    columns = _partition_columns(dataset, schema.names)
    table = file.read(columns=columns) if columns else pa.table({"_": pa.nulls(rows)})
    found = _partitioned(table, key, dataset)
    if found is None:
        by_partition = {"": rows} if rows else {}
    else:
        counts = pc.value_counts(found.codes).to_pylist()
        by_partition = {found.names[c["values"]]: c["counts"] for c in counts}
    trace = (schema.metadata or {}).get(STAGED_TRACE_KEY, b"").decode()
    meta = file.metadata
    plain = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    summary = StagedSummary(key, rows, len(data), plain, schema, by_partition, trace)
    return summary, found


def file_size_limit(dataset: Dataset, max_file_size_mb: int | None = None) -> int:
    """The bytes an output file of ``dataset`` may take: its ``max_file_size_mb``, or packer's
    when that is lower."""
    limit_mb = min(
        dataset.parquet.max_file_size_mb, max_file_size_mb or dataset.parquet.max_file_size_mb
    )
    return limit_mb * 1024 * 1024


def output_ratio(staged: bytes, compression: str) -> float:
    """The size of a run's output relative to its staged objects, estimated on the first
    ``OUTPUT_SAMPLE_ROWS`` rows of one of them: encoded with the destination's codec and as
    they were staged (zstd level 1). Planned by the staged size alone, the files of a
    destination that compresses less passed the size limit: 5.6 MB uncompressed and 1.6 MB with
    snappy for a limit of 1 MB (`tests/test_packer_plan.py`)."""
    batches = parquet_file(staged).iter_batches(batch_size=OUTPUT_SAMPLE_ROWS)
    sample = pa.Table.from_batches([next(batches)])
    as_output = parquet_bytes(sample, compression)
    return len(as_output) / len(staged_parquet(sample))


def output_bytes_per_row(summaries: list[StagedSummary], ratio: float) -> float:
    """What a row of output is expected to take: the staged bytes per row times ``ratio``
    (``output_ratio``)."""
    rows = sum(s.rows for s in summaries)
    return max(sum(s.size for s in summaries) * ratio / max(rows, 1), 1.0)


def plan_outputs(
    summaries: list[StagedSummary],
    dataset: Dataset,
    run_id: str,
    max_file_size_mb: int | None = None,
    ratio: float = 1.0,
) -> tuple[pa.Schema, list[PlannedFile]]:
    """Deterministically plan the output files of staged objects: the unified schema, and per
    partition (in sorted order) files of at most the size limit, rows in input order. A row
    of output is expected to take the staged bytes per row times ``ratio`` (``output_ratio``);
    10% of the limit is kept spare."""
    nonempty = [s for s in summaries if s.rows]
    if not nonempty:
        return pa.schema([]), []
    schema = unified_schema([s.schema for s in nonempty])
    bytes_per_row = output_bytes_per_row(summaries, ratio)
    limit = file_size_limit(dataset, max_file_size_mb)
    rows_per_file = max(1, int(limit * 0.9 / bytes_per_row))
    per_partition: dict[str, int] = {}
    for summary in nonempty:
        for partition, rows in summary.partitions.items():
            per_partition[partition] = per_partition.get(partition, 0) + rows
    if len(per_partition) > dataset.parquet.max_partitions and _partitions_by_field(dataset):
        raise ConfigError(
            f"{dataset.tenant}/{dataset.name}: this run's records fall into "
            f"{len(per_partition):,} partitions, more than parquet.max_partitions "
            f"({dataset.parquet.max_partitions:,}); the template "
            f"{dataset.parquet.partition_template!r} partitions by a field of too many values, "
            "or the limit is too low for this data: change the template or raise the limit "
            "(bytefreezer datasets update --partition-template / --max-partitions); the "
            "records stay staged until then"
        )
    planned: list[PlannedFile] = []
    for partition in sorted(per_partition):
        rows = per_partition[partition]
        for offset in range(0, rows, rows_per_file):
            name = output_file_name(run_id, len(planned))
            path = f"{partition}/{name}" if partition else name
            planned.append(PlannedFile(partition, path, min(rows_per_file, rows - offset)))
    return schema, planned


def _partitions_by_field(dataset: Dataset) -> bool:
    """Whether ``dataset``'s partitions include record values (``{field:NAME}``)."""
    options = dataset.parquet
    return options.partitioning == "custom" and bool(partition_fields(options.partition_template))


class _PartitionOutput:
    """The planned files of one partition, filled in order; rows wait in small batches so
    that row groups are not one per input."""

    def __init__(
        self,
        files: list[PlannedFile],
        open_file: Callable[[PlannedFile], Any],
        on_file_done: Callable[[PendingObject], None],
    ) -> None:
        self._files = deque(files)
        self._open_file = open_file
        self._on_file_done = on_file_done
        self._pending: list[pa.Table] = []
        self._writer: FileWriter | None = None
        self._object: PendingObject | None = None
        self._left = 0

    def add(self, rows: pa.Table) -> None:
        self._pending.append(rows)

    def flush(self) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        self._pending = []
        offset = 0
        while offset < table.num_rows:
            if self._writer is None:
                planned = self._files.popleft()
                self._object, self._writer = self._open_file(planned)
                self._left = planned.rows
            take = min(self._left, table.num_rows - offset)
            self._writer.write_table(table.slice(offset, take))
            offset += take
            self._left -= take
            if self._left == 0:
                self._finish()

    def _finish(self) -> None:
        assert self._writer is not None and self._object is not None
        self._writer.close()
        self._on_file_done(self._object)
        self._writer = self._object = None

    def abort(self) -> None:
        if self._object is not None:
            self._object.abort()

    def close(self) -> None:
        self.flush()
        if self._writer is not None:  # pragma: no cover - the plan counted every row
            raise RuntimeError(f"planned rows missing from {self._object and self._object.key}")
        if self._files:  # pragma: no cover
            raise RuntimeError(f"planned files never written: {[f.path for f in self._files]}")


class _BufferedWriter:
    """A ParquetWriter encoding into memory, the file's bytes written to ``file`` in one call
    when it closes: for a small file. Arrow writes into a Python file a piece at a time, taking
    the GIL for each, so two threads encoding small files at once used 1.72 cores instead of
    1.87 and took 0.50 instead of 0.36 ms a file (170-row files of security events)."""

    def __init__(self, file: IO[bytes], schema: pa.Schema, **options: Any) -> None:
        self._file = file
        self._sink = pa.BufferOutputStream()
        self._writer = pq.ParquetWriter(self._sink, schema, **options)

    def write_table(self, table: pa.Table) -> None:
        self._writer.write_table(table)

    def close(self) -> None:
        self._writer.close()
        self._file.write(self._sink.getvalue())


FileWriter: TypeAlias = pq.ParquetWriter | _BufferedWriter


_In = TypeVar("_In")
_Out = TypeVar("_Out")


def read_ahead(
    pool: ThreadPoolExecutor, step: Callable[[_In], _Out], items: Iterable[_In], window: int
) -> Generator[_Out, None, None]:
    """``step`` of each item, in order, computed on ``pool`` at most ``window`` items ahead of
    the one the caller holds (bounded memory); a failure is raised in its place, after the
    steps started before it have ended."""
    ahead: deque[Future[_Out]] = deque()
    try:
        for item in items:
            ahead.append(pool.submit(step, item))
            if len(ahead) > window:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()
    finally:
        for future in ahead:
            future.cancel()
        wait(ahead)


_WRITE_SLOTS: dict[int, threading.Semaphore] = {}
_WRITE_SLOTS_LOCK = threading.Lock()


def write_slots(count: int) -> threading.Semaphore:
    """The process's ``count`` write slots, shared by every run of its packers."""
    with _WRITE_SLOTS_LOCK:
        return _WRITE_SLOTS.setdefault(count, threading.Semaphore(count))


def run_id_for(keys: list[str]) -> str:
    """The run id of a set of inputs: the same inputs always give the same id."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:20]


def _ledger_scope(piper: ObjectStore, dataset: Dataset) -> str:
    """The key of a dataset's ledger in ``_LEDGER_CACHE``."""
    return f"{piper.url}/{packed_prefix(dataset.tenant, dataset.name)}"


class _PackDatasetFn(ObjectFn):
    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self._settings = settings

    def setup(self) -> None:
        self._storage = Storage(self._settings)
        self._control: ControlClient = open_control(self._settings)
        self._tracer, self._tracer_provider = tracer_for(self._settings, "packer")
        # Output files are committed several at a time so their renames or uploads overlap, and
        # partitions are encoded in parallel (pyarrow releases the GIL while it writes).
        self._committer = ThreadPoolExecutor(max_workers=8, thread_name_prefix="commit")
        self._workers = max(1, os.cpu_count() or 1)
        self._encoders = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="encode")

    def finish_bundle(self) -> None:
        if self._tracer_provider is not None:
            self._tracer_provider.force_flush()

    def reuse_key(self) -> str | None:
        return reuse_key_for("packer", self._settings)

    def teardown(self) -> None:
        self._committer.shutdown(wait=True)
        self._encoders.shutdown(wait=True)
        if self._tracer_provider is not None:
            self._tracer_provider.shutdown()

    def process(self, work: PackWork) -> Any:
        yield from self._pack(work)

    def _pack(self, work: PackWork) -> list[str]:
        done: list[str] = []
        self._sizes: dict[str, int] = {}  # staged object sizes from the last listing
        dataset = Dataset.model_validate_json(work.dataset_json)
        lease = Lease.model_validate_json(work.lease_json)
        piper = self._storage.piper
        try:
            for info in piper.list(manifest_prefix(dataset.tenant, dataset.name)):
                manifest = json.loads(piper.get(info.key, size=info.size))
                self.count("manifests_recovered")
                log.info("replaying packer manifest %s", info.key)
                self._commit(manifest, dataset, lease, replay=True)
            more = True
            while more:
                inputs, more = self._eligible(dataset)
                if not inputs:
                    break
                manifest = {
                    "run_id": run_id_for(inputs),
                    "tenant": dataset.tenant,
                    "dataset": dataset.name,
                    # The URL alone: a replay writes with the dataset's options as they are then
                    # (rotated credentials), and no secret is kept in the piper bucket.
                    "destination": {"url": dataset.destination.url},
                    "inputs": inputs,
                    "outputs": [],
                    "state": "planned",
                }
                self._commit(manifest, dataset, lease, replay=False)
                done.append(f"{dataset.tenant}/{dataset.name}:{manifest['run_id']}")
        except LeaseLost:
            self.count("lease_lost")
            log.warning("packer lease on %s/%s lost; stopping", dataset.tenant, dataset.name)
        except Exception as exc:
            # One dataset's failure (its destination refuses writes, say) is not the others':
            # they are packed; this one's manifest, if any, is replayed by a later run, once
            # its wait has passed (see failures.py).
            self.count("dataset_errors")
            if first_report(f"packer:{dataset.tenant}/{dataset.name}"):
                log.exception("packer cannot pack %s/%s", dataset.tenant, dataset.name)
            self._report_status(dataset, work, failure_text(exc))
        else:
            self._report_status(dataset, work, None)
        return done

    def _report_status(self, dataset: Dataset, work: PackWork, error: str | None) -> None:
        """Tell control how this run of ``dataset`` went (a failure, or a success that ends
        one or refreshes an old ok)."""
        report_outcome(self._control, self._settings, "packer", dataset, work.status_json, error)

    def _eligible(self, dataset: Dataset) -> tuple[list[str], bool]:
        """The inputs of the dataset's next run, and whether ``max_input_mb_per_run`` left
        staged objects for another (objects staged since the listing wait for the next
        cycle: a run that took them all does not list them again)."""
        prefix = dataset_prefix(dataset.tenant, dataset.name)
        staged = [o for o in self._storage.piper.list(prefix) if o.key.endswith(".parquet")]
        if not staged:
            return [], False
        staged = self._discard_late_copies(dataset, staged)
        if not staged:
            return [], False
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
        more = False
        for nano, key_str, size in sorted(ordered):
            if chosen and total + size > budget:
                more = True
                break
            chosen.append((nano, key_str))
            total += size
            self._sizes[key_str] = size
        return [k for _, k in chosen], more

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
            self.count("late_staged_discarded", len(late))
        return keep

    def _packed_stems(self, dataset: Dataset) -> set[str]:
        """The stems the dataset's ledger holds within its retention. Prunes entries past it,
        and merges the entries into one once there are more than ``LEDGER_MERGE_AT``."""
        piper = self._storage.piper
        prefix = packed_prefix(dataset.tenant, dataset.name)
        now = time.time()
        horizon = now - self._settings.packer.ledger_retention_seconds
        scope = _ledger_scope(piper, dataset)
        with _LEDGER_LOCK:
            cached = dict(_LEDGER_CACHE.get(scope, {}))
        entries: dict[str, dict[str, float]] = {}
        expired: list[str] = []
        for info in piper.iter(prefix):
            if info.modified and info.modified < horizon:
                expired.append(info.key)
                continue
            entry = cached.get(info.key)
            if entry is None:
                try:
                    data = json.loads(piper.get(info.key, size=info.size))
                except FileNotFoundError:
                    continue  # pruned or merged by another packer meanwhile
                # A merged entry says when each stem was packed; a run's entry, by its time.
                packed = data.get("packed") or dict.fromkeys(data["stems"], info.modified or now)
                entry = {stem: float(at) for stem, at in packed.items()}
            entries[info.key] = entry
        if expired:
            piper.delete_many(expired)
        stems = {
            stem: at for entry in entries.values() for stem, at in entry.items() if at >= horizon
        }
        if len(entries) > LEDGER_MERGE_AT:
            # The merged entry is durable before its sources go: a crash between the two
            # leaves both, which hold the same stems.
            key = packed_key(dataset.tenant, dataset.name, f"merged-{time.time_ns()}")
            merged = {"run_id": None, "packed_at": now, "stems": sorted(stems), "packed": stems}
            piper.put(key, json.dumps(merged).encode())
            piper.delete_many(list(entries))
            entries = {key: stems}
        with _LEDGER_LOCK:
            _LEDGER_CACHE[scope] = entries
        return set(stems)

    def _write_files(
        self,
        summaries: list[StagedSummary],
        schema: pa.Schema,
        files: list[PlannedFile],
        dataset: Dataset,
        dest: ObjectStore,
        kept: dict[str, tuple[bytes, Partitions | None]],
        ratio: float,
    ) -> None:
        """Stream the staged objects into the planned files, one input in memory at a time
        (``kept`` holds the bytes and row partitions of inputs already read, which are not
        read or worked out again).

        At most ``MAX_OPEN_OUTPUTS`` files are open at once: partitions beyond that are written
        in further passes over the inputs. Rows wait per partition until the inputs they pin
        exceed ``PENDING_BYTES``, then each partition gets one row group."""
        compression = codec(dataset.parquet.compression)
        done: list[PendingObject] = []
        # Which text repeats is judged once per run, on the rows of its first input (of the
        # largest until one has a full sample), not per file (0.3 ms a file, 14 ms of the 48
        # files of a 64 MB run); small files get no dictionaries, and a run of only small files
        # judges nothing.
        judge = any(planned.rows >= DICTIONARY_MIN_ROWS for planned in files)
        repeating: list[str] = []
        judged = 0  # rows of the input judged on
        # A full sample's judgment holds for the dataset's next runs of the same schema for a
        # while: a dataset packed every few seconds judged its one input every run (0.5 ms of
        # the ~5 ms a small dataset's run costs).
        scope = (f"{self._storage.piper.url}/{dataset.tenant}/{dataset.name}", schema)
        with _JUDGED_LOCK:
            earlier = _JUDGED.get(scope)
        if judge and earlier is not None and time.monotonic() - earlier[0] < JUDGMENT_SECONDS:
            repeating, judged = earlier[1], DICTIONARY_SAMPLE_ROWS

        bytes_per_row = output_bytes_per_row(summaries, ratio)  # as the plan expects it

        def open_file(planned: PlannedFile) -> tuple[PendingObject, FileWriter]:
            pending = dest.open_write(planned.path, durable=False)  # dest.sync() below
            self.count("files_written")
            self.count("rows_written", planned.rows)
            dictionaries = file_dictionaries(repeating, planned.rows)
            small = planned.rows * bytes_per_row <= SMALL_FILE_BYTES
            writer = (_BufferedWriter if small else pq.ParquetWriter)(
                pending.file, schema, compression=compression, use_dictionary=dictionaries
            )
            return pending, writer

        inline = sum(planned.rows for planned in files) <= INLINE_ROWS
        by_partition: dict[str, list[PlannedFile]] = {}
        for planned in files:
            by_partition.setdefault(planned.partition, []).append(planned)
        names = sorted(by_partition)

        def decoded(summary: StagedSummary) -> tuple[pa.Table, list[tuple[str, int, int]]]:
            """The object's rows sorted by partition, and the (partition, start, end) runs."""
            held = kept.get(summary.key)
            raw = held[0] if held else self._storage.piper.get(summary.key, size=summary.size)
            try:
                staged = read_parquet(raw)
            except (pa.ArrowException, OSError) as exc:  # damage its footer did not show
                raise _Unreadable(summary.key, f"{type(exc).__name__}: {exc}") from None
            del raw
            # Partitions come from the object's own types, as in its summary (kept inputs' were
            # worked out then); a column widened by unification could read differently.
            found = held[1] if held else _partitioned(staged, summary.key, dataset)
            table = conform(staged, schema)
            del staged
            if found is None:
                return table, [("", 0, table.num_rows)]
            runs = partition_runs(found.codes, len(found.names))
            if runs is None:  # a partition's rows lie apart: sort them together
                order = pc.sort_indices(found.codes)  # stable: input order kept
                table = table.take(order)
                runs = pc.run_end_encode(found.codes.take(order))
            ends = runs.run_ends.to_pylist()
            starts = [0, *ends[:-1]]
            named = [found.names[code] for code in runs.values.to_pylist()]
            return table, list(zip(named, starts, ends, strict=True))

        for first in range(0, len(names), MAX_OPEN_OUTPUTS):
            outputs = {
                name: _PartitionOutput(by_partition[name], open_file, done.append)
                for name in names[first : first + MAX_OPEN_OUTPUTS]
            }

            wanted = [s for s in summaries if s.rows and outputs.keys() & s.partitions.keys()]
            inputs = self._read_ahead(decoded, wanted, inline)
            try:
                pinned = 0
                for table, runs in inputs:
                    if judge and judged < DICTIONARY_SAMPLE_ROWS and table.num_rows > judged:
                        repeating, judged = repeating_columns(schema, table), table.num_rows
                        if judged >= DICTIONARY_SAMPLE_ROWS:
                            with _JUDGED_LOCK:
                                if len(_JUDGED) >= MAX_JUDGMENTS:
                                    _JUDGED.clear()
                                _JUDGED[scope] = (time.monotonic(), repeating)
                    for name, start, end in runs:
                        if name in outputs:
                            outputs[name].add(table.slice(start, end - start))
                    pinned += table.nbytes
                    if pinned > PENDING_BYTES:
                        self._each(outputs.values(), _PartitionOutput.flush, inline)
                        pinned = 0
                self._each(outputs.values(), _PartitionOutput.close, inline)
            except BaseException:
                inputs.close()  # waits for the reads ahead
                for output in outputs.values():
                    output.abort()
                for pending in done:
                    pending.abort()
                raise
            # The files of this pass are complete: they appear together (renames or upload
            # completions overlap; a small run's renames are quicker done here).
            if len(done) == 1 or (inline and dest.local):
                sizes = []
                for index, pending in enumerate(done):
                    try:
                        sizes.append(pending.commit())
                    except BaseException:
                        for rest in done[index + 1 :]:  # never committed: no file left behind
                            rest.abort()
                        raise
            else:
                sizes = list(self._committer.map(lambda pending: pending.commit(), done))
            self.count("bytes_written", sum(sizes))
            done.clear()

    def _read_ahead(
        self, step: Callable[[_In], _Out], items: Sequence[_In], inline: bool = False
    ) -> Generator[_Out, None, None]:
        """``read_ahead`` on the encoders, ``READ_AHEAD`` items per core (one item, or the
        inputs of a small run (``inline``), are read on this thread: nothing handed over)."""
        if len(items) == 1 or inline:
            return (step(item) for item in items)
        return read_ahead(self._encoders, step, items, READ_AHEAD * self._workers)

    def _each(
        self,
        outputs: Iterable[_PartitionOutput],
        step: Callable[[_PartitionOutput], None],
        inline: bool = False,
    ) -> None:
        """``step`` on every output, several at once; raises the first failure only after
        every step has ended (so that aborting the outputs cannot race a running write). One
        output, or the outputs of a small run (``inline``), are stepped on this thread."""
        outputs = list(outputs)
        if len(outputs) == 1 or inline:
            for output in outputs:
                step(output)
            return
        futures = [self._encoders.submit(step, output) for output in outputs]
        wait(futures)
        for future in futures:
            future.result()

    def _commit(
        self, manifest: dict[str, Any], dataset: Dataset, lease: Lease, *, replay: bool
    ) -> None:
        piper = self._storage.piper
        key = manifest_key(dataset.tenant, dataset.name, manifest["run_id"])
        planned_at = manifest["destination"]
        current = dataset.destination
        dest = self._storage.destination(**current.model_dump())
        ledger_key = packed_key(dataset.tenant, dataset.name, manifest["run_id"])
        if replay and manifest["state"] == "planned" and piper.exists(ledger_key):
            manifest["state"] = "uploaded"  # the ledger was written: the files are final
        if manifest["state"] == "planned":
            if replay:
                planned_paths = [planned["path"] for planned in manifest["outputs"]]
                if planned_at["url"] == current.url:
                    dest.delete_many(planned_paths)
                    dest.discard_partial_writes(planned_paths)  # a killed run's temporary files
                else:
                    self._clean_moved(dataset, manifest["run_id"], planned_at, planned_paths)
                manifest["destination"] = {"url": current.url}
            # Reading and writing hold the run's memory and take its CPU: at most
            # max_concurrent_jobs runs of the process do it at once (the others list, commit
            # and clean up meanwhile).
            with write_slots(self._settings.packer.max_concurrent_jobs):
                self._write_run(manifest, dataset, dest, key)
            # Durable before the run is recorded (the ledger entry): one sync of a local
            # destination for all its files. A crash before the entry leaves files the replay
            # deletes, durable or not.
            dest.sync()
            self._control.check_lease(lease)
        stems = sorted(IntakeKey.parse(k).stem for k in manifest["inputs"])
        packed_at = time.time()
        ledger = {"run_id": manifest["run_id"], "packed_at": packed_at, "stems": stems}
        piper.put(ledger_key, json.dumps(ledger).encode())
        # The dataset's next run here finds this entry in its listing without reading it back
        # (a GET per run on S3).
        with _LEDGER_LOCK:
            _LEDGER_CACHE.setdefault(_ledger_scope(piper, dataset), {})[ledger_key] = dict.fromkeys(
                stems, packed_at
            )
        # The ledger entry committed the run, so the inputs and the manifest go in one request
        # (one batched delete on S3), in any order: an input left by a crash is discarded as a
        # late copy of a packed stem, and a manifest left is replayed as committed and deleted.
        piper.delete_many([*manifest["inputs"], key])
        self.count("staged_objects_packed", len(manifest["inputs"]))

    def _clean_moved(
        self, dataset: Dataset, run_id: str, planned_at: dict[str, Any], paths: list[str]
    ) -> None:
        """Remove what an unfinished run may have written at the destination the dataset had
        when the run was planned (the run is written again at its current one); a destination
        that cannot be reached any more is logged, with what may be left there."""
        url, current = planned_at["url"], dataset.destination
        options = planned_at.get("options")  # kept by manifests written before URLs alone
        if options is None:
            same_kind = url.split("://")[0] == current.url.split("://")[0]
            options = current.options if same_kind else {}
        try:
            old = self._storage.destination(url, options)
            old.delete_many(paths)
            old.discard_partial_writes(paths)
        except Exception as exc:
            log.warning(
                "packer writes %s/%s's unfinished run %s to its new destination %s; files of it "
                "may be left at its old destination %s (%s): %s",
                dataset.tenant,
                dataset.name,
                run_id,
                current.url,
                url,
                exc,
                ", ".join(paths) or "none planned yet",
            )

    def _write_run(
        self, manifest: dict[str, Any], dataset: Dataset, dest: ObjectStore, key: str
    ) -> None:
        """Read a planned run's inputs, write its manifest (at ``key``), then its files."""
        piper = self._storage.piper
        summaries = []
        kept: dict[str, tuple[bytes, Partitions | None]] = {}
        kept_bytes = 0

        def fetched(
            item: tuple[str, int | None],
        ) -> tuple[bytes, StagedSummary | str, Partitions | None]:
            staged = piper.get(item[0], size=item[1])
            try:
                return staged, *_summarized(item[0], staged, dataset)
            except (pa.ArrowException, OSError, ValueError) as exc:  # not Parquet we can read
                return staged, f"{type(exc).__name__}: {exc}", None

        sized = [
            (staged_key, self._sizes.pop(staged_key, None)) for staged_key in manifest["inputs"]
        ]
        sizes = [size for _, size in sized]
        small = None not in sizes and sum(s for s in sizes if s is not None) <= INLINE_BYTES
        for (key_in, _), (staged, summary, found) in zip(
            sized, self._read_ahead(fetched, sized, small), strict=True
        ):
            if isinstance(summary, str):
                # It would fail every run of the dataset: its bytes are set aside with the
                # reason, and it is deleted with the run's other inputs.
                self._set_aside(key_in, staged, summary)
                continue
            summaries.append(summary)
            self.count("staged_bytes", len(staged))
            held = len(staged) + (found.codes.nbytes if found is not None else 0)
            if kept_bytes + held <= KEPT_INPUT_BYTES:
                kept[summary.key] = (staged, found)
                kept_bytes += held
            del staged, found
        links = [link for s in summaries if (link := span_link(s.traceparent))]
        with self._tracer.start_as_current_span("packer.write_files", links=links) as span:
            span.set_attribute("bytefreezer.dataset", f"{dataset.tenant}/{dataset.name}")
            span.set_attribute("bytefreezer.inputs", len(summaries))
            ratio = self._output_ratio(summaries, dataset, kept)
            while True:
                schema, files = plan_outputs(
                    summaries,
                    dataset,
                    manifest["run_id"],
                    self._settings.packer.max_file_size_mb,
                    ratio,
                )
                manifest["outputs"] = [{"path": f.path, "rows": f.rows} for f in files]
                piper.put(key, json.dumps(manifest).encode())
                try:
                    self._write_files(summaries, schema, files, dataset, dest, kept, ratio)
                    break
                except _Unreadable as bad:
                    # Found while writing: this run's files go (some may be in place),
                    # the object is set aside and the run is planned again without it.
                    dest.delete_many([f.path for f in files])
                    read = kept.pop(bad.key, None)
                    self._set_aside(bad.key, read[0] if read else piper.get(bad.key), bad.reason)
                    summaries = [s for s in summaries if s.key != bad.key]
            kept.clear()
            span.set_attribute("bytefreezer.files", len(files))

    def _output_ratio(
        self,
        summaries: list[StagedSummary],
        dataset: Dataset,
        kept: dict[str, tuple[bytes, Partitions | None]],
    ) -> float:
        """``output_ratio`` of a run that could fill a file (its inputs uncompressed exceed
        half the size limit), else 1: its files are one per partition either way."""
        limit = file_size_limit(dataset, self._settings.packer.max_file_size_mb)
        plain = sum(s.plain_size for s in summaries)
        first = next((s for s in summaries if s.rows), None)
        if first is None or plain <= limit / 2:
            return 1.0
        held = kept.get(first.key)
        try:
            staged = held[0] if held else self._storage.piper.get(first.key, size=first.size)
            return output_ratio(staged, dataset.parquet.compression)
        except (pa.ArrowException, OSError):  # it is set aside while writing: plan uncompressed
            return plain / max(sum(s.size for s in summaries), 1)

    def _set_aside(self, key: str, data: bytes, error: str) -> None:
        """Keep a staged object no row can be read from as it is, beside the dataset's dead
        letters, with a dead letter that says why."""
        intake_key = IntakeKey.parse(key)
        log.error("packer cannot read staged object %s; it is set aside: %s", key, error)
        piper = self._storage.piper
        piper.put(intake_key.set_aside_staged_key, data)
        letter = set_aside_letter("packer", error, len(data))
        piper.put(intake_key.packer_dead_letter_key, letter + b"\n")
        self.count("staged_set_aside")


class PackDatasets(Distributed):
    """Pack each claimed dataset's committed staged objects into its destination."""

    def __init__(self, settings: Settings, spread: bool = True, concurrency: int = 1) -> None:
        super().__init__(
            "PartitionAndWrite", _PackDatasetFn(settings), NAMESPACE, spread, concurrency
        )


@dataclass
class Buffer:
    """What a cycle's listing finds staged for one dataset, and whether it is due to be packed
    (``packer.buffer_seconds`` and ``packer.buffer_mb``)."""

    listed: int = 0  # every object under the dataset's prefix (the backlog gauge)
    objects: int = 0  # staged Parquet among them
    size: int = 0
    oldest_ns: int = 0  # when the receiver stored the oldest (its intake key's unixnano)

    def add(self, info: ObjectInfo) -> None:
        """Count one listed object of the dataset."""
        self.listed += 1
        if not info.key.endswith(".parquet"):
            return
        self.objects += 1
        self.size += info.size
        try:
            nano = IntakeKey.parse(info.key).unixnano
        except InvalidName:  # never packed (see _eligible), so never due by its age
            return
        self.oldest_ns = min(self.oldest_ns, nano) if self.oldest_ns else nano

    def due(self, seconds: float, mb: int, now_ns: int) -> bool:
        """Whether the dataset is packed this cycle: its staged objects reach ``mb``, or its
        oldest was stored ``seconds`` ago (0: every cycle)."""
        if seconds == 0 or self.size >= mb * 1024 * 1024:
            return True
        return bool(self.oldest_ns) and now_ns - self.oldest_ns >= seconds * 1e9


def buffer_limits(packer: PackerSettings, dataset: Dataset | None) -> tuple[float, int]:
    """A dataset's buffer (seconds, MB): its own ``parquet`` options where set, else packer's."""
    seconds = dataset.parquet.buffer_seconds if dataset is not None else None
    mb = dataset.parquet.buffer_mb if dataset is not None else None
    return (
        packer.buffer_seconds if seconds is None else seconds,
        packer.buffer_mb if mb is None else mb,
    )


WAITING_REPORTED = 100  # buffered datasets a cycle reports (packer's /api/v1/status), soonest due


def _waiting(
    buffers: dict[tuple[str, str], Buffer],
    limits: dict[tuple[str, str], tuple[float, int]],
    now_ns: int,
) -> list[dict[str, Any]]:
    """The buffered datasets (``buffers``, with their ``limits``), soonest due first: what
    waits, and for how long still."""
    waiting = []
    for (tenant, name), buffer in buffers.items():
        seconds, mb = limits[tenant, name]
        age = (now_ns - buffer.oldest_ns) / 1e9 if buffer.oldest_ns else None
        waiting.append(
            {
                "tenant": tenant,
                "dataset": name,
                "objects": buffer.objects,
                "staged_bytes": buffer.size,
                "oldest_seconds": None if age is None else round(max(0.0, age), 1),
                "due_in_seconds": None if age is None else round(max(0.0, seconds - age), 1),
                "buffer_seconds": seconds,
                "buffer_mb": mb,
            }
        )
    waiting.sort(key=lambda w: (w["due_in_seconds"] is None, w["due_in_seconds"] or 0.0))
    return waiting[:WAITING_REPORTED]


def run_packer_cycle(
    settings: Settings,
    control: ControlClient | None = None,
    storage: Storage | None = None,
    telemetry: Telemetry | None = None,
) -> CycleStats:
    """Claim each dataset with staged objects and pack it in one bounded pipeline; then compact
    the datasets that ask for it, when their check is due (``compaction.compact_due``)."""
    from bytefreezer.pipelines.compaction import compact_due  # it builds on this module

    control = control or open_control(settings)
    storage = storage or Storage(settings)
    telemetry = telemetry or null_telemetry()
    stats = _pack_cycle(settings, control, storage, telemetry)
    compact_due(settings, control, storage, telemetry)
    return stats


def _pack_cycle(
    settings: Settings, control: ControlClient, storage: Storage, telemetry: Telemetry
) -> CycleStats:
    started = time.monotonic()
    buffers: dict[tuple[str, str], Buffer] = {}
    replays = set()
    # Dead letters only grow between piper's hourly retention sweeps: not listed every cycle.
    for info in storage.piper.iter(skip=(DEAD_LETTER_PREFIX,)):
        parts = info.key.split("/")
        if len(parts) >= 3 and not parts[0].startswith("_"):
            buffers.setdefault((parts[0], parts[1]), Buffer()).add(info)
        elif len(parts) >= 4 and parts[0] == "_manifests":
            replays.add((parts[1], parts[2]))
    with_staged = set(buffers) | replays
    known = control.list_datasets()
    specs = {(d.tenant, d.name): d for d in known}
    limits = {owner: buffer_limits(settings.packer, specs.get(owner)) for owner in buffers}
    statuses = stage_statuses(control, "packer")
    now_ns = time.time_ns()
    due = {
        owner
        for owner in with_staged
        if (owner in replays or buffers[owner].due(*limits[owner], now_ns))
        and not waiting_to_retry(statuses.get(owner), now_ns / 1e9)
    }
    # A failing dataset whose wait is over runs even with nothing staged (an operator removed
    # it, say): an empty run that succeeds reports it ok.
    due |= {
        owner
        for owner, status in statuses.items()
        if status.state == "failing"
        and owner in specs
        and not waiting_to_retry(status, now_ns / 1e9)
    }
    datasets = {packer_lease_name(d.tenant, d.name): d for d in known if (d.tenant, d.name) in due}
    gone = with_staged - set(specs)
    for tenant, name in sorted(gone):
        if first_report(f"packer-unowned:{tenant}/{name}"):
            log.warning("staged objects of %s/%s wait: the dataset is gone", tenant, name)
    owned = {owner: buffer for owner, buffer in buffers.items() if owner not in gone}
    telemetry.set("bytefreezer_packer_backlog_objects", sum(b.listed for b in owned.values()))
    telemetry.set(
        "bytefreezer_packer_unowned_objects",
        sum(buffers[owner].listed for owner in gone if owner in buffers),
    )
    waiting = {owner: buffer for owner, buffer in owned.items() if owner not in due}
    telemetry.set("bytefreezer_packer_buffered_objects", sum(b.objects for b in waiting.values()))
    oldest = min((b.oldest_ns for b in owned.values() if b.oldest_ns), default=now_ns)
    telemetry.set("bytefreezer_packer_oldest_staged_seconds", max(0.0, (now_ns - oldest) / 1e9))
    failing = failing_list(list(statuses.values()), now_ns / 1e9)
    telemetry.set("bytefreezer_packer_failing_datasets", len(failing))
    stats = CycleStats(
        waiting=_waiting(waiting, limits, now_ns), buffered=len(waiting), failing=failing
    )
    if not datasets:
        return stats
    leases = control.acquire_leases(
        list(datasets), settings.instance_id, settings.packer.lease_ttl_seconds
    )
    stats.claimed = len(leases)
    if not leases:
        return stats
    work = []
    for lease in leases:
        dataset = datasets[lease.name]
        status = statuses.get((dataset.tenant, dataset.name))
        work.append(
            PackWork(
                dataset.model_dump_json(),
                lease.model_dump_json(),
                status.model_dump_json() if status is not None else "",
            )
        )
    stats.counters = run_claimed(
        settings.packer.beam_args,
        work,
        "Packer",
        lambda spread, concurrency: PackDatasets(settings, spread, concurrency),
        NAMESPACE,
        control=control,
        leases=leases,
        telemetry=telemetry,
        max_workers=settings.packer.max_concurrent_jobs * RUNS_PER_WRITE_SLOT,
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
    if counters.get("staged_set_aside"):
        telemetry.add(
            "bytefreezer_errors",
            counters["staged_set_aside"],
            stage="packer",
            error_type="staged_set_aside",
        )
    if counters.get("dataset_errors"):
        telemetry.add(
            "bytefreezer_errors", counters["dataset_errors"], stage="packer", error_type="dataset"
        )
    if written:
        telemetry.record(
            "bytefreezer_packer_compression_ratio", counters.get("staged_bytes", 0) / written
        )
    telemetry.record("bytefreezer_packer_run_seconds", stats.seconds)
    telemetry.record("bytefreezer_stage_duration_seconds", stats.seconds, stage="packer")
