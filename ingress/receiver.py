"""The receiver: authenticated HTTP posts land in the intake bucket before any 2xx.

Webhook port (8080): ``POST /webhook/{tenant}/{dataset}``, ``POST /{tenant}/{dataset}`` and
``GET /health``; OTLP/HTTP (``bytefreezer.ingress.otlp``), Splunk HEC (``hec``) and
Elasticsearch's bulk API (``elastic``) at their own paths. A body is acknowledged (200) only once it is durable: in the intake bucket, or
in the local fsync'd spool while storage fails. Overload answers 429 and a full spool 503, both
with ``Retry-After``; nothing waits forever.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Literal, get_args

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bytefreezer.control import ControlClient
from bytefreezer.control.models import HealthReport, InputFormat, KeyScope
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
from bytefreezer.ingress import credentials, datadog, elastic, firehose, hec, loki, prometheus
from bytefreezer.ingress.bodies import (
    Body,
    BodyError,
    decompress,
    lines_body,
    prepare,
)
from bytefreezer.ingress.group_commit import GroupCommitter, GroupKey, Stored
from bytefreezer.ingress.headers import proxy_metadata
from bytefreezer.ingress.otlp import (
    LOGS,
    METRICS,
    OTLP_HINTS,
    TRACES,
    Signal,
    otlp_error,
    otlp_success,
    prepare_otlp,
)
from bytefreezer.ingress.repeats import DeliveredRequests
from bytefreezer.ingress.spool import Spool, SpoolFull
from bytefreezer.ingress.usage import UsageMeter, seconds_to_next_day
from bytefreezer.keys import IntakeKey, validate_hint, validate_name
from bytefreezer.keys import format_hint as _format_hint
from bytefreezer.settings import Settings
from bytefreezer.storage import Storage
from bytefreezer.telemetry import TRACEPARENT, Telemetry, inject_traceparent, null_telemetry

log = logging.getLogger(__name__)
FORMATS = set(get_args(InputFormat))


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


_IDENTIFY = "\0identify"  # where a key's own scope is kept (no dataset name has a NUL)


class KeyCache:
    """Verified (key, tenant, dataset) triples, trusted for ``ttl`` seconds.

    Keeps serving an expired entry while the control service is unreachable, so ingest goes on
    through a control outage.
    """

    def __init__(
        self,
        control: ControlClient,
        ttl: float,
        on_verified: Callable[[str, KeyScope], None] | None = None,
    ) -> None:
        self._control = control
        self._ttl = ttl
        self._on_verified = on_verified  # (tenant, scope) of each answer control gives
        self._entries: dict[str, tuple[float, KeyScope]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _digest(key: str, tenant: str, dataset: str) -> str:
        return hashlib.sha256(f"{key}\0{tenant}\0{dataset}".encode()).hexdigest()

    def cached(self, key: str, tenant: str, dataset: str) -> KeyScope | None:
        """A fresh cached verdict, without asking the control service (cheap, non-blocking)."""
        return self._fresh(self._digest(key, tenant, dataset))

    def identified(self, key: str) -> KeyScope | None:
        """``identify``'s fresh cached answer, without asking the control service."""
        return self._fresh(self._digest(key, "", _IDENTIFY))

    def _fresh(self, digest: str) -> KeyScope | None:
        with self._lock:
            entry = self._entries.get(digest)
        if entry is not None and time.monotonic() - entry[0] < self._ttl:
            return entry[1]
        return None

    def verify(self, key: str, tenant: str, dataset: str) -> KeyScope:
        """The key's scope for this dataset; raises the control service's verdict."""

        def ask() -> KeyScope:  # control's answer is noted; a cached one was when it came
            scope = self._control.verify_ingest(key, tenant, dataset)
            if self._on_verified is not None:
                self._on_verified(tenant, scope)
            return scope

        return self._ask(self._digest(key, tenant, dataset), ask)

    def identify(self, key: str) -> KeyScope:
        """The key's own scope (its tenant, and its dataset if it has one), for requests that
        name no dataset in their path (HEC's); raises the control service's verdict."""
        return self._ask(self._digest(key, "", _IDENTIFY), lambda: self._control.authenticate(key))

    def _ask(self, digest: str, ask: Callable[[], KeyScope]) -> KeyScope:
        now = time.monotonic()
        with self._lock:
            cached = self._entries.get(digest)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        try:
            scope = ask()
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


class RateLimiter:
    """A token bucket per API key: ``rate`` requests a second, ``burst`` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # key → (tokens, last refill)

    def wait_seconds(self, key: str) -> float:
        """0 when the request may go now (a token is taken), else how long until it may."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / self.rate


class InflightBudget:
    """Bytes of bodies being received and stored; beyond the bound requests get 429."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.rejections = 0

    def take(self, size: int) -> bool:
        """Reserve ``size`` bytes; False (and counted) when that would pass the limit."""
        if self.used + size > self.limit and self.used > 0:
            self.rejections += 1
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        """Return a reservation."""
        self.used -= size


class IntakeWriter:
    """Writes intake objects under fresh unique keys, or spools them while storage fails."""

    def __init__(
        self,
        storage: Storage,
        spool: Spool | None = None,
        telemetry: Telemetry | None = None,
        on_written: Callable[[], None] | None = None,
    ) -> None:
        self._storage = storage
        self._spool = spool
        self._telemetry = telemetry or null_telemetry()
        self._on_written = on_written
        self._last_nano = 0
        self._lock = threading.Lock()

    def next_key(self, tenant: str, dataset: str, hint: str) -> IntakeKey:
        """A key no other body of this process will get."""
        with self._lock:
            self._last_nano = max(time.time_ns(), self._last_nano + 1)
            return IntakeKey(tenant, dataset, self._last_nano, hint)

    def write(
        self, tenant: str, dataset: str, hint: str, body: bytes, metadata: dict[str, str]
    ) -> IntakeKey:
        """Store ``body`` (gzip) under a fresh intake key; never overwrites another object."""
        for _ in range(16):
            key = self.next_key(tenant, dataset, hint)
            if self._storage.intake.put_if_absent(key.key, body, metadata):
                return key
        raise StorageError("could not find a free intake key after 16 attempts")

    def store(self, group: GroupKey, body: bytes, metadata: dict[str, str]) -> Stored:
        """Write, or spool when storage fails; ``SpoolFull`` when neither can take it."""
        tenant, dataset, hint = group
        started = time.perf_counter()
        try:
            key = self.write(tenant, dataset, hint, body, metadata).key
            self._telemetry.record(
                "bytefreezer_receiver_store_write_seconds", time.perf_counter() - started
            )
            self._telemetry.record("bytefreezer_receiver_object_bytes", len(body))
            self._telemetry.add("bytefreezer_sent_bytes", len(body), stage="intake")
            if self._on_written is not None:
                self._on_written()
            return Stored(key, spooled=False)
        except StorageError as exc:
            self._telemetry.add("bytefreezer_errors", stage="intake", error_type="storage")
            if self._spool is None:
                raise
            log.warning("storage failed, spooling %s/%s: %s", tenant, dataset, exc)
            spooled = self.next_key(tenant, dataset, hint).key
            self._spool.add(spooled, body, metadata)
            return Stored(spooled, spooled=True)


@dataclass
class ReceiverState:
    """Everything the handlers share, built in the app's lifespan."""

    settings: Settings
    keys: KeyCache
    writer: IntakeWriter
    spool: Spool
    committer: GroupCommitter
    budget: InflightBudget
    limiter: RateLimiter
    storage: Storage
    control: ControlClient
    telemetry: Telemetry
    usage: UsageMeter
    requests: int = 0
    channels: hec.Channels = field(default_factory=hec.Channels)
    delivered: DeliveredRequests = field(default_factory=DeliveredRequests)


async def _read_body(request: Request, state: ReceiverState) -> tuple[bytes, int]:
    """The body within the size cap, reserving in-flight budget as it arrives."""
    limit = state.settings.receiver.max_body_bytes
    retry = state.settings.receiver.retry_after_seconds
    declared = request.headers.get("content-length")
    reserved = 0
    if declared and declared.isascii() and declared.isdigit():
        if int(declared) > limit:
            raise Rejected(413, f"body exceeds {limit} bytes")
        if not state.budget.take(int(declared)):
            raise Rejected(429, "receiver is at capacity, retry later", retry)
        reserved = int(declared)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Rejected(413, f"body exceeds {limit} bytes")
            if size > reserved:
                grow = size - reserved
                if not state.budget.take(grow):
                    raise Rejected(429, "receiver is at capacity, retry later", retry)
                reserved += grow
            chunks.append(chunk)
    except ClientDisconnect:
        state.budget.give(reserved)
        raise Rejected(400, "client disconnected before the body was complete") from None
    except Rejected:
        state.budget.give(reserved)
        raise
    return b"".join(chunks), reserved


def _bearer(request: Request) -> str:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Rejected(401, "missing API key: send 'Authorization: Bearer <key>'")
    return key.strip()


async def _authorized(state: ReceiverState, key: str, tenant: str, dataset: str) -> KeyScope:
    """``_authorize`` answered on the event loop while its verdict is cached."""
    scope = state.keys.cached(key, tenant, dataset)
    if scope is None:
        scope = await run_in_threadpool(_authorize, state, key, tenant, dataset)
    return scope


def _authorize(state: ReceiverState, key: str, tenant: str, dataset: str) -> KeyScope:
    try:
        return state.keys.verify(key, tenant, dataset)
    except AuthError as exc:
        raise Rejected(401, str(exc)) from None
    except Forbidden as exc:
        raise Rejected(403, str(exc)) from None
    except NotFound as exc:
        raise Rejected(404, str(exc)) from None
    except Gone as exc:
        raise Rejected(410, str(exc)) from None
    except ControlUnavailable:
        retry = state.settings.receiver.retry_after_seconds
        raise Rejected(503, "control service unavailable, retry later", retry) from None


async def ingest(request: Request) -> Response:
    """Authenticate, check and durably store one request body; count what happened."""
    return await _counted(request, partial(_ingest, otlp=None))


async def ingest_otlp(request: Request) -> Response:
    """The same for an OTLP/HTTP logs request (``bytefreezer.ingress.otlp``)."""
    return await _counted(request, partial(_ingest, otlp=LOGS))


async def ingest_otlp_traces(request: Request) -> Response:
    """The same for an OTLP/HTTP traces request."""
    return await _counted(request, partial(_ingest, otlp=TRACES))


async def ingest_otlp_metrics(request: Request) -> Response:
    """The same for an OTLP/HTTP metrics request."""
    return await _counted(request, partial(_ingest, otlp=METRICS))


Handler = Callable[[Request, "ReceiverState", str], Awaitable[Response]]


async def _counted(request: Request, handler: Handler) -> Response:
    """One ingest request, handled by ``handler`` (with the receiver's state and the request's
    traceparent), counted and traced."""
    state: ReceiverState = request.app.state.receiver
    state.requests += 1
    started = time.perf_counter()
    with state.telemetry.tracer().start_as_current_span("receiver.request") as span:
        span.set_attribute("bytefreezer.tenant", request.path_params.get("tenant", ""))
        span.set_attribute("bytefreezer.dataset", request.path_params.get("dataset", ""))
        traceparent = inject_traceparent(span).get(TRACEPARENT, "")
        response = await handler(request, state, traceparent)
        span.set_attribute("http.response.status_code", response.status_code)
    telemetry = state.telemetry
    telemetry.add("bytefreezer_receiver_requests", status_class=f"{response.status_code // 100}xx")
    telemetry.record(
        "bytefreezer_stage_duration_seconds", time.perf_counter() - started, stage="ingest"
    )
    if response.status_code == 429:
        telemetry.add("bytefreezer_receiver_backpressure_rejections")
    if response.status_code >= 400:
        telemetry.add(
            "bytefreezer_errors",
            stage="ingest",
            error_type=_ERROR_TYPES.get(response.status_code, "other"),
        )
    return response


_ERROR_TYPES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    410: "inactive",
    413: "too_large",
    415: "unsupported_encoding",
    429: "backpressure",
    503: "unavailable",
}


async def _ingest(
    request: Request, state: ReceiverState, traceparent: str, *, otlp: Signal | None
) -> Response:
    reserved = 0
    content_type = request.headers.get("content-type", "")
    repeat: tuple[str, str, str] | None = None
    done = False
    try:
        bearer = _bearer(request)  # no key at all: 401 before anything else is looked at
        tenant = request.path_params["tenant"]
        dataset = request.path_params["dataset"]
        try:
            validate_name(tenant, "tenant")
            validate_name(dataset, "dataset")
            given = request.headers.get("x-proxy-data-hint") or request.query_params.get("format")
            hint = otlp.hint if otlp else validate_hint((given or "auto").lower())
            if not otlp and _format_hint(hint) in OTLP_HINTS:
                raise Rejected(
                    400, f"post OTLP to /otlp/{tenant}/{dataset}/v1/logs, /v1/traces or /v1/metrics"
                )
            metadata = proxy_metadata(dict(request.headers), tenant, dataset)
        except (InvalidName, BodyError) as exc:
            raise Rejected(400, getattr(exc, "message", str(exc))) from None
        scope = await _authorized(state, bearer, tenant, dataset)
        _admit(state, tenant, scope)
        batch = request.headers.get("x-proxy-batch-id")
        if batch:  # a proxy's batch, sent again when the answer to its first try was lost
            claimed = (tenant, dataset, f"proxy-batch:{batch}")
            if await _repeated(state, claimed):
                return JSONResponse({"status": "stored", "repeat": True})
            repeat = claimed  # this try stores it: its outcome is said in ``finally``
        raw, reserved = await _read_body(request, state)
        fmt = hint if hint in FORMATS else scope.format
        encoding = request.headers.get("content-encoding", "")
        limit = state.settings.receiver.max_decompressed_bytes
        try:
            if otlp:
                body = await run_in_threadpool(
                    prepare_otlp, raw, encoding, content_type, limit, otlp
                )
            else:
                body = await run_in_threadpool(prepare, raw, encoding, fmt, limit)
        except BodyError as exc:
            raise Rejected(exc.status, exc.message) from None
        _received(state, tenant, len(raw), body)
        if otlp and not body.records:
            return otlp_success(content_type, otlp)  # nothing to keep
        stored = await _store(state, (tenant, dataset, hint), body, metadata, traceparent)
        done = True
        _stored(state, tenant, dataset, len(raw), body)
    except Rejected as exc:
        if otlp:
            return otlp_error(exc.status, exc.message, content_type, exc.retry_after)
        return _error(exc)
    finally:
        state.budget.give(reserved)
        if repeat is not None:
            state.delivered.done(repeat, done)
    if otlp:
        return otlp_success(content_type, otlp)
    return JSONResponse(
        {
            "status": "spooled" if stored.spooled else "stored",
            "key": stored.key,
            "lines": body.lines,
            "records": body.records,
            "bytes": body.size,
        }
    )


async def hec_event(request: Request) -> Response:
    """HEC's event endpoint (``bytefreezer.ingress.hec``)."""
    return await _counted(request, partial(_ingest_hec, raw_endpoint=False))


async def hec_raw(request: Request) -> Response:
    """HEC's raw endpoint: a record per line."""
    return await _counted(request, partial(_ingest_hec, raw_endpoint=True))


async def hec_health(request: Request) -> Response:
    return JSONResponse({"text": "HEC is healthy", "code": 17})


async def hec_ack(request: Request) -> Response:
    """Which of a channel's ack ids are durable: all of them. An id is only handed out with a
    success, and a success is only answered once the data is durable, so an id a client holds
    is acknowledged whichever receiver replica it asks (a load balancer need not be sticky)."""
    state: ReceiverState = request.app.state.receiver
    key = hec.token(request.headers.get("authorization", ""))
    if key is None:
        return hec.error(401, "Token is required", 2)
    try:
        await run_in_threadpool(_identify, state, key)
    except Rejected as exc:
        return hec.error(exc.status, exc.message, retry=exc.retry_after)
    channel = request.headers.get("x-splunk-request-channel") or request.query_params.get("channel")
    if not channel:
        return hec.error(400, "Data channel is missing", 10)
    try:
        asked = (await request.json())["acks"]
        numbers = [int(n) for n in asked]
    except (ValueError, TypeError, KeyError):
        return hec.error(400, 'Invalid data format: send {"acks": [ack ids]}', 6)
    return JSONResponse({"acks": {str(n): True for n in numbers}})


def _identify(state: ReceiverState, key: str) -> KeyScope:
    try:
        return state.keys.identify(key)
    except AuthError as exc:
        raise Rejected(403, f"Invalid token: {exc}") from None
    except ControlUnavailable:
        retry = state.settings.receiver.retry_after_seconds
        raise Rejected(503, "control service unavailable, retry later", retry) from None


async def _ingest_hec(
    request: Request, state: ReceiverState, traceparent: str, *, raw_endpoint: bool
) -> Response:
    reserved = 0
    key = hec.token(request.headers.get("authorization", ""))
    if key is None:
        return hec.error(401, "Token is required", 2)
    try:
        scope = state.keys.identified(key)
        if scope is None:
            scope = await run_in_threadpool(_identify, state, key)
        if scope.tenant is None:
            raise Rejected(403, "Invalid token: an admin key sends no events; use an ingest key")
        tenant = scope.tenant
        raw, reserved = await _read_body(request, state)
        encoding = request.headers.get("content-encoding", "")
        limit = state.settings.receiver.max_decompressed_bytes
        params = dict(request.query_params)
        try:
            data = await run_in_threadpool(hec.read, raw, encoding, limit)
            if raw_endpoint:
                records = await run_in_threadpool(hec.raw_records, data, params)
                indexes = {params["index"]} if params.get("index") else set()
            else:
                records, indexes = await run_in_threadpool(hec.event_records, data)
        except BodyError as exc:
            return hec.error(exc.status, exc.message, getattr(exc, "code", None))
        if scope.dataset is not None:
            dataset = scope.dataset
        elif len(indexes) == 1:
            dataset = indexes.pop()
        else:
            return hec.error(
                400,
                "Incorrect index: a tenant key sends to the dataset its events' index names, one "
                f"a request ({len(indexes)} named here); or use a dataset key",
                7,
            )
        try:
            validate_name(dataset, "dataset")
        except InvalidName as exc:
            return hec.error(400, f"Incorrect index: {exc}", 7)
        scope = await _authorized(state, key, tenant, dataset)
        _admit(state, tenant, scope)
        body = await run_in_threadpool(lines_body, records)  # gzip off the event loop
        _received(state, tenant, len(raw), body)
        await _store(state, (tenant, dataset, "ndjson"), body, {}, traceparent)
        _stored(state, tenant, dataset, len(raw), body)
    except Rejected as exc:
        return hec.error(exc.status, exc.message, retry=exc.retry_after)
    finally:
        state.budget.give(reserved)
    channel = request.headers.get("x-splunk-request-channel") or params.get("channel")
    return hec.success(state.channels.next_id(channel) if channel else None)


async def elastic_bulk(request: Request) -> Response:
    """Elasticsearch's bulk API (``bytefreezer.ingress.elastic``)."""
    return await _counted(request, _ingest_elastic)


async def elastic_info(request: Request) -> Response:
    return elastic.info()


async def elastic_cluster_health(request: Request) -> Response:
    if request.method not in ("GET", "HEAD"):
        return _not_allowed()
    return elastic.cluster_health()


async def elastic_cat_health(request: Request) -> Response:
    if request.method not in ("GET", "HEAD"):
        return _not_allowed()
    return elastic.cat_health()


_EVERY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _not_allowed() -> Response:
    """405 for a two-segment probe path taken with another method: without this answer
    ``POST /{tenant}/{dataset}`` would take it as an ingest request."""
    return JSONResponse(
        {"error": "method not allowed"}, status_code=405, headers={"Allow": "GET, HEAD"}
    )


async def _ingest_scope(state: ReceiverState, key: str) -> KeyScope:
    """An ingest key's own scope, where no path names its tenant (the bulk, Loki, Datadog,
    Firehose and remote-write endpoints): 401 for a key control does not know, 403 for an admin key."""
    scope = state.keys.identified(key)
    if scope is None:
        scope = await run_in_threadpool(_authenticate, state, key)
    if scope.tenant is None:
        raise Rejected(403, "an admin key sends no documents; use an ingest key")
    return scope


def _authenticate(state: ReceiverState, key: str) -> KeyScope:
    try:
        return state.keys.identify(key)
    except AuthError as exc:
        raise Rejected(401, f"unable to authenticate: {exc}") from None
    except ControlUnavailable:
        retry = state.settings.receiver.retry_after_seconds
        raise Rejected(503, "control service unavailable, retry later", retry) from None


async def _ingest_elastic(request: Request, state: ReceiverState, traceparent: str) -> Response:
    started = time.perf_counter()
    reserved = 0
    key = credentials.key_of(request.headers.get("authorization", ""))
    if key is None:
        return elastic.error(
            401,
            "missing credentials: send a bytefreezer ingest key as Basic auth's password, "
            "as an API key or as a bearer token",
        )
    try:
        scope = await _ingest_scope(state, key)
        tenant = str(scope.tenant)
        raw, reserved = await _read_body(request, state)
        encoding = request.headers.get("content-encoding", "")
        index = request.path_params.get("index")
        bulk, groups = await run_in_threadpool(
            _bulk_request, state, key, scope, raw, encoding, index
        )
        stored_any = False
        for dataset_scope, _ in groups.values():
            _admit(state, tenant, dataset_scope)  # before anything is stored: retry all
        total = sum(len(group) for _, group in groups.values())
        for dataset, (_, group) in groups.items():
            body = await run_in_threadpool(_bulk_body, bulk, group)  # off the event loop
            sent = len(raw) * len(group) // max(total, 1)
            _received(state, tenant, sent, body)
            try:
                await _store(state, (tenant, dataset, "ndjson"), body, {}, traceparent)
            except Rejected as exc:
                if not stored_any:
                    raise  # nothing kept: the client retries the whole request
                bulk.fail(group, exc.status, exc.message)  # the rest was kept: retried alone
                continue
            stored_any = True
            _stored(state, tenant, dataset, sent, body)
    except Rejected as exc:
        return elastic.error(exc.status, exc.message, exc.retry_after)
    finally:
        state.budget.give(reserved)
    if bulk.errors:
        state.telemetry.add(
            "bytefreezer_errors", len(bulk.errors), stage="ingest", error_type="bulk_item"
        )
    took = round((time.perf_counter() - started) * 1000)
    return await run_in_threadpool(elastic.answer, bulk, took, scope.dataset or "")


def _bulk_request(
    state: ReceiverState,
    key: str,
    scope: KeyScope,
    raw: bytes,
    encoding: str,
    index: str | None,
) -> tuple[elastic.Bulk, dict[str, tuple[KeyScope, list[int]]]]:
    """A bulk request's items, and the datasets they go to (``_elastic_groups``)."""
    try:
        data = decompress(raw, encoding, state.settings.receiver.max_decompressed_bytes)
        bulk = elastic.parse_bulk(data, index)
    except BodyError as exc:
        raise Rejected(exc.status, exc.message) from None
    return bulk, _elastic_groups(state, key, scope, bulk)


def _bulk_body(bulk: elastic.Bulk, items: list[int]) -> Body:
    return lines_body(bulk.lines(items))


def _elastic_groups(
    state: ReceiverState, key: str, scope: KeyScope, bulk: elastic.Bulk
) -> dict[str, tuple[KeyScope, list[int]]]:
    """The items of ``bulk`` still pending by the dataset each goes to, with the key's scope
    there; the items no dataset takes fail with the reason. 429 and 503 refuse the whole
    request."""
    wanted: dict[str, list[int]] = {}
    if scope.dataset:
        wanted[scope.dataset] = bulk.pending()
    else:
        unnamed = []
        for item in bulk.pending():
            index = bulk.indexes[item]
            if index:
                wanted.setdefault(index, []).append(item)
            else:
                unnamed.append(item)
        bulk.fail(
            unnamed,
            400,
            "index is required: a tenant key sends each document to the dataset its index "
            "names (or use a dataset key)",
            "action_request_validation_exception",
        )
    groups: dict[str, tuple[KeyScope, list[int]]] = {}
    for dataset, group in wanted.items():
        if not group:
            continue
        try:
            validate_name(dataset, "dataset")
            groups[dataset] = (_authorize(state, key, str(scope.tenant), dataset), group)
        except InvalidName as exc:
            bulk.fail(group, 400, str(exc), "invalid_index_name_exception")
        except Rejected as exc:
            if exc.status in (429, 503):
                raise
            bulk.fail(group, exc.status, exc.message)
    return groups


def _converted_endpoint(api: _Compatible) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint of an API of another product whose requests become NDJSON here: Loki's
    push, Datadog's log intake, Prometheus's remote write, Firehose's HTTP delivery."""

    async def endpoint(request: Request) -> Response:
        return await _counted(request, partial(_ingest_converted, api=api))

    return endpoint


@dataclass(frozen=True)
class _Compatible:
    """An ingest API of another product whose requests become NDJSON records here."""

    path: str  # the API's own path, after /{tenant}/{dataset} in the longer form
    key: Callable[[Request], str | None]
    missing_key: str
    records: Callable[[Request, bytes, int], list[bytes]]  # body, decompressed limit
    ok: Callable[[Request], Response]
    refused: Callable[[Request, Rejected], Response]
    request_id: Callable[[Request], str | None] = lambda request: None  # retries share it


def _text_refusal(request: Request, exc: Rejected) -> Response:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    return PlainTextResponse(exc.message + "\n", exc.status, headers=headers)


def _authorization_key(request: Request) -> str | None:
    return credentials.key_of(request.headers.get("authorization", ""))


def _by_headers(
    parse: Callable[[bytes, str, str, int], list[bytes]],
) -> Callable[[Request, bytes, int], list[bytes]]:
    """A body parser given the request's Content-Encoding and Content-Type."""
    return lambda request, raw, limit: parse(
        raw,
        request.headers.get("content-encoding", ""),
        request.headers.get("content-type", ""),
        limit,
    )


_LOKI = _Compatible(
    path="/loki/api/v1/push",
    key=_authorization_key,
    missing_key="send a bytefreezer ingest key as Basic auth's password or as a bearer token",
    records=_by_headers(loki.push_records),
    ok=lambda request: Response(status_code=204),
    refused=_text_refusal,
)
_DATADOG = _Compatible(
    path="/api/v2/logs",
    key=lambda request: datadog.key_of(request.headers, request.query_params),
    missing_key="send a bytefreezer ingest key in DD-API-KEY",
    records=lambda request, raw, limit: datadog.log_records(
        raw,
        request.headers.get("content-encoding", ""),
        request.headers.get("content-type", ""),
        limit,
        dict(request.query_params),
    ),
    ok=lambda request: datadog.accepted(),
    refused=lambda request, exc: datadog.error(exc.status, exc.message, exc.retry_after),
)


_PROMETHEUS = _Compatible(
    path="/prometheus/api/v1/write",
    key=_authorization_key,
    missing_key="send a bytefreezer ingest key as remote_write's authorization credentials "
    "(a bearer token) or basic_auth password",
    records=_by_headers(prometheus.write_records),
    ok=lambda request: Response(status_code=204),
    refused=_text_refusal,
)


def _firehose_refusal(request: Request, exc: Rejected) -> Response:
    response = firehose.answer(request.headers, exc.status, exc.message)
    if exc.retry_after:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


_FIREHOSE = _Compatible(
    path="/firehose",
    key=lambda request: firehose.key_of(request.headers),
    missing_key="set the Firehose stream's access key to a bytefreezer ingest key "
    "(X-Amz-Firehose-Access-Key)",
    records=lambda request, raw, limit: firehose.request_records(
        raw, request.headers.get("content-encoding", ""), limit, request.headers
    ),
    ok=lambda request: firehose.answer(request.headers),
    refused=_firehose_refusal,
    request_id=lambda request: firehose.request_id(request.headers),
)


async def _key_dataset(state: ReceiverState, key: str, api: _Compatible) -> KeyScope:
    """The dataset a key sends to at an API's own path, where no path names one."""
    scope = await _ingest_scope(state, key)
    if scope.dataset is None:
        raise Rejected(
            400,
            f"a tenant key names the dataset in the path: /{{tenant}}/{{dataset}}{api.path} "
            "(or use a dataset key)",
        )
    return scope


async def _repeated(state: ReceiverState, claimed: tuple[str, str, str]) -> bool:
    """Claim a request's id (tenant, dataset, id) for this try: True, and counted, when a
    request with it was stored before (a retry, answered without storing it again)."""
    if await state.delivered.claim(claimed):
        return False
    state.telemetry.add("bytefreezer_receiver_repeated_requests", tenant=claimed[0])
    return True


async def _ingest_converted(
    request: Request, state: ReceiverState, traceparent: str, *, api: _Compatible
) -> Response:
    """One request of ``api``: its records stored as NDJSON, answered once durable (a retry
    of a request stored before, by its request id, answered without storing it again)."""
    reserved = 0
    repeat: tuple[str, str, str] | None = None
    stored = False
    key = api.key(request)
    try:
        if key is None:
            raise Rejected(401, f"missing credentials: {api.missing_key}")
        if "tenant" in request.path_params:
            tenant, dataset = request.path_params["tenant"], request.path_params["dataset"]
            try:
                validate_name(tenant, "tenant")
                validate_name(dataset, "dataset")
            except InvalidName as exc:
                raise Rejected(400, str(exc)) from None
        else:
            found = await _key_dataset(state, key, api)
            tenant, dataset = str(found.tenant), str(found.dataset)
        scope = await _authorized(state, key, tenant, dataset)
        _admit(state, tenant, scope)
        request_id = api.request_id(request)
        if request_id:
            claimed = (tenant, dataset, request_id)
            if await _repeated(state, claimed):
                return api.ok(request)  # stored before: answered, not stored again
            repeat = claimed  # this try stores it: its outcome is said in ``finally``
        raw, reserved = await _read_body(request, state)
        limit = state.settings.receiver.max_decompressed_bytes
        try:
            body = await run_in_threadpool(_converted_body, api, request, raw, limit)
        except BodyError as exc:
            raise Rejected(exc.status, exc.message) from None
        if body is not None:
            _received(state, tenant, len(raw), body)
            await _store(state, (tenant, dataset, "ndjson"), body, {}, traceparent)
            _stored(state, tenant, dataset, len(raw), body)
        stored = True
    except Rejected as exc:
        return api.refused(request, exc)
    finally:
        state.budget.give(reserved)
        if repeat is not None:
            state.delivered.done(repeat, stored)
    return api.ok(request)


def _converted_body(api: _Compatible, request: Request, raw: bytes, limit: int) -> Body | None:
    """A request's records as the body stored (None without any), off the event loop."""
    records = api.records(request, raw, limit)
    return lines_body(records) if records else None


def _admit(state: ReceiverState, tenant: str, scope: KeyScope) -> None:
    """Refuse with 429 a key past its rate limit, or a tenant past its daily ingest limit."""
    wait = state.limiter.wait_seconds(scope.key_id)
    if wait > 0:
        raise Rejected(
            429, "rate limit of this API key exceeded, retry later", max(1, math.ceil(wait))
        )
    if state.usage.over_limit(tenant, scope):
        state.telemetry.add("bytefreezer_receiver_quota_rejections", tenant=tenant)
        limit_mb = (scope.daily_ingest_bytes or 0) // (1024 * 1024)
        raise Rejected(
            429,
            f"tenant {tenant!r} has reached its daily ingest limit of {limit_mb} MB; "
            "accepted again from 00:00 UTC",
            seconds_to_next_day(),
        )


def _received(state: ReceiverState, tenant: str, sent_bytes: int, body: Body) -> None:
    telemetry = state.telemetry
    telemetry.add("bytefreezer_records_received", body.records, stage="ingest", tenant=tenant)
    telemetry.add(
        "bytefreezer_received_bytes",
        sent_bytes,
        stage="ingest",
        encoding="compressed",
        tenant=tenant,
    )
    telemetry.add(
        "bytefreezer_received_bytes",
        body.size,
        stage="ingest",
        encoding="decompressed",
        tenant=tenant,
    )


def _stored(state: ReceiverState, tenant: str, dataset: str, sent_bytes: int, body: Body) -> None:
    state.usage.add(tenant, dataset, body.records, body.size, sent_bytes)
    state.telemetry.add("bytefreezer_records_sent", body.records, stage="ingest", tenant=tenant)


async def _store(
    state: ReceiverState, group: GroupKey, body: Body, metadata: dict[str, str], traceparent: str
) -> Stored:
    retry = state.settings.receiver.retry_after_seconds
    try:
        if metadata or len(body.member) >= state.settings.receiver.group_commit_max_bytes:
            # Proxy batches arrive whole and carry their own metadata: one object each.
            full = {
                "lines": str(body.lines),
                "bytes": str(body.size),
                "compressed-bytes": str(len(body.member)),
                "requests": "1",
                **metadata,
                **({TRACEPARENT: traceparent} if traceparent else {}),
            }
            return await run_in_threadpool(state.writer.store, group, body.member, full)
        return await state.committer.add(group, body, traceparent)
    except SpoolFull as exc:
        log.error("storage down and spool full: %s", exc)
        raise Rejected(503, "storage unavailable and spool full, retry later", retry) from None
    except StorageError as exc:
        log.error("intake write failed: %s", exc)
        raise Rejected(503, "storage unavailable, retry later", retry) from None


async def health(request: Request) -> JSONResponse:
    """Liveness."""
    return JSONResponse({"status": "ok"})


async def _drain_spool(state: ReceiverState, stop: asyncio.Event) -> None:
    while not stop.is_set():
        stats = state.spool.stats()
        state.telemetry.set("bytefreezer_receiver_spool_bytes", stats.bytes)
        state.telemetry.set("bytefreezer_receiver_spool_objects", stats.objects)
        if stats.objects:
            try:
                await run_in_threadpool(state.spool.drain, state.storage.intake)
            except Exception:
                log.exception("spool drain failed")
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=state.settings.receiver.spool_retry_seconds)


async def _report_health(state: ReceiverState, stop: asyncio.Event) -> None:
    interval = state.settings.monitoring.report_interval_seconds
    while not stop.is_set():
        spool = state.spool.stats()
        status: Literal["ok", "degraded"] = "degraded" if spool.last_error else "ok"
        report = HealthReport(
            component="receiver",
            instance=state.settings.instance_id,
            status=status,
            details={
                "requests": state.requests,
                "spool_objects": spool.objects,
                "spool_error": spool.last_error,
            },
        )
        try:
            await run_in_threadpool(state.control.report_health, report)
        except BytefreezerError as exc:
            log.warning("health report to control failed: %s", exc)
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


async def _report_usage(state: ReceiverState, stop: asyncio.Event) -> None:
    """Send what was accepted to control every ``receiver.usage_report_seconds``, and once
    more on the way out; a report that fails goes with the next."""
    interval = state.settings.receiver.usage_report_seconds
    while True:
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
        reports = state.usage.take()
        if reports:
            try:
                await run_in_threadpool(state.control.report_usage, reports)
            except BytefreezerError as exc:
                state.usage.give_back(reports)
                log.warning("usage report to control failed (sent with the next): %s", exc)
            else:
                state.usage.reported(reports)
        if stop.is_set():
            return


def build_state(
    settings: Settings,
    control: ControlClient,
    storage: Storage,
    telemetry: Telemetry | None = None,
    on_intake: Callable[[], None] | None = None,
) -> ReceiverState:
    """The shared state of the webhook and API apps; ``on_intake`` is called after each object
    stored in the intake bucket."""
    telemetry = telemetry or null_telemetry()
    spool = Spool(settings.spool_path(), settings.receiver.spool_max_bytes)
    writer = IntakeWriter(storage, spool, telemetry, on_written=on_intake)

    async def write(group: GroupKey, data: bytes, metadata: dict[str, str]) -> Stored:
        return await run_in_threadpool(writer.store, group, data, metadata)

    tracing = settings.monitoring.mode in ("otlp_http", "otlp_grpc")
    committer = GroupCommitter(
        write,
        settings.receiver.group_commit_max_bytes,
        settings.receiver.group_commit_max_age_ms / 1000,
        tracer=telemetry.tracer() if tracing else None,
    )
    usage = UsageMeter()
    return ReceiverState(
        settings=settings,
        keys=KeyCache(control, settings.receiver.auth_cache_seconds, usage.verified),
        writer=writer,
        spool=spool,
        committer=committer,
        budget=InflightBudget(settings.receiver.max_inflight_bytes),
        limiter=RateLimiter(
            settings.receiver.rate_limit_per_second, settings.receiver.rate_limit_burst
        ),
        storage=storage,
        control=control,
        telemetry=telemetry,
        usage=usage,
    )


def create_app(
    settings: Settings,
    control: ControlClient,
    storage: Storage | None = None,
    *,
    state: ReceiverState | None = None,
) -> Starlette:
    """The receiver's webhook app (it also drains the spool in the background)."""
    storage = storage or Storage(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        shared = state or build_state(settings, control, storage)
        app.state.receiver = shared
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(_drain_spool(shared, stop)),
            asyncio.create_task(_report_health(shared, stop)),
            asyncio.create_task(_report_usage(shared, stop)),
        ]
        try:
            yield
        finally:
            await shared.committer.close()
            stop.set()
            await asyncio.gather(*tasks)

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/webhook/{tenant}/{dataset}", ingest, methods=["POST"]),
        Route("/otlp/{tenant}/{dataset}/v1/logs", ingest_otlp, methods=["POST"]),
        Route("/otlp/{tenant}/{dataset}/v1/traces", ingest_otlp_traces, methods=["POST"]),
        Route("/otlp/{tenant}/{dataset}/v1/metrics", ingest_otlp_metrics, methods=["POST"]),
        # Splunk HEC's own paths, before /{tenant}/{dataset} would take /services/collector
        *[Route(p, hec_event, methods=["POST"]) for p in hec.EVENT_PATHS],
        *[Route(p, hec_raw, methods=["POST"]) for p in hec.RAW_PATHS],
        *[Route(p, hec_health, methods=["GET"]) for p in hec.HEALTH_PATHS],
        Route("/services/collector/ack", hec_ack, methods=["POST"]),
        # APIs of other products, at their own path and after /{tenant}/{dataset}
        *[
            Route(prefix + api.path, _converted_endpoint(api), methods=["POST"])
            for api in (_LOKI, _DATADOG, _FIREHOSE, _PROMETHEUS)
            for prefix in ("", "/{tenant}/{dataset}")
        ],
        Route("/", elastic_info, methods=["GET"]),
        Route("/_cluster/health", elastic_cluster_health, methods=_EVERY_METHOD),
        Route("/_cat/health", elastic_cat_health, methods=_EVERY_METHOD),
        Route("/_bulk", elastic_bulk, methods=["POST", "PUT"]),
        Route("/{index}/_bulk", elastic_bulk, methods=["POST", "PUT"]),
        Route("/{tenant}/{dataset}", ingest, methods=["POST"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
