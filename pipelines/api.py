"""The API of a piper or packer process: health, readiness, redacted config, recent runs."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bytefreezer.control import ControlClient
from bytefreezer.errors import BytefreezerError
from bytefreezer.memory import arrow_pool
from bytefreezer.pipelines.poller import Poller
from bytefreezer.settings import Settings, redacted
from bytefreezer.storage import Storage


def create_worker_api(
    settings: Settings, storage: Storage, control: ControlClient, poller: Poller
) -> Starlette:
    """Routes: /api/v1/health, /ready, /config, and /pipelines (piper) or /status (packer)."""

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> JSONResponse:
        checks: dict[str, str] = {}
        for name, probe in (("storage", storage.ping), ("control", control.ping)):
            try:
                await run_in_threadpool(probe)
                checks[name] = "ok"
            except BytefreezerError as exc:
                checks[name] = str(exc)
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    async def config(request: Request) -> JSONResponse:
        return JSONResponse(redacted(settings))

    async def runs(request: Request) -> JSONResponse:
        history = list(poller.history)
        return JSONResponse(
            {
                "component": poller.name,
                "instance": settings.instance_id,
                "cycles": poller.cycles,
                "last_error": poller.last_error,
                "arrow_memory_pool": arrow_pool(),
                "last": history[-1] if history else None,
                "recent": history,
            }
        )

    state_path = "/api/v1/pipelines" if poller.name == "piper" else "/api/v1/status"
    return Starlette(
        routes=[
            Route("/api/v1/health", health, methods=["GET"]),
            Route("/api/v1/ready", ready, methods=["GET"]),
            Route("/api/v1/config", config, methods=["GET"]),
            Route(state_path, runs, methods=["GET"]),
        ]
    )
