"""Packer's planning and streaming: files of at most the configured size, deterministic names,
every row once, in input order within a partition."""

from __future__ import annotations

import gzip
import io
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from bytefreezer.control import ControlStore
from bytefreezer.control.models import Dataset, DatasetSpec, Destination, ParquetOptions, Tenant
from bytefreezer.ingress.receiver import IntakeWriter
from bytefreezer.pipelines import packer
from bytefreezer.pipelines.packer import (
    output_ratio,
    partition_runs,
    plan_outputs,
    read_ahead,
    run_id_for,
    run_packer_cycle,
    summarize,
)
from bytefreezer.pipelines.piper import run_piper_cycle, staged_parquet
from bytefreezer.storage import ObjectStore, Storage
from bytefreezer.storage import _LocalPending as LocalPending
from tests.conftest import fast_settings
from tests.e2e.test_recovery import post, setup_stack


def staged(n: int, seed: int) -> bytes:
    rng = random.Random(seed)
    table = pa.table(
        {
            "timestamp": [f"2026-01-01T0{i % 2}:00:00Z" for i in range(n)],
            "session": [f"{rng.getrandbits(64):016x}" for _ in range(n)],
            "bytes": [rng.randrange(1 << 30) for _ in range(n)],
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", compression_level=1)
    return sink.getvalue()


def test_files_stay_under_max_size_and_names_are_deterministic() -> None:
    dataset = Dataset(
        tenant="acme",
        name="web",
        destination=Destination(url="file:///tmp/x"),
        parquet=ParquetOptions(max_file_size_mb=1),
    )
    summaries = [
        summarize(f"acme/web/acme--web--{1000 + i}--ndjson.parquet", staged(60_000, i), dataset)
        for i in range(3)
    ]
    assert summaries[0].partitions == {
        "year=2026/month=01/day=01/hour=00": 30_000,
        "year=2026/month=01/day=01/hour=01": 30_000,
    }
    keys = [s.key for s in summaries]
    run_id = run_id_for(keys)
    assert run_id == run_id_for(list(reversed(keys)))
    schema, files = plan_outputs(summaries, dataset, run_id)
    assert schema.names == ["timestamp", "session", "bytes"]
    assert len(files) > 2
    assert {f.path.split("/")[3] for f in files} == {"hour=00", "hour=01"}
    assert sum(f.rows for f in files) == 180_000
    rows_per_file = max(f.rows for f in files)
    # Planned rows per file at the staged bytes per row stay under the limit (10% spare).
    assert rows_per_file * sum(s.size for s in summaries) / 180_000 <= 0.9 * 1024 * 1024
    assert plan_outputs(summaries, dataset, run_id) == (schema, files)


def _log_lines(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [
        json.dumps(
            {
                "timestamp": "2026-02-01T00:00:00Z",
                "msg": f"login accepted from host{rng.randrange(50)} session {rng.getrandbits(40):x}",
                "n": rng.randrange(100),
            }
        ).encode()
        for _ in range(n)
    ]


def test_output_ratio_follows_the_destination_codec() -> None:
    table = pa.Table.from_pylist([json.loads(line) for line in _log_lines(5_000, 1)])
    staged = staged_parquet(table)
    assert output_ratio(staged, "none") > 3  # these lines compress six times
    assert output_ratio(staged, "snappy") > 1.5
    assert output_ratio(staged, "zstd") == pytest.approx(1.0, abs=0.05)
    summaries = [
        summarize(f"acme/web/acme--web--{1000 + i}--ndjson.parquet", staged, _dataset(1))
        for i in range(100)
    ]
    files = plan_outputs(summaries, _dataset(1), "r")[1]
    halved = plan_outputs(summaries, _dataset(1), "r", ratio=2.0)[1]
    assert sum(f.rows for f in halved) == sum(f.rows for f in files) == 500_000
    assert max(f.rows for f in halved) == pytest.approx(max(f.rows for f in files) / 2, abs=1)


def _dataset(max_mb: int) -> Dataset:
    return Dataset(
        tenant="acme",
        name="web",
        destination=Destination(url="file:///tmp/x"),
        parquet=ParquetOptions(max_file_size_mb=max_mb),
    )


@pytest.mark.parametrize("compression", ["none", "snappy", "zstd"])
def test_packed_files_of_any_codec_fill_the_size_limit_without_passing_it(
    tmp_path: Path, compression: str
) -> None:
    """Staged objects are zstd Parquet: planned by their size alone, the files of a destination
    that compresses less passed the limit (uncompressed: several times over)."""
    settings = fast_settings(tmp_path / "data")
    storage = Storage(settings)
    storage.ensure_buckets()
    control = ControlStore(settings.control_db_path(), destination_for=settings.destination_for)
    control.create_tenant(Tenant(name="acme"))
    spec = {"name": "web", "parquet": {"max_file_size_mb": 1, "compression": compression}}
    control.create_dataset("acme", DatasetSpec.model_validate(spec))
    for seed in range(6):
        body = b"\n".join(_log_lines(30_000, seed))
        IntakeWriter(storage).write("acme", "web", "ndjson", gzip.compress(body), {})
    run_piper_cycle(settings, control, storage)
    run_packer_cycle(settings, control, storage)
    paths = sorted((settings.data_dir / "destination" / "acme" / "web").rglob("*.parquet"))
    sizes = [path.stat().st_size / 1024 / 1024 for path in paths]
    assert sum(pq.ParquetFile(path).metadata.num_rows for path in paths) == 180_000
    assert len(sizes) >= 2 and max(sizes) <= 1.0, sizes
    assert min(sorted(sizes)[1:]) >= 0.7, sizes  # one partition: all full but the rest


def _pack(tmp_path: Path, name: str) -> tuple[dict[str, list[int]], int]:
    """Post 6 objects over 15 hourly partitions, pipe and pack them; ids per output file and
    the number of row groups."""
    settings, control, storage = setup_stack(tmp_path / name)
    for start in range(0, 600, 100):
        post(storage, range(start, start + 100))
    run_piper_cycle(settings, control, storage)
    stats = run_packer_cycle(settings, control, storage)
    assert stats.counters["files_written"] == 15
    root = settings.data_dir / "destination" / "acme" / "web"
    files = {}
    row_groups = 0
    for path in sorted(root.rglob("*.parquet")):
        parquet = pq.ParquetFile(path)
        # The run id in the name differs between stacks; partition and file index do not.
        name = f"{path.parent.relative_to(root)}/{path.name.rsplit('-', 1)[1]}"
        files[name] = parquet.read().column("id").to_pylist()
        row_groups += parquet.metadata.num_row_groups
    return files, row_groups


def test_streaming_in_passes_with_small_batches_writes_the_same_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected, row_groups = _pack(tmp_path, "default")
    assert row_groups == 15
    assert sorted(i for ids in expected.values() for i in ids) == list(range(600))
    for ids in expected.values():  # input order within a partition
        assert ids == sorted(ids)
    monkeypatch.setattr(packer, "MAX_OPEN_OUTPUTS", 2)  # 8 passes over the inputs
    monkeypatch.setattr(packer, "PENDING_BYTES", 1)  # a row group per input and partition
    files, row_groups = _pack(tmp_path, "small")
    assert files == expected
    assert row_groups > 15


def test_a_small_run_writes_on_its_own_thread_the_files_the_encoders_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of at most INLINE_ROWS rows (INLINE_BYTES staged) reads its inputs and encodes
    and commits its files on its own thread (a hand-over per file cost more than it gained); a
    larger one hands them to the encoders. Either way the files are the same."""
    threads: dict[str, set[str]] = {"flush": set(), "commit": set(), "read": set()}
    flush, commit = packer._PartitionOutput.flush, LocalPending._commit
    summarized, read = packer._summarized, packer.read_parquet

    def reading(step: Any) -> Any:
        def recorded(*args: Any) -> Any:
            threads["read"].add(threading.current_thread().name)
            return step(*args)

        return recorded

    def flushed(self: Any) -> None:
        threads["flush"].add(threading.current_thread().name)
        flush(self)

    def committed(self: Any) -> int:
        threads["commit"].add(threading.current_thread().name)
        return commit(self)

    monkeypatch.setattr(packer._PartitionOutput, "flush", flushed)
    monkeypatch.setattr(LocalPending, "_commit", committed)
    monkeypatch.setattr(packer, "_summarized", reading(summarized))
    monkeypatch.setattr(packer, "read_parquet", reading(read))
    inline, _ = _pack(tmp_path, "inline")  # 6 inputs, 600 rows over 15 files
    assert len(threads["flush"]) == 1
    assert threads["flush"] == threads["commit"] == threads["read"]
    assert not any(name.startswith(("encode", "commit")) for name in threads["flush"])
    for names in threads.values():
        names.clear()
    monkeypatch.setattr(packer, "INLINE_ROWS", 100)
    monkeypatch.setattr(packer, "INLINE_BYTES", 100)
    handed_over, _ = _pack(tmp_path, "handed-over")
    assert any(name.startswith("encode") for name in threads["flush"])
    assert any(name.startswith("encode") for name in threads["read"])
    assert any(name.startswith("commit") for name in threads["commit"])
    assert handed_over == inline


def test_small_files_encoded_in_memory_are_the_files_streamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small output is encoded in memory and written in one call; the file is the one the
    streaming writer writes."""
    opened: list[object] = []

    class Counted(packer._BufferedWriter):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            opened.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(packer, "_BufferedWriter", Counted)
    buffered, buffered_groups = _pack(tmp_path, "buffered")
    assert len(opened) == 15  # every file of this run is small
    monkeypatch.setattr(packer, "SMALL_FILE_BYTES", 0)
    streamed, streamed_groups = _pack(tmp_path, "streamed")
    assert len(opened) == 15
    assert buffered == streamed
    assert buffered_groups == streamed_groups == 15


def test_a_time_field_of_different_types_across_inputs_partitions_by_each_ones_value(
    tmp_path: Path,
) -> None:
    """Epoch seconds in one object and ISO text in the next: unification widens the column to
    text, but each row still lands in the hour its own value names."""
    settings, control, storage = setup_stack(tmp_path)
    writer = IntakeWriter(storage)
    epoch = b"\n".join(
        json.dumps({"id": i, "timestamp": 1767225600 + i}).encode() for i in range(5)
    )
    text = b"\n".join(
        json.dumps({"id": 5 + i, "timestamp": f"2026-01-01T05:00:0{i}Z"}).encode() for i in range(5)
    )
    for body in (epoch, text):
        writer.write("acme", "web", "ndjson", gzip.compress(body), {})
    run_piper_cycle(settings, control, storage)
    run_packer_cycle(settings, control, storage)
    root = settings.data_dir / "destination" / "acme" / "web"
    by_hour = {
        path.parent.name: sorted(pq.read_table(path).column("id").to_pylist())
        for path in root.rglob("*.parquet")
    }
    assert by_hour == {"hour=00": [0, 1, 2, 3, 4], "hour=05": [5, 6, 7, 8, 9]}


def test_a_dotted_timestamp_field_names_a_time_inside_an_object(tmp_path: Path) -> None:
    """`event.created` partitions by the field inside `event` (it fell back to ingest time)."""
    settings, control, storage = setup_stack(tmp_path)
    control.create_dataset("acme", DatasetSpec(name="ecs", timestamp_field="event.created"))
    lines = [
        {"id": 0, "event": {"created": "2026-03-04T05:06:07+01:00", "kind": "alert"}},
        {"id": 1, "event": {"created": 1767225600}},  # an epoch in another object: widened
        {"id": 2, "event": None},
    ]
    writer = IntakeWriter(storage)
    for line in (lines[0], lines[1:]):
        rows = line if isinstance(line, list) else [line]
        body = "\n".join(json.dumps(r) for r in rows).encode()
        writer.write("acme", "ecs", "ndjson", gzip.compress(body), {})
    run_piper_cycle(settings, control, storage)
    run_packer_cycle(settings, control, storage)
    root = settings.data_dir / "destination" / "acme" / "ecs"
    by_partition = {
        str(path.parent.relative_to(root)): pq.read_table(path).column("id").to_pylist()
        for path in root.rglob("*.parquet")
    }
    ingest_hour = [p for p, ids in by_partition.items() if ids == [2]]
    assert len(by_partition) == 3 and len(ingest_hour) == 1
    assert by_partition["year=2026/month=03/day=04/hour=04"] == [0]
    assert by_partition["year=2026/month=01/day=01/hour=00"] == [1]


def test_a_custom_template_with_the_original_placeholders_lays_out_the_files(
    tmp_path: Path,
) -> None:
    """A dataset carried over from the original ByteFreezer keeps its custom layout."""
    settings, control, storage = setup_stack(tmp_path)
    layout = "{tenant}/{dataset}/{year}/{month}/{day}/h%H"
    options = ParquetOptions(partitioning="custom", partition_template=layout)
    control.create_dataset("acme", DatasetSpec(name="app", parquet=options))
    rows = [{"id": i, "timestamp": f"2026-02-0{1 + i % 2}T0{i % 3}:30:00Z"} for i in range(6)]
    body = "\n".join(json.dumps(r) for r in rows).encode()
    IntakeWriter(storage).write("acme", "app", "ndjson", gzip.compress(body), {})
    run_piper_cycle(settings, control, storage)
    run_packer_cycle(settings, control, storage)
    root = settings.data_dir / "destination" / "acme" / "app"
    by_partition = {
        str(path.parent.relative_to(root)): sorted(pq.read_table(path).column("id").to_pylist())
        for path in root.rglob("*.parquet")
    }
    assert by_partition == {
        "acme/app/2026/02/01/h00": [0],
        "acme/app/2026/02/02/h01": [1],
        "acme/app/2026/02/01/h02": [2],
        "acme/app/2026/02/02/h00": [3],
        "acme/app/2026/02/01/h01": [4],
        "acme/app/2026/02/02/h02": [5],
    }


def test_a_template_with_record_fields_partitions_by_their_values_and_readers_decode_them(
    tmp_path: Path,
) -> None:
    """`{field:NAME}` puts each record under its value, escaped as Hive escapes it: Hive-style
    readers (pyarrow here) give back every value as posted, null where it had none."""
    settings, control, storage = setup_stack(tmp_path)
    layout = "k={field:event.kind}/day={year}{month}{day}"
    options = ParquetOptions(partitioning="custom", partition_template=layout)
    control.create_dataset("acme", DatasetSpec(name="app", parquet=options))
    # A number among the text: the object's `kind` is text, the rest of `event` stays a struct.
    kinds: list[object] = ["login", "a/b", "..", "_hidden", "50% off", "k=v", "über", None, "", 7]
    first = [
        {"id": i, "timestamp": f"2026-02-0{1 + i % 2}T00:30:00Z", "event": {"kind": kind}}
        for i, kind in enumerate(kinds)
    ]
    # An object whose kinds are all numbers, and one without the field.
    second = [
        {"id": len(kinds) + i, "timestamp": "2026-02-01T05:00:00Z", "event": {"kind": 8 + i}}
        for i in range(2)
    ]
    kinds += [8, 9]
    third = [{"id": 100 + i, "timestamp": "2026-02-01T05:00:00Z"} for i in range(3)]
    for rows in (first, second, third):
        body = "\n".join(json.dumps(r) for r in rows).encode()
        IntakeWriter(storage).write("acme", "app", "ndjson", gzip.compress(body), {})
    run_piper_cycle(settings, control, storage)
    run_packer_cycle(settings, control, storage)
    root = settings.data_dir / "destination" / "acme" / "app"
    assert {p.parent.parent.name for p in root.rglob("*.parquet")} >= {"k=a%2Fb", "k=%2E."}
    read = ds.dataset(
        root, format="parquet", partitioning=ds.partitioning(flavor="hive")
    ).to_table()
    got = sorted(zip(read.column("id").to_pylist(), read.column("k").to_pylist(), strict=True))
    expected = [(i, None if k in (None, "") else str(k)) for i, k in enumerate(kinds)]
    expected += [(100 + i, None) for i in range(3)]
    assert got == sorted(expected)
    days = {p.parent.name for p in root.rglob("*.parquet")}
    assert days == {"day=20260201", "day=20260202"}


def test_a_field_of_too_many_values_fails_the_run_with_the_reason_and_keeps_the_data(
    tmp_path: Path,
) -> None:
    """A template partitioning by a field of nearly unique values (an id) would make a directory
    and a file per record: past `max_partitions` the run fails, says why, and keeps the records
    staged; once the limit is raised (or the template changed) they are packed, each once."""
    settings, control, storage = setup_stack(tmp_path)
    options = ParquetOptions(
        partitioning="custom", partition_template="id={field:id}/{year}", max_partitions=20
    )
    control.create_dataset("acme", DatasetSpec(name="app", parquet=options))
    rows = [{"id": i, "timestamp": "2026-02-01T00:30:00Z"} for i in range(50)]
    body = "\n".join(json.dumps(r) for r in rows).encode()
    IntakeWriter(storage).write("acme", "app", "ndjson", gzip.compress(body), {})
    run_piper_cycle(settings, control, storage)
    run_packer_cycle(settings, control, storage)
    root = settings.data_dir / "destination" / "acme" / "app"
    assert not list(root.rglob("*.parquet"))
    assert storage.piper.list("acme/app/")  # still staged
    (status,) = [s for s in control.get_dataset_status("acme", "app") if s.stage == "packer"]
    assert status.state == "failing" and "50 partitions" in (status.error or "")
    assert "parquet.max_partitions (20)" in (status.error or "")
    # time partitions alone are not limited: the same limit, a template without fields
    spec = control.get_dataset("acme", "app").model_dump(exclude={"tenant"})
    spec["parquet"]["max_partitions"] = 100
    control.put_dataset("acme", DatasetSpec.model_validate(spec))  # saving retries at once
    run_packer_cycle(settings, control, storage)
    read = ds.dataset(root, format="parquet").to_table()  # `id` is in the files too
    assert sorted(read.column("id").to_pylist()) == list(range(50))
    assert len(list(root.rglob("*.parquet"))) == 50


def test_inputs_beyond_the_kept_bytes_are_read_again_with_the_same_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    original_get = ObjectStore.get

    def counted_get(self: ObjectStore, key: str, size: int | None = None) -> bytes:
        if key.endswith(".parquet"):
            reads.append(key)
        return original_get(self, key, size)

    monkeypatch.setattr(ObjectStore, "get", counted_get)
    expected, _ = _pack(tmp_path, "kept")
    assert len(reads) == len(set(reads)) == 6  # a small run reads each staged object once
    reads.clear()
    monkeypatch.setattr(packer, "KEPT_INPUT_BYTES", 0)  # nothing kept: read again to write
    monkeypatch.setattr(packer, "MAX_OPEN_OUTPUTS", 4)  # in passes, too
    files, _ = _pack(tmp_path, "reread")
    assert files == expected
    assert len(set(reads)) == 6 and len(reads) > 12


def test_packed_files_get_dictionaries_for_repeating_text_only(tmp_path: Path) -> None:
    settings, control, storage = setup_stack(tmp_path)
    body = b"\n".join(
        json.dumps(
            {"timestamp": "2026-01-01T05:00:00Z", "kind": f"k{i % 3}", "uid": f"u{i:08d}", "n": i}
        ).encode()
        for i in range(1500)
    )
    IntakeWriter(storage).write("acme", "web", "ndjson", gzip.compress(body), {})
    run_piper_cycle(settings, control, storage)
    run_packer_cycle(settings, control, storage)
    [path] = (settings.data_dir / "destination" / "acme" / "web").rglob("*.parquet")
    meta = pq.ParquetFile(path).metadata.row_group(0)
    dictionary = {
        meta.column(i).path_in_schema
        for i in range(meta.num_columns)
        if "RLE_DICTIONARY" in meta.column(i).encodings
    }
    assert dictionary == {"kind", "timestamp"}  # the time is text, one value repeated
    assert pq.read_table(path).column("uid").to_pylist() == [f"u{i:08d}" for i in range(1500)]


def _dictionary_columns_of(path: Path) -> set[str]:
    meta = pq.ParquetFile(path).metadata.row_group(0)
    return {
        meta.column(i).path_in_schema
        for i in range(meta.num_columns)
        if "RLE_DICTIONARY" in meta.column(i).encodings
    }


def test_which_text_repeats_is_judged_once_per_run_reused_a_while_and_small_files_get_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, control, storage = setup_stack(tmp_path)
    judged: list[int] = []
    original = packer.repeating_columns

    def counted(schema: pa.Schema, sample: pa.Table) -> list[str]:
        judged.append(sample.num_rows)
        return original(schema, sample)

    monkeypatch.setattr(packer, "repeating_columns", counted)

    def body(hours: list[int], rows: int) -> bytes:
        return b"\n".join(
            json.dumps(
                {"timestamp": f"2026-01-01T0{h}:00:00Z", "kind": f"k{i % 3}", "uid": f"{h}-{i}"}
            ).encode()
            for h in hours
            for i in range(rows)
        )

    writer = IntakeWriter(storage)
    writer.write("acme", "web", "ndjson", gzip.compress(body([1, 2], 1500)), {})
    writer.write("acme", "web", "ndjson", gzip.compress(body([3], 20)), {})
    run_piper_cycle(settings, control, storage)
    run_packer_cycle(settings, control, storage)
    root = settings.data_dir / "destination" / "acme" / "web"
    found = {path.parent.name: _dictionary_columns_of(path) for path in root.rglob("*.parquet")}
    repeating = {"kind", "timestamp"}  # the time is text, one value per hour
    assert found == {"hour=01": repeating, "hour=02": repeating, "hour=03": set()}
    assert judged == [3000], "once, on the first input (a full sample)"
    judged.clear()
    writer.write("acme", "web", "ndjson", gzip.compress(body([4, 5], 30)), {})
    run_piper_cycle(settings, control, storage)
    run_packer_cycle(settings, control, storage)
    assert judged == [], "a run of small files judges nothing"
    # The next runs of the dataset, same schema: the judgment is reused for a while.
    writer.write("acme", "web", "ndjson", gzip.compress(body([6], 1500)), {})
    run_piper_cycle(settings, control, storage)
    run_packer_cycle(settings, control, storage)
    assert judged == [], "judged a run earlier, on a full sample"
    assert (
        _dictionary_columns_of(
            next(p for p in root.rglob("*.parquet") if p.parent.name == "hour=06")
        )
        == repeating
    )
    monkeypatch.setattr(packer, "JUDGMENT_SECONDS", 0.0)
    writer.write("acme", "web", "ndjson", gzip.compress(body([7], 1500)), {})
    run_piper_cycle(settings, control, storage)
    run_packer_cycle(settings, control, storage)
    assert judged == [1500], "judged again once the judgment is old"
    assert (
        _dictionary_columns_of(
            next(p for p in root.rglob("*.parquet") if p.parent.name == "hour=07")
        )
        == repeating
    )


def test_read_ahead_keeps_order_and_bounds_the_work_ahead() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def step(item: int) -> int:
        with lock:
            started.append(item)
        time.sleep(0.002 * (item % 3))  # finishing out of order
        if item == 7:
            raise ValueError("bad input 7")
        return item * 10

    with ThreadPoolExecutor(max_workers=4) as pool:
        ahead = read_ahead(pool, step, range(20), window=2)
        assert [next(ahead) for _ in range(3)] == [0, 10, 20]
        with lock:
            assert len(started) <= 3 + 3, "at most the window (and the next) ahead of the caller"
        with pytest.raises(ValueError, match="bad input 7"):
            list(ahead)
        assert max(started) <= 7 + 3, "nothing submitted after the failure surfaced"


def test_partition_runs_are_found_only_when_each_partitions_rows_are_together() -> None:
    runs = partition_runs(pa.array([2, 2, 0, 0, 0, 1], pa.int32()), 3)
    assert runs is not None
    assert runs.values.to_pylist() == [2, 0, 1]
    assert runs.run_ends.to_pylist() == [2, 5, 6]
    assert partition_runs(pa.array([0, 1, 0], pa.int32()), 2) is None  # more runs than partitions
    assert partition_runs(pa.array([0, 1, 1, 0], pa.int32()), 4) is None  # partition 0 split
    assert partition_runs(pa.array([0, None, 0], pa.int32()), 1) is None


def test_rows_already_together_by_partition_and_rows_apart_land_alike_in_input_order(
    tmp_path: Path,
) -> None:
    """One object whose hours come in blocks (out of order), one whose hours interleave: the
    first is written as it is, the second sorted first; every partition holds its rows in input
    order either way."""
    settings, control, storage = setup_stack(tmp_path)
    writer = IntakeWriter(storage)
    blocks = [(i, 3 if i < 40 else 1 if i < 70 else 2) for i in range(100)]
    interleaved = [(i, i % 3 + 1) for i in range(100, 200)]
    for rows in (blocks, interleaved):
        body = "\n".join(
            json.dumps({"id": i, "timestamp": f"2026-03-01T0{hour}:00:00Z"}) for i, hour in rows
        )
        writer.write("acme", "web", "ndjson", gzip.compress(body.encode()), {})
    run_piper_cycle(settings, control, storage)
    assert run_packer_cycle(settings, control, storage).counters["files_written"] == 3
    root = settings.data_dir / "destination" / "acme" / "web"
    by_hour = {
        path.parent.name: pq.read_table(path).column("id").to_pylist()
        for path in root.rglob("*.parquet")
    }
    expected = {
        f"hour=0{hour}": [i for i, h in blocks + interleaved if h == hour] for hour in (1, 2, 3)
    }
    assert by_hour == expected


def test_staged_objects_carry_no_statistics_and_packed_files_do(tmp_path: Path) -> None:
    """Only packer reads a staged object, and whole: piper writes it without column statistics;
    the files packer writes keep them for the queries that prune by them."""
    settings, control, storage = setup_stack(tmp_path)
    post(storage, range(100))
    run_piper_cycle(settings, control, storage)
    staged = [o.key for o in storage.piper.list() if o.key.endswith(".parquet")]
    assert len(staged) == 1
    meta = pq.ParquetFile(io.BytesIO(storage.piper.get(staged[0]))).metadata
    assert meta.num_rows == 100
    assert not any(meta.row_group(0).column(i).is_stats_set for i in range(meta.num_columns))
    run_packer_cycle(settings, control, storage)
    root = settings.data_dir / "destination" / "acme" / "web"
    for path in root.rglob("*.parquet"):
        column = pq.ParquetFile(path).metadata.row_group(0).column(0)
        assert column.is_stats_set and column.statistics.has_min_max


def test_a_file_is_small_by_the_bytes_its_own_codec_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same rows make a small file in zstd and a large one uncompressed: only the zstd
    dataset's file is encoded in memory. (A run too small to fill half a file is planned at
    its staged size: all its files together stay under half the size limit.)"""
    opened: list[str] = []

    class Counted(packer._BufferedWriter):
        def __init__(self, file: Any, schema: pa.Schema, **options: Any) -> None:
            opened.append(str(options["compression"]))
            super().__init__(file, schema, **options)

    settings, control, storage = setup_stack(tmp_path)
    raw = ParquetOptions(compression="none", max_file_size_mb=1)
    control.create_dataset("acme", DatasetSpec(name="raw", parquet=raw))
    lines = [
        json.dumps({"id": i, "timestamp": "2026-02-01T00:00:00Z", "pad": f"{i:08d}" * 50})
        for i in range(2000)
    ]
    body = gzip.compress("\n".join(lines).encode())
    for dataset in ("web", "raw"):
        IntakeWriter(storage).write("acme", dataset, "ndjson", body, {})
    run_piper_cycle(settings, control, storage)
    staged = next(o.key for o in storage.piper.list() if o.key.startswith("acme/web/"))
    data = storage.piper.get(staged)
    uncompressed = output_ratio(data, "none")
    assert uncompressed > 4  # the padding compresses well
    # Between the zstd file's expected size and the uncompressed one's.
    monkeypatch.setattr(packer, "SMALL_FILE_BYTES", int(len(data) * uncompressed / 2))
    monkeypatch.setattr(packer, "_BufferedWriter", Counted)
    run_packer_cycle(settings, control, storage)
    assert opened == ["zstd"]
    for dataset in ("web", "raw"):
        root = settings.data_dir / "destination" / "acme" / dataset
        assert sum(pq.read_table(path).num_rows for path in root.rglob("*.parquet")) == 2000
