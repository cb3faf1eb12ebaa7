"""Prometheus mode: a real Prometheus server (Debian's `prometheus`) scrapes a running stack."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.helpers import (
    first_run_key,
    free_port,
    start_up,
    stop_process,
    wait_for,
    wait_for_port,
)
from tests.monitoring.test_alerts import ALERTS, rules

N = 25


@contextmanager
def prometheus(tmp_path: Path, targets: list[str]) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "the `prometheus` binary is missing: `make test` installs Debian's prometheus package"
        )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: [{json.dumps(str(ALERTS))}]\n"
        "scrape_configs:\n"
        f"  - job_name: bytefreezer\n    static_configs: [{{targets: {json.dumps(targets)}}}]\n"
    )
    port = free_port()
    with open(tmp_path / "prometheus.log", "wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process, timeout=20)


def query(base: str, promql: str) -> float | None:
    answer = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=10).json()
    result = answer["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def rule_health(base: str, count: int) -> dict[str, str] | None:
    """Each loaded alert's health once all ``count`` have been evaluated, else None."""
    answer = httpx.get(f"{base}/api/v1/rules", timeout=10).json()
    found = {
        rule["name"]: rule["health"]
        for group in answer["data"]["groups"]
        for rule in group["rules"]
        if rule["type"] == "alerting"
    }
    return found if len(found) == count and "unknown" not in found.values() else None


def test_prometheus_scrapes_the_stack(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port, metrics_base = free_port(), free_port()
    while any(p in (metrics_base + 1, metrics_base + 2) for p in (port,)):
        metrics_base = free_port()
    with open(tmp_path / "up.log", "wb") as log:
        stack = start_up(
            data_dir,
            log,
            port,
            BYTEFREEZER_MONITORING__MODE="prometheus",
            BYTEFREEZER_MONITORING__METRICS_HOST="127.0.0.1",
            BYTEFREEZER_MONITORING__METRICS_PORT=str(metrics_base),
        )
    try:
        wait_for_port(port, timeout=60)
        for offset in range(3):
            wait_for_port(metrics_base + offset, timeout=30)
        key = first_run_key(data_dir)
        body = "\n".join(
            json.dumps({"timestamp": "2026-01-01T00:00:00Z", "i": i}) for i in range(N)
        )
        answer = httpx.post(
            f"http://127.0.0.1:{port}/demo/events",
            content=body,
            headers={"Authorization": f"Bearer {key}"},
        )
        assert answer.status_code == 200
        targets = [f"127.0.0.1:{metrics_base + offset}" for offset in range(3)]
        with prometheus(tmp_path, targets) as base:
            expected = {
                "sum(bytefreezer_packer_rows_total)": N,
                'sum(bytefreezer_records_received_total{stage="ingest"})': N,
                'sum(bytefreezer_receiver_requests_total{status_class="2xx"})': 1,
                'sum(bytefreezer_records_sent_total{stage="piper"})': N,
                'count(up{job="bytefreezer"} == 1)': 3,
                "count(bytefreezer_packer_files_total >= 1)": 1,
            }
            # Targets are scraped at different offsets: wait until every one has been.
            wait_for(lambda: all(query(base, q) == v for q, v in expected.items()), timeout=60)
            # The shipped alerting rules evaluate against the real series, and a healthy stack
            # sets none of them off.
            evaluated = wait_for(lambda: rule_health(base, len(rules())), timeout=30)
            assert evaluated == {rule["alert"]: "ok" for rule in rules()}
            assert query(base, "count(ALERTS)") is None
    finally:
        stop_process(stack)
