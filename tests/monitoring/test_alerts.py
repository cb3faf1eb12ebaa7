"""The alerting rules the charts ship (the proxy's: its own cases in test_proxy_alerts.py): valid for Prometheus, written against series the
components expose, and each alert firing when its condition holds long enough, not before
(`promtool test rules`)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import promtool
from tests.monitoring.test_dashboard import exposed_names

ALERTS = (
    Path(__file__).parent.parent.parent
    / "deploy"
    / "helm"
    / "bytefreezer"
    / "files"
    / "bytefreezer-alerts.yaml"
)


PROXY_ALERTS = ALERTS.parents[2] / "proxy" / "files" / "proxy-alerts.yaml"


def rules(path: Path = ALERTS) -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


@pytest.mark.parametrize("path", [ALERTS, PROXY_ALERTS], ids=["bytefreezer", "proxy"])
def test_the_rules_file_is_valid(path: Path) -> None:
    checked = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_rules_query_exposed_metrics_only() -> None:
    queried = {
        name for rule in rules() for name in re.findall(r"\bbytefreezer_[a-z_]+", rule["expr"])
    }
    assert len(queried) >= 8
    assert queried <= exposed_names(), sorted(queried - exposed_names())


# Per alert: input series (one sample a minute), a time it must not be firing yet, a time it
# must be, the labels it fires with, and its rendered summary.
CASES: dict[str, dict[str, Any]] = {
    "BytefreezerIntakeBacklogOld": {
        "series": {'bytefreezer_piper_backlog_age_seconds{component="piper"}': "0+60x30"},
        "quiet": "18m",  # over 15 minutes old since minute 16, for 5 minutes from 21
        "firing": "25m",
        "labels": {"severity": "critical"},
        "summary": "Intake objects have waited 25m 0s for piper",
    },
    "BytefreezerStagedBacklogOld": {
        "series": {'bytefreezer_packer_oldest_staged_seconds{component="packer"}': "0+120x30"},
        "quiet": "18m",
        "firing": "25m",
        "labels": {"severity": "critical"},
        "summary": "Staged records have waited 50m 0s for packer",
    },
    "BytefreezerReceiverServerErrors": {
        "series": {
            'bytefreezer_receiver_requests_total{component="receiver",status_class="2xx"}': "0+90x40",
            'bytefreezer_receiver_requests_total{component="receiver",status_class="5xx"}': "0x10 10+10x30",
        },
        "quiet": "10m",
        "firing": "30m",
        "labels": {"severity": "critical"},
        "summary": "10% of ingest requests get a 5xx",
    },
    "BytefreezerReceiverSpooling": {
        "series": {'bytefreezer_receiver_spool_objects{component="receiver"}': "0x5 3x40"},
        "quiet": "15m",  # objects spooled since minute 6: 15 minutes of them at minute 21
        "firing": "25m",
        "labels": {"severity": "warning", "component": "receiver"},
        "summary": "A receiver has held 3 objects in its local spool for 15 minutes",
    },
    "BytefreezerDeadLetters": {
        "series": {
            'bytefreezer_records_received_total{component="piper",stage="piper"}': "0+1000x60",
            'bytefreezer_records_dead_lettered_total{component="piper",stage="piper",transform="decode"}': "0x10 50+50x50",
            # the receiver's count is not what piper reads: it does not change the share
            'bytefreezer_records_received_total{component="receiver",stage="ingest"}': "0+5000x60",
        },
        "quiet": "20m",
        "firing": "45m",
        "labels": {"severity": "warning"},
        "summary": "5% of records go to the dead-letter output",
    },
    "BytefreezerPipelineErrors": {
        "series": {
            'bytefreezer_errors_total{component="piper",stage="piper",error_type="config"}': "0x10 1+1x50",
            # the receiver's refusals are not pipeline errors
            'bytefreezer_errors_total{component="receiver",stage="intake",error_type="auth"}': "0+5x60",
        },
        "quiet": "20m",
        "firing": "45m",
        "labels": {"severity": "warning", "stage": "piper", "error_type": "config"},
        "summary": "piper reports config errors",
    },
    "BytefreezerDatasetsFailing": {
        "series": {
            'bytefreezer_packer_failing_datasets{component="packer",instance="a"}': "0x10 2x40",
            'bytefreezer_packer_failing_datasets{component="packer",instance="b"}': "0x60",
            'bytefreezer_piper_failing_datasets{component="piper",instance="c"}': "0x60",
        },
        "quiet": "20m",
        "firing": "35m",
        "labels": {"severity": "critical"},
        "summary": "2 dataset(s) cannot be processed or packed",
    },
    "BytefreezerTenantOverDailyLimit": {
        "series": {
            'bytefreezer_receiver_quota_rejections_total{component="receiver",instance="a"}': "0x10 0+3x40",
            'bytefreezer_receiver_quota_rejections_total{component="receiver",instance="b"}': "0x60",
        },
        "quiet": "15m",  # refusals since minute 11: the increase shows, held 10 minutes at 21+
        "firing": "30m",
        "labels": {"severity": "warning"},
        "summary": "Requests are refused for a tenant past its daily ingest limit",
    },
    "BytefreezerUnownedObjects": {
        "series": {
            'bytefreezer_piper_unowned_objects{component="piper",reason="no_dataset"}': "0x10 2x120"
        },
        "quiet": "60m",
        "firing": "90m",
        "labels": {"severity": "info"},
        "summary": "Objects of an inactive or deleted dataset have been kept for an hour",
    },
}


def _rendered(text: str, labels: dict[str, str]) -> str:
    """An annotation without `$value` as Prometheus renders it: its `$labels` filled in and
    folded (`>-`) text as it is."""
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)


def check_alert_cases(rules_file: Path, cases: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """Run ``promtool test rules`` over ``rules_file``'s alerts, one case each (``CASES``'
    shape): quiet at its `quiet` time, firing at `firing` with its labels, summary and
    description."""
    by_name = {rule["alert"]: rule for rule in rules(rules_file)}
    assert set(cases) == set(by_name), "every alert needs a case"
    tests = []
    for name, case in cases.items():
        description = _rendered(by_name[name]["annotations"]["description"], case["labels"])
        tests.append(
            {
                "interval": "1m",
                "input_series": [
                    {"series": series, "values": values}
                    for series, values in case["series"].items()
                ],
                "alert_rule_test": [
                    {"eval_time": case["quiet"], "alertname": name, "exp_alerts": []},
                    {
                        "eval_time": case["firing"],
                        "alertname": name,
                        "exp_alerts": [
                            {
                                "exp_labels": case["labels"],
                                "exp_annotations": {
                                    "summary": case["summary"],
                                    "description": description,
                                },
                            }
                        ],
                    },
                ],
            }
        )
    spec = tmp_path / "alerts_test.yml"
    spec.write_text(
        yaml.safe_dump(
            {"rule_files": [str(rules_file)], "evaluation_interval": "1m", "tests": tests}
        )
    )
    tested = subprocess.run(
        [promtool(), "test", "rules", str(spec)], capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_fires_when_its_condition_has_held_long_enough(tmp_path: Path) -> None:
    check_alert_cases(ALERTS, CASES, tmp_path)
