"""Packer's planning: files of at most the configured size, deterministic names."""

from __future__ import annotations

import io
import random

import pyarrow as pa
import pyarrow.parquet as pq

from bytefreezer.control.models import Dataset, Destination, ParquetOptions
from bytefreezer.pipelines.packer import plan_outputs, run_id_for


def staged(n: int, seed: int) -> tuple[pa.Table, int]:
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
    return table, len(sink.getvalue())


def test_files_stay_under_max_size_and_names_are_deterministic() -> None:
    dataset = Dataset(
        tenant="acme",
        name="web",
        destination=Destination(url="file:///tmp/x"),
        parquet=ParquetOptions(max_file_size_mb=1),
    )
    inputs = []
    for i in range(3):
        table, size = staged(60_000, i)
        inputs.append((f"acme/web/acme--web--{1000 + i}--ndjson.parquet", table, size))
    run_id = run_id_for([k for k, _, _ in inputs])
    assert run_id == run_id_for([k for k, _, _ in reversed(inputs)])
    files = plan_outputs(inputs, dataset, run_id)
    assert len(files) > 2
    assert {f.path.split("/")[3] for f in files} == {"hour=00", "hour=01"}
    assert sum(f.table.num_rows for f in files) == 180_000
    for planned in files:
        sink = io.BytesIO()
        pq.write_table(planned.table, sink, compression="zstd")
        assert len(sink.getvalue()) <= 1024 * 1024
    again = plan_outputs(inputs, dataset, run_id)
    assert [(f.path, f.table.num_rows) for f in again] == [
        (f.path, f.table.num_rows) for f in files
    ]
