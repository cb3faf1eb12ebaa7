"""benchmarks/results/latest.json as a Markdown table (benchmarks/results/latest.md)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def _cpu(run: dict) -> str:
    """A compatibility run's receiver CPU a request, where the results have it."""
    spent = run.get("receiver_cpu_ms_per_request")
    return "" if spent is None else f", receiver CPU {spent} ms a request"


def _pass_by_pass(comparison: dict) -> str:  # type: ignore[type-arg]
    """The ratio of each pair of passes, when the benchmark recorded them."""
    pairs = comparison.get("pair_ratios")
    return f" (pass by pass {', '.join(f'{r:.2f}' for r in pairs)})" if pairs else ""


def render(data: dict) -> str:  # type: ignore[type-arg]
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` on a machine with {os.cpu_count()} cores, Python {platform.python_version()}"
        + (f", pyarrow {data['machine']['pyarrow']}" if "machine" in data else "")
        + ". Every figure is a ratio against a baseline measured in the same run.",
        "",
        "| stage | measured | baseline (same run) | ratio | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    for stage, target in (("piper", "≥ 0.7x"), ("packer", "≥ 0.8x")):
        if stage in data:
            s = data[stage]
            lines.append(
                f"| {stage} | {s['mb_per_s']} MB/s, {s['records_per_s']:,} rec/s | pyarrow alone {s['baseline_mb_per_s']} MB/s | {s['ratio']:.2f}x{_pass_by_pass(s)} | {target} |"
            )
    if "piper_small_bodies" in data:
        s = data["piper_small_bodies"]
        lines.append(
            f"| piper, the same objects of {s['bodies']:,} group-committed {s['body_kb']:g} KB bodies | {s['mb_per_s']} MB/s, {s['records_per_s']:,} rec/s | pyarrow alone {s['baseline_mb_per_s']} MB/s | {s['ratio']:.2f}x{_pass_by_pass(s)} | ≥ 0.7x |"
        )
    if "ingest" in data:
        i = data["ingest"]
        lines.append(
            f"| receiver ({i['body_bytes'] // 1024} KB gzip bodies, {i['clients']} clients) | {i['receiver']['mb_per_s']} MB/s, p99 {i['receiver']['p99_ms']} ms | bare Starlette/Hypercorn {i['bare']['mb_per_s']} MB/s, p99 {i['bare']['p99_ms']} ms | {i['ratio']:.2f}x (median of {', '.join(f'{r:.2f}' for r in i.get('round_ratios', [i['ratio']]))}) | ≥ 0.8x |"
        )
    if "end_to_end" in data:
        e = data["end_to_end"]
        floor = (
            f" (pyarrow alone read_json → Parquet: {e['pyarrow_ratio']:.2f}x)"
            if "pyarrow_ratio" in e
            else ""
        )
        if "cold_start_seconds" in e:
            floor += (
                f"; cold start of a fresh process, 1,000 events: {e['cold_start_seconds']:.2f} s"
            )
        lines.append(
            f"| end to end, post → Parquet visible ({e['mb']} MB) | {e['mb_per_s']} MB/s | DuckDB read_json_auto → Parquet {e['duckdb_mb_per_s']} MB/s | {e['ratio']:.2f}x{_pass_by_pass(e)}{floor} | ≥ 0.5x |"
        )
    if "scale" in data:
        sc = data["scale"]
        lines.append(
            f"| growth ({', '.join(format(g['mb'], 'g') for g in sc['growth'].values())} MB; median of {len(next(iter(sc['growth'].values()))['samples'])} passes at 1x and 4x) | per-MB cost "
            + ", ".join(f"{g['seconds_per_mb'] * 1000:.1f}" for g in sc["growth"].values())
            + f" ms/MB, spread ±{sc['per_mb_spread'] * 100:.0f}% | | | ±15% |"
        )
        t = sc["tenants"]
        floor = (
            f" (pyarrow alone writing the same {t['files']['one_tenant']:,} vs {t['files']['hundred_tenants']:,} files: {t['pyarrow_ratio']:.2f}x)"
            if "pyarrow_ratio" in t
            else ""
        )
        lines.append(
            f"| 100 tenants vs 1 ({t['total_mb']:g} MB, events over 48 hours; median of 3 passes a side, taking turns) | {t['hundred_tenants_s']} s | {t['one_tenant_s']} s | {t['ratio']:.3f}x{_pass_by_pass(t)}{floor} | ≤ 1.25x |"
        )
        if "one_hour" in t:
            h = t["one_hour"]
            lines.append(
                f"| 100 tenants vs 1, the same events within one hour (a stream's batch) | {h['hundred_tenants_s']} s | {h['one_tenant_s']} s | {h['ratio']:.3f}x{_pass_by_pass(h)} | ≤ 1.25x |"
            )
        for size, m in sc["memory"].items():
            lines.append(
                f"| peak RSS at {size} | piper {m['piper_peak_rss_mb']} MB, packer {m['packer_peak_rss_mb']} MB | | | < 1024 MB |"
            )
    if "stream" in data:
        st = data["stream"]
        every, buffered = st["every_cycle"], st["buffered"]
        lines.append(
            f"| a stream of {st['tenants']} tenants, {st['rounds']} rounds ({st['mb']:g} MB): packer buffered vs every cycle "
            f"| packer {buffered['packer_seconds']} s, {buffered['files']:,} files, DuckDB scan {buffered['scan_seconds'] * 1000:.1f} ms "
            f"| packer {every['packer_seconds']} s, {every['files']:,} files, DuckDB scan {every['scan_seconds'] * 1000:.1f} ms "
            f"| packer {st['packer_ratio']:.2f}x, scan {st['scan_ratio']:.2f}x | |"
        )
    if "s3_latency" in data and "piper" in data["s3_latency"]:
        s3 = data["s3_latency"]
        for stage in ("piper", "packer"):
            st = s3[stage]
            lines.append(
                f"| {stage} on S3 with {s3['rtt_ms']:g} ms round trips, {s3['tenants']} datasets ({s3['mb']:g} MB): "
                f"{s3['jobs']} at once vs the default {s3['default_jobs']} "
                f"| {st['more_seconds']} s, {st['more_cpu_seconds']} CPU-s "
                f"| {st['default_seconds']} s, {st['default_cpu_seconds']} CPU-s | {st['ratio']:.2f}x | |"
            )
    if "otlp_logs" in data:
        o = data["otlp_logs"]
        lines.append(
            f"| piper decoding OTLP logs ({o['records']:,} records, {o['request_mb']:g} MB of protobuf) "
            f"| {o['records_per_s']:,} rec/s | protobuf's MessageToDict alone {o['message_to_dict_records_per_s']:,} rec/s "
            f"| {o['ratio']:.2f}x (the same records as NDJSON: {o['ndjson_records_per_s']:,} rec/s) | |"
        )
    if "otlp_traces" in data:
        t = data["otlp_traces"]
        lines.append(
            f"| piper decoding OTLP spans ({t['spans']:,} spans, {t['request_mb']:g} MB of protobuf) "
            f"| {t['spans_per_s']:,} spans/s | protobuf's MessageToDict alone "
            f"{t['message_to_dict_spans_per_s']:,} spans/s | {t['ratio']:.2f}x | |"
        )
    if "forward" in data:
        f = data["forward"]
        lines.append(
            f"| proxy `forward` input, PackedForward chunks of {f['chunk_records']:,} with acks, "
            f"{f['connections']} connections ({f['records']:,} events) "
            f"| {f['proxy_records_per_s']:,} rec/s, {f['proxy_mb_per_s']} MB/s as NDJSON, spooled "
            f"| bare msgpack server (read, ack) {f['bare_records_per_s']:,} rec/s "
            f"| {f['ratio']:.2f}x{_pass_by_pass(f)} | |"
        )
    if "proxy_http" in data:
        h = data["proxy_http"]
        lines.append(
            f"| proxy `http` input, {h['clients']} clients, {h['body_bytes']:,}-byte bodies, each "
            f"answered once spooled | {h['proxy']['requests_per_s']} req/s, p99 {h['proxy']['p99_ms']} ms "
            f"| bare Starlette/Hypercorn writing each body {h['bare']['requests_per_s']} req/s, "
            f"p99 {h['bare']['p99_ms']} ms | {h['ratio']:.2f}x{_pass_by_pass(h)} | |"
        )
    if "proxy_file" in data:
        t = data["proxy_file"]
        lines.append(
            f"| proxy `file` input, a {t['mb']} MB file of {t['records']:,} lines, each line "
            f"spooled, its checkpoint moved after | {t['proxy_mb_per_s']} MB/s, "
            f"{t['proxy_records_per_s']:,} lines/s | the same file read, gzip'd and fsync'd in "
            f"1 MiB batches {t['bare_mb_per_s']} MB/s | {t['ratio']:.2f}x{_pass_by_pass(t)} | |"
        )
    if "proxy_containers" in data:
        c = data["proxy_containers"]
        lines.append(
            f"| proxy `file` input with `container_format: cri`, a {c['mb']} MB file of "
            f"{c['records']:,} container log lines (`<time> stdout F <event>`), each a record "
            f"with its path's fields, spooled, its checkpoint moved after | "
            f"{c['proxy_mb_per_s']} MB/s, {c['proxy_records_per_s']:,} lines/s | the same file "
            f"read, gzip'd and fsync'd in 1 MiB batches {c['bare_mb_per_s']} MB/s | "
            f"{c['ratio']:.2f}x{_pass_by_pass(c)} | |"
        )
    if "proxy_sqs" in data:
        q = data["proxy_sqs"]
        lines.append(
            f"| proxy `sqs` input, S3 event notifications: a {q['object_mb']} MB gzip'd object of "
            f"{q['records']:,} lines ({q['mb']} MB) read from S3 (moto), each line spooled, the "
            f"message deleted after | {q['proxy_mb_per_s']} MB/s, {q['proxy_records_per_s']:,} "
            f"lines/s | the same object read with botocore, inflated, gzip'd and fsync'd in 1 MiB "
            f"batches {q['bare_mb_per_s']} MB/s | {q['ratio']:.2f}x{_pass_by_pass(q)} | |"
        )
    if "proxy_journald" in data:
        j = data["proxy_journald"]
        lines.append(
            f"| proxy `journald` input: {j['entries']:,} journal entries ({j['mb']} MB as "
            f"journalctl's JSON), each spooled, the cursor checkpointed after "
            f"| {j['proxy_entries_per_s']:,} entries/s | the same journalctl, its output gzip'd and "
            f"fsync'd in 1 MiB batches {j['bare_entries_per_s']:,} entries/s "
            f"| {j['ratio']:.2f}x{_pass_by_pass(j)} | |"
        )
    if "proxy_mqtt" in data:
        m = data["proxy_mqtt"]
        lines.append(
            f"| proxy `mqtt` input: {m['messages']:,} QoS 1 messages from mosquitto, each spooled "
            f"and then acknowledged | {m['proxy_messages_per_s']:,} messages/s | a bare paho-mqtt "
            f"subscriber acknowledging each on arrival {m['bare_messages_per_s']:,} messages/s "
            f"| {m['ratio']:.2f}x{_pass_by_pass(m)} | |"
        )
    if "proxy_kafka" in data:
        k = data["proxy_kafka"]
        lines.append(
            f"| proxy `kafka` input: {k['messages']:,} messages ({k['mb']} MB) from a topic's 16 "
            f"partitions (librdkafka's mock cluster), each spooled before its offset is stored "
            f"| {k['proxy_messages_per_s']:,} messages/s ({k['proxy_mb_per_s']} MB/s) | a bare "
            f"confluent-kafka consumer, the values gzip'd and fsync'd in 1 MiB batches "
            f"{k['bare_messages_per_s']:,} messages/s | {k['ratio']:.2f}x{_pass_by_pass(k)} | |"
        )
    if "proxy_sflow" in data:
        f = data["proxy_sflow"]
        lines.append(
            f"| proxy `sflow` input: {f['samples']:,} flow samples in {f['datagrams']:,} datagrams "
            f"from pmacctd (sfprobe), each decoded to a JSON record and spooled; CPU of the "
            f"receiving process | {f['proxy_samples_per_cpu_s']:,} samples per CPU-second | a "
            f"bare UDP receiver spooling the datagrams raw, gzip'd and fsync'd in 1 MiB batches "
            f"{f['bare_samples_per_cpu_s']:,} samples per CPU-second "
            f"| {f['ratio']:.2f}x{_pass_by_pass(f)} | |"
        )
    if "elastic" in data:
        e = data["elastic"]
        lines.append(
            f"| receiver's Elasticsearch bulk API, {e['documents_per_request']:,} documents a "
            f"request, {e['clients']} clients | {e['bulk']['documents_per_s']:,} docs/s, "
            f"p99 {e['bulk']['p99_ms']} ms{_cpu(e['bulk'])} | the receiver's NDJSON endpoint, the same documents "
            f"{e['ndjson']['documents_per_s']:,} docs/s, p99 {e['ndjson']['p99_ms']} ms{_cpu(e['ndjson'])} "
            f"| {e['ratio']:.2f}x{_pass_by_pass(e)} | |"
        )
    if "loki" in data:
        k = data["loki"]
        lines.append(
            f"| receiver's Loki push API (protobuf, snappy), {k['documents_per_request']:,} lines "
            f"a request, {k['clients']} clients | {k['loki']['documents_per_s']:,} lines/s, "
            f"p99 {k['loki']['p99_ms']} ms{_cpu(k['loki'])} | the receiver's NDJSON endpoint, the same documents "
            f"{k['ndjson']['documents_per_s']:,} docs/s, p99 {k['ndjson']['p99_ms']} ms{_cpu(k['ndjson'])} "
            f"| {k['ratio']:.2f}x{_pass_by_pass(k)} | |"
        )
    if "datadog" in data:
        d = data["datadog"]
        lines.append(
            f"| receiver's Datadog log intake (JSON array, gzip), {d['documents_per_request']:,} "
            f"logs a request, {d['clients']} clients | {d['datadog']['documents_per_s']:,} logs/s, "
            f"p99 {d['datadog']['p99_ms']} ms{_cpu(d['datadog'])} | the receiver's NDJSON endpoint, the same documents "
            f"{d['ndjson']['documents_per_s']:,} docs/s, p99 {d['ndjson']['p99_ms']} ms{_cpu(d['ndjson'])} "
            f"| {d['ratio']:.2f}x{_pass_by_pass(d)} | |"
        )
    if "firehose" in data:
        f = data["firehose"]
        lines.append(
            f"| receiver's Firehose HTTP endpoint delivery (base64 records, gzip), "
            f"{f['documents_per_request']:,} records a request, {f['clients']} clients "
            f"| {f['firehose']['documents_per_s']:,} records/s, p99 {f['firehose']['p99_ms']} ms{_cpu(f['firehose'])} "
            f"| the receiver's NDJSON endpoint, the same documents "
            f"{f['ndjson']['documents_per_s']:,} docs/s, p99 {f['ndjson']['p99_ms']} ms{_cpu(f['ndjson'])} "
            f"| {f['ratio']:.2f}x{_pass_by_pass(f)} | |"
        )
    if "remote_write" in data:
        w = data["remote_write"]
        lines.append(
            f"| receiver's Prometheus remote write (protobuf, snappy), "
            f"{w['documents_per_request']:,} samples a request, {w['clients']} clients "
            f"| {w['remote_write']['documents_per_s']:,} samples/s, "
            f"p99 {w['remote_write']['p99_ms']} ms{_cpu(w['remote_write'])} | the receiver's NDJSON endpoint, as many "
            f"documents {w['ndjson']['documents_per_s']:,} docs/s, p99 {w['ndjson']['p99_ms']} ms{_cpu(w['ndjson'])} "
            f"| {w['ratio']:.2f}x{_pass_by_pass(w)} | |"
        )
    if "hec" in data:
        h = data["hec"]
        lines.append(
            f"| receiver's Splunk HEC event endpoint (events one after another, gzip), "
            f"{h['documents_per_request']:,} events a request, {h['clients']} clients "
            f"| {h['hec']['documents_per_s']:,} events/s, p99 {h['hec']['p99_ms']} ms{_cpu(h['hec'])} "
            f"| the receiver's NDJSON endpoint, the same documents "
            f"{h['ndjson']['documents_per_s']:,} docs/s, p99 {h['ndjson']['p99_ms']} ms{_cpu(h['ndjson'])} "
            f"| {h['ratio']:.2f}x{_pass_by_pass(h)} | |"
        )
    if "transforms" in data:
        lines += [
            "",
            f"## Transforms ({data['transforms']['rows']:,} rows, against per-record Python)",
            "",
            "| transform | rows/s | per-record rows/s | ratio |",
            "| --- | --- | --- | --- |",
        ]
        for name, t in data["transforms"]["results"].items():
            lines.append(
                f"| {name} | {t['rows_per_s']:,} | {t['baseline_rows_per_s']:,} | {t['ratio']}x |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    data = json.loads((RESULTS / "latest.json").read_text())
    (RESULTS / "latest.md").write_text(render(data))
    print((RESULTS / "latest.md").read_text())


if __name__ == "__main__":
    main()
