"""Rows/s of every built-in transform against a per-record Python baseline doing the same work.

    python benchmarks/transforms.py [--rows 50000] [--repeat 5] [--only grok,geoip]

Each transform runs as a one-step chain over an Arrow table; its baseline is the plain Python
loop a per-record pipeline would run over the same records as dicts, in the same process. Each
side is timed ``--repeat`` times (default 5) and its median taken: a single run of a few
milliseconds is at the mercy of the memory allocator's first growth (split measured anywhere
between 13 and 140 ms for the same 50,000 rows).
Prints rows/s of both and the ratio (ours / baseline); merges the figures into
benchmarks/results/latest.json under "transforms".
"""

from __future__ import annotations

from bytefreezer.memory import prefer_arrow_pool

prefer_arrow_pool()  # Arrow's pool as the `bytefreezer` command chooses it, before pyarrow loads

import argparse
import base64
import csv
import hashlib
import hmac
import io
import json
import random
import re
import socket
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from common import median_seconds, merge_results

from bytefreezer.pipelines.poller import settle_heap
from bytefreezer.transforms import Context, compile_chain
from bytefreezer.transforms.builtin.geoip import open_database
from bytefreezer.transforms.builtin.grok import Compiled
from bytefreezer.transforms.builtin.useragent import parse_user_agent
from bytefreezer.transforms.grok_patterns import PATTERNS
from bytefreezer.transforms.resources import MemoryObjects
from tests.transforms.test_lookups import city_database

Record = dict[str, Any]
AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "curl/8.4.0",
]


def make_rows(n: int) -> list[Record]:
    rng = random.Random(1)
    rows = []
    for i in range(n):
        ip = (
            f"81.2.69.{rng.randrange(256)}"
            if i % 3
            else f"10.0.{rng.randrange(256)}.{rng.randrange(256)}"
        )
        rows.append(
            {
                "timestamp": f"2026-01-0{1 + i % 9}T{i % 24:02d}:00:00Z",
                "epoch_ms": 1767225600000 + i,
                "status": rng.choice([200, 200, 200, 404, 500, 503]),
                "path": rng.choice(["/api/a", "/api/b", "/web", "/healthz"]),
                "user": f"u{rng.randrange(1000)}",
                "source_ip": ip,
                "message": f'{ip} - u{i % 50} [10/Oct/2026:13:55:36 +0000] "GET /p{i % 7} HTTP/1.1" {rng.choice([200, 500])} {rng.randrange(9999)}',
                "kvs": f'a={i} b=x{i % 5} c="q {i % 3}"',
                "csv": f"{i},name{i % 10},true",
                "json": json.dumps({"k": i, "v": f"s{i % 4}"}),
                "syslog": f"<34>1 2026-01-01T00:00:{i % 60:02d}Z host app {i} ID1 - msg {i}",
                "tags": "a,b,c",
                "nested": {"x": i, "y": {"z": f"v{i % 3}"}},
                "text": f"mail u{i % 100}@example.com from 10.0.0.{i % 255}",
                "agent": AGENTS[i % 3],
                "num_text": str(i % 1000),
            }
        )
    return rows


GEOIP_DB = city_database()
USERS_CSV = "user,dept\n" + "".join(f"u{i},d{i % 7}\n" for i in range(1000))
# A per-record grok (Logstash, pygrok) matches the pattern its definitions expand to, as ours
# does: Python's re runs the same expansion of %{COMMONAPACHELOG} (IPORHOST, HTTPDATE, …), not
# a hand-simplified regex of \S+ that accepts what grok would not.
APACHE = Compiled("%{COMMONAPACHELOG}", PATTERNS)
APACHE_RE = re.compile(APACHE.regex)


def grok_baseline(record: Record) -> Record:
    match = APACHE_RE.search(record["message"])
    if match is None:
        return {**record, "_grokparsefailure": True}
    return {**record, **{field: match.group(group) for group, field, _ in APACHE.captures}}


def geo_baseline() -> Callable[[Record], Record]:
    reader = open_database(GEOIP_DB)

    def run(r: Record) -> Record:
        found = reader.get(r["source_ip"]) or {}
        country = found.get("country") or {}
        city = (found.get("city") or {}).get("names", {})
        return {**r, "geo": {"country_code": country.get("iso_code"), "city_name": city.get("en")}}

    return run


def enrich_baseline() -> Callable[[Record], Record]:
    table = {row["user"]: row for row in csv.DictReader(io.StringIO(USERS_CSV))}
    return lambda r: {**r, "dept": (table.get(r["user"]) or {}).get("dept")}


def sql_baseline(r: Record) -> Record | None:
    return {"path": r["path"], "s2": r["status"] * 2} if r["status"] >= 500 else None


BENCHES: list[tuple[str, dict[str, Any], Callable[[Record], Any]]] = [
    (
        "add_field",
        {"field": "env", "value": "${tenant_id}-${user}"},
        lambda r: {**r, "env": f"t-{r['user']}"},
    ),
    (
        "remove_field",
        {"fields": ["kvs", "csv"]},
        lambda r: {k: v for k, v in r.items() if k not in ("kvs", "csv")},
    ),
    (
        "rename_field",
        {"from": "user", "to": "username"},
        lambda r: {**{k: v for k, v in r.items() if k != "user"}, "username": r["user"]},
    ),
    (
        "filter",
        {"condition": "status >= 500 AND path LIKE '/api/%'"},
        lambda r: r if r["status"] >= 500 and r["path"].startswith("/api/") else None,
    ),
    (
        "regex_replace",
        {"source_field": "text", "pattern": r"\d+", "replacement": "N"},
        lambda r: {**r, "text": re.sub(r"\d+", "N", r["text"])},
    ),
    (
        "date_parse",
        {"source_field": "timestamp"},
        lambda r: {**r, "timestamp": datetime.fromisoformat(r["timestamp"])},
    ),
    (
        "conditional",
        {"field": "status", "operator": "gt", "value": 400},
        lambda r: r if r["status"] > 400 else None,
    ),
    (
        "conditional_field",
        {
            "field": "path",
            "operator": "equals",
            "value": "/web",
            "action": "replace",
            "replacement": "/w",
        },
        lambda r: {**r, "path": "/w"} if r["path"] == "/web" else r,
    ),
    (
        "json_validate",
        {"field": "json", "required_fields": ["user"]},
        lambda r: r if r.get("user") is not None and orjson.loads(r["json"]) is not None else None,
    ),
    (
        "json_flatten",
        {},
        lambda r: {
            **{k: v for k, v in r.items() if k != "nested"},
            "nested.x": r["nested"]["x"],
            "nested.y.z": r["nested"]["y"]["z"],
        },
    ),
    ("uppercase_keys", {}, lambda r: {k.upper(): v for k, v in r.items()}),
    (
        "grok",
        {"field": "message", "patterns": ["%{COMMONAPACHELOG}"]},
        grok_baseline,
    ),
    (
        "mutate",
        {"lowercase": ["path"], "rename": {"user": "u"}, "convert": {"num_text": "int"}},
        lambda r: {
            **{k: v for k, v in r.items() if k != "user"},
            "path": r["path"].lower(),
            "u": r["user"],
            "num_text": int(r["num_text"]),
        },
    ),
    ("drop", {"if": "status = 200"}, lambda r: None if r["status"] == 200 else r),
    (
        "kv",
        {"field": "kvs"},
        lambda r: {
            **r,
            **{k: v.strip("\"'") for k, v in re.findall(r'([^ =]+)=("[^"]*"|\S*)', r["kvs"])},
        },
    ),
    (
        "split",
        {"field": "tags", "separator": ","},
        lambda r: [{**r, "tags": t} for t in r["tags"].split(",")],
    ),
    (
        "useragent",
        {"source_field": "agent"},
        lambda r: {**r, "ua": parse_user_agent.__wrapped__(r["agent"])},
    ),
    (
        "fingerprint",
        {"fields": ["user", "path"]},
        lambda r: {
            **r,
            "fingerprint": hashlib.sha256(f"{r['user']}|{r['path']}".encode()).hexdigest(),
        },
    ),
    (
        "include",
        {"fields": ["user", "status"]},
        lambda r: {"user": r["user"], "status": r["status"]},
    ),
    ("exclude", {"fields": ["kvs"]}, lambda r: {k: v for k, v in r.items() if k != "kvs"}),
    (
        "sample",
        {"percentage": 10, "key_field": "user"},
        lambda r: (
            r
            if int.from_bytes(hashlib.blake2b(r["user"].encode(), digest_size=8).digest(), "big")
            / 2**64
            < 0.1
            else None
        ),
    ),
    ("passthrough", {}, lambda r: r),
    ("parse_json", {"field": "json"}, lambda r: {**r, **orjson.loads(r["json"])}),
    (
        "parse_csv",
        {"field": "csv", "columns": ["n", "name", "ok"]},
        lambda r: {
            **r,
            **dict(zip(["n", "name", "ok"], next(csv.reader([r["csv"]])), strict=True)),
        },
    ),
    (
        "parse_syslog",
        {"field": "syslog"},
        lambda r: {
            **r,
            **(
                m.groupdict()
                if (
                    m := re.match(
                        r"<(?P<priority>\d+)>(?P<version>\d) (?P<timestamp>\S+) (?P<hostname>\S+) (?P<app_name>\S+) (?P<proc_id>\S+) (?P<msg_id>\S+) (?P<sd>-|\[.*?\]) (?P<message>.*)",
                        r["syslog"],
                    )
                )
                else {}
            ),
        },
    ),
    (
        "parse_regex",
        {"field": "text", "pattern": r"mail (?P<email>\S+) from (?P<ip>\S+)"},
        lambda r: {
            **r,
            **(
                m.groupdict()
                if (m := re.search(r"mail (?P<email>\S+) from (?P<ip>\S+)", r["text"]))
                else {}
            ),
        },
    ),
    (
        "cast",
        {"fields": {"num_text": "int", "status": "string"}},
        lambda r: {**r, "num_text": int(r["num_text"]), "status": str(r["status"])},
    ),
    (
        "redact",
        {"fields": ["text"], "patterns": ["email", "ipv4"]},
        lambda r: {
            **r,
            "text": re.sub(
                r"\b(?:\d{1,3}\.){3}\d{1,3}\b",
                "[REDACTED]",
                re.sub(r"[\w.+-]+@[\w.-]+\.\w+", "[REDACTED]", r["text"]),
            ),
        },
    ),
    ("dedupe", {"fields": ["user", "path"], "cache_size": 0}, None),  # baseline below
    (
        "sql",
        {"query": "SELECT path, status * 2 AS s2 FROM batch WHERE status >= 500"},
        sql_baseline,
    ),
    (
        "geoip",
        {"source_field": "source_ip", "fields": ["country_code", "city_name"]},
        geo_baseline(),
    ),
    (
        "enricher",
        {"source_field": "user", "object": "users.csv", "lookup_key": "user", "fields": ["dept"]},
        enrich_baseline(),
    ),
    (
        "dns",
        {"source_field": "host", "action": "forward", "timeout_seconds": 5},
        lambda r: {**r, "host_dns": socket.gethostbyname(r["host"])},
    ),
]


def dedupe_baseline(records: list[Record]) -> list[Record]:
    seen: set[tuple[Any, ...]] = set()
    out = []
    for r in records:
        key = (r["user"], r["path"])
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def measure(
    name: str,
    config: dict[str, Any],
    baseline: Callable[[Record], Any] | None,
    rows: list[Record],
    table: pa.Table,
    context: Context,
    repeat: int,
) -> dict[str, float]:
    chain = compile_chain([{"type": name, "config": config}], context)
    chain.run(table.slice(0, 100))  # warm caches (compiled regexes, loaded databases)

    def ours_once() -> None:
        result = chain.run(table)
        assert result.rejected.num_rows == 0, result.rejected.slice(0, 3).to_pylist()

    def theirs_once() -> None:
        if baseline is None:
            dedupe_baseline(rows)
        else:
            for record in rows:
                baseline(record)

    ours, theirs = median_seconds(ours_once, repeat), median_seconds(theirs_once, repeat)
    n = table.num_rows
    return {
        "rows_per_s": round(n / ours),
        "baseline_rows_per_s": round(n / theirs),
        "ratio": round(theirs / ours, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--only", default="", help="comma-separated transform names")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per side (median)")
    args = parser.parse_args()
    only = {x for x in args.only.split(",") if x}
    settle_heap()  # memory kept as a settled piper keeps it (glibc thresholds fixed)
    rows = make_rows(args.rows)
    table = pa.Table.from_pylist(rows)
    objects = MemoryObjects()
    objects.put("geoip", "GeoLite2-City.mmdb", GEOIP_DB)
    objects.put("geoip", "users.csv", USERS_CSV.encode())
    context = Context(tenant="t", dataset="d", resources=objects)
    results: dict[str, dict[str, float]] = {}
    print(
        f"{'transform':18s} {'rows/s':>12s} {'per-record':>12s} {'ratio':>7s}   ({len(rows)} rows)"
    )
    for name, config, baseline in BENCHES:
        if only and name not in only:
            continue
        bench_rows, bench_table = rows, table
        if name == "dns":  # one real lookup per distinct name; keep the baseline's cost bounded
            bench_rows = [{"host": "localhost"} for _ in range(min(len(rows), 2000))]
            bench_table = pa.Table.from_pylist(bench_rows)
        figures = measure(name, config, baseline, bench_rows, bench_table, context, args.repeat)
        results[name] = figures
        print(
            f"{name:18s} {figures['rows_per_s']:12,.0f} {figures['baseline_rows_per_s']:12,.0f} {figures['ratio']:6.1f}x"
        )
    merge_results({"transforms": {"rows": len(rows), "repeat": args.repeat, "results": results}})


if __name__ == "__main__":
    _ = (base64, hmac, UTC, duckdb)
    main()
