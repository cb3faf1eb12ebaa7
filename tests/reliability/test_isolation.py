"""One tenant's broken dataset stalls only itself: the others' records keep flowing."""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bytefreezer.control.models import DatasetSpec, Destination, Tenant
from bytefreezer.ingress.receiver import IntakeWriter
from bytefreezer.keys import IntakeKey
from bytefreezer.pipelines import packer
from bytefreezer.pipelines.packer import run_packer_cycle
from bytefreezer.pipelines.piper import run_piper_cycle
from tests.e2e.test_recovery import setup_stack
from tests.helpers import read_parquet_dir, scraped
from tests.transforms.test_lookups import city_database


def _ndjson(rows: list[dict[str, object]]) -> bytes:
    return b"\n".join(json.dumps(row).encode() for row in rows)


def _damaged(data: bytes, column: str) -> bytes:
    """Parquet ``data`` with ``column``'s pages overwritten: its footer still reads."""
    metadata = pq.ParquetFile(pa.BufferReader(data)).metadata
    chunk = metadata.row_group(0).column(metadata.schema.names.index(column))
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    end = start + chunk.total_compressed_size
    return data[:start] + b"\xff" * (end - start) + data[end:]


def _ids(root: Path) -> list[int]:
    table = read_parquet_dir(root)
    return sorted(table.column("id").to_pylist()) if table is not None else []


def test_a_dataset_whose_chain_cannot_run_waits_while_the_others_go_on(tmp_path: Path) -> None:
    # A missing GeoIP database failed the whole piper run, every cycle, for every tenant.
    settings, control, storage = setup_stack(tmp_path)
    control.create_tenant(Tenant(name="geo"))
    step = {"type": "geoip", "config": {"source_field": "ip"}}
    control.create_dataset("geo", DatasetSpec(name="web", transforms=[step]))
    writer = IntakeWriter(storage)
    for i in range(3):
        for tenant in ("acme", "geo"):
            body = json.dumps({"id": i, "ip": "81.2.69.142"}).encode()
            writer.write(tenant, "web", "ndjson", gzip.compress(body), {})
    for cycle in range(2):  # every cycle: the other tenant's objects go through
        stats = run_piper_cycle(settings, control, storage)
        assert stats.counters.get("errors:config") == 3
        # the waiting objects are not counted as bytes received, cycle after cycle
        assert (stats.counters.get("bytes_in", 0) > 0) == (cycle == 0)
    waiting = {o.key.split("/")[0] for o in storage.intake.list()}
    assert waiting == {"geo"}
    run_packer_cycle(settings, control, storage)
    out = settings.data_dir / "destination"
    assert _ids(out / "acme" / "web") == [0, 1, 2]
    # Once the database is there, the waiting objects are processed, each once.
    storage.bucket(settings.buckets.geoip).put("GeoLite2-City.mmdb", city_database())
    run_piper_cycle(settings, control, storage)
    run_packer_cycle(settings, control, storage)
    assert not storage.intake.list()
    rows = read_parquet_dir(out / "geo" / "web")
    assert rows is not None and sorted(rows.column("id").to_pylist()) == [0, 1, 2]
    assert {r["country_code"] for r in rows.column("geo").to_pylist()} == {"GB"}


def test_a_dataset_packer_cannot_write_fails_alone_and_is_packed_once_fixed(
    tmp_path: Path,
) -> None:
    # Its destination refuses writes: the packer run failed, and with it every dataset after it.
    settings, control, storage = setup_stack(tmp_path)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the destination's directory should be")
    control.create_tenant(Tenant(name="aaa"))
    destination = Destination(url=f"file://{blocker}/out")
    control.create_dataset("aaa", DatasetSpec(name="web", destination=destination))
    writer = IntakeWriter(storage)
    for i in range(3):
        for tenant in ("aaa", "acme"):
            body = json.dumps({"id": i}).encode()
            writer.write(tenant, "web", "ndjson", gzip.compress(body), {})
    run_piper_cycle(settings, control, storage)
    for _ in range(2):
        stats = run_packer_cycle(settings, control, storage)
        assert stats.counters.get("dataset_errors") == 1
    assert _ids(settings.data_dir / "destination" / "acme" / "web") == [0, 1, 2]
    staged = {o.key.split("/")[0] for o in storage.piper.list() if o.key.endswith(".parquet")}
    assert staged == {"aaa"}
    blocker.unlink()  # fixed: the next run packs it, each record once
    run_packer_cycle(settings, control, storage)
    assert _ids(blocker / "out") == [0, 1, 2]
    assert not [o for o in storage.piper.list() if o.key.endswith(".parquet")]


def test_objects_of_an_inactive_or_deleted_dataset_are_kept_and_counted(tmp_path: Path) -> None:
    """Accepted before their dataset was deactivated or deleted: neither processed nor dropped,
    but reported (they sat in the intake uncounted), and processed once the dataset is back."""
    settings, control, storage = setup_stack(tmp_path)
    for name in ("off", "gone"):
        control.create_dataset("acme", DatasetSpec(name=name))
    writer = IntakeWriter(storage)
    for name in ("web", "off", "gone"):
        writer.write("acme", name, "ndjson", gzip.compress(b'{"id": 1}\n'), {})
    spec = control.get_dataset("acme", "off").model_dump(exclude={"tenant"})
    control.put_dataset("acme", DatasetSpec.model_validate({**spec, "active": False}))
    run_piper_cycle(settings, control, storage)  # staged, its dataset then deleted
    control.delete_dataset("acme", "gone")
    writer.write("acme", "gone", "ndjson", gzip.compress(b'{"id": 2}\n'), {})
    _, text = scraped(
        "piper",
        lambda telemetry: (
            run_piper_cycle(settings, control, storage, telemetry),
            run_packer_cycle(settings, control, storage, telemetry),
        ),
    )

    def gauge(name: str, labels: str = "") -> float:
        found = re.search(rf"^{name}\{{[^}}]*{labels}[^}}]*\}} (\S+)$", text, re.MULTILINE)
        assert found, name
        return float(found.group(1))

    assert gauge("bytefreezer_piper_unowned_objects", 'reason="no_dataset"') == 1
    assert gauge("bytefreezer_piper_unowned_objects", 'reason="inactive"') == 1
    assert gauge("bytefreezer_packer_unowned_objects") == 1  # gone's staged object
    assert sorted(o.key.split("/")[1] for o in storage.intake.list()) == ["gone", "off"]
    assert _ids(settings.data_dir / "destination" / "acme" / "web") == [1]
    # The dataset back: what waited is processed, each record once.
    control.create_dataset("acme", DatasetSpec(name="gone"))
    run_piper_cycle(settings, control, storage)
    run_packer_cycle(settings, control, storage)
    assert _ids(settings.data_dir / "destination" / "acme" / "gone") == [1, 2]


def test_a_staged_object_packer_cannot_read_is_set_aside_and_the_rest_is_packed(
    tmp_path: Path,
) -> None:
    """Not Parquet packer can read (truncated, overwritten by hand): it failed every run of its
    dataset, whose records then waited for good. It is kept as it is, with the reason, beside
    the dataset's dead letters; the rest is packed and the next run starts clean."""
    settings, control, storage = setup_stack(tmp_path)
    writer = IntakeWriter(storage)
    for i in range(3):
        writer.write("acme", "web", "ndjson", gzip.compress(json.dumps({"id": i}).encode()), {})
    run_piper_cycle(settings, control, storage)
    staged = sorted(o.key for o in storage.piper.list() if not o.key.startswith("_"))
    assert len(staged) == 3
    broken = storage.piper.get(staged[1])[:-40]  # the footer cut off
    storage.piper.put(staged[1], broken)
    stats, text = scraped(
        "packer", lambda telemetry: run_packer_cycle(settings, control, storage, telemetry)
    )
    assert stats.counters.get("staged_set_aside") == 1
    assert not stats.counters.get("dataset_errors")
    assert re.search(
        r'^bytefreezer_errors_total\{[^}]*error_type="staged_set_aside"[^}]*\} 1\.0$',
        text,
        re.MULTILINE,
    )
    assert _ids(settings.data_dir / "destination" / "acme" / "web") == [0, 2]
    key = IntakeKey.parse(staged[1])
    assert storage.piper.get(key.set_aside_staged_key) == broken
    letter = json.loads(storage.piper.get(key.packer_dead_letter_key))
    assert letter["stage"] == "packer" and letter["bytes"] == len(broken)
    assert "Parquet" in letter["error"]
    assert not [o for o in storage.piper.list() if not o.key.startswith("_")]
    # Nothing is left to fail the next run, and nothing is packed twice.
    stats = run_packer_cycle(settings, control, storage)
    assert not stats.claimed and not stats.counters.get("dataset_errors")
    assert _ids(settings.data_dir / "destination" / "acme" / "web") == [0, 2]


@pytest.mark.parametrize("kept", [True, False], ids=["input-kept", "input-read-again"])
def test_a_staged_object_damaged_past_its_footer_is_set_aside_while_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kept: bool
) -> None:
    """Its footer and event times read, so the run was planned with it; its rows do not.
    The run's files go, it is set aside and the run is planned again without it."""
    if not kept:  # read again when written, and one partition at a time
        monkeypatch.setattr(packer, "KEPT_INPUT_BYTES", 0)
        monkeypatch.setattr(packer, "MAX_OPEN_OUTPUTS", 1)
    settings, control, storage = setup_stack(tmp_path)
    writer = IntakeWriter(storage)
    for i in range(3):
        rows = [{"id": i * 10 + h, "timestamp": f"2026-01-01T0{h}:30:00Z"} for h in range(2)]
        writer.write("acme", "web", "ndjson", gzip.compress(_ndjson(rows)), {})
    run_piper_cycle(settings, control, storage)
    staged = sorted(o.key for o in storage.piper.list() if not o.key.startswith("_"))
    broken = _damaged(storage.piper.get(staged[1]), "id")
    storage.piper.put(staged[1], broken)
    stats = run_packer_cycle(settings, control, storage)
    assert stats.counters.get("staged_set_aside") == 1
    assert not stats.counters.get("dataset_errors")
    assert _ids(settings.data_dir / "destination" / "acme" / "web") == [0, 1, 20, 21]
    key = IntakeKey.parse(staged[1])
    assert storage.piper.get(key.set_aside_staged_key) == broken
    assert "page header" in json.loads(storage.piper.get(key.packer_dead_letter_key))["error"]
    assert not [o for o in storage.piper.list() if not o.key.startswith("_")]


def test_the_files_of_a_run_replanned_without_a_damaged_object_are_not_doubled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The damaged object, large per row, made the plan split the first partition into two
    files, written in the first pass; planned again without it, the partition is one file, and
    the second file of the first plan would hold its rows twice."""
    monkeypatch.setattr(packer, "KEPT_INPUT_BYTES", 0)
    monkeypatch.setattr(packer, "MAX_OPEN_OUTPUTS", 1)
    settings, control, storage = setup_stack(tmp_path)
    control.create_dataset(
        "acme", DatasetSpec.model_validate({"name": "big", "parquet": {"max_file_size_mb": 1}})
    )
    writer = IntakeWriter(storage)
    small = [{"id": i, "timestamp": "2026-01-01T00:30:00Z"} for i in range(600)]
    writer.write("acme", "big", "ndjson", gzip.compress(_ndjson(small)), {})
    large = [{"id": 1000, "timestamp": "2026-01-01T01:30:00Z", "blob": os.urandom(1 << 20).hex()}]
    writer.write("acme", "big", "ndjson", gzip.compress(_ndjson(large)), {})
    run_piper_cycle(settings, control, storage)
    staged = sorted(o.key for o in storage.piper.list() if not o.key.startswith("_"))
    storage.piper.put(staged[1], _damaged(storage.piper.get(staged[1]), "id"))
    stats = run_packer_cycle(settings, control, storage)
    assert stats.counters.get("staged_set_aside") == 1
    assert _ids(settings.data_dir / "destination" / "acme" / "big") == list(range(600))
