"""S3 requests piper and packer make, counted by the S3 server itself (what a provider bills):
bounded per object and per file, so that a listing or a check per object cannot creep in."""

from __future__ import annotations

import gzip
import json
import re
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from bytefreezer.control import ControlStore
from bytefreezer.control.models import DatasetSpec, Tenant
from bytefreezer.ingress.receiver import IntakeWriter
from bytefreezer.pipelines.packer import run_packer_cycle
from bytefreezer.pipelines.piper import run_piper_cycle
from bytefreezer.storage import Storage
from tests.e2e.test_s3 import s3_settings
from tests.helpers import s3_client

pytestmark = pytest.mark.s3

_LINE = re.compile(
    r'^SeaweedFS_s3_request_total\{bucket="([^"]*)",code="(\d+)",type="(\w+)"\} (\S+)$'
)


def requests_by_type(metrics_url: str, buckets: set[str]) -> Counter[str]:
    """Requests the server answered, by type (GET, PUT, LIST, DELETE, ...), on ``buckets``.

    Answers with a 5xx code are left out: a busy server's transient errors, which the client
    retries, are not requests our code chose to make (a 404 of a needless check does count)."""
    counts: Counter[str] = Counter()
    for line in httpx.get(metrics_url, timeout=10).text.splitlines():
        found = _LINE.match(line)
        if found and found.group(1) in buckets and not found.group(2).startswith("5"):
            counts[found.group(3)] += int(float(found.group(4)))
    return counts


def test_requests_per_object_and_per_file_are_bounded(
    tmp_path: Path, s3_server: dict[str, str]
) -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = s3_settings(tmp_path, s3_server, suffix)
    storage = Storage(settings)
    storage.ensure_buckets()
    s3_client(s3_server).create_bucket(Bucket=f"dest-{suffix}")
    control = ControlStore(settings.control_db_path(), destination_for=settings.destination_for)
    control.create_tenant(Tenant(name="acme"))
    control.create_dataset("acme", DatasetSpec(name="web"))
    objects, hours = 12, 3
    for i in range(objects):
        rows = [
            {"timestamp": f"2026-03-01T0{(i + j) % hours}:00:00Z", "id": i * 100 + j}
            for j in range(100)
        ]
        body = "\n".join(json.dumps(r) for r in rows).encode()
        IntakeWriter(storage).write("acme", "web", "ndjson", gzip.compress(body), {})

    buckets = {f"intake-{suffix}", f"piper-{suffix}", f"dest-{suffix}"}
    before = requests_by_type(s3_server["metrics"], buckets)
    assert run_piper_cycle(settings, control, storage).counters["objects_processed"] == objects
    after_piper = requests_by_type(s3_server["metrics"], buckets)
    packed = run_packer_cycle(settings, control, storage).counters
    after_packer = requests_by_type(s3_server["metrics"], buckets)
    assert packed["files_written"] == hours and packed["staged_objects_packed"] == objects

    piper = after_piper - before
    packer = after_packer - after_piper
    print(f"piper, {objects} objects: {dict(piper)}; packer, {hours} files: {dict(packer)}")
    # Piper: one listing per cycle; per object one read (no HEAD first: the size comes from the
    # listing), one staged write and one delete.
    assert piper == Counter({"LIST": 1, "GET": objects, "PUT": objects, "DELETE": objects})
    # Packer, per dataset: the listings of its staged objects (once: a run that took them all
    # does not look again), manifests, ledger and pending intake, plus the cycle's own; each
    # staged object read once (a run this small keeps the bytes it planned from for the
    # write), nothing else read; one PUT per file (small files skip multipart) plus the
    # manifest and the ledger entry (the run's commit point); one batched delete of the inputs
    # with the manifest.
    assert packer["LIST"] == 5
    assert packer["GET"] == objects
    assert packer["PUT"] == hours + 2
    assert packer["DELETE"] == 1

    # The dataset's next run: the ledger entry the first run wrote is listed, not read back.
    more = 4
    for i in range(more):
        body = json.dumps({"timestamp": "2026-03-01T00:30:00Z", "id": 10_000 + i}).encode()
        IntakeWriter(storage).write("acme", "web", "ndjson", gzip.compress(body), {})
    run_piper_cycle(settings, control, storage)
    before = requests_by_type(s3_server["metrics"], buckets)
    packed = run_packer_cycle(settings, control, storage).counters
    again = requests_by_type(s3_server["metrics"], buckets) - before
    print(f"packer's next run, {more} objects: {dict(again)}")
    assert packed["staged_objects_packed"] == more
    assert again["LIST"] == 5
    assert again["GET"] == more
    assert again["PUT"] == 1 + 2
    assert again["DELETE"] == 1


def test_a_listing_that_skips_dead_letters_jumps_past_them(
    tmp_path: Path, s3_server: dict[str, str]
) -> None:
    """Packer's cycle lists the piper bucket without its dead letters, which only grow: the
    listing jumps past them (``StartAfter``) instead of paging through them."""
    suffix = uuid.uuid4().hex[:8]
    storage = Storage(s3_settings(tmp_path, s3_server, suffix))
    storage.ensure_buckets()
    piper = storage.piper
    for i in range(10):
        piper.put(f"_dead-letter/acme/web/{i}.ndjson", b"x")
    piper.put("acme/web/a.parquet", b"1")
    piper.put("acme/web/b.parquet", b"2")
    buckets = {f"piper-{suffix}"}
    before = requests_by_type(s3_server["metrics"], buckets)
    listed = [o.key for o in piper._iter_s3_skipping(("_dead-letter",), page_size=2)]
    after = requests_by_type(s3_server["metrics"], buckets)
    assert listed == ["acme/web/a.parquet", "acme/web/b.parquet"]
    # One page of dead letters, then the jump: 2 requests where paging through takes 6.
    assert (after - before)["LIST"] == 2
