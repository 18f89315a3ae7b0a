"""How Slack's requests reach the bolt app: Socket Mode or the HTTP Events API.

Both hand each request to ``AsyncApp.async_dispatch`` and answer at once (the
adapter's middleware acks events before any work starts). HTTP requests are
verified here, before their body is even parsed (bolt verifies them again):
``v0=`` HMAC-SHA256 of ``v0:{timestamp}:{body}`` with the signing secret, and a
timestamp within five minutes; anything else gets 401.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.adapter.socket_mode.async_internals import run_async_bolt_app, send_async_response
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

__all__ = ["HttpReceiver", "SocketModeHandler"]

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # Slack's payloads are far smaller; anything bigger is not Slack


class SocketModeHandler(AsyncSocketModeHandler):
    """bolt's Socket Mode handler, except that every envelope is acknowledged.

    bolt leaves an envelope unacked when it fails or finds no listener, and Slack
    then re-delivers it; a malformed payload would come back again and again. Here
    it is logged once and acknowledged.
    """

    async def handle(self, client: AsyncBaseSocketModeClient, req: SocketModeRequest) -> None:  # type: ignore[override]
        started = time.time()
        try:
            response = await run_async_bolt_app(self.app, req)
        except Exception as err:  # one bad envelope must not stop the others
            log.warning("a Slack %s envelope could not be handled: %s", req.type, type(err).__name__)
            response = BoltResponse(status=500, body="")
        if response.status == 200:
            await send_async_response(client, req, response, started)  # type: ignore[arg-type]
            return
        log.info("acknowledged a Slack %s envelope that was not handled (status %s)", req.type, response.status)
        try:
            await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
        except Exception:  # the connection may be gone; Slack re-sends then
            log.debug("could not ack envelope %s", req.envelope_id)


class HttpReceiver:
    """An aiohttp server for Slack's Request URL (events, commands, shortcuts, modals).

    ``GET /healthz`` answers ``ok`` for load balancers and container health checks.
    """

    def __init__(self, app: AsyncApp, signing_secret: str, *, host: str, port: int, path: str) -> None:
        self.app = app
        self.verifier = SignatureVerifier(signing_secret)
        self.host, self.port, self.path = host, port, path
        self._runner: web.AppRunner | None = None
        self.bound_port = 0

    async def start(self) -> None:
        server = web.Application(client_max_size=MAX_BODY)
        server.add_routes([web.post(self.path, self._handle), web.get("/healthz", self._health)])
        self._runner = web.AppRunner(server, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server_obj = getattr(site, "_server", None)
        sockets = getattr(server_obj, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413)
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        if not self._fresh(timestamp) or not self.verifier.is_valid(raw, timestamp, signature):
            log.info("rejected a Slack request with a missing, stale or wrong signature")
            return web.Response(status=401, text="invalid signature")
        try:
            body = raw.decode("utf-8")
            bolt_request = AsyncBoltRequest(body=body, query=request.query_string, headers=dict(request.headers))
            response = await self.app.async_dispatch(bolt_request)
        except Exception as err:  # a malformed payload is the sender's problem
            log.warning("rejected a malformed Slack request: %s", type(err).__name__)
            return web.Response(status=400, text="malformed request", headers={"X-Slack-No-Retry": "1"})
        headers = {k: v[0] for k, v in response.headers.items() if v and k.lower() != "content-type"}
        content_type = (response.headers.get("content-type") or ["text/plain"])[0].split(";")[0].strip()
        body = response.body if isinstance(response.body, str) else str(response.body or "")
        return web.Response(status=response.status, text=body, headers=headers, content_type=content_type)

    @staticmethod
    def _fresh(timestamp: str) -> bool:
        try:
            return abs(time.time() - int(timestamp)) <= 300
        except ValueError:
            return False
