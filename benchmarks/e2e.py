"""End-to-end benchmark: piper and packer on generated security events, against pyarrow alone.

    python benchmarks/e2e.py [--mb 128] [--object-mb 4]

Generates NDJSON security events (shaped like the original system's test data), stores them as
gzip intake objects, then times in the same run:

* piper: ``run_piper_cycle`` (decode → chain → staged Parquet, with leases and deletes) against
  pyarrow alone doing the same read → chain → Parquet on the same objects;
* packer: ``run_packer_cycle`` (unify, event-time partitions, manifest, upload) against pyarrow
  alone reading the same staged objects and writing the same partitioned Parquet.

Prints MB/s (of uncompressed NDJSON) and records/s for each, the ratio to the baseline, and the
peak RSS of the process; writes benchmarks/results/latest.json.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import platform
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from bytefreezer.control import ControlStore
from bytefreezer.control.models import DatasetSpec, Tenant
from bytefreezer.ingress.receiver import IntakeWriter
from bytefreezer.pipelines.packer import run_packer_cycle
from bytefreezer.pipelines.piper import run_piper_cycle
from bytefreezer.settings import load_settings
from bytefreezer.storage import Storage

CHAIN = [
    {"type": "rename_field", "config": {"from": "source_ip", "to": "src_ip"}},
    {"type": "filter", "config": {"condition": "status <> 'noise'"}},
    {"type": "add_field", "config": {"field": "env", "value": "bench"}},
]
ACTIONS = ["login", "logout", "read", "write", "delete", "connect"]
STATUSES = ["success", "failure", "blocked", "noise"]


def generate(target_bytes: int, seed: int = 7) -> list[bytes]:
    """NDJSON lines of security events totalling about ``target_bytes``."""
    rng = random.Random(seed)
    lines, size = [], 0
    base = 1767225600
    while size < target_bytes:
        event = {
            "timestamp": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(base + rng.randrange(0, 86400 * 2))
            ),
            "source_ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
            "dest_ip": f"192.168.{rng.randrange(256)}.{rng.randrange(256)}",
            "source_port": rng.randrange(1024, 65535),
            "dest_port": rng.choice([22, 80, 443, 3306, 8080]),
            "username": f"user{rng.randrange(5000)}",
            "action": rng.choice(ACTIONS),
            "status": rng.choice(STATUSES),
            "process": rng.choice(["sshd", "nginx", "postgres", "java"]),
            "bytes_sent": rng.randrange(0, 1 << 20),
            "bytes_recv": rng.randrange(0, 1 << 20),
            "duration_ms": round(rng.random() * 5000, 3),
            "session_id": f"{rng.getrandbits(64):016x}",
        }
        line = json.dumps(event).encode()
        lines.append(line)
        size += len(line) + 1
    return lines


def split_objects(lines: list[bytes], object_bytes: int) -> list[bytes]:
    objects, current, size = [], [], 0
    for line in lines:
        current.append(line)
        size += len(line) + 1
        if size >= object_bytes:
            objects.append(b"\n".join(current) + b"\n")
            current, size = [], 0
    if current:
        objects.append(b"\n".join(current) + b"\n")
    return objects


def baseline_piper(objects: list[bytes], out: Path) -> list[Path]:
    """pyarrow alone: gunzip → read_json → same steps → staged Parquet."""
    paths = []
    for i, obj in enumerate(objects):
        raw = gzip.decompress(obj)
        table = pajson.read_json(io.BytesIO(raw))
        names = ["src_ip" if n == "source_ip" else n for n in table.column_names]
        table = table.rename_columns(names)
        table = table.filter(pc.not_equal(table.column("status"), "noise"))
        table = table.append_column("env", pa.repeat("bench", table.num_rows))
        path = out / f"{i:05d}.parquet"
        pq.write_table(table, path, compression="zstd", compression_level=1)
        paths.append(path)
    return paths


def baseline_packer(staged: list[Path], out: Path) -> int:
    """pyarrow alone: read staged → concat → hive partitions by event time → zstd Parquet."""
    table = pa.concat_tables([pq.read_table(p) for p in staged])
    times = pc.cast(table.column("timestamp"), pa.timestamp("us", tz="UTC"))
    parts = pc.strftime(times, format="year=%Y/month=%m/day=%d/hour=%H")
    order = pc.sort_indices(parts)
    table, parts = table.take(order), parts.take(order).combine_chunks()
    runs = pc.run_end_encode(parts)
    start = 0
    for value, end in zip(runs.values.to_pylist(), runs.run_ends.to_pylist(), strict=True):
        target = out / value
        target.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            table.slice(start, end - start), target / "part-0.parquet", compression="zstd"
        )
        start = end
    return table.num_rows


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=128, help="uncompressed NDJSON to generate")
    parser.add_argument("--object-mb", type=float, default=4, help="size of one intake object")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bf-bench-"))
    try:
        lines = generate(int(args.mb * 1024 * 1024))
        objects = split_objects(lines, int(args.object_mb * 1024 * 1024))
        raw_bytes = sum(len(o) for o in objects)
        gz_objects = [gzip.compress(o, compresslevel=1) for o in objects]
        records = len(lines)
        mb = raw_bytes / 1e6

        # Baseline, same objects.
        started = time.perf_counter()
        staged = baseline_piper(gz_objects, _mkdir(work / "base-staged"))
        base_piper_s = time.perf_counter() - started
        started = time.perf_counter()
        baseline_packer(staged, _mkdir(work / "base-out"))
        base_packer_s = time.perf_counter() - started

        # bytefreezer, same objects.
        settings = load_settings(
            data_dir=work / "bf",
            instance_id="bench",
            piper={"max_objects_per_run": len(gz_objects) + 1},
            packer={"max_input_mb_per_run": 4096},
        )
        storage = Storage(settings)
        storage.ensure_buckets()
        control = ControlStore(settings.control_db_path(), destination_for=settings.destination_for)
        control.create_tenant(Tenant(name="bench"))
        control.create_dataset("bench", DatasetSpec(name="security", transforms=CHAIN))
        writer = IntakeWriter(storage)
        for obj in gz_objects:
            writer.write("bench", "security", "ndjson", obj, {})
        started = time.perf_counter()
        piper_stats = run_piper_cycle(settings, control, storage)
        piper_s = time.perf_counter() - started
        started = time.perf_counter()
        packer_stats = run_packer_cycle(settings, control, storage)
        packer_s = time.perf_counter() - started
        rows_out = packer_stats.counters.get("rows_written", 0)
        expected = sum(1 for line in lines if b'"status": "noise"' not in line)
        if rows_out != expected:
            sys.exit(f"packer wrote {rows_out} rows, expected {expected}")

        result = {
            "machine": {
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "pyarrow": pa.__version__,
            },
            "input": {"mb": round(mb, 1), "records": records, "objects": len(gz_objects)},
            "piper": _stage(mb, records, piper_s, base_piper_s),
            "packer": _stage(mb, records, packer_s, base_packer_s),
            "piper_counters": piper_stats.counters,
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
        print(f"input: {mb:.1f} MB NDJSON, {records} records, {len(gz_objects)} objects")
        for stage in ("piper", "packer"):
            s = result[stage]
            print(
                f"{stage:7s} {s['mb_per_s']:8.1f} MB/s {s['records_per_s']:10.0f} rec/s | "
                f"pyarrow alone {s['baseline_mb_per_s']:8.1f} MB/s | ratio {s['ratio']:.2f}x"
            )
        print(f"peak RSS {result['peak_rss_mb']} MB")
        out = Path(__file__).parent / "results" / "latest.json"
        out.parent.mkdir(exist_ok=True)
        current = json.loads(out.read_text()) if out.exists() else {}
        out.write_text(json.dumps({**current, **result}, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _stage(mb: float, records: int, seconds: float, baseline_seconds: float) -> dict[str, float]:
    return {
        "seconds": round(seconds, 3),
        "mb_per_s": round(mb / seconds, 1),
        "records_per_s": round(records / seconds),
        "baseline_seconds": round(baseline_seconds, 3),
        "baseline_mb_per_s": round(mb / baseline_seconds, 1),
        "ratio": round(baseline_seconds / seconds, 3),
    }


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


if __name__ == "__main__":
    main()
