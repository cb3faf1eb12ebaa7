"""Post → Parquet visible: the embedded stack against DuckDB converting the same NDJSON.

    python benchmarks/end_to_end.py [--mb 64] [--body-mb 1] [--clients 8] [--passes 3]

Starts `bytefreezer up` on 127.0.0.1 with its default settings but packer's buffer off
(`packer.buffer_seconds: 0`; the stages wake each other, so no poll interval is shortened) and
posts a first body of 1,000 events (the time until they are visible is reported as the cold
start: the first cycles of a fresh process load Beam, DuckDB and the dataset's chain). Then, on the running stack, it posts generated security events as gzip
NDJSON bodies from concurrent clients and measures from the first post until every record is
readable in the destination's Parquet. In the same run, DuckDB converts the same NDJSON file to Parquet
(`COPY (SELECT * FROM read_json_auto(...)) TO ... (FORMAT parquet)`), and pyarrow alone does the
same (read_json, write_table with zstd) to show what a Python pipeline on Arrow can reach at
best. The three take turns for ``--passes`` passes. Prints MB/s of each from its median pass,
the ratio of each pair of passes (DuckDB's and the stack's) and their median; merges the
figures into benchmarks/results/latest.json under "end_to_end".
"""

from __future__ import annotations

from bytefreezer.memory import prefer_arrow_pool

prefer_arrow_pool()  # Arrow's pool as the `bytefreezer` command chooses it, before pyarrow loads

import argparse
import asyncio
import gzip
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pyarrow.dataset as ds
import pyarrow.json as pj
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from common import (
    free_port,
    generate,
    gzipped,
    merge_results,
    split_objects,
    stop_process,
    wait_port,
)

from tests.helpers import first_run_key, up_process


def visible_rows(destination: Path) -> int:
    if not destination.exists() or not any(destination.rglob("*.parquet")):
        return 0
    return ds.dataset(str(destination), format="parquet", partitioning="hive").count_rows()


def parquet_files(root: str) -> Iterator[str]:
    """The ``*.parquet`` files under ``root``, by ``os.scandir``: ``Path.rglob`` cost 1.4 ms of
    CPU a look at 48 partitions, a fifth of a core at a look every 5 ms, taken from the stack
    this benchmark times."""
    folders = [root]
    while folders:
        try:
            with os.scandir(folders.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
                    elif entry.name.endswith(".parquet"):
                        yield entry.path
        except FileNotFoundError:  # not created yet
            continue


class VisibleRows:
    """Rows readable in a destination's Parquet files, counted from the footers of the files not
    seen before: a file appears whole (written aside, then renamed), so each footer is read once."""

    def __init__(self, destination: Path) -> None:
        self._destination = str(destination)
        self._rows: dict[str, int] = {}

    def __call__(self) -> int:
        for path in parquet_files(self._destination):
            if path not in self._rows:
                self._rows[path] = pq.read_metadata(path).num_rows
        return sum(self._rows.values())


POLL_SECONDS = 0.01


def wait_rows(destination: Path, rows: int) -> None:
    """Return once ``rows`` rows are visible in ``destination``, looking every ``POLL_SECONDS``:
    0.4 ms of CPU a look at 48 partitions, about 2% of this machine's two cores taken from the
    stack it times, and on average 5 ms added to the time it reports."""
    visible = VisibleRows(destination)
    while visible() < rows:
        time.sleep(POLL_SECONDS)


async def post_all(url: str, key: str, bodies: list[bytes], clients: int) -> None:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    headers = {"Authorization": f"Bearer {key}", "Content-Encoding": "gzip"}

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            while True:
                response = await client.post(url, content=body, headers=headers)
                if response.status_code == 200:
                    break
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))

    async with httpx.AsyncClient(timeout=120) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))


def duckdb_seconds(source: Path, target: Path) -> float:
    started = time.perf_counter()
    duckdb.sql(f"COPY (SELECT * FROM read_json_auto('{source}')) TO '{target}' (FORMAT parquet)")
    return time.perf_counter() - started


def pyarrow_seconds(source: Path, target: Path) -> float:
    started = time.perf_counter()
    pq.write_table(pj.read_json(source), target, compression="zstd")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=64)
    parser.add_argument("--body-mb", type=float, default=1)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--passes", type=int, default=3, help="passes of each side, taking turns (medians)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bf-e2e-"))
    process = None
    try:
        lines = generate(int(args.mb * 1024 * 1024))
        raw = b"\n".join(lines) + b"\n"
        mb = len(raw) / 1e6
        source = work / "events.ndjson"
        source.write_bytes(raw)

        port = free_port()
        data = work / "data"
        # Packer packs as soon as piper has staged (no buffer): this times the work, not a wait.
        process = up_process(
            data,
            subprocess.DEVNULL,
            port,
            BYTEFREEZER_LOG_LEVEL="WARNING",
            BYTEFREEZER_PACKER__BUFFER_SECONDS="0",
        )
        wait_port(port)
        key = first_run_key(data)
        bodies = gzipped(split_objects(lines, int(args.body_mb * 1024 * 1024)))
        destination = data / "destination" / "demo" / "events"
        url = f"http://127.0.0.1:{port}/demo/events"
        started = time.perf_counter()
        asyncio.run(post_all(url, key, [gzip.compress(b"\n".join(lines[:1000]) + b"\n")], 1))
        wait_rows(destination, 1000)
        cold_s = time.perf_counter() - started

        # DuckDB, pyarrow alone and the stack take turns, pass after pass: this machine's
        # noise moved one pass of the stack from 1.07 to 1.49 s between runs of the same code.
        seconds: dict[str, list[float]] = {"duckdb": [], "pyarrow": [], "ours": [], "posted": []}
        for _ in range(args.passes):
            seconds["duckdb"].append(duckdb_seconds(source, work / "duck.parquet"))
            seconds["pyarrow"].append(pyarrow_seconds(source, work / "arrow.parquet"))
            shutil.rmtree(destination)
            started = time.perf_counter()
            asyncio.run(post_all(url, key, bodies, args.clients))
            seconds["posted"].append(time.perf_counter() - started)
            wait_rows(destination, len(lines))
            seconds["ours"].append(time.perf_counter() - started)
            if visible_rows(destination) != len(lines):  # every record once, read as a dataset
                raise SystemExit(f"{visible_rows(destination)} rows visible, {len(lines)} posted")
        duck_s, arrow_s, ours_s, posted_s = (
            statistics.median(seconds[k]) for k in ("duckdb", "pyarrow", "ours", "posted")
        )
        pairs = [d / o for d, o in zip(seconds["duckdb"], seconds["ours"], strict=True)]
        result = {
            "mb": round(mb, 1),
            "records": len(lines),
            "bodies": len(bodies),
            "passes": args.passes,
            "posted_seconds": round(posted_s, 3),
            "visible_seconds": round(ours_s, 3),
            "mb_per_s": round(mb / ours_s, 1),
            "duckdb_seconds": round(duck_s, 3),
            "duckdb_mb_per_s": round(mb / duck_s, 1),
            "ratio": round(statistics.median(pairs), 3),
            "pair_ratios": [round(r, 3) for r in pairs],
            "pyarrow_seconds": round(arrow_s, 3),
            "pyarrow_ratio": round(duck_s / arrow_s, 3),
            "cold_start_seconds": round(cold_s, 3),
        }
        print(f"{mb:.1f} MB, {len(lines)} records in {len(bodies)} bodies, {args.clients} clients")
        print(f"medians of {args.passes} passes a side, taking turns:")
        print(
            f"bytefreezer post → Parquet visible: {ours_s:.2f} s ({result['mb_per_s']} MB/s; all posted after {posted_s:.2f} s)"
        )
        print(
            f"DuckDB read_json_auto → Parquet:    {duck_s:.2f} s ({result['duckdb_mb_per_s']} MB/s)"
        )
        print(
            f"pyarrow alone read_json → Parquet:  {arrow_s:.2f} s ({mb / arrow_s:.1f} MB/s, "
            f"{result['pyarrow_ratio']:.2f}x of DuckDB)"
        )
        print(
            f"ratio: {result['ratio']:.2f}x (median of the pairs' "
            f"{', '.join(f'{r:.2f}' for r in pairs)})"
        )
        print(f"cold start (a fresh process, 1,000 events posted → visible): {cold_s:.2f} s")
        merge_results({"end_to_end": result})
    finally:
        if process is not None:
            stop_process(process)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
