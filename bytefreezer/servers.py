"""Running ASGI apps on Hypercorn and poller threads until a signal arrives."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

import h11
from hypercorn.asyncio import serve
from hypercorn.config import Config
from hypercorn.protocol.h11 import H11Protocol

from bytefreezer.memory import keep_freed_memory
from bytefreezer.settings import TlsSettings

log = logging.getLogger(__name__)

_MALFORMED = json.dumps(
    {"error": "malformed HTTP request: its request line, headers or framing cannot be read"}
).encode()


async def _send_error_with_reason(self: H11Protocol, status_code: int) -> None:
    """Hypercorn's answer to a request h11 cannot parse (an empty Content-Length, say) before
    any app sees it, with a JSON reason like every other 4xx of the components instead of an
    empty body without a content type."""
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_MALFORMED)).encode()),
        (b"connection", b"close"),
        *self.config.response_headers("h11"),
    ]
    await self._send_h11_event(h11.Response(status_code=status_code, headers=headers))
    await self._send_h11_event(h11.Data(data=_MALFORMED))
    await self._send_h11_event(h11.EndOfMessage())


H11Protocol._send_error_response = _send_error_with_reason  # type: ignore[method-assign]


def hypercorn_config(host: str, port: int, tls: TlsSettings | None = None) -> Config:
    """A quiet Hypercorn config bound to ``host:port``, serving HTTPS when ``tls`` is enabled."""
    config = Config()
    if tls is not None and tls.enabled:
        config.certfile = str(tls.cert_file)
        config.keyfile = str(tls.key_file)
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 10
    return config


def run_services(
    apps: list[tuple[Any, str, int]],
    workers: list[tuple[Callable[[], None], Callable[[], None]]] | None = None,
    tls: TlsSettings | None = None,
) -> None:
    """Serve ``apps`` and run ``workers`` (run, stop) threads until SIGTERM or SIGINT."""
    keep_freed_memory()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        threads = []
        for run, _ in workers or []:
            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            threads.append(thread)
        servers = [
            asyncio.create_task(
                serve(app, hypercorn_config(host, port, tls), shutdown_trigger=stop.wait)
            )
            for app, host, port in apps
        ]
        if servers:
            done, _ = await asyncio.wait(
                [*servers, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task in servers and task.exception() is not None:
                    stop.set()
                    raise task.exception()  # type: ignore[misc]
            stop.set()
            await asyncio.gather(*servers, return_exceptions=True)
        else:
            await stop.wait()
        log.info("stopping workers")
        for _, halt in workers or []:
            halt()
        for thread in threads:
            await asyncio.to_thread(thread.join)

    asyncio.run(main())
