"""The receiver's local spool: bodies kept on disk (fsync'd) while storage fails, then uploaded
in order. A spooled body has been acknowledged, so the spool survives restarts."""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from bytefreezer.errors import StorageError
from bytefreezer.storage import ObjectStore

log = logging.getLogger(__name__)
_SUFFIX = ".spool"


class SpoolFull(Exception):
    """The spool has no room for this object."""


@dataclass
class SpoolStats:
    """What the spool holds and has done."""

    objects: int
    bytes: int
    max_bytes: int
    uploaded: int
    failures: int
    last_error: str
    write_errors: int
    last_write_error: str


class Spool:
    """Objects waiting for storage, one file each, in arrival order."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob(".tmp-*"):
            leftover.unlink(missing_ok=True)  # never renamed: never acknowledged
        files = sorted(directory.glob(f"*{_SUFFIX}"))
        self._bytes = sum(f.stat().st_size for f in files)
        self._objects = len(files)
        self._sequence = max((int(f.stem) for f in files), default=0)
        self._lock = threading.Lock()
        self.uploaded = 0
        self.failures = 0
        self.last_error = ""
        self.write_errors = 0  # the spool's own disk refused a write (ENOSPC, EIO...)
        self.last_write_error = ""

    def stats(self) -> SpoolStats:
        """Current figures."""
        with self._lock:
            return SpoolStats(
                self._objects,
                self._bytes,
                self.max_bytes,
                self.uploaded,
                self.failures,
                self.last_error,
                self.write_errors,
                self.last_write_error,
            )

    def add(self, key: str, data: bytes, metadata: dict[str, str]) -> None:
        """Keep one object durably; ``SpoolFull`` when it would not fit."""
        header = json.dumps({"key": key, "metadata": metadata}).encode() + b"\n"
        size = len(header) + len(data)
        with self._lock:
            if self._bytes + size > self.max_bytes:
                raise SpoolFull(f"spool holds {self._bytes} of {self.max_bytes} bytes")
            self._sequence += 1
            name = f"{self._sequence:020d}{_SUFFIX}"
            self._bytes += size
            self._objects += 1
        tmp = self.directory / f".tmp-{uuid.uuid4().hex}"
        try:
            with open(tmp, "wb") as fh:
                fh.write(header)
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.directory / name)
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            message = f"cannot write to the spool at {self.directory}: {exc.strerror}"
            with self._lock:
                self._bytes -= size
                self._objects -= 1
                self.write_errors += 1
                self.last_write_error = message
            raise SpoolFull(message) from exc

    def paths(self) -> list[Path]:
        """The spooled objects' files, oldest first."""
        return sorted(self.directory.glob(f"*{_SUFFIX}"))

    @staticmethod
    def metadata(path: Path) -> dict[str, str]:
        """One spooled object's metadata, its header alone read; ``FileNotFoundError`` when
        gone."""
        with open(path, "rb") as fh:
            metadata: dict[str, str] = json.loads(fh.readline())["metadata"]
        return metadata

    @staticmethod
    def read(path: Path) -> tuple[str, bytes, dict[str, str]]:
        """One spooled object: (key, data, metadata); ``FileNotFoundError`` when gone."""
        header, _, data = path.read_bytes().partition(b"\n")
        entry = json.loads(header)
        return entry["key"], data, entry["metadata"]

    def remove(self, path: Path) -> None:
        """Forget one spooled object (it was delivered or moved elsewhere)."""
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return
        with self._lock:
            self._bytes -= size
            self._objects -= 1

    def record_failure(self, error: str) -> None:
        """Note a failed delivery attempt."""
        with self._lock:
            self.failures += 1
            self.last_error = error

    def record_delivery(self) -> None:
        """Note a delivered object."""
        with self._lock:
            self.uploaded += 1
            self.last_error = ""

    def drain(self, store: ObjectStore) -> int:
        """Upload spooled objects in order until one fails; return how many went up."""
        done = 0
        for path in self.paths():
            try:
                key, data, metadata = self.read(path)
            except FileNotFoundError:
                continue
            try:
                # Created before a crash, or by an earlier attempt: the same bytes, so done.
                store.put_if_absent(key, data, metadata)
            except StorageError as exc:
                self.record_failure(str(exc))
                return done
            self.remove(path)
            self.record_delivery()
            done += 1
        return done
