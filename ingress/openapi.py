"""The receiver's OpenAPI description (both ports), served at ``/openapi.json`` on the API port."""

from __future__ import annotations

from typing import Any

from bytefreezer import __version__
from bytefreezer.keys import NAME_PATTERN

_ERROR = {
    "description": "Refused; the message says why.",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            }
        }
    },
}
_RETRY = {
    **_ERROR,
    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}},
}
_NAME = {"type": "string", "pattern": f"^{NAME_PATTERN}$"}
_STORED = {
    "type": "object",
    "required": ["status", "key", "lines", "records", "bytes"],
    "properties": {
        "status": {"type": "string", "enum": ["stored", "spooled"]},
        "key": {"type": "string"},
        "lines": {"type": "integer", "description": "Non-blank lines of the body."},
        "records": {
            "type": "integer",
            "description": "Records piper will read: the lines, less a CSV or TSV header; a JSON body's array elements or objects (up to 16 MB; a larger one by its lines).",
        },
        "bytes": {"type": "integer"},
    },
}


def _ingest(summary: str) -> dict[str, Any]:
    printable = {"type": "string", "pattern": "^[\\x20-\\x7e]{1,512}$"}
    header = lambda name, text, schema=printable: {  # noqa: E731
        "name": name,
        "in": "header",
        "required": False,
        "schema": schema,
        "description": text,
    }
    digits = {"type": "string", "pattern": "^[0-9]{1,18}$"}
    hint = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,62}$"}
    return {
        "post": {
            "summary": summary,
            "parameters": [
                {"name": "tenant", "in": "path", "required": True, "schema": _NAME},
                {"name": "dataset", "in": "path", "required": True, "schema": _NAME},
                {"name": "format", "in": "query", "required": False, "schema": hint},
                header("Content-Encoding", "gzip, zstd, deflate or identity"),
                header(
                    "X-Proxy-Filename",
                    "tenant--dataset--... file name of the batch; must start with the path's tenant--dataset-- and hold no '..' or '/'",
                ),
                header("X-Proxy-Line-Count", "lines in the batch", digits),
                header("X-Proxy-Original-Bytes", "uncompressed size", digits),
                header("X-Proxy-Created-At", "when the proxy made the batch"),
                header("X-Proxy-Data-Hint", "input format of the batch", hint),
                header("X-Proxy-Batch-ID", "the proxy's batch id"),
            ],
            "security": [{"bearer": []}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-ndjson": {"schema": {"type": "string", "format": "binary"}},
                    "application/json": {"schema": {}},
                    "text/plain": {"schema": {"type": "string"}},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            "responses": {
                "200": {
                    "description": "Durable: stored, or spooled locally until storage is back.",
                    "content": {"application/json": {"schema": _STORED}},
                },
                "400": _ERROR,
                "401": _ERROR,
                "403": _ERROR,
                "404": _ERROR,
                "410": _ERROR,
                "413": _ERROR,
                "415": _ERROR,
                "429": _RETRY,
                "503": _RETRY,
            },
        }
    }


_BINARY = {"type": "string", "format": "binary"}
_STATUS_MESSAGE = {
    "description": "Refused: a google.rpc.Status with the reason, in the request's encoding.",
    "content": {
        "application/x-protobuf": {"schema": _BINARY},
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
            }
        },
    },
}


def _otlp(signal: str, request: str) -> dict[str, Any]:
    retry = {
        **_STATUS_MESSAGE,
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    }
    return {
        "post": {
            "summary": f"Ingest OTLP/HTTP {signal} (an {request}; webhook port 8080)",
            "parameters": [
                {"name": "tenant", "in": "path", "required": True, "schema": _NAME},
                {"name": "dataset", "in": "path", "required": True, "schema": _NAME},
            ],
            "security": [{"bearer": []}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-protobuf": {"schema": _BINARY},
                    "application/json": {"schema": {"type": "object"}},
                },
            },
            "responses": {
                "200": {
                    "description": "Durable: an empty export response.",
                    "content": {
                        "application/x-protobuf": {"schema": _BINARY},
                        "application/json": {"schema": {"type": "object"}},
                    },
                },
                **{code: _STATUS_MESSAGE for code in ("400", "401", "403", "404", "410")},
                **{code: _STATUS_MESSAGE for code in ("413", "415")},
                "429": retry,
                "503": retry,
            },
        }
    }


_HEC_ANSWER = {
    "description": "HEC's answer: text and code (an ackId on a channel)",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["text", "code"],
                "properties": {
                    "text": {"type": "string"},
                    "code": {"type": "integer"},
                    "ackId": {"type": "integer"},
                },
            }
        }
    },
}


def _hec(summary: str) -> dict[str, Any]:
    """A Splunk HEC ingest path: the token in `Authorization: Splunk <key>`."""
    return {
        "post": {
            "summary": summary,
            "security": [{"splunk": []}],
            "requestBody": {"content": {"application/json": {"schema": _BINARY}}},
            "responses": {
                code: _HEC_ANSWER
                for code in ("200", "400", "401", "403", "404", "410", "413", "415", "429", "503")
            },
        }
    }


_ELASTIC_ERROR = {
    "description": "Refused whole: Elasticsearch's error body (`Retry-After` on 429 and 503)",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error", "status"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["type", "reason"],
                        "properties": {
                            "type": {"type": "string"},
                            "reason": {"type": "string"},
                            "root_cause": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                    "status": {"type": "integer"},
                },
            }
        }
    },
}
_BULK_ANSWER = {
    "description": "The bulk API's answer: an item per action (201 for a stored document)",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["took", "errors", "items"],
                "properties": {
                    "took": {"type": "integer"},
                    "errors": {"type": "boolean"},
                    "items": {"type": "array", "items": {"type": "object"}},
                },
            }
        }
    },
}


def _bulk(summary: str, *parameters: dict[str, Any]) -> dict[str, Any]:
    """Elasticsearch's bulk API: action lines, each write action followed by its document."""
    operation = {
        "summary": summary,
        "parameters": list(parameters),
        "security": [{"bearer": []}, {"basic": []}],
        "requestBody": {"content": {"application/x-ndjson": {"schema": _BINARY}}},
        "responses": {
            "200": _BULK_ANSWER,
            **{code: _ELASTIC_ERROR for code in ("400", "401", "403", "413", "415", "429", "503")},
        },
    }
    return {"post": operation, "put": operation}


_TEXT = {"text/plain": {"schema": {"type": "string"}}}


_LOKI_BODY = {
    "application/x-protobuf": {"schema": _BINARY},
    "application/json": {"schema": {"type": "object"}},
}
_REMOTE_WRITE_BODY = {"application/x-protobuf": {"schema": _BINARY}}


def _pushed(summary: str, content: dict[str, Any], *parameters: dict[str, Any]) -> dict[str, Any]:
    """A push API answered as Loki's and Prometheus's receivers answer: 204 once durable, a
    text reason otherwise; the key as a bearer token or Basic auth's password."""
    return {
        "post": {
            "summary": summary,
            "parameters": list(parameters),
            "security": [{"bearer": []}, {"basic": []}],
            "requestBody": {"content": content},
            "responses": {
                "204": {"description": "Durable"},
                **{
                    code: {"description": "Refused, with the reason", "content": _TEXT}
                    for code in ("400", "401", "403", "404", "410", "413", "415", "429", "503")
                },
            },
        }
    }


_DATADOG_ERROR = {
    "description": "Refused: Datadog's error body, with the reason",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["errors"],
                "properties": {"errors": {"type": "array", "items": {"type": "object"}}},
            }
        }
    },
}


def _datadog(summary: str, *parameters: dict[str, Any]) -> dict[str, Any]:
    """Datadog's log intake: 202 once durable."""
    return {
        "post": {
            "summary": summary,
            "parameters": list(parameters),
            "security": [{"datadog": []}],
            "requestBody": {
                "content": {
                    "application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
                    "text/plain": {"schema": {"type": "string"}},
                }
            },
            "responses": {
                "202": {
                    "description": "Durable",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                **{
                    code: _DATADOG_ERROR
                    for code in ("400", "401", "403", "404", "410", "413", "415", "429", "503")
                },
            },
        }
    }


_FIREHOSE_ANSWER = {
    "type": "object",
    "required": ["requestId", "timestamp"],
    "properties": {
        "requestId": {"type": "string"},
        "timestamp": {"type": "integer"},
        "errorMessage": {"type": "string"},
    },
}


def _firehose(summary: str, *parameters: dict[str, Any]) -> dict[str, Any]:
    """Firehose's HTTP endpoint delivery: 200 once durable, Firehose's answer either way."""
    answer = {"application/json": {"schema": _FIREHOSE_ANSWER}}
    return {
        "post": {
            "summary": summary,
            "parameters": list(parameters),
            "security": [{"firehose": []}],
            "requestBody": {
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["records"],
                            "properties": {
                                "requestId": {"type": "string"},
                                "timestamp": {"type": "integer"},
                                "records": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["data"],
                                        "properties": {"data": {"type": "string"}},
                                    },
                                },
                            },
                        }
                    }
                }
            },
            "responses": {
                "200": {"description": "Durable", "content": answer},
                **{
                    code: {"description": "Refused, with errorMessage", "content": answer}
                    for code in ("400", "401", "403", "404", "410", "413", "415", "429", "503")
                },
            },
        }
    }


def _get(summary: str, schema: dict[str, Any], *extra: str) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": {"application/json": {"schema": schema}}}
    }
    for code in extra:
        responses[code] = _ERROR
    return {"get": {"summary": summary, "responses": responses}}


_STATUS = {"type": "object", "properties": {"status": {"type": "string"}}}


def receiver_openapi() -> dict[str, Any]:
    """The OpenAPI 3.0 document of the receiver's webhook and API ports."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "bytefreezer receiver", "version": __version__},
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "splunk": {"type": "apiKey", "in": "header", "name": "Authorization"},
                "basic": {"type": "http", "scheme": "basic"},
                "datadog": {"type": "apiKey", "in": "header", "name": "DD-API-KEY"},
                "firehose": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Amz-Firehose-Access-Key",
                },
            }
        },
        "paths": {
            "/webhook/{tenant}/{dataset}": _ingest("Ingest a body (webhook port 8080)"),
            "/{tenant}/{dataset}": _ingest("Ingest a body (webhook port 8080, original path)"),
            "/otlp/{tenant}/{dataset}/v1/logs": _otlp("logs", "ExportLogsServiceRequest"),
            "/otlp/{tenant}/{dataset}/v1/traces": _otlp("traces", "ExportTraceServiceRequest"),
            "/otlp/{tenant}/{dataset}/v1/metrics": _otlp("metrics", "ExportMetricsServiceRequest"),
            "/services/collector/event": _hec(
                "Splunk HEC events: JSON objects one after another (webhook port 8080)"
            ),
            "/services/collector/raw": _hec("Splunk HEC raw: a record per line"),
            "/services/collector/health": _get("HEC's health answer", {"type": "object"}),
            "/_bulk": _bulk("Elasticsearch's bulk API (webhook port 8080)"),
            "/{index}/_bulk": _bulk(
                "Elasticsearch's bulk API, the index named in the path",
                {"name": "index", "in": "path", "required": True, "schema": {"type": "string"}},
            ),
            "/": _get("Elasticsearch's root: the version shippers read", {"type": "object"}),
            "/loki/api/v1/push": _pushed("Grafana Loki's push API, with a dataset key", _LOKI_BODY),
            "/prometheus/api/v1/write": _pushed(
                "Prometheus remote write 1.0, with a dataset key", _REMOTE_WRITE_BODY
            ),
            "/{tenant}/{dataset}/prometheus/api/v1/write": _pushed(
                "Prometheus remote write 1.0 into the dataset the path names",
                _REMOTE_WRITE_BODY,
                {"name": "tenant", "in": "path", "required": True, "schema": _NAME},
                {"name": "dataset", "in": "path", "required": True, "schema": _NAME},
            ),
            "/api/v2/logs": _datadog("Datadog's log intake, with a dataset key"),
            "/{tenant}/{dataset}/api/v2/logs": _datadog(
                "Datadog's log intake into the dataset the path names",
                {"name": "tenant", "in": "path", "required": True, "schema": _NAME},
                {"name": "dataset", "in": "path", "required": True, "schema": _NAME},
            ),
            "/firehose": _firehose("Amazon Data Firehose's HTTP endpoint delivery, dataset key"),
            "/{tenant}/{dataset}/firehose": _firehose(
                "Amazon Data Firehose's HTTP endpoint delivery into the dataset the path names",
                {"name": "tenant", "in": "path", "required": True, "schema": _NAME},
                {"name": "dataset", "in": "path", "required": True, "schema": _NAME},
            ),
            "/{tenant}/{dataset}/loki/api/v1/push": _pushed(
                "Grafana Loki's push API into the dataset the path names",
                _LOKI_BODY,
                {"name": "tenant", "in": "path", "required": True, "schema": _NAME},
                {"name": "dataset", "in": "path", "required": True, "schema": _NAME},
            ),
            "/_cluster/health": _get("Elasticsearch's cluster health", {"type": "object"}),
            "/health": _get("Liveness of the webhook port", _STATUS),
            "/api/v1/health": _get("Liveness (API port 8081)", _STATUS),
            "/api/v1/ready": _get("Storage and control reachable", {"type": "object"}, "503"),
            "/api/v1/config": _get("Effective settings, secrets redacted", {"type": "object"}),
            "/api/v1/spool": _get(
                "Spool statistics",
                {
                    "type": "object",
                    "properties": {
                        "objects": {"type": "integer"},
                        "bytes": {"type": "integer"},
                        "max_bytes": {"type": "integer"},
                        "uploaded": {"type": "integer"},
                        "failures": {"type": "integer"},
                        "last_error": {"type": "string"},
                        "write_errors": {"type": "integer"},
                        "last_write_error": {"type": "string"},
                    },
                },
            ),
            "/openapi.json": _get("This document", {"type": "object"}),
        },
    }
