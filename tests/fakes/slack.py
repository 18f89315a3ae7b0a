"""A fake Slack on 127.0.0.1: the Web API over HTTP, signed HTTP events, and Socket Mode.

It speaks the wire protocol slack_sdk and slack-bolt use, so the real libraries
run against it unchanged:

- Web API: ``POST/GET /api/<method>`` with JSON, form or query arguments and the
  token in ``Authorization: Bearer``; answers ``{"ok": ...}`` like Slack, checks the
  token, and enforces the limits that matter (40,000-character text, modal sizes).
- Socket Mode: ``apps.connections.open`` (app token) returns ``ws://.../link``;
  the server says ``hello`` and sends envelopes; each delivery returns the ack.
- HTTP Events API: when ``request_url`` is set, deliveries are POSTed there,
  signed exactly as Slack signs them (``v0=`` HMAC-SHA256 of ``v0:{ts}:{body}``),
  with ``X-Slack-Retry-Num`` on retries; each delivery returns the HTTP answer.
- ``response_url``: payloads carry ``<url>/respond/<id>``; what is posted there
  is recorded in ``responses``.

- Native streaming: ``chat.startStream`` / ``appendStream`` / ``stopStream`` grow one
  message (12,000 characters a call; a recipient is required in channels); with
  ``streaming=False`` they answer ``unknown_method``, as a workspace without them does.

Like Slack, it echoes the bot's own posts, edits and deletions back as ``message``
events (``echo=True``), records posted and edited messages per channel, injects
429/500 answers on demand (``fail``) or at random (``storm``: a share of all calls of
some methods answered 429), and lets a test await a state (``wait_for``,
``next_message``) instead of sleeping. Every call is recorded with the moment it
arrived (``Call.at``, ``time.perf_counter``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

__all__ = ["Call", "Delivery", "FakeSlack", "Posted", "sign"]

T = TypeVar("T")

MAX_TEXT = 40_000  # Slack truncates beyond this; the fake refuses, so a test notices
MAX_STREAM_TEXT = 12_000  # markdown_text per chat.*Stream call


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """Slack's request signature for ``body`` sent at ``timestamp``."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass
class Posted:
    """One message the bot posted, with every text it has shown."""

    channel: str
    ts: str
    text: str
    thread_ts: str | None
    user: str
    versions: list[str] = field(default_factory=list)
    deleted: bool = False
    streaming: bool = False  # a chat.startStream message not stopped yet

    def as_payload(self, bot_id: str) -> dict[str, Any]:
        message = {"type": "message", "user": self.user, "bot_id": bot_id, "text": self.text, "ts": self.ts}
        if self.thread_ts:
            message["thread_ts"] = self.thread_ts
        return message


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    status: int
    at: float = field(default_factory=time.perf_counter)


@dataclass
class Delivery:
    """Slack's view of a delivery: the HTTP answer, or the Socket Mode ack (status 200)."""

    status: int
    body: Any = None


@dataclass
class _Failure:
    status: int
    retry_after: float
    error: str
    remaining: int


class FakeSlack:
    """``async with FakeSlack() as slack:`` then point the adapter at ``slack.api_url``."""

    def __init__(
        self,
        *,
        signing_secret: str = "fake-signing-secret-0123456789",
        bot_token: str = "xoxb-0000-fake-bot-token",
        app_token: str = "xapp-1-fake-app-token",
        team_id: str = "T0HEEDFUL",
        bot_user_id: str = "U0HEEDFUL",
        bot_id: str = "B0HEEDFUL",
        app_id: str = "A0HEEDFUL",
        echo: bool = True,
        timeout: float = 60.0,
        streaming: bool = True,
    ) -> None:
        self.signing_secret, self.bot_token, self.app_token = signing_secret, bot_token, app_token
        self.team_id, self.bot_user_id, self.bot_id, self.app_id = team_id, bot_user_id, bot_id, app_id
        self.echo, self.timeout, self.streaming = echo, timeout, streaming
        self.request_url: str | None = None
        """Set to the adapter's Request URL to deliver over HTTP instead of Socket Mode."""
        self.calls: list[Call] = []
        self.posts: list[Posted] = []
        self.ephemerals: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []
        self.views: list[dict[str, Any]] = []
        self.reactions: list[dict[str, Any]] = []
        self.users: dict[str, dict[str, Any]] = {}
        self.usergroups: dict[str, list[str]] = {}
        self.socket_connections = 0
        self._failures: dict[str, list[_Failure]] = {}
        self._storm: tuple[float, Callable[[], float], frozenset[str], random.Random] | None = None
        self._by_ts: dict[tuple[str, str], Posted] = {}
        self._holds: dict[str, asyncio.Event] = {}
        self.held: dict[str, int] = {}
        self._ts = itertools.count(1)
        self._ts_base = int(time.time())
        self._ids = itertools.count(1)
        self._triggers: set[str] = set()
        self._authors: dict[str, str] = {}  # ts -> user, of what people said
        self._changed = asyncio.Condition()
        self._echoes: set[asyncio.Task[Any]] = set()
        self._socket: web.WebSocketResponse | None = None
        self._socket_ready = asyncio.Event()
        self._acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self.port = 0

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> FakeSlack:
        server = web.Application()
        server.add_routes([
            web.route("*", "/api/{method}", self._api),
            web.get("/link/", self._link),
            web.post("/respond/{id}", self._respond),
        ])
        self._runner = web.AppRunner(server, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._client = aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        for task in list(self._echoes):
            task.cancel()
        await asyncio.gather(*self._echoes, return_exceptions=True)
        if self._socket is not None:
            await self._socket.close()
        if self._client is not None:
            await self._client.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeSlack:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    # -- set-up and failure injection -----------------------------------------------

    def add_user(self, user_id: str, *, admin: bool = False, owner: bool = False) -> None:
        self.users[user_id] = {"id": user_id, "name": user_id.lower(), "is_admin": admin, "is_owner": owner,
                               "is_primary_owner": False, "is_bot": False, "team_id": self.team_id}

    def fail(self, method: str, *, status: int = 429, retry_after: float = 1.0, times: int = 1,
             error: str | None = None) -> None:
        """Answer the next ``times`` calls of ``method`` with ``status`` (429 carries ``Retry-After``)."""
        code = error or ("ratelimited" if status == 429 else "internal_error")
        self._failures.setdefault(method, []).append(_Failure(status, retry_after, code, times))

    def storm(self, probability: float, retry_after: Callable[[], float] | float = 1.0, *,
              methods: tuple[str, ...] = ("chat.postMessage", "chat.update", "chat.startStream", "chat.appendStream",
                                          "chat.stopStream", "chat.postEphemeral"), seed: int = 0) -> None:
        """From now on answer each call of ``methods`` with a 429 at random, with ``probability``;
        ``retry_after`` (seconds, or a function giving them) goes in its ``Retry-After``. 0 ends it."""
        wait = retry_after if callable(retry_after) else (lambda: float(retry_after))
        self._storm = (probability, wait, frozenset(methods), random.Random(seed)) if probability > 0 else None

    def hold(self, method: str) -> asyncio.Event:
        """Keep calls of ``method`` waiting until the returned event is set (``held[method]`` counts them)."""
        release = self._holds[method] = asyncio.Event()
        return release

    # -- observing ----------------------------------------------------------------------

    def messages(self, channel: str) -> list[Posted]:
        """The bot's live (not deleted) messages in ``channel``, oldest first."""
        return [p for p in self.posts if p.channel == channel and not p.deleted]

    def thread(self, channel: str, thread_ts: str | None) -> list[Posted]:
        """The bot's live messages in one thread (``None``: outside any thread)."""
        return [p for p in self.messages(channel) if p.thread_ts == thread_ts]

    def called(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def wait_for(self, predicate: Callable[[], T], timeout: float | None = None) -> T:
        """Wait until ``predicate()`` is truthy (re-checked after every change); returns its value."""
        async with self._changed:
            return await asyncio.wait_for(self._changed.wait_for(predicate), timeout or self.timeout)

    async def next_message(self, channel: str | None = None, timeout: float | None = None) -> Posted:
        """The next message the bot posts (in ``channel``) after this call."""
        seen = len(self.posts)

        def new() -> Posted | None:
            return next((p for p in self.posts[seen:] if channel is None or p.channel == channel), None)

        return await self.wait_for(new, timeout)

    async def quiet(self) -> None:
        """Wait until the echoes of the bot's own posts have all been delivered."""
        while self._echoes:
            await asyncio.gather(*list(self._echoes), return_exceptions=True)

    @property
    def echoing(self) -> bool:
        return bool(self._echoes)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- the Web API ----------------------------------------------------------------

    def new_ts(self) -> str:
        """A fresh, increasing message timestamp, like Slack's ``1700000000.000100``."""
        return f"{self._ts_base}.{next(self._ts):06d}"

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        release = self._holds.get(method)
        if release is not None and not release.is_set():
            self.held[method] = self.held.get(method, 0) + 1
            await self._notify()
            await release.wait()
        args: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                args.update(await request.json())
            else:
                args.update(await request.post())
        token = request.headers.get("Authorization", "").removeprefix("Bearer ") or str(args.pop("token", ""))
        args.pop("token", None)
        failure = self._next_failure(method) or self._stormed(method)
        if failure is not None:
            self.calls.append(Call(method, args, failure.status))
            await self._notify()
            headers = {"Retry-After": f"{failure.retry_after:.3g}"} if failure.status == 429 else {}
            return web.json_response({"ok": False, "error": failure.error}, status=failure.status, headers=headers)
        self.calls.append(Call(method, args, 200))
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if token != expected:
            result: dict[str, Any] = {"ok": False, "error": "invalid_auth" if token else "not_authed"}
        else:
            handler = getattr(self, "_m_" + method.replace(".", "_"), None)
            result = {"ok": False, "error": "unknown_method"} if handler is None else handler(args)
            result = {"ok": True, **result} if "error" not in result else {"ok": False, **result}
        await self._notify()
        return web.json_response(result)

    def _stormed(self, method: str) -> _Failure | None:
        if self._storm is None:
            return None
        probability, wait, methods, rng = self._storm
        if method not in methods or rng.random() >= probability:
            return None
        return _Failure(429, wait(), "ratelimited", 1)

    def _find(self, channel: str, ts: str) -> Posted | None:
        posted = self._by_ts.get((channel, ts))
        return posted if posted is not None and not posted.deleted else None

    def _next_failure(self, method: str) -> _Failure | None:
        queue = self._failures.get(method)
        if not queue:
            return None
        failure = queue[0]
        failure.remaining -= 1
        if failure.remaining <= 0:
            queue.pop(0)
        return failure

    def _m_auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": "https://heedful-test.slack.com/", "team": "heedful test", "user": "heedful",
                "team_id": self.team_id, "user_id": self.bot_user_id, "bot_id": self.bot_id,
                "is_enterprise_install": False}

    def _m_apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": f"ws://127.0.0.1:{self.port}/link/?ticket={uuid.uuid4().hex}&app_id={self.app_id}"}

    def _m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, text = str(args.get("channel") or ""), args.get("text")
        if not channel:
            return {"error": "channel_not_found"}
        if not isinstance(text, str) or not text.strip():
            return {"error": "no_text"}
        if len(text) > MAX_TEXT:
            return {"error": "msg_too_long"}
        thread = str(args["thread_ts"]) if args.get("thread_ts") else None
        posted = Posted(channel, self.new_ts(), text, thread, self.bot_user_id, versions=[text])
        self.posts.append(posted)
        self._by_ts[(channel, posted.ts)] = posted
        self._echo(self._message_event(posted))
        return {"channel": channel, "ts": posted.ts, "message": posted.as_payload(self.bot_id)}

    def _m_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts, text = str(args.get("channel") or ""), str(args.get("ts") or ""), args.get("text")
        posted = self._find(channel, ts)
        if posted is None:
            return {"error": "message_not_found"}
        if not isinstance(text, str) or not text.strip():
            return {"error": "no_text"}
        if len(text) > MAX_TEXT:
            return {"error": "msg_too_long"}
        previous = posted.as_payload(self.bot_id)
        posted.text = text
        posted.versions.append(text)
        self._echo({"type": "message", "subtype": "message_changed", "hidden": True, "channel": channel,
                    "ts": self.new_ts(), "message": posted.as_payload(self.bot_id), "previous_message": previous,
                    "channel_type": _channel_type(channel)})
        return {"channel": channel, "ts": ts, "text": text}

    def _m_chat_startStream(self, args: dict[str, Any]) -> dict[str, Any]:
        if not self.streaming:
            return {"error": "unknown_method"}
        channel, text = str(args.get("channel") or ""), args.get("markdown_text") or ""
        if not channel:
            return {"error": "channel_not_found"}
        if not channel.startswith("D") and not (args.get("recipient_user_id") and args.get("recipient_team_id")):
            return {"error": "invalid_arguments"}  # channels need the recipient
        if not isinstance(text, str) or len(text) > MAX_STREAM_TEXT:
            return {"error": "msg_too_long"}
        thread = str(args["thread_ts"]) if args.get("thread_ts") else None
        posted = Posted(channel, self.new_ts(), text, thread, self.bot_user_id, versions=[text], streaming=True)
        self.posts.append(posted)
        self._by_ts[(channel, posted.ts)] = posted
        self._echo(self._message_event(posted))
        return {"channel": channel, "ts": posted.ts}

    def _streamed(self, args: dict[str, Any]) -> Posted | dict[str, Any]:
        if not self.streaming:
            return {"error": "unknown_method"}
        channel, ts = str(args.get("channel") or ""), str(args.get("ts") or "")
        posted = self._find(channel, ts)
        if posted is None:
            return {"error": "message_not_found"}
        if not posted.streaming:
            return {"error": "message_not_in_streaming_state"}
        text = args.get("markdown_text") or ""
        if not isinstance(text, str) or len(text) > MAX_STREAM_TEXT or len(posted.text) + len(text) > MAX_TEXT:
            return {"error": "msg_too_long"}
        if text:
            posted.text += text
            posted.versions.append(posted.text)
        return posted

    def _m_chat_appendStream(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("markdown_text"):
            return {"error": "no_text"}
        posted = self._streamed(args)
        return posted if isinstance(posted, dict) else {"channel": posted.channel, "ts": posted.ts}

    def _m_chat_stopStream(self, args: dict[str, Any]) -> dict[str, Any]:
        posted = self._streamed(args)
        if isinstance(posted, dict):
            return posted
        posted.streaming = False
        return {"channel": posted.channel, "ts": posted.ts, "message": posted.as_payload(self.bot_id)}

    def _m_chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(args.get("channel") or ""), str(args.get("ts") or "")
        posted = self._find(channel, ts)
        if posted is None:
            return {"error": "message_not_found"}
        posted.deleted = True
        self._echo({"type": "message", "subtype": "message_deleted", "hidden": True, "channel": channel,
                    "ts": self.new_ts(), "deleted_ts": ts, "previous_message": posted.as_payload(self.bot_id),
                    "channel_type": _channel_type(channel)})
        return {"channel": channel, "ts": ts}

    def _m_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel") or not args.get("user"):
            return {"error": "channel_not_found" if not args.get("channel") else "user_not_in_channel"}
        self.ephemerals.append({k: args.get(k) for k in ("channel", "user", "text", "thread_ts")})
        return {"message_ts": self.new_ts()}

    def _m_reactions_add(self, args: dict[str, Any]) -> dict[str, Any]:
        entry = {k: str(args.get(k) or "") for k in ("channel", "timestamp", "name")}
        if entry in self.reactions:
            return {"error": "already_reacted"}
        self.reactions.append(entry)
        return {}

    def _m_views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        trigger, view = args.get("trigger_id"), args.get("view")
        if isinstance(view, str):
            view = json.loads(view)
        if trigger not in self._triggers:
            return {"error": "invalid_trigger_id"}
        self._triggers.discard(trigger)
        problem = _check_modal(view)
        if problem:
            return {"error": "invalid_arguments", "response_metadata": {"messages": [problem]}}
        view = {**view, "id": f"V{next(self._ids):08d}", "team_id": self.team_id, "app_id": self.app_id}
        self.views.append(view)
        return {"view": view}

    def _m_users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = str(args.get("user") or "")
        if not user.startswith(("U", "W")):
            return {"error": "user_not_found"}
        return {"user": self.users.get(user) or {"id": user, "is_admin": False, "is_owner": False,
                                                   "is_primary_owner": False, "team_id": self.team_id}}

    def _m_usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        group = str(args.get("usergroup") or "")
        if group not in self.usergroups:
            return {"error": "no_such_subteam"}
        return {"users": list(self.usergroups[group])}

    async def _respond(self, request: web.Request) -> web.Response:
        payload = await request.json()
        self.responses.append({"id": request.match_info["id"], **payload})
        await self._notify()
        return web.Response(text="ok")

    # -- echoes of the bot's own activity ------------------------------------------------

    def _message_event(self, posted: Posted) -> dict[str, Any]:
        event = {**posted.as_payload(self.bot_id), "channel": posted.channel, "app_id": self.app_id,
                 "team": self.team_id, "channel_type": _channel_type(posted.channel)}
        return event

    def _echo(self, event: dict[str, Any]) -> None:
        if self.echo and (self._socket is not None or self.request_url):
            task = asyncio.create_task(self.send_event(event))
            self._echoes.add(task)
            task.add_done_callback(self._echoes.discard)

    # -- deliveries -----------------------------------------------------------------

    def event_body(self, event: dict[str, Any], *, team_id: str | None = None,
                   event_id: str | None = None) -> dict[str, Any]:
        """An Events API ``event_callback`` envelope around ``event``."""
        return {
            "token": "verification-token-unused", "team_id": team_id or self.team_id, "api_app_id": self.app_id,
            "event": event, "type": "event_callback", "event_id": event_id or f"Ev{next(self._ids):010d}",
            "event_time": int(time.time()), "event_context": uuid.uuid4().hex,
            "authorizations": [{"team_id": team_id or self.team_id, "user_id": self.bot_user_id, "is_bot": True,
                                "is_enterprise_install": False, "enterprise_id": None}],
            "is_ext_shared_channel": False,
        }

    async def send_event(self, event: dict[str, Any], *, team_id: str | None = None, event_id: str | None = None,
                         retry: int = 0) -> Delivery:
        return await self.deliver(self.event_body(event, team_id=team_id, event_id=event_id), retry=retry)

    async def say(self, channel: str, text: str, *, user: str = "U0ALICE", thread_ts: str | None = None,
                  team_id: str | None = None, **extra: Any) -> dict[str, Any]:
        """A person posts ``text``: a ``message`` event, and an ``app_mention`` too when it mentions the bot.

        Returns the message event (its ``ts`` is the new message's).
        """
        event = {"type": "message", "user": user, "text": text, "ts": self.new_ts(), "channel": channel,
                 "channel_type": _channel_type(channel), "team": team_id or self.team_id,
                 "event_ts": "", **extra}
        event["event_ts"] = event["ts"]
        self._authors[event["ts"]] = user
        if thread_ts:
            event["thread_ts"] = thread_ts
            bot_root = any(p.ts == thread_ts and p.channel == channel for p in self.posts)
            parent = self.bot_user_id if bot_root else self._authors.get(thread_ts)
            if parent and "parent_user_id" not in extra:
                event["parent_user_id"] = parent
        await self.send_event(event, team_id=team_id)
        if f"<@{self.bot_user_id}>" in text and not channel.startswith("D"):
            mention = {k: v for k, v in event.items() if k != "channel_type"} | {"type": "app_mention"}
            await self.send_event(mention, team_id=team_id)
        return event

    async def deliver(self, body: dict[str, Any], *, kind: str = "events_api", retry: int = 0) -> Delivery:
        """Send ``body`` the way Slack would: over HTTP to ``request_url``, else over Socket Mode."""
        if self.request_url:
            if kind == "events_api":
                raw, content_type = json.dumps(body).encode(), "application/json"
            elif kind == "interactive":
                raw = urlencode({"payload": json.dumps(body)}).encode()
                content_type = "application/x-www-form-urlencoded"
            else:
                raw, content_type = urlencode(body).encode(), "application/x-www-form-urlencoded"
            headers = {"Content-Type": content_type, **self.signed_headers(raw)}
            if retry:
                headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
            return await self.post_raw(raw, headers)
        envelope = {"envelope_id": str(uuid.uuid4()), "type": kind, "payload": body,
                    "accepts_response_payload": kind != "events_api", "retry_attempt": retry,
                    "retry_reason": "timeout" if retry else ""}
        ack = await self.send_envelope(envelope)
        return Delivery(200, ack.get("payload"))

    def signed_headers(self, raw: bytes, *, timestamp: int | None = None, secret: str | None = None) -> dict[str, str]:
        stamp = int(time.time()) if timestamp is None else timestamp
        return {"X-Slack-Request-Timestamp": str(stamp),
                "X-Slack-Signature": sign(secret or self.signing_secret, raw, stamp)}

    async def post_raw(self, raw: bytes, headers: dict[str, str]) -> Delivery:
        """POST exactly ``raw`` with ``headers`` to ``request_url`` (for bad signatures, bad bodies)."""
        assert self._client is not None and self.request_url
        async with self._client.post(self.request_url, data=raw, headers=headers) as response:
            text = await response.text()
        try:
            body: Any = json.loads(text) if text.startswith("{") else text
        except ValueError:
            body = text
        return Delivery(response.status, body)

    async def send_envelope(self, envelope: dict[str, Any] | str, *, wait_ack: bool = True) -> dict[str, Any]:
        """Send one Socket Mode frame; returns the client's ack (``{}`` when not awaited)."""
        await asyncio.wait_for(self._socket_ready.wait(), self.timeout)
        assert self._socket is not None
        envelope_id = envelope.get("envelope_id") if isinstance(envelope, dict) else None
        future: asyncio.Future[dict[str, Any]] | None = None
        if wait_ack and isinstance(envelope_id, str):
            future = self._acks[envelope_id] = asyncio.get_running_loop().create_future()
        await self._socket.send_str(envelope if isinstance(envelope, str) else json.dumps(envelope))
        if future is None:
            return {}
        try:
            return await asyncio.wait_for(future, self.timeout)
        finally:
            self._acks.pop(str(envelope_id), None)

    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        self._socket = socket
        self.socket_connections += 1
        await socket.send_str(json.dumps({"type": "hello", "num_connections": 1,
                                          "debug_info": {"host": "fake-slack", "approximate_connection_time": 3600},
                                          "connection_info": {"app_id": self.app_id}}))
        self._socket_ready.set()
        await self._notify()
        async for message in socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                data = json.loads(message.data)
            except ValueError:
                continue
            future = self._acks.get(str(data.get("envelope_id")))
            if future is not None and not future.done():
                future.set_result(data)
        if self._socket is socket:
            self._socket = None
            self._socket_ready.clear()
        return socket

    # -- interactivity --------------------------------------------------------------

    def _actor(self, user: str) -> dict[str, Any]:
        return {"id": user, "username": user.lower(), "name": user.lower(), "team_id": self.team_id}

    def _response_url(self) -> str:
        return f"{self.url}/respond/{next(self._ids)}"

    def _trigger(self) -> str:
        trigger = f"{next(self._ids)}.{uuid.uuid4().hex[:12]}"
        self._triggers.add(trigger)
        return trigger

    async def send_shortcut(self, callback_id: str, *, message: Posted | dict[str, Any], channel: str,
                            user: str = "U0ALICE", team_id: str | None = None) -> Delivery:
        """A person picks a message shortcut on ``message``."""
        payload_message = message.as_payload(self.bot_id) if isinstance(message, Posted) else message
        body = {
            "type": "message_action", "token": "verification-token-unused", "action_ts": f"{time.time():.6f}",
            "team": {"id": team_id or self.team_id, "domain": "heedful-test"}, "user": self._actor(user),
            "channel": {"id": channel, "name": channel.lower()}, "is_enterprise_install": False, "enterprise": None,
            "callback_id": callback_id, "trigger_id": self._trigger(), "response_url": self._response_url(),
            "message_ts": payload_message.get("ts"), "message": payload_message,
        }
        return await self.deliver(body, kind="interactive")

    async def submit_view(self, view: dict[str, Any], values: dict[str, str], *, user: str = "U0ALICE",
                          team_id: str | None = None) -> Delivery:
        """A person submits a modal: ``values`` maps each input block_id to the text typed."""
        state: dict[str, Any] = {}
        for block in view.get("blocks", []):
            if block.get("type") == "input" and block.get("block_id") in values:
                element = block["element"]
                state[block["block_id"]] = {element["action_id"]: {"type": element["type"],
                                                                   "value": values[block["block_id"]]}}
        body = {
            "type": "view_submission", "token": "verification-token-unused", "trigger_id": self._trigger(),
            "team": {"id": team_id or self.team_id, "domain": "heedful-test"}, "user": self._actor(user),
            "api_app_id": self.app_id, "is_enterprise_install": False, "enterprise": None,
            "view": {**view, "state": {"values": state}, "hash": uuid.uuid4().hex}, "response_urls": [],
        }
        return await self.deliver(body, kind="interactive")

    async def send_command(self, text: str, *, channel: str, user: str = "U0ALICE", command: str = "/heedful",
                           team_id: str | None = None) -> Delivery:
        """A person runs a slash command."""
        body = {
            "token": "verification-token-unused", "team_id": team_id or self.team_id, "team_domain": "heedful-test",
            "channel_id": channel, "channel_name": channel.lower(), "user_id": user, "user_name": user.lower(),
            "command": command, "text": text, "api_app_id": self.app_id, "is_enterprise_install": "false",
            "response_url": self._response_url(), "trigger_id": self._trigger(),
        }
        return await self.deliver(body, kind="slash_commands")


def _channel_type(channel: str) -> str:
    return {"D": "im", "G": "group"}.get(channel[:1], "channel")


def _check_modal(view: Any) -> str:
    """Slack's modal limits; an empty string when the view is acceptable."""
    if not isinstance(view, dict) or view.get("type") != "modal":
        return "view must be a modal"
    title = (view.get("title") or {}).get("text", "")
    if not title or len(title) > 24:
        return "title must be 1-24 characters"
    if len(view.get("private_metadata") or "") > 3000:
        return "private_metadata must be at most 3000 characters"
    blocks = view.get("blocks") or []
    if not blocks or len(blocks) > 100:
        return "a modal needs 1-100 blocks"
    for block in blocks:
        if block.get("type") == "section" and len((block.get("text") or {}).get("text", "")) > 3000:
            return "section text must be at most 3000 characters"
        element = block.get("element") or {}
        if element.get("type") == "plain_text_input" and int(element.get("max_length", 3000)) > 3000:
            return "plain_text_input max_length must be at most 3000"
    return ""
