"""The receiver's API port (8081): health, readiness, redacted config, spool stats, OpenAPI."""

from __future__ import annotations

import dataclasses

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bytefreezer.errors import BytefreezerError
from bytefreezer.ingress.openapi import receiver_openapi
from bytefreezer.ingress.receiver import ReceiverState
from bytefreezer.settings import redacted


def create_api_app(state: ReceiverState) -> Starlette:
    """The API app over the receiver's shared state."""

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> JSONResponse:
        checks: dict[str, str] = {}
        for name, probe in (("storage", state.storage.ping), ("control", state.control.ping)):
            try:
                await run_in_threadpool(probe)
                checks[name] = "ok"
            except BytefreezerError as exc:
                checks[name] = str(exc)
            except Exception as exc:
                checks[name] = f"{type(exc).__name__}: {exc}"
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    async def config(request: Request) -> JSONResponse:
        return JSONResponse(redacted(state.settings))

    async def spool(request: Request) -> JSONResponse:
        return JSONResponse(dataclasses.asdict(state.spool.stats()))

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(receiver_openapi())

    return Starlette(
        routes=[
            Route("/api/v1/health", health, methods=["GET"]),
            Route("/api/v1/ready", ready, methods=["GET"]),
            Route("/api/v1/config", config, methods=["GET"]),
            Route("/api/v1/spool", spool, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
        ]
    )
