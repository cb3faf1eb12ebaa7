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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import msgspec
import orjson
from starlette.responses import JSONResponse, Response

from bytefreezer.ingress.bodies import NOT_DECODED, BodyError

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


# A document as the bulk API needs to see it: a JSON object, and whether it names its own
# ``_id``. msgspec checks the whole document's syntax but builds nothing for the fields it skips
# (a fourth of orjson's time for a dictionary). It does not check the UTF-8 of skipped strings:
# ``_documents`` checks the whole body's once.
class _Document(msgspec.Struct, rename={"id": "_id"}):
    id: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


_DOCUMENT = msgspec.json.Decoder(_Document)


@dataclass(slots=True)
class Bulk:
    """The items of a bulk request, column by column: an item per action, in order. Shippers
    send thousands of documents a request, so nothing here is an object per item."""

    actions: list[str]
    indexes: list[str | None]  # the action's ``_index``, else the path's
    ids: list[str | None]  # the action's ``_id``
    sources: list[bytes]  # the document's line as sent (stripped); b"" without one
    errors: dict[int, tuple[int, str, str]] = field(default_factory=dict)  # status, type, reason
    own_ids: set[int] = field(default_factory=set)  # items whose document has its own ``_id``

    def __len__(self) -> int:
        return len(self.actions)

    def fail(self, items: Iterable[int], status: int, reason: str, kind: str | None = None) -> None:
        error = (status, kind or _ERROR_TYPES.get(status, "exception"), reason)
        for item in items:
            self.errors[item] = error

    def pending(self) -> list[int]:
        """The items not failed (yet)."""
        if not self.errors:
            return list(range(len(self.actions)))
        return [item for item in range(len(self.actions)) if item not in self.errors]

    def lines(self, items: list[int]) -> list[bytes]:
        """The stored records of ``items``: each document's line as sent, with the action's
        ``_id`` first unless the document has its own."""
        sources, ids, own = self.sources, self.ids, self.own_ids
        if not own and ids.count(None) == len(ids):
            return [sources[item] for item in items]
        lines = []
        for item in items:
            given = ids[item]
            if given is None or item in own:
                lines.append(sources[item])
            else:
                lines.append(_with_id(sources[item], given))
        return lines


def _with_id(source: bytes, given: str) -> bytes:
    """``source``, a JSON object's line, with the field ``_id`` first."""
    rest = source[1:].lstrip()  # the line starts with "{" (stripped)
    return b'{"_id":' + orjson.dumps(given) + (b"" if rest.startswith(b"}") else b",") + rest


def parse_bulk(data: bytes, path_index: str | None) -> Bulk:
    """The items of a bulk body: action lines, each write action followed by its document.
    ``BulkError`` for a body the bulk API refuses whole (an action line that is not one, a
    write action without its document); a document that is no JSON object fails its item."""
    lines = list(filter(bytes.strip, data.split(b"\n")))
    if not lines:
        raise BulkError(400, "request body is required")
    first, count = lines[0], len(lines) // 2
    if len(lines) % 2 == 0 and lines[::2].count(first) == count:
        action, index, given = _action(first, 1, path_index)
        if action in WRITE_ACTIONS:  # shippers' usual body: one action line, each a document
            bulk = Bulk([action] * count, [index] * count, [given] * count, lines[1::2])
            _documents(bulk, range(count))
            return bulk
    return _items(lines, path_index)


def _items(lines: list[bytes], path_index: str | None) -> Bulk:
    """``parse_bulk`` for any body, line by line."""
    bulk = Bulk([], [], [], [])
    written: list[int] = []
    actions: dict[bytes, tuple[str, str | None, str | None]] = {}  # shippers repeat lines
    at = 0
    while at < len(lines):
        number = at + 1
        found = actions.get(lines[at])
        if found is None:
            found = _action(lines[at], number, path_index)
            if len(actions) < 64:
                actions[lines[at]] = found
        action = found[0]
        at += 1
        item = len(bulk.actions)
        bulk.actions.append(action)
        bulk.indexes.append(found[1])
        bulk.ids.append(found[2])
        source = b""
        if action == "delete":
            bulk.fail((item,), 400, "bytefreezer stores what is sent and does not delete documents")
        elif at == len(lines):
            raise BulkError(
                400,
                f"Malformed bulk request: the {action} action on line {number} has no "
                "document line after it",
            )
        elif action == "update":
            at += 1
            bulk.fail((item,), 400, "bytefreezer stores what is sent and does not update documents")
        else:
            source, at = lines[at], at + 1
            written.append(item)
        bulk.sources.append(source)
    _documents(bulk, written)
    return bulk


def _action(line: bytes, number: int, path_index: str | None) -> tuple[str, str | None, str | None]:
    """An action line's action, index and id."""
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
    index = meta.get("_index", path_index)
    given = meta.get("_id")
    return action, index if isinstance(index, str) else None, None if given is None else str(given)


def _documents(bulk: Bulk, items: Sequence[int]) -> None:
    """Check the documents of the write ``items``: the item of one that is no JSON object
    fails; the lines are stripped, and those with an ``_id`` of their own noted."""
    sources = bulk.sources
    every = len(items) == len(sources)  # each item a write (the shippers' usual body)
    lines = list(map(bytes.strip, sources if every else [sources[item] for item in items]))
    try:
        b"\n".join(lines).decode("utf-8")  # msgspec skips strings unchecked
        checked: list[_Document | str] = list(map(_DOCUMENT.decode, lines))
    except (UnicodeDecodeError, *NOT_DECODED):
        checked = list(map(_document, lines))
        for item, document in zip(items, checked, strict=True):
            if isinstance(document, str):
                bulk.fail((item,), 400, document, "document_parsing_exception")
    if every:
        bulk.sources = lines
    else:
        for item, line in zip(items, lines, strict=True):
            sources[item] = line
    if bulk.ids.count(None) < len(bulk.ids):  # an action named an id: does its document?
        for item, document in zip(items, checked, strict=True):
            if not isinstance(document, str) and document.id is not msgspec.UNSET:
                bulk.own_ids.add(item)


def _document(line: bytes) -> _Document | str:
    """One document checked alone: what it decodes to, or why it does not."""
    try:
        line.decode("utf-8")
        return _DOCUMENT.decode(line)
    except UnicodeDecodeError as exc:
        return f"failed to parse: invalid UTF-8 at byte {exc.start}"
    except msgspec.ValidationError:
        return "failed to parse: the document is not a JSON object"
    except NOT_DECODED as exc:
        return f"failed to parse: {exc}"


# The rest of a stored document's item, after its index and id.
_CREATED = (
    b',"_version":1,"result":"created","_shards":{"total":1,"successful":1,"failed":0},'
    b'"_seq_no":0,"_primary_term":1,"status":201}}'
)


def answer(bulk: Bulk, took_ms: int, default_index: str = "") -> Response:
    """The bulk API's answer for ``bulk``, a stored item's JSON from a template per action and
    index (building and encoding a dictionary each took half the request's time);
    ``default_index`` names the index of the items whose action named none."""
    prefix = uuid.uuid4().hex[:12].encode()
    templates: dict[tuple[str, str | None], tuple[bytes, bytes]] = {}  # without an id, with
    errors, ids = bulk.errors, bulk.ids
    parts = []
    for item, target in enumerate(zip(bulk.actions, bulk.indexes, strict=True)):
        given = ids[item]
        failed = errors.get(item) if errors else None
        if failed is not None:
            status, kind, reason = failed
            shown = {
                "_index": target[1] or default_index,
                "_id": (prefix + b"%08x" % item).decode() if given is None else given,
                "status": status,
                "error": {"type": kind, "reason": reason},
            }
            parts.append(orjson.dumps({target[0]: shown}))
            continue
        found = templates.get(target)
        if found is None:
            index = orjson.dumps(target[1] or default_index).replace(b"%", b"%%")
            head = b'{"' + target[0].encode() + b'":{"_index":' + index + b',"_id":'
            found = templates[target] = (
                head + b'"' + prefix + b'%08x"' + _CREATED,
                head + b"%s" + _CREATED,
            )
        parts.append(found[0] % item if given is None else found[1] % orjson.dumps(given))
    body = b"".join(
        (
            b'{"took":',
            str(took_ms).encode(),
            b',"errors":',
            b"true" if errors else b"false",
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
