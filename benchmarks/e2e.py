"""End-to-end benchmark: piper and packer on generated security events, against pyarrow alone.

    python benchmarks/e2e.py [--mb 128] [--object-mb 4] [--passes 3]

Generates NDJSON security events (shaped like the original system's test data), stores them as
gzip intake objects, then times in the same run:

* piper: ``run_piper_cycle`` over a 5-step chain (date_parse, geoip, rename_field, a filter with
  a ``when`` condition, add_field), with leases and deletes, against pyarrow alone doing the same
  read → steps → staged Parquet on the same objects;
* packer: ``run_packer_cycle`` (unify, event-time partitions, manifest, upload) against pyarrow
  alone reading the same staged objects and writing the same partitioned Parquet;
* piper on the same events posted as small bodies (``--body-kb``, 64 by default) that group
  commit put together: objects of the same size, each of many gzip members, against the same
  pyarrow-alone pass.

Like for like: the baselines inflate with the same ISA-L gzip, write with the same Parquet
options (dictionaries for text columns), format each partition path once per hour and write
the partitions on as many threads as there are cores.

Each side runs ``--passes`` times, the two taking turns (piper and packer on a stack that stays
up, as a long-lived worker would). Prints MB/s (of uncompressed NDJSON) and records/s for each
from the median pass, the ratio of each pair of passes and their median, and the peak RSS of the
process; merges the figures into benchmarks/results/latest.json.
"""

from __future__ import annotations

from bytefreezer.memory import prefer_arrow_pool

prefer_arrow_pool()  # Arrow's pool as the `bytefreezer` command chooses it, before pyarrow loads

import argparse
import io
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq
from isal import igzip

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from common import generate, gzipped, merge_results, split_objects, stack, upload

from bytefreezer.pipelines.packer import run_packer_cycle
from bytefreezer.pipelines.parquet import writer_options
from bytefreezer.pipelines.piper import run_piper_cycle, staged_parquet
from bytefreezer.transforms.builtin.geoip import open_database
from tests.transforms.test_lookups import city_database

CHAIN = [
    {"type": "date_parse", "config": {"source_field": "timestamp"}},
    {
        "type": "geoip",
        "config": {"source_field": "source_ip", "fields": ["country_code", "city_name"]},
    },
    {"type": "rename_field", "config": {"from": "source_ip", "to": "src_ip"}},
    {"type": "filter", "config": {"condition": "status <> 'noise'"}, "when": "action <> 'connect'"},
    {"type": "add_field", "config": {"field": "env", "value": "bench"}},
]
GEO_TYPE = pa.struct([("country_code", pa.string()), ("city_name", pa.string())])


def baseline_piper(objects: list[bytes], out: Path, database: bytes) -> list[Path]:
    """pyarrow alone: gunzip → read_json → the same five steps → staged Parquet (GeoIP with
    libmaxminddb's reader, the fastest MaxMind offers, as piper uses)."""
    reader = open_database(database)
    paths = []
    for i, obj in enumerate(objects):
        table = pajson.read_json(io.BytesIO(igzip.decompress(obj)))
        times = table["timestamp"]  # Arrow's reader may already have read them as timestamps
        if not pa.types.is_timestamp(times.type):
            times = pc.strptime(times, format="%Y-%m-%dT%H:%M:%SZ", unit="us", error_is_null=True)
        position = table.schema.get_field_index("timestamp")
        table = table.set_column(position, "timestamp", times.cast(pa.timestamp("us", "UTC")))
        encoded = table["source_ip"].dictionary_encode().combine_chunks()
        found = []
        for ip in encoded.dictionary.to_pylist():
            record = reader.get(ip) or {}
            city = (record.get("city") or {}).get("names", {}).get("en")
            found.append(
                {"country_code": (record.get("country") or {}).get("iso_code"), "city_name": city}
                if record
                else None
            )
        table = table.append_column("geo", pa.array(found, GEO_TYPE).take(encoded.indices))
        table = table.rename_columns(
            ["src_ip" if n == "source_ip" else n for n in table.column_names]
        )
        drop = pc.and_(pc.equal(table["status"], "noise"), pc.not_equal(table["action"], "connect"))
        table = table.filter(pc.invert(drop))
        table = table.append_column("env", pa.repeat("bench", table.num_rows))
        path = out / f"{i:05d}.parquet"
        # Staged as piper stages (its codec, its dictionary choice, no column statistics)
        path.write_bytes(staged_parquet(table))
        paths.append(path)
    return paths


def baseline_packer(staged: list[Path], out: Path) -> int:
    """pyarrow alone: read staged → concat → hive partitions by event hour → zstd Parquet, the
    files written by as many threads as there are cores, with the same writer options."""
    table = pa.concat_tables([pq.read_table(p) for p in staged])
    hours = pc.floor_temporal(table["timestamp"], unit="hour")
    order = pc.sort_indices(hours)
    table, hours = table.take(order), hours.take(order).combine_chunks()
    runs = pc.run_end_encode(hours)
    names = pc.strftime(runs.values, format="year=%Y/month=%m/day=%d/hour=%H").to_pylist()
    ends = runs.run_ends.to_pylist()
    options = writer_options(table.schema, "zstd", table)

    def write(index: int) -> None:
        start = ends[index - 1] if index else 0
        target = out / names[index]
        target.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            table.slice(start, ends[index] - start), target / "part-0.parquet", **options
        )

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(write, range(len(names))))
    return table.num_rows


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _stage(
    mb: float, records: int, passes: list[float], baseline_passes: list[float]
) -> dict[str, Any]:
    """A stage's figures: its rates from the median pass of each side, its ratio the median of
    the pairs' ratios (a pair ran at the same moment of the machine)."""
    seconds, baseline_seconds = statistics.median(passes), statistics.median(baseline_passes)
    pairs = [b / o for o, b in zip(passes, baseline_passes, strict=True)]
    return {
        "pair_ratios": [round(r, 3) for r in pairs],
        "seconds": round(seconds, 3),
        "mb_per_s": round(mb / seconds, 1),
        "records_per_s": round(records / seconds),
        "baseline_seconds": round(baseline_seconds, 3),
        "baseline_mb_per_s": round(mb / baseline_seconds, 1),
        "ratio": round(statistics.median(pairs), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=128, help="uncompressed NDJSON to generate")
    parser.add_argument("--object-mb", type=float, default=4, help="size of one intake object")
    parser.add_argument(
        "--body-kb", type=float, default=64, help="size of a body in the group-committed pass"
    )
    parser.add_argument(
        "--passes", type=int, default=3, help="passes of each side, taking turns (medians)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bf-bench-"))
    try:
        lines = generate(int(args.mb * 1024 * 1024))
        objects = split_objects(lines, int(args.object_mb * 1024 * 1024))
        mb = sum(len(o) for o in objects) / 1e6
        gz_objects = gzipped(objects)
        # The same objects as group commit stores small bodies: one gzip member per body.
        split = [split_objects(o.splitlines(), int(args.body_kb * 1024)) for o in objects]
        committed = [b"".join(gzipped(small)) for small in split]
        bodies = sum(len(small) for small in split)
        records = len(lines)
        database = city_database()
        expected = sum(
            1
            for line in lines
            if not (b'"status": "noise"' in line and b'"action": "connect"' not in line)
        )

        settings, control, storage = stack(work / "bf", CHAIN, ["bench"])
        storage.bucket(settings.buckets.geoip).put("GeoLite2-City.mmdb", database)
        # One pass of each side, then the next: whatever drifts during the run (the page
        # cache, the heap, the machine's neighbours) weighs on both alike. A single pass of
        # each moved a ratio by up to 0.2 between runs of the same code; medians are reported.
        seconds: dict[str, list[float]] = {
            k: [] for k in ("base_piper", "base_packer", "piper", "packer", "piper_bodies")
        }
        for n in range(args.passes):
            base = work / f"base-{n}"
            started = time.perf_counter()
            staged = baseline_piper(gz_objects, _mkdir(base / "staged"), database)
            seconds["base_piper"].append(time.perf_counter() - started)
            started = time.perf_counter()
            baseline_packer(staged, _mkdir(base / "out"))
            seconds["base_packer"].append(time.perf_counter() - started)
            shutil.rmtree(base)

            for obj in objects:
                upload(storage, "bench", [obj])
            started = time.perf_counter()
            piper_stats = run_piper_cycle(settings, control, storage)
            seconds["piper"].append(time.perf_counter() - started)
            started = time.perf_counter()
            packer_stats = run_packer_cycle(settings, control, storage)
            seconds["packer"].append(time.perf_counter() - started)
            rows_out = packer_stats.counters.get("rows_written", 0)
            if rows_out != expected:
                sys.exit(f"packer wrote {rows_out} rows, expected {expected}")

            upload(storage, "bench", committed, compressed=True)
            started = time.perf_counter()
            run_piper_cycle(settings, control, storage)
            seconds["piper_bodies"].append(time.perf_counter() - started)
            rows_out = run_packer_cycle(settings, control, storage).counters.get("rows_written", 0)
            if rows_out != expected:
                sys.exit(f"packer wrote {rows_out} rows of small bodies, expected {expected}")

        result = {
            "machine": {
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "pyarrow": pa.__version__,
            },
            "input": {
                "mb": round(mb, 1),
                "records": records,
                "objects": len(gz_objects),
                "chain": [s["type"] for s in CHAIN],
            },
            "passes": args.passes,
            "piper": _stage(mb, records, seconds["piper"], seconds["base_piper"]),
            "packer": _stage(mb, records, seconds["packer"], seconds["base_packer"]),
            "piper_small_bodies": {
                "body_kb": args.body_kb,
                "bodies": bodies,
                **_stage(mb, records, seconds["piper_bodies"], seconds["base_piper"]),
            },
            "piper_counters": piper_stats.counters,
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
        print(
            f"input: {mb:.1f} MB NDJSON, {records} records, {len(gz_objects)} objects; chain {result['input']['chain']}"
        )
        for stage in ("piper", "packer"):
            s = result[stage]
            print(
                f"{stage:7s} {s['mb_per_s']:8.1f} MB/s {s['records_per_s']:10.0f} rec/s | "
                f"pyarrow alone {s['baseline_mb_per_s']:8.1f} MB/s | ratio {s['ratio']:.2f}x "
                f"(median of {args.passes} pairs of passes: "
                f"{', '.join(f'{r:.2f}' for r in s['pair_ratios'])})"
            )
        s = result["piper_small_bodies"]
        print(
            f"piper, {bodies} bodies of {args.body_kb:g} KB group-committed into the same objects: "
            f"{s['mb_per_s']:.1f} MB/s | pyarrow alone {s['baseline_mb_per_s']:.1f} MB/s | ratio "
            f"{s['ratio']:.2f}x (pairs {', '.join(f'{r:.2f}' for r in s['pair_ratios'])})"
        )
        print(f"peak RSS {result['peak_rss_mb']} MB")
        merge_results(result)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


if __name__ == "__main__":
    main()
