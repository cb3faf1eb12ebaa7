"""Elasticsearch's bulk API in: what Fluent Bit's `es` output, Vector's `elasticsearch` sink,
rsyslog's omelasticsearch, Logstash's and Filebeat's Elasticsearch outputs and Elastic's own
clients send, taken on the receiver's webhook port at the bulk API's paths (`POST|PUT /_bulk`,
`/{index}/_bulk`), with the probes shippers make first (`GET /`, `/_cluster/health`,
`/_cat/health`).

The credentials are a bytefreezer ingest key: as the password of Basic auth (any user name), as
an API key (`ApiKey <key>`, or Elastic's encoded `id:key` form), or as a bearer token. A dataset
key sends every document to its dataset; a tenant key sends each document to the dataset its
index names (the action's `_index`, else the path's). Each `index` or `create` action's
document becomes an NDJSON record, with the action's `_id` as the field `_id` when it has one.
A request's documents are durable before the answer, which is the bulk API's: an item per
action, 201 `created` for each stored document, and an item error for what was not (a document
that is no JSON object, an index that names no dataset of the tenant, `update` and `delete`,
which an append-only store cannot do). Refusals of the whole request are Elasticsearch's error
bodies, with `Retry-After` on 429 and 503.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.responses import JSONResponse, Response

from bytefreezer.ingress.bodies import BodyError

PRODUCT = {"X-Elastic-Product": "Elasticsearch"}
# The version bytefreezer answers with: shippers choose their request shapes by it (no mapping
# types from 7, `compatible-with=8` from 8).
VERSION = "8.17.0"
WRITE_ACTIONS = ("index", "create")
ACTIONS = (*WRITE_ACTIONS, "update", "delete")
_ERROR_TYPES = {
    400: "illegal_argument_exception",
    401: "security_exception",
    403: "security_exception",
    404: "index_not_found_exception",
    410: "index_closed_exception",
    413: "content_too_long_exception",
    415: "illegal_argument_exception",
    429: "es_rejected_execution_exception",
    503: "unavailable_shards_exception",
}


class BulkError(BodyError):
    """A bulk request refused as a whole."""


@dataclass(slots=True)
class Item:
    """One action of a bulk request and what became of it."""

    action: str
    index: str | None
    id: str | None
    source: bytes = b""  # the document's line as sent, once it parsed as a JSON object
    own_id: bool = False  # the document has an ``_id`` field of its own
    status: int = 201
    error: tuple[str, str] | None = None  # type, reason
    dataset: str | None = field(default=None, compare=False)

    def fail(self, status: int, reason: str, kind: str | None = None) -> None:
        self.status = status
        self.error = (kind or _ERROR_TYPES.get(status, "exception"), reason)

    @property
    def ok(self) -> bool:
        return self.error is None

    def line(self) -> bytes:
        """The stored record: the document's line as sent, with the action's ``_id`` first
        unless the document has its own."""
        if self.id is None or self.own_id:
            return self.source
        field = b'"_id":' + orjson.dumps(self.id)
        rest = self.source[1:].lstrip()  # the line starts with "{" (stripped)
        return b"{" + field + (b"" if rest.startswith(b"}") else b",") + rest

    def answer(self, fallback_id: str, quoted: dict[str, bytes]) -> bytes:
        """This item of the answer, as JSON (``quoted``: index names as JSON, shared by the
        items of a request)."""
        index = self.index or self.dataset or ""
        if self.error is not None:
            kind, reason = self.error
            body = {
                "_index": index,
                "_id": fallback_id if self.id is None else self.id,
                "status": self.status,
                "error": {"type": kind, "reason": reason},
            }
            return orjson.dumps({self.action: body})
        name = quoted.get(index)
        if name is None:
            name = quoted[index] = orjson.dumps(index)
        given = b'"' + fallback_id.encode() + b'"' if self.id is None else orjson.dumps(self.id)
        return b"".join(
            (b'{"', self.action.encode(), b'":{"_index":', name, b',"_id":', given, _CREATED)
        )


# The rest of a stored document's item, after its index and id.
_CREATED = (
    b',"_version":1,"result":"created","_shards":{"total":1,"successful":1,"failed":0},'
    b'"_seq_no":0,"_primary_term":1,"status":201}}'
)


def parse_bulk(data: bytes, path_index: str | None) -> list[Item]:
    """The items of a bulk body: action lines, each write action followed by its document.
    ``BulkError`` for a body the bulk API refuses whole (an action line that is not one, a
    write action without its document); a document that is no JSON object fails its item."""
    lines = [line for line in data.split(b"\n") if line.strip()]
    if not lines:
        raise BulkError(400, "request body is required")
    items: list[Item] = []
    actions: dict[bytes, tuple[str, dict[str, Any]]] = {}  # shippers repeat one action line
    at = 0
    while at < len(lines):
        number = at + 1
        found = actions.get(lines[at])
        if found is None:
            found = _action(lines[at], number)
            if len(actions) < 64:
                actions[lines[at]] = found
        action, meta = found
        at += 1
        index = meta.get("_index", path_index)
        given_id = meta.get("_id")
        item = Item(
            action,
            index if isinstance(index, str) else None,
            None if given_id is None else str(given_id),
        )
        if action in ("index", "create", "update"):
            if at == len(lines):
                raise BulkError(
                    400,
                    f"Malformed bulk request: the {action} action on line {number} has no "
                    "document line after it",
                )
            source, at = lines[at], at + 1
            if action == "update":
                item.fail(400, "bytefreezer stores what is sent and does not update documents")
            else:
                _document(item, source)
        else:
            item.fail(400, "bytefreezer stores what is sent and does not delete documents")
        items.append(item)
    return items


def _action(line: bytes, number: int) -> tuple[str, dict[str, Any]]:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise BulkError(400, f"Malformed action/metadata line [{number}]: {exc}") from None
    if not isinstance(value, dict) or len(value) != 1:
        raise BulkError(
            400,
            f"Malformed action/metadata line [{number}], expected an object with one of "
            f"{', '.join(ACTIONS)}",
        )
    ((action, meta),) = value.items()
    if action not in ACTIONS:
        raise BulkError(
            400, f"Malformed action/metadata line [{number}], unknown action [{action}]"
        )
    if not isinstance(meta, dict):
        raise BulkError(
            400, f"Malformed action/metadata line [{number}], expected an object for [{action}]"
        )
    return action, meta


def _document(item: Item, source: bytes) -> None:
    try:
        document = orjson.loads(source)
    except orjson.JSONDecodeError as exc:
        item.fail(400, f"failed to parse: {exc}", "document_parsing_exception")
        return
    if not isinstance(document, dict):
        item.fail(
            400, "failed to parse: the document is not a JSON object", "document_parsing_exception"
        )
        return
    item.source = source.strip()
    item.own_id = "_id" in document


def answer(items: list[Item], took_ms: int) -> Response:
    """The bulk API's answer for ``items``, written item by item (an item's JSON from a
    template: building and encoding a dictionary each took half the request's time)."""
    prefix = uuid.uuid4().hex[:12]
    quoted: dict[str, bytes] = {}
    errors = b"true" if any(item.error is not None for item in items) else b"false"
    parts = [item.answer(f"{prefix}{n:08x}", quoted) for n, item in enumerate(items)]
    body = b"".join(
        (
            b'{"took":',
            str(took_ms).encode(),
            b',"errors":',
            errors,
            b',"items":[',
            b",".join(parts),
            b"]}",
        )
    )
    return Response(body, media_type="application/json", headers=PRODUCT)


def error(status: int, reason: str, retry: int | None = None) -> JSONResponse:
    """Elasticsearch's body for a request refused whole."""
    kind = _ERROR_TYPES.get(status, "exception")
    headers = dict(PRODUCT)
    if retry:
        headers["Retry-After"] = str(retry)
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="bytefreezer", ApiKey'
    cause = {"type": kind, "reason": reason}
    return JSONResponse(
        {"error": {"root_cause": [cause], **cause}, "status": status},
        status_code=status,
        headers=headers,
    )


def info() -> JSONResponse:
    """``GET /``: what a shipper reads to choose its request shapes."""
    return JSONResponse(
        {
            "name": "bytefreezer-receiver",
            "cluster_name": "bytefreezer",
            "cluster_uuid": "bytefreezer",
            "version": {
                "number": VERSION,
                "build_flavor": "default",
                "build_type": "bytefreezer",
                "lucene_version": "9.12.0",
                "minimum_wire_compatibility_version": "7.17.0",
                "minimum_index_compatibility_version": "7.0.0",
            },
            "tagline": "You Know, for Search",
        },
        headers=PRODUCT,
    )


def cluster_health() -> JSONResponse:
    return JSONResponse(
        {
            "cluster_name": "bytefreezer",
            "status": "green",
            "timed_out": False,
            "number_of_nodes": 1,
            "number_of_data_nodes": 1,
        },
        headers=PRODUCT,
    )


def cat_health() -> Response:
    return Response("bytefreezer green\n", media_type="text/plain", headers=PRODUCT)
