"""Objects a transform loads from a bucket and reloads when they change."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from bytefreezer.errors import ConfigError
from bytefreezer.transforms.base import ObjectSource

T = TypeVar("T")


class RefreshingObject(Generic[T]):
    """``bucket/key`` parsed by ``load``; re-read when its version changes.

    The version is asked for at most every ``check_seconds``; a failed refresh keeps serving
    the last good copy.
    """

    def __init__(
        self,
        source: ObjectSource | None,
        bucket: str,
        key: str,
        load: Callable[[bytes], T],
        check_seconds: float = 60.0,
    ) -> None:
        self._source = source
        self.bucket, self.key = bucket, key
        self._load = load
        self._check_seconds = check_seconds
        self._value: T | None = None
        self._version: str | None = None
        self._checked = float("-inf")
        self._lock = threading.Lock()

    def get(self) -> T:
        """The current parsed object; ``ConfigError`` when it was never readable."""
        if self._source is None:
            raise ConfigError(f"no object storage available to read {self.bucket}/{self.key}")
        with self._lock:
            now = time.monotonic()
            if self._value is not None and now - self._checked < self._check_seconds:
                return self._value
            self._checked = now
            try:
                version = self._source.version(self.bucket, self.key)
                if version != self._version or self._value is None:
                    self._value = self._load(self._source.read(self.bucket, self.key))
                    self._version = version
            except FileNotFoundError:
                if self._value is None:
                    raise ConfigError(f"object {self.bucket}/{self.key} not found") from None
            except ConfigError:
                raise
            except Exception as exc:
                if self._value is None:
                    raise ConfigError(f"cannot load {self.bucket}/{self.key}: {exc}") from exc
            assert self._value is not None
            return self._value


class MemoryObjects:
    """An in-memory ``ObjectSource`` for tests and notebooks: ``{(bucket, key): bytes}``."""

    def __init__(self, objects: dict[tuple[str, str], bytes] | None = None) -> None:
        self.objects = dict(objects or {})
        self._versions: dict[tuple[str, str], int] = {}

    def put(self, bucket: str, key: str, data: bytes) -> None:
        """Store (or replace) an object; its version changes."""
        self.objects[(bucket, key)] = data
        self._versions[(bucket, key)] = self._versions.get((bucket, key), 0) + 1

    def read(self, bucket: str, key: str) -> bytes:
        try:
            return self.objects[(bucket, key)]
        except KeyError:
            raise FileNotFoundError(f"{bucket}/{key}") from None

    def version(self, bucket: str, key: str) -> str:
        if (bucket, key) not in self.objects:
            raise FileNotFoundError(f"{bucket}/{key}")
        return str(self._versions.get((bucket, key), 0))
