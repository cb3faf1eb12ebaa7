"""Storage on a local directory and on S3: atomic writes, create-if-absent, listing, metadata."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from bytefreezer import storage as storage_module
from bytefreezer.errors import StorageError
from bytefreezer.storage import ObjectStore, Storage
from tests.conftest import fast_settings, file_or_s3_storage


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    return file_or_s3_storage(request, tmp_path).intake


def test_put_get_list_delete(store: ObjectStore) -> None:
    store.put("a/b/one.gz", b"1", {"lines": "1"})
    store.put("a/b/one.gz", b"11", {"lines": "2"})
    store.put("a/c/two.gz", b"2")
    assert store.get("a/b/one.gz") == b"11"
    assert store.metadata("a/b/one.gz") == {"lines": "2"}
    assert [o.key for o in store.list("a/")] == ["a/b/one.gz", "a/c/two.gz"]
    assert [(o.key, o.size) for o in store.list("a/b/")] == [("a/b/one.gz", 2)]
    assert store.size("a/c/two.gz") == 1
    store.delete_many(["a/b/one.gz", "a/missing"])
    store.delete("a/missing")
    assert [o.key for o in store.list()] == ["a/c/two.gz"]
    with pytest.raises(FileNotFoundError):
        store.get("a/b/one.gz")


def test_put_if_absent_never_overwrites(store: ObjectStore) -> None:
    assert store.put_if_absent("k/x.gz", b"first")
    assert not store.put_if_absent("k/x.gz", b"second")
    assert store.get("k/x.gz") == b"first"


def test_unsafe_keys_are_refused(store: ObjectStore) -> None:
    for key in ("../escape", "/abs", "a/../../b"):
        with pytest.raises(StorageError):
            store.put(key, b"x")


def test_streamed_objects_appear_whole_on_commit_and_never_on_abort(store: ObjectStore) -> None:
    pending = store.open_write("stream/big.bin")
    for i in range(3):
        pending.file.write(bytes([i]) * (4 * 1024 * 1024))  # crosses an 8 MiB part
    assert not store.exists("stream/big.bin"), "visible before commit"
    assert pending.commit() == 12 * 1024 * 1024
    data = store.get("stream/big.bin")
    assert len(data) == 12 * 1024 * 1024 and data[-1] == 2
    dropped = store.open_write("stream/dropped.bin")
    dropped.file.write(b"x" * (9 * 1024 * 1024))
    dropped.abort()
    assert [o.key for o in store.list("stream/")] == ["stream/big.bin"]


def test_new_directories_are_fsynced_into_their_parents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = Storage(fast_settings(tmp_path / "data"))
    storage.ensure_buckets()
    store = storage.intake
    synced: list[Path] = []
    original = storage_module._fsync_dir

    def recorded(path: Path) -> None:
        synced.append(Path(path))
        original(path)

    monkeypatch.setattr(storage_module, "_fsync_dir", recorded)
    root = Path(store.path(""))
    store.put("year=2026/hour=05/a.bin", b"a")
    assert synced == [root, root / "year=2026", root / "year=2026" / "hour=05"]
    synced.clear()
    pending = store.open_write("year=2026/hour=06/b.bin")
    pending.file.write(b"b")
    pending.commit()
    assert synced == [root / "year=2026", root / "year=2026" / "hour=06"]
    synced.clear()
    store.put("year=2026/hour=06/c.bin", b"c")  # the directory exists: only the rename
    assert synced == [root / "year=2026" / "hour=06"]
    assert store.get("year=2026/hour=06/b.bin") == b"b"


def test_objects_written_for_a_later_sync_are_made_durable_by_one_syncfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``open_write(durable=False)``: no fsync per file or directory; the store's ``sync()``
    is one syncfs of its filesystem (packer: before its ledger entry)."""
    storage = Storage(fast_settings(tmp_path / "data"))
    storage.ensure_buckets()
    store = storage.intake
    calls: list[str] = []
    fsync, fsync_dir, syncfs = os.fsync, storage_module._fsync_dir, storage_module._syncfs

    def recorded(name: str, original: Any) -> Any:
        def call(arg: Any) -> None:
            calls.append(name)
            original(arg)

        return call

    monkeypatch.setattr(os, "fsync", recorded("fsync", fsync))
    monkeypatch.setattr(storage_module, "_fsync_dir", recorded("fsync_dir", fsync_dir))
    monkeypatch.setattr(storage_module, "_syncfs", recorded("syncfs", syncfs))
    for hour in range(3):
        pending = store.open_write(f"year=2026/hour={hour:02d}/part.bin", durable=False)
        pending.file.write(b"x" * 100)
        assert pending.commit() == 100
    assert calls == [], "nothing synced per file"
    assert [o.key for o in store.list("year=2026/")] == [
        f"year=2026/hour={hour:02d}/part.bin" for hour in range(3)
    ]
    store.sync()  # the real syncfs, which must succeed here
    assert calls == ["syncfs"]
    calls.clear()
    durable = store.open_write("year=2026/hour=09/part.bin")
    durable.file.write(b"y")
    durable.commit()
    # The new directory, the file, the rename (a directory's sync is an fsync of it too).
    assert calls == ["fsync_dir", "fsync", "fsync", "fsync_dir", "fsync"]


def test_sync_errors_are_storage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = Storage(fast_settings(tmp_path / "data"))
    storage.ensure_buckets()

    def failing(path: str) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(storage_module, "_syncfs", failing)
    with pytest.raises(StorageError, match=r"cannot sync .*Input/output error"):
        storage.intake.sync()


def test_a_whole_store_listing_skips_the_folders_named(store: ObjectStore) -> None:
    for key in ["a/1.gz", "_packed/p.json", "z/2.gz", "_dead-letterx.json"]:
        store.put(key, b"1")
    for i in range(5):
        store.put(f"_dead-letter/t/d/{i}.ndjson", b"x")
    expected = ["_dead-letterx.json", "_packed/p.json", "a/1.gz", "z/2.gz"]
    assert sorted(o.key for o in store.iter(skip=("_dead-letter",))) == expected
    assert len(store.list()) == 9
    if not store.local:  # pages of two: the jump past the folder lands mid-listing
        listed = store._iter_s3_skipping(("_dead-letter",), page_size=2)
        assert sorted(o.key for o in listed) == expected
    with pytest.raises(ValueError):
        list(store.iter("a/", skip=("_dead-letter",)))


def test_a_listing_deletes_temporary_files_a_crashed_writer_left_a_day_ago(tmp_path: Path) -> None:
    """A local write goes through a temporary file beside its key; a process killed mid-write
    leaves it. Listings never show one, and delete one older than ORPHANED_TMP_SECONDS."""
    store = Storage(fast_settings(tmp_path / "data")).intake
    store.put("acme/web/a.gz", b"x")
    folder = Path(store.path("acme/web/a.gz")).parent
    old = folder / f"{storage_module._TMP_MARK}b.gz.0123456789abcdef"
    young = folder / f"{storage_module._TMP_MARK}c.gz.fedcba9876543210"
    for leftover in (old, young):
        leftover.write_bytes(b"partial")
    day_ago = os.stat(old).st_mtime - storage_module.ORPHANED_TMP_SECONDS - 60
    os.utime(old, (day_ago, day_ago))
    assert [o.key for o in store.list("acme/")] == ["acme/web/a.gz"]
    assert not old.exists()
    assert young.exists()  # may be a write in progress


def test_partial_writes_of_keys_are_discarded_whatever_their_age(tmp_path: Path) -> None:
    store = Storage(fast_settings(tmp_path / "data")).intake
    pending = store.open_write("p/x.parquet")
    pending.file.write(b"half a file")  # the writer dies here: no commit, no abort
    other = store.open_write("p/y.parquet")
    store.discard_partial_writes(["p/x.parquet", "p/absent/z.parquet"])
    names = sorted(p.name for p in Path(store.path("p")).iterdir())
    assert len(names) == 1 and names[0].startswith(f"{storage_module._TMP_MARK}y.parquet.")
    other.abort()
    pending.file.close()


@pytest.mark.parametrize("where", ["bucket", "destination with its own options"])
def test_an_upload_to_a_peer_that_never_answers_fails_in_bounded_time(
    tmp_path: Path, where: str
) -> None:
    # botocore asks for `100 Continue` before an upload's body; aiohttp's read timeout does
    # not cover that wait, so such an upload used to hang its thread forever.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()  # the kernel accepts; nothing ever answers
    endpoint = f"127.0.0.1:{listener.getsockname()[1]}"
    settings = fast_settings(
        tmp_path / "data",
        storage={
            "backend": "s3",
            "s3": {
                "endpoint": endpoint,
                "access_key": "k",
                "secret_key": "s",
                "max_attempts": 1,
                "read_timeout_seconds": 1,
                "request_timeout_seconds": 2,
            },
        },
    )
    storage = Storage(settings)
    if where == "bucket":
        store = storage.intake
    else:
        options = {"endpoint_url": f"http://{endpoint}", "key": "k", "secret": "s"}
        store = storage.destination("s3://lake/out", options)  # botocore's own retries
    store.fs.retries = 1  # s3fs's retries, on top of botocore's
    outcome: list[BaseException] = []

    def upload() -> None:
        try:
            store.put("key.gz", b"data")
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=upload, daemon=True)
    worker.start()
    worker.join(timeout=45)  # 2 s a request, botocore's attempts and backoff
    try:
        assert not worker.is_alive(), "the upload still waits on a silent peer"
        assert outcome and isinstance(outcome[0], StorageError)
    finally:
        listener.close()
