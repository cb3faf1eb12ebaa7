"""The control service's OpenAPI document, built from its models (served at /openapi.json)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from bytefreezer import __version__
from bytefreezer.control.models import (
    ApiKeyInfo,
    Dataset,
    DatasetSpec,
    DatasetStatus,
    DestinationCheck,
    HealthReport,
    KeyScope,
    Lease,
    NewApiKey,
    Tenant,
    Usage,
)
from bytefreezer.keys import NAME_PATTERN

_REF = "#/components/schemas/{model}"
_ERROR = {
    "description": "Refused; the message says why.",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error", "type"],
                "properties": {"error": {"type": "string"}, "type": {"type": "string"}},
            }
        }
    },
}
_NAME = {"type": "string", "pattern": f"^{NAME_PATTERN}$"}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(
    summary: str,
    ok: dict[str, Any] | None,
    *,
    status: str = "200",
    body: dict[str, Any] | None = None,
    params: list[str] = (),  # type: ignore[assignment]
    errors: tuple[str, ...] = ("400", "401", "403", "404"),
    public: bool = False,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": [
            {"name": p, "in": "path", "required": True, "schema": _NAME} for p in params
        ],
        "responses": {status: ok if ok is not None else {"description": "Done, no content."}},
    }
    if not public:
        operation["security"] = [{"bearer": []}]
        for code in ("401", "403"):
            operation["responses"][code] = _ERROR
    for code in errors:
        operation["responses"].setdefault(code, _ERROR)
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return operation


def control_openapi() -> dict[str, Any]:
    """The OpenAPI 3.0 document of the control service."""
    schemas: dict[str, Any] = {}
    for model in (
        Tenant,
        DatasetSpec,
        Dataset,
        ApiKeyInfo,
        NewApiKey,
        KeyScope,
        Lease,
        HealthReport,
        DatasetStatus,
        DestinationCheck,
        Usage,
    ):
        schema = model.model_json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    lease_body: dict[str, Any] = {
        "type": "object",
        "required": ["lease"],
        "properties": {"lease": _ref(Lease)},
    }
    key_body = {
        "type": "object",
        "properties": {
            "tenant": {"anyOf": [_NAME, {"type": "null"}]},
            "dataset": {"anyOf": [_NAME, {"type": "null"}]},
            "role": {"type": "string", "enum": ["ingest", "admin"]},
            "description": {"type": "string"},
            "expires_in_days": {
                "anyOf": [
                    {"type": "number", "minimum": 0.001, "maximum": 36500},
                    {"type": "null"},
                ]
            },
        },
    }
    lines = {
        "type": "object",
        "required": ["lines"],
        "properties": {
            "lines": {"type": "array", "items": {"type": "string"}, "maxItems": 100},
            "transforms": {"type": "array", "items": {"type": "object"}},
        },
    }
    t, d = ["tenant"], ["tenant", "dataset"]
    e409 = ("400", "404", "409")
    return {
        "openapi": "3.0.3",
        "info": {"title": "bytefreezer control service", "version": __version__},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/api/v1/health": {
                "get": _op("Liveness", _json({"type": "object"}), public=True, errors=())
            },
            "/api/v1/tenants": {
                "get": _op("Tenants", _json({"type": "array", "items": _ref(Tenant)}), errors=()),
                "post": _op(
                    "Create a tenant",
                    _json(_ref(Tenant)),
                    status="201",
                    body=_ref(Tenant),
                    errors=e409,
                ),
            },
            "/api/v1/tenants/{tenant}": {
                "get": _op("One tenant", _json(_ref(Tenant)), params=t),
                "patch": _op(
                    "Activate or deactivate; set or remove (null) the daily ingest limit",
                    _json(_ref(Tenant)),
                    params=t,
                    body={
                        "type": "object",
                        "minProperties": 1,
                        "additionalProperties": False,
                        "properties": {
                            "active": {"type": "boolean"},
                            "daily_ingest_mb": {
                                "anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]
                            },
                        },
                    },
                ),
                "delete": _op("Delete a tenant", None, status="204", params=t),
            },
            "/api/v1/datasets": {
                "get": _op(
                    "Every dataset", _json({"type": "array", "items": _ref(Dataset)}), errors=()
                )
            },
            "/api/v1/tenants/{tenant}/datasets": {
                "get": _op(
                    "A tenant's datasets",
                    _json({"type": "array", "items": _ref(Dataset)}),
                    params=t,
                ),
                "post": _op(
                    "Create a dataset",
                    _json(_ref(Dataset)),
                    status="201",
                    params=t,
                    body=_ref(DatasetSpec),
                    errors=e409,
                ),
            },
            "/api/v1/tenants/{tenant}/datasets/{dataset}": {
                "get": _op("One dataset", _json(_ref(Dataset)), params=d),
                "put": _op(
                    "Replace a dataset", _json(_ref(Dataset)), params=d, body=_ref(DatasetSpec)
                ),
                "delete": _op("Delete a dataset", None, status="204", params=d),
            },
            "/api/v1/tenants/{tenant}/datasets/{dataset}/transformations/test": {
                "post": _op(
                    "Preview a chain over sample lines",
                    _json({"type": "object"}),
                    params=d,
                    body=lines,
                ),
            },
            "/api/v1/tenants/{tenant}/datasets/{dataset}/status": {
                "get": _op(
                    "How piper's and packer's latest runs of a dataset went",
                    _json({"type": "array", "items": _ref(DatasetStatus)}),
                    params=d,
                ),
                "delete": _op(
                    "Forget the status (`?stage=`: one stage's); a failing dataset is tried "
                    "again at once",
                    None,
                    status="204",
                    params=d,
                ),
            },
            "/api/v1/tenants/{tenant}/datasets/{dataset}/destination/check": {
                "post": _op(
                    "Write and delete a probe object at the dataset's destination: does it take "
                    "writes now",
                    _json(_ref(DestinationCheck)),
                    params=d,
                ),
            },
            "/api/v1/tenants/{tenant}/datasets/{dataset}/status/{stage}": {
                "put": _op(
                    "Report a run's outcome (pipers and packers do)",
                    _json(_ref(DatasetStatus)),
                    params=[*d, "stage"],
                    body=_ref(DatasetStatus),
                    errors=("400", "401", "403", "404", "409"),
                ),
            },
            "/api/v1/dataset-status": {
                "get": _op(
                    "Every reported dataset status (`?state=failing` for the failing ones, "
                    "`?stage=piper` or `packer` for one stage's)",
                    _json({"type": "array", "items": _ref(DatasetStatus)}),
                    errors=("400",),
                )
            },
            "/api/v1/tenants/{tenant}/dataset-status": {
                "get": _op(
                    "A tenant's reported dataset statuses (`?state=` as above)",
                    _json({"type": "array", "items": _ref(DatasetStatus)}),
                    params=t,
                )
            },
            "/api/v1/usage": {
                "get": _op(
                    "What the receivers accepted, per dataset and UTC day (`?days=7`)",
                    _json({"type": "array", "items": _ref(Usage)}),
                    errors=("400",),
                ),
                "post": _op(
                    "Add a receiver's counts since its last report",
                    None,
                    status="204",
                    body={"type": "array", "items": _ref(Usage), "maxItems": 10000},
                    errors=("400",),
                ),
            },
            "/api/v1/tenants/{tenant}/usage": {
                "get": _op(
                    "A tenant's usage per dataset and UTC day (`?days=7`)",
                    _json({"type": "array", "items": _ref(Usage)}),
                    params=t,
                )
            },
            "/api/v1/tenants/{tenant}/keys": {
                "get": _op(
                    "A tenant's keys", _json({"type": "array", "items": _ref(ApiKeyInfo)}), params=t
                ),
                "post": _op(
                    "Create an ingest key",
                    _json(_ref(NewApiKey)),
                    status="201",
                    params=t,
                    body=key_body,
                ),
            },
            "/api/v1/keys": {
                "get": _op("Keys", _json({"type": "array", "items": _ref(ApiKeyInfo)}), errors=()),
                "post": _op("Create a key", _json(_ref(NewApiKey)), status="201", body=key_body),
            },
            "/api/v1/keys/{key_id}": {
                "delete": _op("Revoke a key", None, status="204", params=["key_id"])
            },
            "/api/v1/auth/verify": {
                "post": _op(
                    "Check an ingest key against a dataset",
                    _json(_ref(KeyScope)),
                    body={
                        "type": "object",
                        "required": ["key", "tenant", "dataset"],
                        "properties": {
                            "key": {"type": "string"},
                            "tenant": {"type": "string"},
                            "dataset": {"type": "string"},
                        },
                    },
                    errors=("400", "404", "410"),
                )
            },
            "/api/v1/auth/identify": {
                "post": _op(
                    "The scope of an ingest key (its tenant, and dataset if it has one)",
                    _json(_ref(KeyScope)),
                    body={
                        "type": "object",
                        "required": ["key"],
                        "properties": {"key": {"type": "string"}},
                    },
                    errors=("400",),
                )
            },
            "/api/v1/leases/acquire": {
                "post": _op(
                    "Take free or expired leases",
                    _json({"type": "array", "items": _ref(Lease)}),
                    body={
                        "type": "object",
                        "required": ["names", "owner", "ttl"],
                        "properties": {
                            "names": {"type": "array", "items": {"type": "string"}, "maxItems": 50},
                            "owner": {"type": "string"},
                            "ttl": {"type": "number", "minimum": 0},
                        },
                    },
                    errors=("400",),
                )
            },
            "/api/v1/leases/renew": {
                "post": _op(
                    "Extend a lease",
                    _json(_ref(Lease)),
                    body={
                        **lease_body,
                        "required": ["lease", "ttl"],
                        "properties": {
                            **lease_body["properties"],
                            "ttl": {"type": "number", "minimum": 0},
                        },
                    },
                    errors=("400", "409"),
                )
            },
            "/api/v1/leases/check": {
                "post": _op(
                    "Is the lease still held",
                    _json({"type": "object"}),
                    body=lease_body,
                    errors=("400", "409"),
                )
            },
            "/api/v1/leases/release": {
                "post": _op(
                    "Release leases",
                    None,
                    status="204",
                    body={
                        "type": "object",
                        "required": ["leases"],
                        "properties": {"leases": {"type": "array", "items": _ref(Lease)}},
                    },
                    errors=("400",),
                )
            },
            "/api/v1/leases": {
                "get": _op("Leases", _json({"type": "array", "items": _ref(Lease)}), errors=())
            },
            "/api/v1/health/reports": {
                "post": _op(
                    "Report a component's health",
                    None,
                    status="204",
                    body=_ref(HealthReport),
                    errors=("400",),
                )
            },
            "/api/v1/components": {
                "get": _op(
                    "Components and the age of their reports",
                    _json({"type": "array", "items": _ref(HealthReport)}),
                    errors=(),
                )
            },
        },
    }
