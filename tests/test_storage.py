"""Storage on a local directory and on S3: atomic writes, create-if-absent, listing, metadata."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bytefreezer.errors import StorageError
from bytefreezer.settings import Settings
from bytefreezer.storage import ObjectStore, Storage
from tests.conftest import fast_settings


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "file":
        settings: Settings = fast_settings(tmp_path / "data")
    else:
        server = request.getfixturevalue("s3_server")
        settings = fast_settings(
            tmp_path / "data",
            storage={
                "backend": "s3",
                "s3": {
                    "endpoint": server["endpoint"].removeprefix("http://"),
                    "access_key": server["access_key"],
                    "secret_key": server["secret_key"],
                },
            },
            buckets={"intake": f"st-{uuid.uuid4().hex[:10]}"},
        )
    storage = Storage(settings)
    storage.ensure_buckets()
    return storage.intake


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


def test_put_many_writes_every_object(store: ObjectStore) -> None:
    produced: list[int] = []

    def items() -> Iterator[tuple[str, bytes]]:
        for i in range(40):
            produced.append(i)
            yield f"many/{i:03d}.bin", bytes([i]) * (i + 1)

    assert store.put_many(items(), parallel=4) == 40
    assert [o.key for o in store.list("many/")] == [f"many/{i:03d}.bin" for i in range(40)]
    assert all(store.get(f"many/{i:03d}.bin") == bytes([i]) * (i + 1) for i in range(40))
    assert produced == list(range(40))


def test_put_many_raises_the_first_failure(store: ObjectStore) -> None:
    with pytest.raises(StorageError, match="unsafe"):
        store.put_many([("ok/1.bin", b"1"), ("../escape.bin", b"2"), ("ok/3.bin", b"3")])
    assert store.get("ok/1.bin") == b"1"
