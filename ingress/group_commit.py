"""Group commit: concurrent small bodies for one dataset share one intake object.

Each body is a gzip member; a group is flushed when it reaches a size bound or an age bound,
whichever comes first, and every request in it is answered only after that object is durable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bytefreezer.ingress.bodies import Body
from bytefreezer.telemetry import inject_traceparent, span_link

GroupKey = tuple[str, str, str]  # tenant, dataset, hint


@dataclass(frozen=True)
class Stored:
    """Where a body went: its intake key, and whether it waits in the local spool."""

    key: str
    spooled: bool


Write = Callable[[GroupKey, bytes, dict[str, str]], Awaitable[Stored]]


@dataclass
class _Group:
    members: list[bytes] = field(default_factory=list)
    lines: int = 0
    size: int = 0
    stored_bytes: int = 0
    waiters: list[asyncio.Future[Stored]] = field(default_factory=list)
    traceparents: list[str] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    started: float = field(default_factory=time.monotonic)


class GroupCommitter:
    """Collects bodies per (tenant, dataset, hint) and writes each group as one object."""

    def __init__(
        self, write: Write, max_bytes: int, max_age_seconds: float, tracer: Any = None
    ) -> None:
        self._write = write
        self._tracer = tracer
        self._max_bytes = max_bytes
        self._max_age = max_age_seconds
        self._groups: dict[GroupKey, _Group] = {}
        self._writing: dict[GroupKey, int] = {}  # writes in flight per group key
        self._tasks: set[asyncio.Task[None]] = set()
        self.objects_written = 0
        self.bodies_grouped = 0

    async def add(self, key: GroupKey, body: Body, traceparent: str = "") -> Stored:
        """Add one body; return once the object holding it is durable."""
        loop = asyncio.get_running_loop()
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group()
        waiter: asyncio.Future[Stored] = loop.create_future()
        group.members.append(body.member)
        group.lines += body.lines
        group.size += body.size
        group.stored_bytes += len(body.member)
        group.waiters.append(waiter)
        if traceparent:
            group.traceparents.append(traceparent)
        self.bodies_grouped += 1
        if group.stored_bytes >= self._max_bytes:
            self._flush_now(key)
        elif self._max_age <= 0:
            # No linger: write now unless a write for this dataset is in flight; bodies that
            # arrive meanwhile share the next object, written as soon as that one is done.
            if not self._writing.get(key):
                self._flush_now(key)
        elif group.timer is None:
            group.timer = loop.call_later(self._max_age, self._flush_now, key)
        return await waiter

    def _flush_now(self, key: GroupKey) -> None:
        group = self._groups.pop(key, None)
        if group is None:
            return
        if group.timer is not None:
            group.timer.cancel()
        self._writing[key] = self._writing.get(key, 0) + 1
        task = asyncio.get_running_loop().create_task(self._flush(key, group))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._written(key))

    def _written(self, key: GroupKey) -> None:
        self._writing[key] -= 1
        if not self._writing[key]:
            del self._writing[key]
            if self._max_age <= 0 and key in self._groups:
                self._flush_now(key)

    async def _flush(self, key: GroupKey, group: _Group) -> None:
        metadata = {
            "lines": str(group.lines),
            "bytes": str(group.size),
            "compressed-bytes": str(group.stored_bytes),
            "requests": str(len(group.members)),
        }
        try:
            if self._tracer is None:
                stored = await self._write(key, b"".join(group.members), metadata)
            else:
                links = [link for tp in group.traceparents if (link := span_link(tp)) is not None]
                with self._tracer.start_as_current_span(
                    "receiver.write_object", links=links
                ) as span:
                    span.set_attribute("bytefreezer.requests", len(group.members))
                    metadata.update(inject_traceparent(span))
                    stored = await self._write(key, b"".join(group.members), metadata)
                    span.set_attribute("bytefreezer.key", stored.key)
        except BaseException as exc:
            for waiter in group.waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        self.objects_written += 1
        for waiter in group.waiters:
            if not waiter.done():
                waiter.set_result(stored)

    async def close(self) -> None:
        """Flush every open group and wait for all writes."""
        for key in list(self._groups):
            self._flush_now(key)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
