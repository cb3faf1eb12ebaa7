"""Datadog's log intake in: what the Datadog Agent (`logs_config.logs_dd_url`), Vector's
`datadog_logs` sink and Datadog's API clients send, taken on the receiver's webhook port at
Datadog's path, `POST /api/v2/logs`, and at `/{tenant}/{dataset}/api/v2/logs`.

The body is a JSON array of log objects (or one object), or text with a log a line
(`text/plain`), gzip, deflate, zstd or none. Each log becomes a record as sent (`message`,
`ddsource`, `ddtags`, `hostname`, `service`, `status` and any other attribute); the query's
`ddsource`, `ddtags`, `hostname` and `service` apply to each log that has none. The key is a
bytefreezer ingest key in `DD-API-KEY` (or the query's `dd-api-key`). At `/api/v2/logs` a
dataset key sends to its dataset; the longer path names the tenant and dataset for any ingest
key (Vector's `endpoint`, a base URL, takes it). Datadog's answers: 202 `{}` once the logs are
durable, and `{"errors": [...]}` with the reason otherwise.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
from starlette.responses import JSONResponse, Response

from bytefreezer.ingress.bodies import NOT_DECODED, BodyError, decompress

QUERY_FIELDS = ("ddsource", "ddtags", "hostname", "service")
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    410: "Gone",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


def key_of(headers: Any, query: Any) -> str | None:
    """The ingest key of a request: ``DD-API-KEY``, or the query's ``dd-api-key``."""
    key = headers.get("dd-api-key") or query.get("dd-api-key") or ""
    return key.strip() or None


def log_records(
    raw: bytes, encoding: str, content_type: str, limit: int, query: dict[str, str]
) -> list[bytes]:
    """The records of a log intake request; ``BodyError`` 400, 413, 415."""
    if not raw:
        raise BodyError(400, "empty body")
    data = decompress(raw, encoding, limit)
    kind = content_type.split(";", 1)[0].strip().lower()
    extra = {name: query[name] for name in QUERY_FIELDS if query.get(name)}
    if kind in ("text/plain", "application/logplex-1"):
        text = data.decode("utf-8", "replace")
        logs: list[Any] = [{"message": line} for line in text.splitlines() if line.strip()]
    elif kind in ("application/json", ""):
        compact = _compact_logs(data) if not extra else None
        if compact is not None:
            return compact
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise BodyError(400, f"body is not JSON: {exc}") from None
        logs = value if isinstance(value, list) else [value]
    else:
        raise BodyError(415, f"logs are application/json or text/plain, not {kind!r}")
    records = []
    for number, log in enumerate(logs):
        if not isinstance(log, dict):
            raise BodyError(400, f"log {number} is not a JSON object")
        for name, value in extra.items():
            log.setdefault(name, value)
        records.append(orjson.dumps(log, option=orjson.OPT_NON_STR_KEYS))
    return records


_RAW_LOGS = msgspec.json.Decoder(list[msgspec.Raw])


def _compact_logs(data: bytes) -> list[bytes] | None:
    """The logs of the usual body, a compact JSON array of objects, each as sent (checked by
    msgspec, which builds nothing of them; the body's UTF-8 checked once). None for any other
    body (pretty-printed, one object, not JSON): ``log_records`` reads it log by log."""
    if b"\n" in data or b"\r" in data:
        return None
    try:
        data.decode("utf-8")
        logs = list(map(bytes, _RAW_LOGS.decode(data)))
    except (UnicodeDecodeError, *NOT_DECODED):
        return None
    if not all(log[:1] == b"{" for log in logs):
        return None
    return logs


def accepted() -> Response:
    return JSONResponse({}, status_code=202)


def error(status: int, reason: str, retry: int | None = None) -> JSONResponse:
    """Datadog's error body."""
    headers = {"Retry-After": str(retry)} if retry else None
    title = _TITLES.get(status, "Error")
    return JSONResponse(
        {"errors": [{"status": str(status), "title": title, "detail": reason}]},
        status_code=status,
        headers=headers,
    )
