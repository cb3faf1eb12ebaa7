"""A stream of 100 tenants: packer's buffer against packing every cycle.

    python benchmarks/stream.py [--mb 32] [--tenants 100] [--rounds 20]

Each round, every tenant's dataset receives one small object (events within one hour, as a
stream's batch holds them) and piper and packer run a cycle each, as pollers would. Without a
buffer (`packer.buffer_seconds: 0`, the baseline, in the same run) every packer cycle writes a
file per dataset; with the default buffer the staged objects wait, and one run packs each
dataset's whole buffer when it comes due (here: after the last round, by running the last cycle
with the buffer due). Prints packer's seconds (its cycles over all rounds), the files written,
and how long DuckDB takes to scan the output of each (`count(*)`, `count(DISTINCT username)`
over `read_parquet`), with the ratios. Merges the figures into
benchmarks/results/latest.json under "stream".
"""

from __future__ import annotations

from bytefreezer.memory import prefer_arrow_pool

prefer_arrow_pool()  # Arrow's pool as the `bytefreezer` command chooses it, before pyarrow loads

import argparse
import gc
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).parent))
from common import generate, merge_results, split_objects, stack, upload

from bytefreezer.pipelines.packer import run_packer_cycle
from bytefreezer.pipelines.piper import run_piper_cycle
from bytefreezer.settings import Settings

CHAIN = [{"type": "rename_field", "config": {"from": "source_ip", "to": "src_ip"}}]


def stream(
    work: Path, mb: float, tenants: int, rounds: int, buffered: bool
) -> tuple[float, int, Path]:
    """Packer's seconds over all rounds, the Parquet files written, and the destination root."""
    names = [f"t{i:03d}" for i in range(tenants)]
    packer = {"buffer_seconds": 3600.0, "buffer_mb": 64} if buffered else {"buffer_seconds": 0}
    settings, control, storage = stack(work, CHAIN, names, packer=packer)
    due: Settings = settings.model_copy(
        update={"packer": settings.packer.model_copy(update={"buffer_seconds": 0.0})}
    )
    lines = generate(int(mb * 1024 * 1024), span_seconds=3600)
    objects = split_objects(lines, int(mb * 1024 * 1024 / (tenants * rounds)))
    del lines
    gc.collect()
    packing = 0.0
    for round_ in range(rounds):
        for index, name in enumerate(names):
            upload(storage, name, [objects[(round_ * tenants + index) % len(objects)]])
        while storage.intake.list():
            run_piper_cycle(settings, control, storage)
        started = time.perf_counter()
        last = round_ == rounds - 1
        run_packer_cycle(due if last else settings, control, storage)
        packing += time.perf_counter() - started
    left = [o for o in storage.piper.list() if o.key.endswith(".parquet")]
    if [o for o in left if not o.key.startswith("_")]:
        raise SystemExit(f"{len(left)} staged objects left unpacked")
    destination = work / "destination"
    files = sum(1 for _ in destination.rglob("*.parquet"))
    return packing, files, destination


def scan_seconds(destination: Path) -> float:
    """Median of three DuckDB scans of every file under ``destination``."""
    query = (
        f"SELECT count(*), count(DISTINCT username) FROM read_parquet('{destination}/**/*.parquet')"
    )
    samples = []
    for _ in range(3):
        started = time.perf_counter()
        duckdb.sql(query).fetchall()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=32)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bf-stream-"))
    try:
        stream(root / "warm", 1, 2, 2, buffered=False)  # imports, Beam and DuckDB start-up
        every_s, every_files, every_out = stream(
            root / "every", args.mb, args.tenants, args.rounds, buffered=False
        )
        buffered_s, buffered_files, buffered_out = stream(
            root / "buffered", args.mb, args.tenants, args.rounds, buffered=True
        )
        every_scan, buffered_scan = scan_seconds(every_out), scan_seconds(buffered_out)
        result = {
            "mb": args.mb,
            "tenants": args.tenants,
            "rounds": args.rounds,
            "every_cycle": {
                "packer_seconds": round(every_s, 3),
                "files": every_files,
                "scan_seconds": round(every_scan, 4),
            },
            "buffered": {
                "packer_seconds": round(buffered_s, 3),
                "files": buffered_files,
                "scan_seconds": round(buffered_scan, 4),
            },
            "packer_ratio": round(buffered_s / every_s, 3),
            "scan_ratio": round(buffered_scan / every_scan, 3),
        }
        print(
            f"{args.mb:g} MB as {args.rounds} rounds of one object per tenant, {args.tenants} tenants"
        )
        print(
            f"packed every cycle: packer {every_s:.2f} s, {every_files} files, "
            f"DuckDB scan {every_scan * 1000:.1f} ms"
        )
        print(
            f"buffered:           packer {buffered_s:.2f} s, {buffered_files} files, "
            f"DuckDB scan {buffered_scan * 1000:.1f} ms"
        )
        print(
            f"ratios (buffered / every cycle): packer {result['packer_ratio']:.2f}x, "
            f"files {buffered_files / every_files:.2f}x, scan {result['scan_ratio']:.2f}x"
        )
        merge_results({"stream": result})
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
