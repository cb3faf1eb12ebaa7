"""The proxy chart's alerting rules (`deploy/helm/proxy/files/proxy-alerts.yaml`; promtool
checks the file in test_alerts.py): written against series a running proxy exposes, and each
alert firing when its condition holds long enough, not before (`promtool test rules`)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from bytefreezer.ingress.proxy.service import ProxyService
from tests.ingress.test_proxy import proxy_config, serving
from tests.monitoring.test_alerts import PROXY_ALERTS, check_alert_cases, rules


def test_the_rules_query_what_a_running_proxy_exposes(tmp_path: Path) -> None:
    config = proxy_config(
        tmp_path, "http://127.0.0.1:9", "bfk_key", {"name": "flows", "type": "sflow"}
    )
    exposed: set[str] = set()

    async def scrape(service: ProxyService) -> None:
        exposed.update(
            re.split(r"[{ ]", line, maxsplit=1)[0]
            for line in service._exposition().splitlines()
            if line and not line.startswith("#")
        )

    asyncio.run(serving(ProxyService(config), scrape))
    queried = {
        name
        for rule in rules(PROXY_ALERTS)
        for name in re.findall(r"\bbytefreezer_[a-z_]+", rule["expr"])
    }
    assert len(queried) >= 6
    assert queried <= exposed, sorted(queried - exposed)


# Per alert: input series (one sample a minute), a time it must not be firing yet, a time it
# must be, the labels it fires with, and its rendered summary.
CASES: dict[str, dict[str, Any]] = {
    "BytefreezerProxyRefusingLines": {
        "series": {
            'bytefreezer_proxy_lines_refused_total{instance="p",input="syslog"}': "0x10 0+5x20",
            'bytefreezer_proxy_lines_refused_total{instance="p",input="app"}': "0x30",
        },
        "quiet": "9m",
        "firing": "20m",
        "labels": {"severity": "critical", "instance": "p", "input": "syslog"},
        "summary": "Proxy input syslog refuses lines: the spool is full",
    },
    "BytefreezerProxySpoolFilling": {
        "series": {
            'bytefreezer_proxy_spool_bytes{instance="p"}': "0x5 900x30",
            'bytefreezer_proxy_spool_max_bytes{instance="p"}': "1000x40",
        },
        "quiet": "9m",  # over 80% since minute 6, for 5 minutes from 11
        "firing": "15m",
        "labels": {"severity": "warning", "instance": "p"},
        "summary": "A proxy's spool is 90% full",
    },
    "BytefreezerProxyNotDelivering": {
        "series": {
            'bytefreezer_proxy_spool_objects{instance="p"}': "0x5 3x60",
            'bytefreezer_proxy_batches_delivered_total{instance="p"}': "0+1x10 10x55",
        },
        "quiet": "28m",  # nothing delivered in 15 minutes from minute 25, for 5 minutes from 30
        "firing": "35m",
        "labels": {"severity": "critical", "instance": "p"},
        "summary": "A proxy has delivered no batch for 20 minutes while 3 wait",
    },
    "BytefreezerProxyDeadLetters": {
        "series": {'bytefreezer_proxy_batches_dead_lettered_total{instance="p"}': "0x10 2x30"},
        "quiet": "10m",
        "firing": "15m",
        "labels": {"severity": "warning", "instance": "p"},
        "summary": "The receiver refused a proxy's batches for good: they are in its dead letters",
    },
    "BytefreezerProxyUdpDrops": {
        "series": {
            'bytefreezer_proxy_udp_drops_total{instance="p",input="flows"}': "0x10 40+40x10 440x20",
        },
        "quiet": "10m",
        "firing": "15m",
        "labels": {"severity": "warning", "instance": "p", "input": "flows"},
        "summary": "The kernel drops datagrams of proxy input flows",
    },
}


def test_every_alert_fires_when_its_condition_has_held_long_enough(tmp_path: Path) -> None:
    check_alert_cases(PROXY_ALERTS, CASES, tmp_path)
