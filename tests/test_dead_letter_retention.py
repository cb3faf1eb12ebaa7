"""Dead letters are kept for `piper.dead_letter_retention_days` (0: until an operator removes
them), then deleted by piper's hourly sweep, on a local directory and on S3."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bytefreezer.control import ControlStore
from bytefreezer.pipelines import piper
from bytefreezer.pipelines.piper import expire_dead_letters, run_piper_cycle
from bytefreezer.storage import ObjectStore, Storage
from tests.conftest import fast_settings, file_or_s3_storage

DEAD = ["_dead-letter/acme/web/a.ndjson", "_dead-letter/acme/web/b.raw.gz"]
KEPT = ["acme/web/acme--web--1--ndjson.parquet", "_packed/acme/web/run.json"]


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    storage = file_or_s3_storage(request, tmp_path)
    for key in DEAD + KEPT:
        storage.piper.put(key, b"x")
    return storage.piper


def test_dead_letters_past_their_retention_are_deleted_and_nothing_else(
    store: ObjectStore,
) -> None:
    assert expire_dead_letters(store, 7) == 0  # all written just now
    assert expire_dead_letters(store, 7, now=time.time() + 6 * 86400) == 0
    assert expire_dead_letters(store, 7, now=time.time() + 8 * 86400) == 2
    assert [o.key for o in store.list()] == sorted(KEPT)


def test_piper_sweeps_once_an_hour_only_with_a_retention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = fast_settings(tmp_path / "data", piper={"dead_letter_retention_days": 1})
    storage = Storage(settings)
    storage.ensure_buckets()
    control = ControlStore(settings.control_db_path(), destination_for=settings.destination_for)
    for key in DEAD:
        storage.piper.put(key, b"x")
    old = time.time() - 2 * 86400
    os.utime(storage.piper.path(DEAD[0]), (old, old))
    monkeypatch.setattr(piper, "_SWEPT", {})
    run_piper_cycle(settings, control, storage)
    assert [o.key for o in storage.piper.list("_dead-letter/")] == [DEAD[1]]

    os.utime(storage.piper.path(DEAD[1]), (old, old))
    run_piper_cycle(settings, control, storage)  # within the hour: no second sweep
    assert [o.key for o in storage.piper.list("_dead-letter/")] == [DEAD[1]]
    monkeypatch.setattr(piper, "DEAD_LETTER_SWEEP_SECONDS", 0.0)
    run_piper_cycle(settings, control, storage)
    assert storage.piper.list("_dead-letter/") == []

    keep = fast_settings(tmp_path / "keep")
    kept = Storage(keep)
    kept.ensure_buckets()
    kept.piper.put(DEAD[0], b"x")
    os.utime(kept.piper.path(DEAD[0]), (old, old))
    keep_control = ControlStore(keep.control_db_path(), destination_for=keep.destination_for)
    run_piper_cycle(keep, keep_control, kept)  # retention 0, the default: kept
    assert [o.key for o in kept.piper.list("_dead-letter/")] == [DEAD[0]]
