"""The same piper and packer pipelines, unchanged, through Beam's portable Job API (the local
job service, LOOPBACK environment) and the DirectRunner's multi_processing mode: same Parquet."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from bytefreezer.control import ControlStore
from bytefreezer.control.models import DatasetSpec, Tenant
from bytefreezer.ingress.receiver import IntakeWriter
from bytefreezer.pipelines.packer import run_packer_cycle
from bytefreezer.pipelines.piper import run_piper_cycle
from bytefreezer.storage import Storage
from tests.conftest import fast_settings
from tests.helpers import read_parquet_dir

CHAIN = [
    {"type": "filter", "config": {"condition": "i % 3 <> 0"}},
    {"type": "add_field", "config": {"field": "tag", "value": "${tenant_id}-${i}"}},
]


def run_with(
    tmp_path: Path, beam_args: list[str]
) -> tuple[list[dict[str, Any]], set[str], dict[str, int]]:
    settings = fast_settings(
        tmp_path, piper={"beam_args": beam_args}, packer={"beam_args": beam_args}
    )
    storage = Storage(settings)
    storage.ensure_buckets()
    control = ControlStore(settings.control_db_path(), destination_for=settings.destination_for)
    control.create_tenant(Tenant(name="acme"))
    control.create_dataset("acme", DatasetSpec(name="web", transforms=CHAIN))
    writer = IntakeWriter(storage)
    for part in range(4):
        lines = [
            json.dumps({"i": i, "timestamp": f"2026-01-0{1 + i % 2}T0{i % 3}:00:00Z"})
            for i in range(part * 50, part * 50 + 50)
        ]
        writer.write(
            "acme", "web", "ndjson", gzip.compress("\n".join([*lines, "{broken"]).encode()), {}
        )
    piper = run_piper_cycle(settings, control, storage)
    run_packer_cycle(settings, control, storage)
    destination = settings.data_dir / "destination" / "acme" / "web"
    table = read_parquet_dir(destination)
    assert table is not None
    rows = sorted(table.to_pylist(), key=lambda r: r["i"])
    partitions = {str(p.parent.relative_to(destination)) for p in destination.rglob("*.parquet")}
    assert not storage.intake.list() and not storage.piper.list("acme/")
    return rows, partitions, piper.counters


@pytest.mark.slow
def test_portable_and_multiprocessing_runs_match_the_default(tmp_path: Path) -> None:
    default = run_with(tmp_path / "default", [])
    assert len(default[0]) == 200 - len(range(0, 200, 3))
    for name, args in (
        (
            "portable",
            ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"],
        ),
        ("multiprocess", ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]),
    ):
        rows, partitions, counters = run_with(tmp_path / name, args)
        assert rows == default[0], name
        assert partitions == default[1], name
        if counters:  # runners that report metrics report the same counts
            assert counters["records_out"] == default[2]["records_out"], name
