"""The control service's REST API under ``/api/v1`` (Starlette).

Every route but ``/api/v1/health`` needs an admin key (``Authorization: Bearer ...``). Errors
answer JSON ``{"error": message, "type": name}`` with 400/401/403/404/409/410.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bytefreezer import errors
from bytefreezer.control.models import (
    STAGES,
    DatasetSpec,
    DatasetStatus,
    HealthReport,
    Lease,
    Tenant,
    Usage,
)
from bytefreezer.control.store import ControlStore
from bytefreezer.control.validation import check_request

log = logging.getLogger(__name__)

_STATUS: dict[type[Exception], int] = {
    errors.ConfigError: 400,
    errors.InvalidName: 400,
    errors.AuthError: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.LeaseLost: 409,
    errors.Gone: 410,
}


def error_response(exc: Exception) -> JSONResponse:
    """The JSON error answer for a bytefreezer error."""
    status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 500)
    return JSONResponse({"error": str(exc), "type": type(exc).__name__}, status_code=status)


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value


Handler = Callable[[ControlStore, Request, Any], Any]


Endpoint = Callable[[Request], Awaitable[Response]]


def _route(
    path: str, method: str, handler: Handler, *, public: bool = False, status: int = 200
) -> tuple[str, str, Endpoint]:
    async def endpoint(request: Request) -> Response:
        store: ControlStore = request.app.state.store
        try:
            if not public:
                _require_admin(store, request)
            body: Any = None
            if method in ("POST", "PUT", "PATCH"):
                raw = await request.body()
                if raw:
                    try:
                        body = await request.json()
                    except ValueError:
                        raise errors.ConfigError("request body is not valid JSON") from None
            check_request(path, method, request.path_params, body)
            result = await _in_thread(handler, store, request, body)
        except ValidationError as exc:
            detail = errors.validation_problems(exc, root="body")
            return JSONResponse({"error": detail, "type": "ConfigError"}, status_code=400)
        except errors.BytefreezerError as exc:
            return error_response(exc)
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            message = f"bad request body: {type(exc).__name__}: {exc}"
            return JSONResponse({"error": message, "type": "ConfigError"}, status_code=400)
        if result is None:
            return Response(status_code=204)
        return JSONResponse(_dump(result), status_code=status)

    return path, method, endpoint


def _routes(entries: list[tuple[str, str, Endpoint]]) -> list[Route]:
    """One route per path serving all its methods, so a 405 names every allowed method."""
    by_path: dict[str, dict[str, Endpoint]] = {}
    for path, method, endpoint in entries:
        by_path.setdefault(path, {})[method] = endpoint
    routes = []
    for path, methods in by_path.items():

        async def dispatch(request: Request, methods: dict[str, Endpoint] = methods) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            return await methods[method](request)

        routes.append(Route(path, dispatch, methods=list(methods)))
    return routes


async def _in_thread(handler: Handler, store: ControlStore, request: Request, body: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(handler, store, request, body)


def _require_admin(store: ControlStore, request: Request) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key:
        raise errors.AuthError("missing bearer key: send 'Authorization: Bearer <admin key>'")
    if store.authenticate(key.strip()).role != "admin":
        raise errors.Forbidden("this call needs an admin key")


def _p(request: Request, name: str) -> str:
    value: str = request.path_params[name]
    return value


def _obj(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise errors.ConfigError("request body must be a JSON object")
    return body


def _create_key(s: ControlStore, r: Request, b: Any) -> Any:
    body = _obj(b)
    return s.create_key(
        body.get("tenant"),
        body.get("dataset"),
        role=body.get("role", "ingest"),
        description=str(body.get("description", "")),
        expires_in_days=body.get("expires_in_days"),
    )


def _tenant_key(s: ControlStore, r: Request, b: Any) -> Any:
    body = _obj(b or {})
    return s.create_key(
        _p(r, "tenant"),
        body.get("dataset"),
        description=body.get("description", ""),
        expires_in_days=body.get("expires_in_days"),
    )


def _put_dataset(s: ControlStore, r: Request, b: Any) -> Any:
    body = {**_obj(b), "name": _p(r, "dataset")}
    return s.put_dataset(_p(r, "tenant"), DatasetSpec.model_validate(body))


def _put_status(s: ControlStore, r: Request, b: Any) -> Any:
    status = DatasetStatus.model_validate(_obj(b))
    path = (_p(r, "tenant"), _p(r, "dataset"), _p(r, "stage"))
    if (status.tenant, status.dataset, status.stage) != path:
        # 409, not 400: the body is a valid status, only not this path's (the document cannot
        # say that the body must repeat the path)
        raise errors.Conflict(
            f"the {status.stage} status of {status.tenant}/{status.dataset} sent to the path of "
            f"{path[0]}/{path[1]}'s {path[2]} status"
        )
    return s.report_dataset_status(status)


STATES = ("ok", "failing", "unknown")


def _one_of(r: Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = r.query_params.get(name)
    if value is not None and value not in allowed:
        raise errors.ConfigError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def _statuses(s: ControlStore, r: Request, b: Any) -> Any:
    return s.list_dataset_statuses(
        r.path_params.get("tenant"), _one_of(r, "state", STATES), _one_of(r, "stage", STAGES)
    )


def _clear_status(s: ControlStore, r: Request, b: Any) -> Any:
    s.clear_dataset_status(_p(r, "tenant"), _p(r, "dataset"), _one_of(r, "stage", STAGES))


def _patch_tenant(s: ControlStore, r: Request, b: Any) -> Any:
    """``{"active": bool}`` and/or ``{"daily_ingest_mb": int | null}``."""
    body, name = _obj(b), _p(r, "tenant")
    if not body.keys() & {"active", "daily_ingest_mb"}:
        raise errors.ConfigError("give active and/or daily_ingest_mb")
    found = s.get_tenant(name)
    if "daily_ingest_mb" in body:
        found = s.set_daily_ingest_limit(name, body["daily_ingest_mb"])
    if "active" in body:
        found = s.update_tenant(name, active=bool(body["active"]))
    return found


def _usage(s: ControlStore, r: Request, b: Any) -> Any:
    days = r.query_params.get("days", "7")
    if not (days.isascii() and days.isdigit()) or not 1 <= int(days) <= 366:
        raise errors.ConfigError("days is a whole number from 1 to 366")
    return s.list_usage(r.path_params.get("tenant"), int(days))


def _report_usage(s: ControlStore, r: Request, b: Any) -> Any:
    if not isinstance(b, list):
        raise errors.ConfigError("a usage report is a list of usage entries")
    s.report_usage([Usage.model_validate(entry) for entry in b])


def _acquire(s: ControlStore, r: Request, b: Any) -> Any:
    body = _obj(b)
    return s.acquire_leases(list(body["names"]), str(body["owner"]), float(body["ttl"]))


def _release(s: ControlStore, r: Request, b: Any) -> Any:
    s.release_leases([Lease.model_validate(x) for x in _obj(b)["leases"]])


def _renew(s: ControlStore, r: Request, b: Any) -> Any:
    body = _obj(b)
    return s.renew_lease(Lease.model_validate(body["lease"]), float(body["ttl"]))


def _check(s: ControlStore, r: Request, b: Any) -> Any:
    s.check_lease(Lease.model_validate(_obj(b)["lease"]))
    return {"held": True}


def _health(s: ControlStore, r: Request, b: Any) -> Any:
    s.ping()
    return {"status": "ok"}


def _verify(s: ControlStore, r: Request, b: Any) -> Any:
    body = _obj(b)
    return s.verify_ingest(str(body["key"]), str(body["tenant"]), str(body["dataset"]))


def _identify(s: ControlStore, r: Request, b: Any) -> Any:
    return s.authenticate(str(_obj(b)["key"]))


ROUTES = [
    _route("/api/v1/health", "GET", _health, public=True),
    _route("/api/v1/tenants", "GET", lambda s, r, b: s.list_tenants()),
    _route(
        "/api/v1/tenants",
        "POST",
        lambda s, r, b: s.create_tenant(Tenant.model_validate(b)),
        status=201,
    ),
    _route("/api/v1/tenants/{tenant}", "GET", lambda s, r, b: s.get_tenant(_p(r, "tenant"))),
    _route("/api/v1/tenants/{tenant}", "PATCH", _patch_tenant),
    _route("/api/v1/tenants/{tenant}/usage", "GET", _usage),
    _route("/api/v1/usage", "GET", _usage),
    _route("/api/v1/usage", "POST", _report_usage, status=204),
    _route("/api/v1/tenants/{tenant}", "DELETE", lambda s, r, b: s.delete_tenant(_p(r, "tenant"))),
    _route("/api/v1/datasets", "GET", lambda s, r, b: s.list_datasets()),
    _route(
        "/api/v1/tenants/{tenant}/datasets",
        "GET",
        lambda s, r, b: s.list_datasets(_p(r, "tenant")),
    ),
    _route(
        "/api/v1/tenants/{tenant}/datasets",
        "POST",
        lambda s, r, b: s.create_dataset(_p(r, "tenant"), DatasetSpec.model_validate(b)),
        status=201,
    ),
    _route(
        "/api/v1/tenants/{tenant}/datasets/{dataset}",
        "GET",
        lambda s, r, b: s.get_dataset(_p(r, "tenant"), _p(r, "dataset")),
    ),
    _route("/api/v1/tenants/{tenant}/datasets/{dataset}", "PUT", _put_dataset),
    _route(
        "/api/v1/tenants/{tenant}/datasets/{dataset}",
        "DELETE",
        lambda s, r, b: s.delete_dataset(_p(r, "tenant"), _p(r, "dataset")),
    ),
    _route("/api/v1/tenants/{tenant}/keys", "POST", _tenant_key, status=201),
    _route("/api/v1/tenants/{tenant}/keys", "GET", lambda s, r, b: s.list_keys(_p(r, "tenant"))),
    _route("/api/v1/keys", "POST", _create_key, status=201),
    _route("/api/v1/keys", "GET", lambda s, r, b: s.list_keys(r.query_params.get("tenant"))),
    _route("/api/v1/keys/{key_id}", "DELETE", lambda s, r, b: s.revoke_key(_p(r, "key_id"))),
    _route("/api/v1/auth/verify", "POST", _verify),
    _route("/api/v1/auth/identify", "POST", _identify),
    _route("/api/v1/leases/acquire", "POST", _acquire),
    _route("/api/v1/leases/renew", "POST", _renew),
    _route("/api/v1/leases/check", "POST", _check),
    _route("/api/v1/leases/release", "POST", _release),
    _route(
        "/api/v1/leases",
        "GET",
        lambda s, r, b: s.list_leases(r.query_params.get("prefix", "")),
    ),
    _route(
        "/api/v1/health/reports",
        "POST",
        lambda s, r, b: s.report_health(HealthReport.model_validate(b)),
    ),
    _route("/api/v1/components", "GET", lambda s, r, b: s.list_components()),
    _route("/api/v1/dataset-status", "GET", _statuses),
    _route("/api/v1/tenants/{tenant}/dataset-status", "GET", _statuses),
    _route(
        "/api/v1/tenants/{tenant}/datasets/{dataset}/status",
        "GET",
        lambda s, r, b: s.get_dataset_status(_p(r, "tenant"), _p(r, "dataset")),
    ),
    _route("/api/v1/tenants/{tenant}/datasets/{dataset}/status", "DELETE", _clear_status),
    _route(
        "/api/v1/tenants/{tenant}/datasets/{dataset}/destination/check",
        "POST",
        lambda s, r, b: s.check_destination(_p(r, "tenant"), _p(r, "dataset")),
    ),
    _route("/api/v1/tenants/{tenant}/datasets/{dataset}/status/{stage}", "PUT", _put_status),
]


Preview = Callable[[list[dict[str, Any]], list[str], str, str], dict[str, Any]]


def _preview(s: ControlStore, r: Request, b: Any) -> Any:
    preview: Preview | None = r.app.state.preview
    if preview is None:
        raise errors.ConfigError("this control service was started without transform preview")
    body = _obj(b)
    lines = body.get("lines")
    if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
        raise errors.ConfigError("'lines' must be a list of strings (one record per line)")
    if len(lines) > 10_000:
        raise errors.ConfigError("at most 10000 lines per preview")
    tenant, name = _p(r, "tenant"), _p(r, "dataset")
    dataset = s.get_dataset(tenant, name)
    transforms = body.get("transforms", dataset.transforms)
    if not isinstance(transforms, list):
        raise errors.ConfigError("'transforms' must be a list of steps")
    return preview(transforms, lines, tenant, name)


ROUTES.append(
    _route("/api/v1/tenants/{tenant}/datasets/{dataset}/transformations/test", "POST", _preview)
)


async def _openapi(request: Request) -> Response:
    from bytefreezer.control.openapi import control_openapi

    return JSONResponse(control_openapi())


def create_app(store: ControlStore, *, preview: Preview | None = None) -> Starlette:
    """The control service app over ``store``; ``preview`` runs a chain over sample lines."""
    app = Starlette(routes=[*_routes(ROUTES), Route("/openapi.json", _openapi, methods=["GET"])])
    app.state.store = store
    app.state.preview = preview
    return app
