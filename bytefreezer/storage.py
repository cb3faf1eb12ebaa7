"""Object storage over fsspec: buckets on a local directory or S3, and fsspec destinations.

Every write is atomic (readers see the whole object or nothing) and ``put_if_absent`` never
overwrites. On a local directory that is a temporary file, fsync and rename/link; on S3 a single
PUT (conditional with ``If-None-Match: *`` for ``put_if_absent``).
"""

from __future__ import annotations

import builtins
import ctypes
import functools
import glob
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import fsspec
from fsspec.implementations.local import LocalFileSystem

from bytefreezer.errors import ConfigError, StorageError
from bytefreezer.settings import S3Settings, Settings

# Linux's syncfs(2), looked up once; None elsewhere (``sync`` is used instead).
_SYNCFS = (
    getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
    if sys.platform.startswith("linux")
    else None
)
_META_DIR = ".bf-meta"
_TMP_MARK = ".bf-tmp-"
# A local temporary file this old was left by a process that stopped mid-write (a write takes
# seconds): a listing that meets one deletes it. The original ByteFreezer's housekeeping swept
# orphaned files after the same 24 hours.
ORPHANED_TMP_SECONDS = 24 * 3600
# The object `check_destination` writes and deletes at a destination's root; a leading dot
# keeps table readers (Spark, Hive, Athena, DuckDB globs of *.parquet) from reading it.
PROBE_PREFIX = ".bytefreezer-write-test-"


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One listed object: key relative to its store, size in bytes, modification time."""

    key: str
    size: int
    modified: float = 0.0
    metadata: dict[str, str] = field(default_factory=dict)


@functools.cache
def bounded_http_session(total_seconds: float) -> type:
    """aiobotocore's HTTP session with every request bounded to ``total_seconds`` in all.

    aiobotocore sets aiohttp's connect and read timeouts only. botocore sends uploads with
    `Expect: 100-continue`, and aiohttp waits for the interim answer before the body with no
    read in flight, so a peer that takes the headers and never answers held an upload (and
    its thread) forever, whatever the read timeout."""
    import aiohttp
    from aiobotocore.httpsession import AIOHTTPSession

    class BoundedAIOHTTPSession(AIOHTTPSession):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            bounds = self._timeout  # type: ignore[has-type]
            self._timeout = aiohttp.ClientTimeout(
                total=total_seconds,
                sock_connect=bounds.sock_connect,
                sock_read=bounds.sock_read,
            )

    BoundedAIOHTTPSession.__qualname__ = f"BoundedAIOHTTPSession[{total_seconds:g}s]"
    return BoundedAIOHTTPSession


def _bounded(options: dict[str, Any], total_seconds: float) -> dict[str, Any]:
    """``options`` (s3fs's) whose requests take at most ``total_seconds`` unless they say."""
    config = dict(options.get("config_kwargs") or {})
    config.setdefault("http_session_cls", bounded_http_session(total_seconds))
    return {**options, "config_kwargs": config}


def s3_options(s3: S3Settings) -> dict[str, Any]:
    """fsspec/s3fs options for the configured S3 endpoint and credentials."""
    options: dict[str, Any] = {
        "client_kwargs": {"region_name": s3.region},
        "config_kwargs": {
            "connect_timeout": s3.connect_timeout_seconds,
            "read_timeout": s3.read_timeout_seconds,
            "retries": {"max_attempts": s3.max_attempts, "mode": "standard"},
            "http_session_cls": bounded_http_session(s3.request_timeout_seconds),
        },
    }
    if url := s3.endpoint_url():
        options["endpoint_url"] = url
    if not s3.use_iam_role:
        key, secret = s3.access_key.get_secret_value(), s3.secret_key.get_secret_value()
        if key or secret:
            options["key"], options["secret"] = key, secret
    options["use_ssl"] = s3.use_ssl or (url or "https:").startswith("https:")
    if encryption := sse_kwargs(s3.server_side_encryption, s3.kms_key_id):
        options["s3_additional_kwargs"] = encryption
    return options


def sse_kwargs(encryption: str, kms_key_id: str = "") -> dict[str, str]:
    """The request parameters asking S3 to encrypt an object written (s3fs adds them to every
    upload and multipart upload it starts); none for ``""``."""
    if not encryption:
        return {}
    kwargs = {"ServerSideEncryption": encryption}
    if kms_key_id:
        kwargs["SSEKMSKeyId"] = kms_key_id
    return kwargs


def _encrypted(options: dict[str, Any], encryption: str, kms_key_id: str) -> dict[str, Any]:
    """s3fs ``options`` whose writes ask for ``encryption`` instead of what they asked for."""
    extra = {
        name: value
        for name, value in (options.get("s3_additional_kwargs") or {}).items()
        if name not in ("ServerSideEncryption", "SSEKMSKeyId")
    }
    return {**options, "s3_additional_kwargs": {**extra, **sse_kwargs(encryption, kms_key_id)}}


class ObjectStore:
    """Keys under one root of one fsspec filesystem (a bucket, or a destination prefix)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.local = isinstance(fs, LocalFileSystem)
        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"ObjectStore({self.url!r})"

    @property
    def url(self) -> str:
        """The store's root as a URL."""
        return f"file://{self.root}" if self.local else f"s3://{self.root}"

    def path(self, key: str) -> str:
        """The filesystem path of ``key``."""
        if key.startswith("/") or ".." in key.split("/"):
            raise StorageError(f"refusing unsafe object key {key!r}")
        return f"{self.root}/{key}"

    # Writes ------------------------------------------------------------------------------

    def put(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> None:
        """Write ``data`` at ``key`` atomically, replacing what was there."""
        self._write(key, data, metadata, exclusive=False)

    def open_write(self, key: str, *, durable: bool = True) -> PendingObject:
        """A file to stream ``key``'s bytes into; the object appears, whole, on ``commit()``
        (local: fsync'd temp file renamed; S3: the multipart upload completes) and never
        appears after ``abort()``.

        ``durable=False`` (local only) leaves durability to a later ``sync()``: the file is
        renamed into place unsynced, and one ``sync()`` then makes all such files and their
        new directories durable at once (one journal commit instead of two fsyncs a file, a
        quarter of the cost of a small file). For a writer that commits a batch of files
        before it records them, as packer does before its ledger entry."""
        path = self.path(key)
        try:
            if self.local:
                target = Path(path)
                tmp = _tmp_path(target)
                file = _create(tmp, sync_dirs=durable)
                return _LocalPending(self, key, target, tmp, file, durable=durable)
            # Parts of 8 MiB (S3's minimum is 5): many open outputs stay small in memory.
            stream = self.fs.open(path, "wb", block_size=8 * 1024 * 1024)
            return _RemotePending(self, key, stream)
        except Exception as exc:
            raise StorageError(f"cannot write {self.url}/{key}: {exc}") from exc

    def sync(self) -> None:
        """Make every object committed with ``open_write(durable=False)`` durable (local: a
        ``syncfs`` of the store's filesystem; S3: nothing to do, a completed upload is)."""
        if not self.local:
            return
        try:
            _syncfs(self.root)
        except OSError as exc:
            raise StorageError(f"cannot sync {self.url}: {exc}") from exc

    def put_if_absent(self, key: str, data: bytes, metadata: dict[str, str] | None = None) -> bool:
        """Write ``data`` at ``key`` unless it exists; return whether this call created it."""
        return self._write(key, data, metadata, exclusive=True)

    def _write(
        self, key: str, data: bytes, metadata: dict[str, str] | None, exclusive: bool
    ) -> bool:
        path = self.path(key)
        try:
            if self.local:
                return self._write_local(key, path, data, metadata, exclusive)
            kwargs: dict[str, Any] = {"Metadata": metadata} if metadata else {}
            try:
                self.fs.pipe_file(path, data, mode="create" if exclusive else "overwrite", **kwargs)
            except FileExistsError:
                return False
            except OSError as exc:
                if exclusive and _precondition_failed(exc):
                    return False
                raise
            return True
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"cannot write {self.url}/{key}: {exc}") from exc

    def _write_local(
        self, key: str, path: str, data: bytes, metadata: dict[str, str] | None, exclusive: bool
    ) -> bool:
        target = Path(path)
        if exclusive and target.exists():
            return False
        if metadata:
            meta_path = Path(self.root, _META_DIR, key + ".json")
            # Advisory, so not fsync'd: the object's own fsync is what a 2xx promises.
            _write_file_atomic(meta_path, json.dumps(metadata).encode(), sync=False)
        tmp = _tmp_path(target)
        with _create(tmp) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            if exclusive:
                try:
                    os.link(tmp, target)
                except FileExistsError:
                    return False
                finally:
                    tmp.unlink(missing_ok=True)
            else:
                os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(target.parent)
        return True

    # Reads -------------------------------------------------------------------------------

    def get(self, key: str, size: int | None = None) -> bytes:
        """The whole object at ``key``; ``FileNotFoundError`` when absent.

        ``size``, when the caller knows it from a listing, saves a request on S3: s3fs asks for
        the size first (a HEAD) to decide on parallel ranged reads, which only objects larger
        than its block size get."""
        try:
            kwargs: dict[str, Any] = {}
            if size is not None and _is_s3(self.fs) and size <= self.fs.default_block_size:
                kwargs["max_concurrency"] = 1  # one GET, no HEAD before it
            data: bytes = self.fs.cat_file(self.path(key), **kwargs)
            return data
        except FileNotFoundError:
            raise
        except Exception as exc:
            raise StorageError(f"cannot read {self.url}/{key}: {exc}") from exc

    def open(self, key: str) -> IO[bytes]:
        """A binary stream over the object at ``key``."""
        stream: IO[bytes] = self.fs.open(self.path(key), "rb")
        return stream

    def exists(self, key: str) -> bool:
        """Whether an object exists at ``key``."""
        try:
            return bool(self.fs.exists(self.path(key)))
        except Exception as exc:
            raise StorageError(f"cannot check {self.url}/{key}: {exc}") from exc

    def size(self, key: str) -> int:
        """The size in bytes of the object at ``key``."""
        return int(self.fs.size(self.path(key)))

    def metadata(self, key: str) -> dict[str, str]:
        """The user metadata stored with ``key`` (empty when none)."""
        if self.local:
            meta_path = Path(self.root, _META_DIR, key + ".json")
            try:
                loaded: dict[str, str] = json.loads(meta_path.read_bytes())
                return loaded
            except FileNotFoundError:
                return {}
        meta: dict[str, str] = self.fs.metadata(self.path(key))
        return meta

    def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (a folder-style prefix), sorted by key."""
        return sorted(self.iter(prefix), key=lambda info: info.key)

    def iter(self, prefix: str = "", *, skip: tuple[str, ...] = ()) -> Iterator[ObjectInfo]:
        """Objects under ``prefix``, unordered; of the whole store without the top-level
        folders named in ``skip`` (not even listed: on S3 the listing jumps past them)."""
        if skip and prefix:
            raise ValueError("skip applies to a listing of the whole store")
        base = self.path(prefix.rstrip("/")) if prefix else self.root
        try:
            if self.local:
                yield from self._iter_local(base, skip)
                return
            if skip and _is_s3(self.fs):
                yield from self._iter_s3_skipping(skip)
                return
            self.fs.invalidate_cache(base)
            parent, _, leaf = base.rstrip("/").rpartition("/")
            if parent and _is_s3(self.fs):
                # Listed as a prefix of the parent: for a prefix holding nothing, s3fs would
                # otherwise check whether the path is itself an object (a HEAD and a second
                # listing), on every poll of an empty prefix.
                found = self.fs.find(parent, detail=True, prefix=f"{leaf}/")
            else:
                found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return
        except Exception as exc:
            raise StorageError(f"cannot list {self.url}/{prefix}: {exc}") from exc
        for path, info in found.items():
            if info.get("type") == "directory":
                continue
            key = path[len(self.root) + 1 :]
            modified = info.get("LastModified") or info.get("mtime") or 0
            yield ObjectInfo(key, int(info.get("size") or 0), _timestamp(modified))

    def _iter_s3_skipping(
        self, skip: tuple[str, ...], page_size: int = 1000
    ) -> Iterator[ObjectInfo]:
        """The bucket's objects in key order, jumping past each folder of ``skip`` with
        ``StartAfter`` (a folder of a million dead letters costs one request, not a thousand)."""
        bucket, _, within = self.root.partition("/")
        base = f"{within}/" if within else ""
        folders = [f"{base}{name}/" for name in skip]
        args: dict[str, Any] = {}
        while True:
            page = self.fs.call_s3(
                "list_objects_v2", Bucket=bucket, Prefix=base, MaxKeys=page_size, **args
            )
            args = {}
            for item in page.get("Contents", []):
                key = item["Key"]
                folder = next((f for f in folders if key.startswith(f)), None)
                if folder is not None:
                    args = {"StartAfter": folder[:-1] + "0"}  # "0" follows "/": past them all
                    break
                yield ObjectInfo(
                    key[len(base) :], int(item["Size"]), _timestamp(item["LastModified"])
                )
            if not args:
                if not page.get("IsTruncated"):
                    return
                args = {"ContinuationToken": page["NextContinuationToken"]}

    def _iter_local(self, base: str, skip: tuple[str, ...] = ()) -> Iterator[ObjectInfo]:
        start = Path(base)
        if start.is_file():
            stat = start.stat()
            yield ObjectInfo(str(start)[len(self.root) + 1 :], stat.st_size, stat.st_mtime)
            return
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if d != _META_DIR]
            if skip and dirpath == self.root:
                dirnames[:] = [d for d in dirnames if d not in skip]
            for name in filenames:
                if name.startswith(_TMP_MARK):
                    _remove_if_orphaned(os.path.join(dirpath, name))
                    continue
                full = os.path.join(dirpath, name)
                try:
                    stat = os.stat(full)
                except FileNotFoundError:
                    continue
                yield ObjectInfo(full[len(self.root) + 1 :], stat.st_size, stat.st_mtime)

    # Deletes -----------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        """Delete the object at ``key``; absent objects are fine."""
        try:
            if self.local:
                Path(self.path(key)).unlink(missing_ok=True)
                Path(self.root, _META_DIR, key + ".json").unlink(missing_ok=True)
            else:
                self.fs.rm_file(self.path(key))
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise StorageError(f"cannot delete {self.url}/{key}: {exc}") from exc

    def discard_partial_writes(self, keys: Sequence[str]) -> None:
        """Delete what a process that died while writing ``keys`` left of them (local: its
        temporary files beside each key, whatever their age). On S3 an unfinished multipart
        upload is invisible and is no object; a bucket lifecycle rule (abort incomplete
        multipart uploads after a day) removes its parts."""
        if not self.local:
            return
        for key in keys:
            target = Path(self.path(key))
            try:
                leftovers = list(target.parent.glob(f"{glob.escape(_TMP_MARK + target.name)}.*"))
            except OSError:
                continue
            for leftover in leftovers:
                leftover.unlink(missing_ok=True)

    def delete_many(self, keys: Sequence[str]) -> None:
        """Delete several objects (one batched request on S3)."""
        if not keys:
            return
        if self.local:
            for key in keys:
                self.delete(key)
            return
        try:
            self.fs.rm([self.path(k) for k in keys])  # one batched request
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise StorageError(f"cannot delete from {self.url}: {exc}") from exc


def _precondition_failed(exc: BaseException) -> bool:
    """Whether an S3 error is the 412 of a conditional write that found the key taken."""
    cause = exc.__cause__ or exc.__context__
    response = getattr(cause, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if error.get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
            return True
        if status in (409, 412):
            return True
    return "pre-condition" in str(exc) or "PreconditionFailed" in str(exc)


def _timestamp(value: Any) -> float:
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    return float(value or 0)


def _remove_if_orphaned(path: str) -> None:
    """Delete the temporary file at ``path`` if a crashed writer left it (``ORPHANED_TMP_SECONDS``
    old); one being written, or gone already, is left alone."""
    try:
        if time.time() - os.stat(path).st_mtime > ORPHANED_TMP_SECONDS:
            os.unlink(path)
    except OSError:
        pass


def _tmp_path(target: Path) -> Path:
    """A unique name beside ``target`` to write it under before it appears."""
    return target.with_name(f"{_TMP_MARK}{target.name}.{os.urandom(8).hex()}")


def _create(path: Path, *, sync_dirs: bool = True) -> IO[bytes]:
    """``path`` opened for writing, its missing directories made first (tried after the open
    fails, not before every write: a packer writing thousands of small files paid a mkdir and
    its FileExistsError for each). Each directory made is fsync'd into its parent (unless
    ``sync_dirs`` is false: a later ``sync`` covers it), so that a new partition's files
    survive a crash with their directory."""
    try:
        return open(path, "wb")
    except FileNotFoundError:
        missing = []
        parent = path.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        path.parent.mkdir(parents=True, exist_ok=True)
        for made in reversed(missing if sync_dirs else []):
            _fsync_dir(made.parent)
        return open(path, "wb")


def _write_file_atomic(path: Path, data: bytes, *, sync: bool = True) -> None:
    tmp = _tmp_path(path)
    with _create(tmp) as fh:
        fh.write(data)
        if sync:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)


class PendingObject:
    """An object being streamed; ``file`` takes its bytes."""

    def __init__(self, store: ObjectStore, key: str, file: IO[bytes]) -> None:
        self.store = store
        self.key = key
        self.file = file

    def commit(self) -> int:
        """Make the object appear, whole; return its size in bytes."""
        try:
            return self._commit()
        except Exception as exc:
            self.abort()
            raise StorageError(f"cannot write {self.store.url}/{self.key}: {exc}") from exc

    def _commit(self) -> int:
        raise NotImplementedError

    def abort(self) -> None:
        """Drop what was written; the object does not appear."""
        raise NotImplementedError


class _LocalPending(PendingObject):
    def __init__(
        self,
        store: ObjectStore,
        key: str,
        target: Path,
        tmp: Path,
        file: IO[bytes],
        *,
        durable: bool = True,
    ) -> None:
        super().__init__(store, key, file)
        self._target = target
        self._tmp = tmp
        self._durable = durable

    def _commit(self) -> int:
        self.file.flush()
        if self._durable:
            os.fsync(self.file.fileno())
        size = self.file.tell()
        self.file.close()
        os.replace(self._tmp, self._target)
        if self._durable:
            _fsync_dir(self._target.parent)
        return size

    def abort(self) -> None:
        self.file.close()
        self._tmp.unlink(missing_ok=True)


class _RemotePending(PendingObject):
    def _commit(self) -> int:
        size = self.file.tell()
        self.file.close()  # completes the upload
        return size

    def abort(self) -> None:
        cast(Any, self.file).discard()  # an fsspec buffered file: aborts a multipart upload


def _is_s3(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol
    return bool({"s3", "s3a"} & set((protocol,) if isinstance(protocol, str) else protocol))


def _syncfs(path: str) -> None:
    """Flush the filesystem holding ``path`` to stable storage and wait for it: Linux's
    ``syncfs`` (which reports write-back errors since 5.8); elsewhere ``sync``, which flushes
    every filesystem."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _SYNCFS is None:  # pragma: no cover - not Linux
            os.sync()
        elif _SYNCFS(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BucketObjects:
    """Read-only access to objects by logical bucket name (``geoip``, ``intake``, ``piper``, or
    any other bucket by its real name), for transforms that load lookup data."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def _store(self, bucket: str) -> ObjectStore:
        names = self._storage.settings.buckets
        real = {"geoip": names.geoip, "intake": names.intake, "piper": names.piper}.get(
            bucket, bucket
        )
        return self._storage.bucket(real)

    def read(self, bucket: str, key: str) -> bytes:
        """The object's bytes; ``FileNotFoundError`` when absent."""
        return self._store(bucket).get(key)

    def version(self, bucket: str, key: str) -> str:
        """ETag (S3) or modification time and size (files) of the object."""
        store = self._store(bucket)
        info = store.fs.info(store.path(key))
        tag = info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified")
        return f"{tag}:{info.get('size')}"


class Storage:
    """The configured buckets (intake, piper, geoip) and destination stores."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stores: dict[str, ObjectStore] = {}
        self._s3_fs: fsspec.AbstractFileSystem | None = None

    def _s3(self) -> fsspec.AbstractFileSystem:
        if self._s3_fs is None:
            self._s3_fs = fsspec.filesystem(
                "s3", skip_instance_cache=True, **s3_options(self.settings.storage.s3)
            )
            # s3fs retries some errors on its own, on top of botocore's attempts.
            self._s3_fs.retries = self.settings.storage.s3.max_attempts
        return self._s3_fs

    def bucket(self, name: str) -> ObjectStore:
        """The store of the bucket called ``name``."""
        if name not in self._stores:
            if self.settings.storage.backend == "file":
                root = self.settings.bucket_root() / name
                self._stores[name] = ObjectStore(fsspec.filesystem("file"), str(root))
            else:
                self._stores[name] = ObjectStore(self._s3(), name)
        return self._stores[name]

    @property
    def intake(self) -> ObjectStore:
        """The intake bucket."""
        return self.bucket(self.settings.buckets.intake)

    @property
    def piper(self) -> ObjectStore:
        """The piper bucket (staged objects, dead letters, manifests)."""
        return self.bucket(self.settings.buckets.piper)

    def ensure_buckets(self) -> None:
        """Create the configured buckets where they do not exist (S3) or their directories."""
        names = [self.settings.buckets.intake, self.settings.buckets.piper]
        names.append(self.settings.buckets.geoip)
        for name in names:
            if self.settings.storage.backend == "file":
                (self.settings.bucket_root() / name).mkdir(parents=True, exist_ok=True)
                continue
            fs = self._s3()
            try:
                if not fs.exists(name):
                    fs.mkdir(name)
            except Exception as exc:
                raise StorageError(f"cannot create bucket {name!r}: {exc}") from exc

    def destination(
        self,
        url: str,
        options: dict[str, Any] | None = None,
        *,
        server_side_encryption: str | None = None,
        kms_key_id: str = "",
    ) -> ObjectStore:
        """A store for a dataset's destination URL (any fsspec URL with its options; the
        arguments are a ``Destination``'s fields). On S3, ``server_side_encryption`` (the
        destination's own) replaces what its options, or the stack's S3 settings when it has
        none, ask for; ``None`` keeps that."""
        options = dict(options or {})
        protocol = url.split("://", 1)[0] if "://" in url else "file"
        if protocol in ("s3", "s3a"):
            s3 = self.settings.storage.s3
            options = _bounded(options, s3.request_timeout_seconds) if options else s3_options(s3)
            if server_side_encryption is not None:
                options = _encrypted(options, server_side_encryption, kms_key_id)
        try:
            fs, root = fsspec.core.url_to_fs(url, **options)
        except (ImportError, ValueError, TypeError) as exc:
            raise ConfigError(f"cannot open destination {url!r}: {exc}") from exc
        return ObjectStore(fs, root)

    def check_destination(
        self,
        url: str,
        options: dict[str, Any] | None = None,
        *,
        server_side_encryption: str | None = None,
        kms_key_id: str = "",
        timeout: float = 20.0,
    ) -> None:
        """Raise ``StorageError`` (or ``ConfigError``) saying why packer could not write at a
        destination: writes and deletes a small probe object at its root, within ``timeout``
        seconds, asking for the encryption packer's writes ask for (``destination``). The
        probe's name starts with a dot, which table readers skip."""
        key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        options = dict(options or {})
        if url.split("://", 1)[0] in ("s3", "s3a"):
            # One attempt within the check's time, on a client of its own: a probe left
            # waiting on a silent endpoint ends soon after the check gives up on it.
            options = options or s3_options(self.settings.storage.s3)
            options["config_kwargs"] = {
                **options.get("config_kwargs", {}),
                "connect_timeout": timeout,
                "read_timeout": timeout,
                "retries": {"max_attempts": 1, "mode": "standard"},
                "http_session_cls": bounded_http_session(timeout),
            }
            options["skip_instance_cache"] = True

        def probe() -> None:
            store = self.destination(
                url,
                options,
                server_side_encryption=server_side_encryption,
                kms_key_id=kms_key_id,
            )
            if hasattr(store.fs, "retries"):
                store.fs.retries = 1  # s3fs's own retries, on top of botocore's
            store.put(key, b"bytefreezer destination check: safe to delete\n")
            store.delete(key)

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="destination-check")
        try:
            pool.submit(probe).result(timeout=timeout)
        except FutureTimeout:
            raise StorageError(f"no answer from {url} within {timeout:g} s") from None
        except (StorageError, ConfigError):
            raise
        except Exception as exc:
            raise StorageError(f"cannot write at {url}: {type(exc).__name__}: {exc}") from exc
        finally:
            pool.shutdown(wait=False)

    def ping(self) -> None:
        """Raise ``StorageError`` unless the intake bucket can be listed."""
        try:
            self.intake.fs.ls(self.intake.root)
        except FileNotFoundError:
            raise StorageError(f"bucket {self.intake.url} does not exist") from None
        except Exception as exc:
            raise StorageError(f"storage unreachable: {exc}") from exc
