"""dns: reverse (IP → name) or forward (name → IP) lookups with a bounded cache and a timeout."""

from __future__ import annotations

import functools
import socket
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from bytefreezer.transforms.base import Context, Transform, TransformConfig
from bytefreezer.transforms.tables import get_column, set_column, string_values


def _reverse(value: str) -> str | None:
    try:
        return socket.gethostbyaddr(value)[0]
    except (OSError, UnicodeError):
        return None


def _forward(value: str) -> str | None:
    try:
        return socket.gethostbyname(value)
    except (OSError, UnicodeError):
        return None


class DnsConfig(TransformConfig):
    """Resolve ``source_field`` into ``target_field``."""

    source_field: str = Field(description="Field holding the address or name.")
    target_field: str | None = Field(None, description="Field written; default `<source>_dns`.")
    action: Literal["reverse", "forward"] = Field("reverse", description="Lookup direction.")
    timeout_seconds: float = Field(
        0.5, gt=0, le=30, description="The whole batch waits at most this long for lookups."
    )
    cache_size: int = Field(10_000, ge=0, description="Answers remembered.")
    cache_ttl_seconds: float = Field(300.0, ge=0, description="How long an answer is trusted.")
    max_workers: int = Field(16, ge=1, le=256, description="Lookups running at once.")


class Dns(Transform):
    """DNS lookups; a batch never waits longer than the timeout (unanswered → null)."""

    name: ClassVar[str] = "dns"
    Config: ClassVar[type[TransformConfig]] = DnsConfig
    example: ClassVar[dict[str, Any]] = {"source_field": "client_ip", "action": "reverse"}

    def __init__(self, config: TransformConfig, context: Context | None = None) -> None:
        super().__init__(config, context)
        assert isinstance(config, DnsConfig)
        self._cache: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        self._inflight: dict[str, Future[str | None]] = {}
        self._lock = threading.Lock()
        self._cache_size = config.cache_size
        self._pool = ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="bf-dns")
        self.resolver = _reverse if config.action == "reverse" else _forward

    def apply(self, table: pa.Table) -> pa.Table:
        cfg = self.config
        assert isinstance(cfg, DnsConfig)
        column = get_column(table, cfg.source_field)
        if column is None:
            return table
        encoded = string_values(column).dictionary_encode().combine_chunks()
        distinct = encoded.dictionary.to_pylist()
        now = time.monotonic()
        answers: dict[str, str | None] = {}
        pending: dict[str, Future[str | None]] = {}
        for value in distinct:
            cached = self._cache.get(value)
            if cached is not None and now - cached[0] < cfg.cache_ttl_seconds:
                answers[value] = cached[1]
            elif value in self._inflight:  # a slow lookup from an earlier batch: wait on it
                pending[value] = self._inflight[value]
            else:
                future = self._pool.submit(self.resolver, value)
                self._inflight[value] = future
                future.add_done_callback(functools.partial(self._remember, value))
                pending[value] = future
        if pending:
            wait(pending.values(), timeout=cfg.timeout_seconds)
            for value, future in pending.items():
                # Unanswered in time: null now, and the cache answers a later batch.
                answers[value] = future.result() if future.done() else None
        resolved = pa.array([answers.get(v) for v in distinct], pa.string()).take(encoded.indices)
        return set_column(table, cfg.target_field or f"{cfg.source_field}_dns", resolved)

    def _remember(self, value: str, future: Future[str | None]) -> None:
        with self._lock:
            self._cache[value] = (time.monotonic(), future.result())
            self._inflight.pop(value, None)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
