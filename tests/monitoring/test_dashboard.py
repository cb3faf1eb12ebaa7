"""The Grafana dashboard queries only metrics the components really expose."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

from bytefreezer.settings import load_settings
from bytefreezer.telemetry import METRICS, Telemetry, metrics_reference
from tests.helpers import free_port

DASHBOARD = (
    Path(__file__).parent.parent.parent / "deploy" / "grafana" / "bytefreezer-dashboard.json"
)


def exposed_names() -> set[str]:
    """Series names a live Prometheus endpoint shows after every metric was touched once."""
    port = free_port()
    telemetry = Telemetry(
        load_settings(monitoring={"mode": "prometheus", "metrics_host": "127.0.0.1"}),
        "test",
        metrics_port=port,
    )
    try:
        for spec in METRICS:
            labels = {label: "x" for label in spec.labels if label != "component"}
            if spec.kind == "counter":
                telemetry.add(spec.name, 1, **labels)
            elif spec.kind == "histogram":
                telemetry.record(spec.name, 1, **labels)
            else:
                telemetry.set(spec.name, 1, **labels)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    finally:
        telemetry.shutdown()
    return {
        line.split("{")[0].split(" ")[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_every_declared_metric_is_exposed_under_its_documented_name() -> None:
    exposed = exposed_names()
    for spec in METRICS:
        assert set(spec.prometheus_names) <= exposed, spec.name


def test_dashboard_queries_exposed_metrics_only() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10
    queried = {name for expr in exprs for name in re.findall(r"\bbytefreezer_[a-z_]+", expr)}
    exposed = exposed_names()
    assert queried, "the dashboard queries nothing"
    assert queried <= exposed, sorted(queried - exposed)
    covered = {spec.name for spec in METRICS if set(spec.prometheus_names) & queried}
    assert len(covered) >= len(METRICS) - 2, sorted({s.name for s in METRICS} - covered)


def test_readme_documents_every_metric() -> None:
    readme = (Path(__file__).parent.parent.parent / "README.md").read_text()
    assert metrics_reference() in readme, "regenerate the metric table from bytefreezer.telemetry"


def test_tenant_label_is_opt_in_and_capped() -> None:
    port = free_port()
    settings = load_settings(
        monitoring={
            "mode": "prometheus",
            "metrics_host": "127.0.0.1",
            "tenant_label": True,
            "tenant_label_limit": 2,
        }
    )
    telemetry = Telemetry(settings, "receiver", metrics_port=port)
    try:
        for tenant in ("a", "b", "c", "d", "a"):
            telemetry.add("bytefreezer_records_received", 1, stage="ingest", tenant=tenant)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    finally:
        telemetry.shutdown()
    tenants = set(re.findall(r'bytefreezer_records_received_total\{[^}]*tenant="([^"]+)"', text))
    assert tenants == {"a", "b", "_other"}
    assert re.search(r'tenant="_other"[^}]*\} 2\.0', text) or re.search(
        r'\{[^}]*tenant="_other"[^}]*\} 2\.0', text
    )
    off = Telemetry(load_settings(monitoring={"mode": "none"}), "receiver")
    assert off._attributes("bytefreezer_records_received", {"tenant": "a"}) == {
        "component": "receiver"
    }


def test_gauges_every_replica_reports_whole_are_not_summed_over_replicas() -> None:
    """Each piper and packer replica lists the whole bucket, so its backlog gauges are the same
    number on every replica: summed, two replicas showed twice the backlog."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    whole = ("backlog_objects", "backlog_age_seconds", "unowned_objects")
    queried = [e for e in exprs if any(name in e for name in whole)]
    assert len(queried) == 5
    assert all(e.startswith("max") for e in queried), queried
