"""The receiver: authenticated HTTP posts land raw in the intake bucket before any 2xx.

``POST /webhook/{tenant}/{dataset}`` and ``POST /{tenant}/{dataset}`` accept NDJSON bodies,
plain or ``Content-Encoding: gzip``. The body is stored gzip-compressed under the original key
layout; the answer is 200 only after the object is durable in storage.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import threading
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bytefreezer.control import ControlClient
from bytefreezer.control.models import KeyScope
from bytefreezer.errors import (
    AuthError,
    BytefreezerError,
    ControlUnavailable,
    Forbidden,
    Gone,
    InvalidName,
    NotFound,
    StorageError,
)
from bytefreezer.keys import IntakeKey, validate_hint, validate_name
from bytefreezer.settings import Settings
from bytefreezer.storage import Storage

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 5


class Rejected(Exception):
    """A request refused with a status code and a message."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


def _error(exc: Rejected) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)


class KeyCache:
    """Verified (key, tenant, dataset) triples, trusted for ``ttl`` seconds.

    Keeps serving an expired entry while the control service is unreachable, so ingest goes on
    through a short control outage.
    """

    def __init__(self, control: ControlClient, ttl: float) -> None:
        self._control = control
        self._ttl = ttl
        self._entries: dict[str, tuple[float, KeyScope]] = {}
        self._lock = threading.Lock()

    def verify(self, key: str, tenant: str, dataset: str) -> KeyScope:
        """The key's scope for this dataset; raises the control service's verdict."""
        digest = hashlib.sha256(f"{key}\0{tenant}\0{dataset}".encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            cached = self._entries.get(digest)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        try:
            scope = self._control.verify_ingest(key, tenant, dataset)
        except ControlUnavailable:
            if cached is not None:
                return cached[1]
            raise
        except BytefreezerError:
            with self._lock:
                self._entries.pop(digest, None)
            raise
        with self._lock:
            self._entries[digest] = (now, scope)
        return scope


@dataclass
class _Body:
    raw: bytes  # as stored (gzip)
    lines: int
    decompressed_bytes: int


class IntakeWriter:
    """Writes request bodies as intake objects with unique keys."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._last_nano = 0
        self._lock = threading.Lock()

    def _next_nano(self) -> int:
        with self._lock:
            self._last_nano = max(time.time_ns(), self._last_nano + 1)
            return self._last_nano

    def write(
        self, tenant: str, dataset: str, hint: str, body: bytes, metadata: dict[str, str]
    ) -> IntakeKey:
        """Store ``body`` (gzip) under a fresh intake key; never overwrites another object."""
        for _ in range(16):
            key = IntakeKey(tenant, dataset, self._next_nano(), hint)
            if self._storage.intake.put_if_absent(key.key, body, metadata):
                return key
        raise StorageError("could not find a free intake key after 16 attempts")


def _check_body(raw: bytes, encoding: str, max_decompressed: int) -> _Body:
    if encoding in ("", "identity"):
        if not raw.strip():
            raise Rejected(400, "empty body")
        return _Body(gzip.compress(raw, compresslevel=1), _count_lines(raw), len(raw))
    if encoding in ("gzip", "x-gzip"):
        lines = size = 0
        last = b"\n"
        decoder = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        data = raw
        try:
            while data:
                chunk = decoder.decompress(data, 1 << 20)
                data = decoder.unconsumed_tail
                size += len(chunk)
                if size > max_decompressed:
                    raise Rejected(413, f"decompressed body exceeds {max_decompressed} bytes")
                lines += chunk.count(b"\n")
                if chunk:
                    last = chunk[-1:]
                if decoder.eof and decoder.unused_data:
                    data = decoder.unused_data
                    decoder = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            if not decoder.eof:
                raise Rejected(400, "invalid gzip body: truncated stream")
        except zlib.error as exc:
            raise Rejected(400, f"invalid gzip body: {exc}") from None
        if size == 0:
            raise Rejected(400, "empty body")
        return _Body(raw, lines + (last != b"\n"), size)
    raise Rejected(415, f"unsupported Content-Encoding {encoding!r}; use gzip or identity")


def _count_lines(data: bytes) -> int:
    return data.count(b"\n") + (not data.endswith(b"\n"))


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Rejected(413, f"body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Rejected(413, f"body exceeds {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise Rejected(400, "client disconnected before the body was complete") from None
    return b"".join(chunks)


def _bearer(request: Request) -> str:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Rejected(401, "missing API key: send 'Authorization: Bearer <key>'")
    return key.strip()


async def ingest(request: Request) -> JSONResponse:
    """Authenticate, check and durably store one request body."""
    state = request.app.state
    settings: Settings = state.settings
    try:
        tenant = request.path_params["tenant"]
        dataset = request.path_params["dataset"]
        try:
            validate_name(tenant, "tenant")
            validate_name(dataset, "dataset")
            hint = validate_hint(request.headers.get("x-proxy-data-hint", "ndjson").lower())
        except InvalidName as exc:
            raise Rejected(400, str(exc)) from None
        key = _bearer(request)
        try:
            await run_in_threadpool(state.keys.verify, key, tenant, dataset)
        except AuthError as exc:
            raise Rejected(401, str(exc)) from None
        except Forbidden as exc:
            raise Rejected(403, str(exc)) from None
        except NotFound as exc:
            raise Rejected(404, str(exc)) from None
        except Gone as exc:
            raise Rejected(410, str(exc)) from None
        except ControlUnavailable:
            raise Rejected(503, "control service unavailable", RETRY_AFTER_SECONDS) from None
        raw = await _read_body(request, settings.receiver.max_body_bytes)
        encoding = request.headers.get("content-encoding", "").strip().lower()
        body = await run_in_threadpool(
            _check_body, raw, encoding, settings.receiver.max_decompressed_bytes
        )
        metadata = {
            "lines": str(body.lines),
            "bytes": str(body.decompressed_bytes),
            "compressed-bytes": str(len(body.raw)),
        }
        try:
            stored = await run_in_threadpool(
                state.writer.write, tenant, dataset, hint, body.raw, metadata
            )
        except StorageError as exc:
            log.error("intake write failed: %s", exc)
            raise Rejected(503, "storage unavailable, retry later", RETRY_AFTER_SECONDS) from None
    except Rejected as exc:
        return _error(exc)
    return JSONResponse(
        {
            "status": "stored",
            "key": stored.key,
            "lines": body.lines,
            "bytes": body.decompressed_bytes,
        }
    )


async def health(request: Request) -> JSONResponse:
    """Liveness."""
    return JSONResponse({"status": "ok"})


def create_app(
    settings: Settings, control: ControlClient, storage: Storage | None = None
) -> Starlette:
    """The receiver's webhook app."""
    storage = storage or Storage(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.keys = KeyCache(control, settings.receiver.auth_cache_seconds)
        app.state.writer = IntakeWriter(storage)
        yield

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/webhook/{tenant}/{dataset}", ingest, methods=["POST"]),
        Route("/{tenant}/{dataset}", ingest, methods=["POST"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
