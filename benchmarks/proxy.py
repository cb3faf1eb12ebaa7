"""The edge proxy's inputs that answer only once records are in its spool: `forward` (Fluent
Bit-style PackedForward chunks with acks) and `http` (small NDJSON bodies from many clients).

    python benchmarks/proxy.py [--mb 32] [--chunk-records 1000] [--connections 4] [--passes 3]
        [--http-clients 32] [--http-seconds 5]

Generated security events, packed as Fluent Bit packs them (PackedForward, EventTime, a chunk id
asking for an ack), are sent over ``--connections`` TCP connections, one chunk in flight on each
(as Fluent Bit waits for each chunk's ack), to ``bytefreezer proxy`` with a forward input: each
ack comes once the chunk's records are JSON in the proxy's spool, fsync'd (its receiver is
unreachable, so the spool keeps them). The baseline, in the same run: a bare asyncio server in
its own process that reads the same stream with msgpack, unpacks each chunk's entries and acks
it (the protocol with nothing kept). The two take turns for ``--passes`` passes; prints records/s
of each from its median pass and the median of the pairs' ratios.

Then ``--http-clients`` clients post bodies of ten JSON lines (about 1 KB) for ``--http-seconds``
to the proxy's `http` input, each answered once its lines are spooled, fsync'd; the baseline is
`benchmarks/ingest.py`'s bare Starlette-on-Hypercorn endpoint writing each body to a file, taking
turns the same way. Last, the same events as a file that appears whole in the directory a `file`
input follows, timed until the proxy's stats count every line spooled; the baseline reads the
file, gzips its lines in 1 MiB batches and writes each with an fsync (``bare_tail``). Merges the
figures into benchmarks/results/latest.json under "forward", "proxy_http" and "proxy_file".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import msgpack
import orjson
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from common import free_port, generate, merge_results, stop_process, wait_port
from ingest import drive

EPOCH = 1_767_225_600

BARE_SERVER = r"""
import asyncio, sys
import httpx
import msgpack

async def handle(reader, writer):
    messages = msgpack.Unpacker(raw=True, strict_map_key=False)
    while data := await reader.read(1 << 16):
        messages.feed(data)
        for message in messages:
            entries = msgpack.Unpacker(raw=True, strict_map_key=False)
            entries.feed(message[1])
            count = sum(1 for _ in entries)
            writer.write(msgpack.packb({"ack": message[2][b"chunk"]}))
            await writer.drain()
    writer.close()

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


def chunks(lines: list[bytes], per_chunk: int) -> list[bytes]:
    """The events as PackedForward messages of ``per_chunk`` entries, each asking for an ack."""
    out = []
    for start in range(0, len(lines), per_chunk):
        entries = b"".join(
            msgpack.packb(
                [msgpack.ExtType(0, struct.pack(">II", EPOCH + n, 0)), orjson.loads(line)]
            )
            for n, line in enumerate(lines[start : start + per_chunk], start)
        )
        option = {"size": per_chunk, "chunk": f"c{start}", "compressed": "text"}
        out.append(msgpack.packb(["app.events", entries, option], use_bin_type=True))
    return out


async def send_all(port: int, messages: list[bytes], connections: int) -> None:
    async def connection(share: list[bytes]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answers = msgpack.Unpacker()
        for message in share:
            writer.write(message)
            await writer.drain()
            while True:  # one chunk in flight: wait for its ack
                answers.feed(await reader.read(1024))
                if next(answers, None) is not None:
                    break
        writer.close()

    await asyncio.gather(*(connection(messages[i::connections]) for i in range(connections)))


def start_proxy(
    work: Path, port: int, api_port: int, kind: str, **source: object
) -> subprocess.Popen[bytes]:
    """``bytefreezer proxy`` with one input of ``kind`` on ``port`` (and ``source``'s other
    settings) and an unreachable receiver: what it answers for stays in its (fresh) spool."""
    spool = work / "spool"
    shutil.rmtree(spool, ignore_errors=True)
    shutil.rmtree(work / "spool-checkpoints", ignore_errors=True)
    config = work / "proxy.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "receiver_url": "http://127.0.0.1:9",
                "spool_dir": str(spool),
                "spool_max_bytes": 8 << 30,
                "dead_letter_dir": str(work / "dead"),
                "retry_initial_seconds": 30,
                "api_host": "127.0.0.1",
                "api_port": api_port,
                "inputs": [
                    {
                        "name": kind,
                        "type": kind,
                        "host": "127.0.0.1",
                        "port": port,
                        "tenant": "acme",
                        "dataset": "events",
                        "api_key": "unused",
                        **source,
                    }
                ],
            }
        )
    )
    return subprocess.Popen(
        [sys.executable, "-m", "bytefreezer.cli", "proxy", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def http_passes(
    work: Path, lines: list[bytes], clients: int, seconds: float, passes: int
) -> dict[str, object]:
    """The proxy's http input against the bare endpoint, taking turns."""
    body = b"\n".join(lines[:10]) + b"\n"
    bare_port, proxy_port, api_port = free_port(), free_port(), free_port()
    bare = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "ingest.py"), "--serve-bare",
         str(bare_port), str(work / "bare")]
    )  # fmt: skip
    runs: dict[str, list[dict[str, object]]] = {"bare": [], "proxy": []}
    try:
        wait_port(bare_port)
        for _ in range(passes):
            url = f"http://127.0.0.1:{bare_port}/acme/events"
            runs["bare"].append(asyncio.run(drive(url, {}, body, seconds, clients)))
            proxy = start_proxy(work, proxy_port, api_port, "http")
            try:
                wait_port(proxy_port)
                url = f"http://127.0.0.1:{proxy_port}/"
                runs["proxy"].append(asyncio.run(drive(url, {}, body, seconds, clients)))
            finally:
                stop_process(proxy)
    finally:
        stop_process(bare)
    pairs = [
        float(p["requests_per_s"]) / float(b["requests_per_s"])  # type: ignore[arg-type]
        for b, p in zip(runs["bare"], runs["proxy"], strict=True)
    ]
    middle = sorted(range(passes), key=lambda i: pairs[i])[passes // 2]
    return {
        "clients": clients,
        "body_bytes": len(body),
        "proxy": runs["proxy"][middle],
        "bare": runs["bare"][middle],
        "ratio": round(statistics.median(pairs), 3),
        "pair_ratios": [round(r, 3) for r in pairs],
    }


def bare_tail(path: Path, spool: Path) -> float:
    """The baseline of the file input: the file read in 4 MiB chunks, its lines gathered into
    1 MiB batches, each gzip'd by ISA-L at level 2 and written to its own file with an fsync
    (the proxy's spool work, without records)."""
    from isal import igzip

    spool.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    batch: list[bytes] = []
    size = written = 0
    rest = b""

    def flush() -> None:
        nonlocal batch, size, written
        with open(spool / f"{written:06d}.gz", "wb") as out:
            out.write(igzip.compress(b"\n".join(batch) + b"\n", compresslevel=2))
            out.flush()
            os.fsync(out.fileno())
        batch, size, written = [], 0, written + 1

    with path.open("rb") as file:
        while chunk := file.read(4 << 20):
            data = rest + chunk
            end = data.rfind(b"\n") + 1
            rest = data[end:]
            for line in data[:end].split(b"\n")[:-1]:
                batch.append(line)
                size += len(line) + 1
                if size >= 1 << 20:
                    flush()
    if batch:
        flush()
    return time.perf_counter() - started


def file_passes(work: Path, lines: list[bytes], passes: int) -> dict[str, object]:
    """The proxy's file input following a file as it appears, against ``bare_tail``."""
    source = work / "events.log"
    source.write_bytes(b"\n".join(lines) + b"\n")
    logs = work / "logs"
    runs: dict[str, list[float]] = {"bare": [], "proxy": []}
    proxy_port, api_port = free_port(), free_port()
    for _ in range(passes):
        shutil.rmtree(work / "bare-spool", ignore_errors=True)
        runs["bare"].append(bare_tail(source, work / "bare-spool"))
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir()
        # the input's default poll interval (0.25 s): a file with lines is read again at once
        proxy = start_proxy(work, proxy_port, api_port, "file", paths=[str(logs / "*.log")])
        try:
            wait_port(api_port)
            stats = f"http://127.0.0.1:{api_port}/api/v1/stats"
            started = time.perf_counter()
            os.link(source, logs / "events.log")  # the whole file appears at once
            while httpx.get(stats).json()["file"]["file"]["lines"] < len(lines):
                time.sleep(0.01)
            runs["proxy"].append(time.perf_counter() - started)
        finally:
            stop_process(proxy)
    pairs = [b / p for b, p in zip(runs["bare"], runs["proxy"], strict=True)]
    mb = source.stat().st_size / 1e6
    proxy_s, bare_s = statistics.median(runs["proxy"]), statistics.median(runs["bare"])
    return {
        "records": len(lines),
        "mb": round(mb, 1),
        "proxy_records_per_s": round(len(lines) / proxy_s),
        "proxy_mb_per_s": round(mb / proxy_s, 1),
        "bare_mb_per_s": round(mb / bare_s, 1),
        "ratio": round(statistics.median(pairs), 3),
        "pair_ratios": [round(r, 3) for r in pairs],
    }


def timed(port: int, messages: list[bytes], connections: int) -> float:
    started = time.perf_counter()
    asyncio.run(send_all(port, messages, connections))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=float, default=32)
    parser.add_argument("--chunk-records", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--http-clients", type=int, default=32)
    parser.add_argument("--http-seconds", type=float, default=5.0)
    args = parser.parse_args()
    lines = generate(int(args.mb * 1024 * 1024))
    messages = chunks(lines, args.chunk_records)
    work = Path(tempfile.mkdtemp(prefix="bf-forward-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        bare_port, proxy_port, api_port = free_port(), free_port(), free_port()
        processes.append(subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(bare_port)]))
        seconds: dict[str, list[float]] = {"bare": [], "proxy": []}
        for _ in range(args.passes):
            proxy = start_proxy(work, proxy_port, api_port, "forward")
            try:
                wait_port(bare_port)
                wait_port(proxy_port)
                seconds["bare"].append(timed(bare_port, messages, args.connections))
                seconds["proxy"].append(timed(proxy_port, messages, args.connections))
            finally:
                stop_process(proxy)
        records = len(lines)
        mb = sum(len(line) + 1 for line in lines) / 1e6
        bare_s, proxy_s = (statistics.median(seconds[k]) for k in ("bare", "proxy"))
        pairs = [b / p for b, p in zip(seconds["bare"], seconds["proxy"], strict=True)]
        result = {
            "records": records,
            "mb_as_ndjson": round(mb, 1),
            "chunk_records": args.chunk_records,
            "connections": args.connections,
            "proxy_records_per_s": round(records / proxy_s),
            "proxy_mb_per_s": round(mb / proxy_s, 1),
            "bare_records_per_s": round(records / bare_s),
            "ratio": round(statistics.median(pairs), 3),
            "pair_ratios": [round(r, 3) for r in pairs],
        }
        print(
            f"{records} events ({mb:.1f} MB as NDJSON) in chunks of {args.chunk_records}, "
            f"{args.connections} connections, an ack per chunk"
        )
        print(
            f"proxy forward input → spool: {result['proxy_records_per_s']:,} records/s "
            f"({result['proxy_mb_per_s']} MB/s)"
        )
        print(f"bare msgpack server (read, ack): {result['bare_records_per_s']:,} records/s")
        print(f"ratio: {result['ratio']:.2f}x (pairs {', '.join(f'{r:.2f}' for r in pairs)})")
        http = http_passes(work, lines, args.http_clients, args.http_seconds, args.passes)
        proxy_http, bare_http = http["proxy"], http["bare"]
        print(
            f"proxy http input, {args.http_clients} clients, {http['body_bytes']}-byte bodies, "
            f"answered once spooled: {proxy_http['requests_per_s']} req/s, "  # type: ignore[index]
            f"p99 {proxy_http['p99_ms']} ms; bare endpoint {bare_http['requests_per_s']} req/s, "  # type: ignore[index]
            f"p99 {bare_http['p99_ms']} ms; ratio {http['ratio']:.2f}x"  # type: ignore[index]
        )
        tail = file_passes(work, lines, args.passes)
        print(
            f"proxy file input, a {tail['mb']} MB file of {tail['records']:,} lines → spool: "
            f"{tail['proxy_mb_per_s']} MB/s ({tail['proxy_records_per_s']:,} lines/s); bare "
            f"read + gzip + fsync {tail['bare_mb_per_s']} MB/s; ratio {tail['ratio']:.2f}x "
            f"(pairs {', '.join(f'{r:.2f}' for r in tail['pair_ratios'])})"  # type: ignore[attr-defined]
        )
        merge_results({"forward": result, "proxy_http": http, "proxy_file": tail})
    finally:
        for process in processes:
            stop_process(process)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
