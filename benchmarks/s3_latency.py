"""Piper and packer on S3 with network latency: work at once, the default 2 against more.

    python benchmarks/s3_latency.py [--tenants 30] [--mb 16] [--rtt-ms 20] [--jobs 8]

Starts SeaweedFS on 127.0.0.1 behind a pipe that delays every byte by half the round trip each
way (a child process of this script), so that each S3 request costs a round trip as it does
against a provider's S3. One dataset per tenant receives its share of generated events (within
one hour, as 1 MB intake objects); piper's cycles, then packer's, are timed with
`max_concurrent_jobs` at its default (2, the baseline) and at `--jobs`, three passes each,
taking turns, after one untimed pass each (a worker's first run opens its S3 clients). An
object (piper) or a dataset run (packer) makes requests one after another (three, about ten), so
on S3 each waits on the network more than it works. Prints seconds and CPU seconds of each stage
and the ratios; merges the figures into benchmarks/results/latest.json under "s3_latency".
"""

from __future__ import annotations

from bytefreezer.memory import prefer_arrow_pool

prefer_arrow_pool()  # Arrow's pool as the `bytefreezer` command chooses it, before pyarrow loads

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from common import (
    free_port,
    generate,
    merge_results,
    split_objects,
    stack,
    stop_process,
    upload,
    wait_port,
)

from bytefreezer.control import ControlStore
from bytefreezer.pipelines.packer import run_packer_cycle
from bytefreezer.pipelines.piper import run_piper_cycle
from bytefreezer.settings import Settings
from bytefreezer.storage import Storage
from tests.conftest import SeaweedServer

CHAIN = [{"type": "rename_field", "config": {"from": "source_ip", "to": "src_ip"}}]
DEFAULT_JOBS = 2


async def _delayed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds after it arrived (a constant
    one-way latency: chunks are not delayed one after another)."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def read() -> None:
        while True:
            data = await reader.read(65536)
            queue.put_nowait((time.monotonic() + delay, data))
            if not data:
                return

    async def write() -> None:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if not data:
                writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    try:
        await asyncio.gather(read(), write())
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _proxy(listen: int, target: int, delay: float) -> None:
    async def connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(
            _delayed(reader, upstream_writer, delay), _delayed(upstream_reader, writer, delay)
        )

    server = await asyncio.start_server(connect, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


def s3_stack(
    work: Path, endpoint: str, credentials: dict[str, str], names: list[str]
) -> tuple[Settings, ControlStore, Storage]:
    suffix = uuid.uuid4().hex[:8]
    return stack(
        work,
        CHAIN,
        names,
        storage={
            "backend": "s3",
            "s3": {
                "endpoint": endpoint,
                "access_key": credentials["access_key"],
                "secret_key": credentials["secret_key"],
            },
        },
        buckets={
            "intake": f"intake-{suffix}",
            "piper": f"piper-{suffix}",
            "geoip": f"geo-{suffix}",
        },
        default_destination=f"s3://dest-{suffix}/warehouse/{{tenant}}/{{dataset}}",
        piper={"max_concurrent_jobs": DEFAULT_JOBS},
    )


def with_jobs(settings: Settings, jobs: int) -> Settings:
    """``settings`` with piper and packer each working on ``jobs`` objects (datasets) at once."""
    return settings.model_copy(
        update={
            stage: getattr(settings, stage).model_copy(update={"max_concurrent_jobs": jobs})
            for stage in ("piper", "packer")
        }
    )


def one_pass(
    settings: Settings,
    control: ControlStore,
    storage: Storage,
    names: list[str],
    mb: float,
    jobs: int,
) -> dict[str, tuple[float, float]]:
    """Wall and CPU seconds of piper's cycles, then packer's, over ``mb`` MB received for every
    tenant (1 MB intake objects)."""
    lines = generate(int(mb * 1024 * 1024), span_seconds=3600)
    per_tenant = max(1, len(lines) // len(names))
    for index, name in enumerate(names):
        chunk = lines[index * per_tenant : (index + 1) * per_tenant]
        upload(storage, name, split_objects(chunk, 1024 * 1024))
    del lines
    settings = with_jobs(settings, jobs)
    timed = {}
    for stage, cycle in (("piper", run_piper_cycle), ("packer", run_packer_cycle)):
        cpu, started = time.process_time(), time.perf_counter()
        while cycle(settings, control, storage).claimed:
            pass
        timed[stage] = (time.perf_counter() - started, time.process_time() - cpu)
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tenants", type=int, default=30)
    parser.add_argument("--mb", type=float, default=16)
    parser.add_argument("--rtt-ms", type=float, default=20)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--proxy", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.proxy:
        asyncio.run(_proxy(int(args.proxy[0]), int(args.proxy[1]), float(args.proxy[2])))
        return
    work = Path(tempfile.mkdtemp(prefix="bf-s3lat-"))
    (work / "s3").mkdir()
    server = SeaweedServer(work / "s3")
    server.start()
    proxy = None
    try:
        port = free_port()
        target = int(server.endpoint.rsplit(":", 1)[1])
        delay = args.rtt_ms / 2000
        proxy = subprocess.Popen(
            [sys.executable, __file__, "--proxy", str(port), str(target), str(delay)]
        )
        wait_port(port)
        names = [f"t{i:03d}" for i in range(args.tenants)]
        settings, control, storage = s3_stack(
            work / "data", f"http://127.0.0.1:{port}", server.credentials, names
        )
        sides = (DEFAULT_JOBS, args.jobs)
        for jobs in sides:  # a worker's first run opens its clients: not timed
            one_pass(settings, control, storage, names, 1, jobs)
        samples: dict[int, list[dict[str, tuple[float, float]]]] = {jobs: [] for jobs in sides}
        for _ in range(3):
            for jobs in sides:
                samples[jobs].append(one_pass(settings, control, storage, names, args.mb, jobs))
        result: dict[str, Any] = {
            "tenants": args.tenants,
            "mb": args.mb,
            "rtt_ms": args.rtt_ms,
            "default_jobs": DEFAULT_JOBS,
            "jobs": args.jobs,
        }
        print(f"S3 with {args.rtt_ms:g} ms round trips, {args.tenants} datasets, {args.mb:g} MB:")
        for stage in ("piper", "packer"):
            figures: dict[str, float] = {}
            for jobs, key in zip(sides, ("default", "more"), strict=True):
                runs = [run[stage] for run in samples[jobs]]
                figures[f"{key}_seconds"] = round(statistics.median(s for s, _ in runs), 3)
                figures[f"{key}_cpu_seconds"] = round(statistics.median(c for _, c in runs), 3)
                print(
                    f"  {stage}, {jobs} at once: {figures[f'{key}_seconds']:.2f} s, "
                    f"{figures[f'{key}_cpu_seconds']:.2f} CPU-s (median of 3)"
                )
            figures["ratio"] = round(figures["more_seconds"] / figures["default_seconds"], 3)
            print(f"  {stage} ratio: {figures['ratio']:.2f}x the time of the default")
            result[stage] = figures
        merge_results({"s3_latency": result})
    finally:
        if proxy is not None:
            stop_process(proxy)
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
