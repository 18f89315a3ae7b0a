"""The operator's HTTP endpoints beside a running bot: health, readiness, Prometheus metrics.

- ``GET /healthz``: 200 while the engine serves and its model thread makes progress
  (503 when it stopped, died or has been stuck on one step past ``model.stall_timeout_s``),
  so an orchestrator restarts a hung process;
- ``GET /readyz``: 200 once every configured platform is connected (503 before, and
  while shutting down), so traffic and rollouts wait for it;
- ``GET /metrics``: Prometheus text format (turns, turn latency, queue depth per stage,
  corrections, LoRA jobs, platform rate limits);
- ``/admin/``: the admin console (``bots.admin_web``), for signed-in managers only.

A small Starlette app served by uvicorn inside the bot's own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from engine import Engine

__all__ = ["HealthServer", "health_app"]

log = logging.getLogger(__name__)


def health_app(engine: Engine, ready: Callable[[], bool], *, secure_cookies: bool | None = None) -> Starlette:
    """The endpoints as an ASGI app (``ready()``: are the platforms connected?), with the admin console
    under ``/admin`` (``secure_cookies``: see ``console_app``)."""
    from .admin_web import console_app

    async def healthz(request: Request) -> Response:
        health = engine.health()
        return JSONResponse(health, status_code=200 if health["healthy"] else 503)

    async def readyz(request: Request) -> Response:
        ok = ready() and engine.health()["healthy"]
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics),
                             Mount("/admin", app=console_app(engine, ready, secure_cookies=secure_cookies))])


class _Server(uvicorn.Server):
    """uvicorn inside our loop: the runner owns SIGINT/SIGTERM, not the HTTP server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


class HealthServer:
    """``await start()`` binds ``host:port`` (0: any free port; ``port`` is the bound one after ``start``)
    and serves in the background."""

    def __init__(self, engine: Engine, host: str, port: int, ready: Callable[[], bool], *,
                 secure_cookies: bool | None = None) -> None:
        self.host, self.port = host, port
        app = health_app(engine, ready, secure_cookies=secure_cookies)
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Serve in the background; raises ``OSError`` when the address cannot be bound."""
        # Bound here, not by uvicorn, which reports a bind error by calling sys.exit.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError as err:
            sock.close()
            raise OSError(f"cannot serve HTTP on {self.host}:{self.port}: {err.strerror} "
                          "(set HEEDFUL_HTTP_PORT, or HEEDFUL_HTTP_ENABLED=false)") from None
        self.port = int(sock.getsockname()[1])
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="heedful-http")
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(Exception):
            await self._task
        self._task = None
