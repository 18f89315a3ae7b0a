"""The Slack adapter: slack-bolt's async app in front of the engine.

What arrives, and what it becomes:

- ``app_mention`` in a channel, a direct message, or a message in a thread the bot
  is part of -> a ``Turn``; the reply streams into the thread (``chat.postMessage``,
  then ``chat.update`` about once a second, a new message near 4,000 characters).
  The thread is the ``ChannelKey`` thread; the channel is the learning scope.
- a thread reply ``correction: <better answer>``, the message shortcut "Correct this
  answer" (a modal), a :+1:/:-1: reaction on a bot message -> ``Feedback``.
- ``/heedful why|learned|forget|persona|help`` -> the engine's channel calls.

Events are acknowledged before any work starts and handled in the shared runtime's
tasks (``adapters.base``: ``idle()`` waits for them, ``stop()`` drains then cancels
them); a question waits in its channel's queue, and gets a short ephemeral "busy" note
when that queue is full. Retries are recognised by ``event_id``, and a message that
arrives both as ``app_mention`` and as ``message`` by its ts; feedback carries a stable
event id (the message's ts, the event's id, the modal's view id), so the engine applies
it once. Events from other workspaces are dropped. Every gesture acts on the channel it
was used in: a command's message link to another channel is refused, and the correction
modal's target is signed. Who may make the bot forget or set its persona: the
workspace's admins, or whoever may teach with ``manage = "teachers"``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from engine import ChannelKey, Engine, FeedbackKind, HeedfulError, NotFound, Turn

from ..base import Actor, BaseAdapter, Recent
from ..policy import parse_correction
from ..settings import SlackSettings
from .commands import run as run_command
from .markup import escape, from_slack, mentions, reaction_kind
from .transport import HttpReceiver, SocketModeHandler
from .views import (
    ANSWER_BLOCK,
    CORRECT_SHORTCUT,
    CORRECTION_VIEW,
    TEXTS,
    WHY_SHORTCUT,
    Target,
    correction_modal,
    read_correction,
)
from .web import CappedRateLimitRetry, Directory, Identity, Undeliverable, api_error, reply_calls, stream_calls

__all__ = ["SlackAdapter", "SlackStartError"]

log = logging.getLogger(__name__)

Respond = Callable[..., Awaitable[Any]]


class SlackStartError(RuntimeError):
    """Slack refused to let the adapter start (a bad token, say); the message says which setting."""


def _str(data: Any, key: str) -> str:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, str) else ""


def _dict(data: Any, key: str) -> dict[str, Any]:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, dict) else {}


def _well_formed(body: Any, kind: str) -> bool:
    """Whether an interaction or command has the shape Slack sends (its parts bolt reads are objects,
    its ids strings); anything else is acknowledged and dropped before bolt trips on it."""
    if not isinstance(body, dict):
        return False
    if not kind:  # a slash command
        return all(isinstance(body.get(k), str) and body.get(k) for k in ("channel_id", "user_id")) and isinstance(
            body.get("text", ""), str)
    objects = {"message_action": ("user", "channel", "message"), "shortcut": ("user",),
               "view_submission": ("user", "view")}.get(kind, ())
    if not all(isinstance(body.get(k), dict) for k in objects):
        return False
    return isinstance(_dict(body, "user").get("id"), str) and (
        kind != "view_submission" or isinstance(_dict(body, "view").get("private_metadata", ""), str))


class SlackAdapter(BaseAdapter[Actor]):
    """heedful in one Slack workspace, over Socket Mode or the HTTP Events API."""

    platform = "slack"
    texts = TEXTS
    message_limit = 3900
    """Characters per message before a reply continues in the next (Slack's advice: about 4,000)."""

    _INTERACTIONS = ("message_action", "shortcut", "view_submission")

    def __init__(self, engine: Engine, settings: SlackSettings) -> None:
        super().__init__(engine, settings)
        if settings.bot_token is None:
            raise SlackStartError("HEEDFUL_SLACK_BOT_TOKEN is not set")
        self.settings = settings
        token = settings.bot_token.get_secret_value().encode()
        self._view_key = hashlib.sha256(b"heedful-slack-view:" + token).digest()  # signs the modals' targets
        self.identity = Identity("", "", "")
        self.app: AsyncApp | None = None
        self.http: HttpReceiver | None = None
        self._socket: SocketModeHandler | None = None
        self._session: aiohttp.ClientSession | None = None
        self._web: AsyncWebClient | None = None  # retries 429s and 5xx itself
        self._poster: AsyncWebClient | None = None  # reply messages: 429s reach the streamer
        self._directory: Directory | None = None
        self._threads: Recent[str, bool] = Recent()  # "channel/thread_ts" of threads the bot is part of
        self._last_reply: Recent[str, str] = Recent()  # channel -> ts of the bot's latest reply there
        self._native_ok = True  # until the workspace refuses chat.startStream

    # -- lifecycle --------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return self.settings.resolved_mode

    async def connect(self) -> None:
        """Check the tokens with Slack, then serve in the background.

        Raises ``SlackStartError`` naming the setting Slack refused (``start`` closes what
        was opened then).
        """
        assert self.settings.bot_token is not None
        self._session = aiohttp.ClientSession()
        api_url = self.settings.api_url.rstrip("/") + "/"  # without the slash, slack_sdk drops the last segment
        token = self.settings.bot_token.get_secret_value()
        self._web = AsyncWebClient(token=token, base_url=api_url, session=self._session, retry_handlers=[
            AsyncConnectionErrorRetryHandler(), CappedRateLimitRetry(max_retry_count=2, cap=self.rate_limit_cap),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ])
        self._poster = AsyncWebClient(token=token, base_url=api_url, session=self._session)
        try:
            self.identity = await Identity.fetch(self._web)
        except SlackApiError as err:
            raise SlackStartError(f"Slack refused HEEDFUL_SLACK_BOT_TOKEN ({api_error(err)})") from None
        except aiohttp.ClientError as err:
            raise SlackStartError(f"cannot reach Slack at HEEDFUL_SLACK_API_URL ({type(err).__name__})") from None
        self.own_id = self.identity.user_id
        self._directory = Directory(self._web)
        secret = self.settings.signing_secret.get_secret_value() if self.settings.signing_secret else ""
        self.app = self._build_app(secret)
        if self.mode == "socket":
            await self._connect_socket()
        else:
            self.http = HttpReceiver(self.app, secret, host=self.settings.host, port=self.settings.port,
                                     path=self.settings.path)
            try:
                await self.http.start()
            except OSError as err:
                raise SlackStartError(f"cannot listen on HEEDFUL_SLACK_HOST/PORT {self.settings.host}:"
                                      f"{self.settings.port} ({err.strerror or err})") from None
        log.info("slack adapter serving team %s over %s", self.identity.team_id, self.mode)

    async def _connect_socket(self) -> None:
        assert self.app is not None and self._web is not None and self.settings.app_token is not None
        app_token = self.settings.app_token.get_secret_value()
        try:  # fail fast on a bad app token (the client would otherwise retry for ever)
            url = (await self._web.apps_connections_open(app_token=app_token)).get("url")
        except SlackApiError as err:
            raise SlackStartError(f"Slack refused HEEDFUL_SLACK_APP_TOKEN ({api_error(err)})") from None
        self._socket = SocketModeHandler(self.app, app_token=app_token, web_client=self._web)
        self._socket.client.wss_uri = url
        try:
            await asyncio.wait_for(self._socket.connect_async(), timeout=30)
        except TimeoutError:
            raise SlackStartError("could not open the Socket Mode connection within 30 s") from None

    async def stop(self) -> None:
        """Stop receiving, let running replies finish (up to ``shutdown_grace`` s), close.

        Safe to call twice, or after a failed ``start``.
        """
        self.tasks.closed = True  # from now on events are acknowledged, not handled
        if self._socket is not None:
            socket, self._socket = self._socket, None
            await socket.close_async()
        if self.http is not None:
            http, self.http = self.http, None
            await http.stop()
        await self.drain()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
        self.app = None

    @property
    def url(self) -> str:
        """HTTP mode: the local URL Slack's Request URL must reach (empty in Socket Mode)."""
        if self.http is None:
            return ""
        host = "127.0.0.1" if self.settings.host in ("0.0.0.0", "") else self.settings.host
        return f"http://{host}:{self.http.bound_port}{self.settings.path}"

    def _build_app(self, signing_secret: str) -> AsyncApp:
        app = AsyncApp(client=self._web, signing_secret=signing_secret, before_authorize=self._gatekeeper,
                       process_before_response=False)
        app.shortcut(CORRECT_SHORTCUT)(self._on_correct_shortcut)
        app.shortcut(WHY_SHORTCUT)(self._on_why_shortcut)
        app.view(CORRECTION_VIEW)(self._on_correction_submitted)
        app.command("/heedful")(self._on_command)
        app.error(self._on_error)
        return app

    # -- the runtime's hooks ----------------------------------------------------------

    async def is_manager(self, actor: Actor) -> bool:
        """A workspace admin or owner (``users.info``, cached)."""
        assert self._directory is not None
        return await self._directory.is_admin(actor.user_id)

    async def groups_of(self, actor: Actor, candidates: Iterable[str]) -> tuple[str, ...]:
        """The user groups (``S…``) among ``candidates`` the user is a member of."""
        assert self._directory is not None
        return await self._directory.groups_of(actor.user_id, candidates)

    def expected_failure(self, err: Exception) -> str | None:
        return f"gave up on a Slack reply: {err}" if isinstance(err, Undeliverable) else None

    # -- intake -----------------------------------------------------------------------

    async def _gatekeeper(self, body: Any, context: Any, next: Callable[[], Awaitable[Any]]) -> Any:
        """Runs before bolt's authorization: drop other workspaces; ack and queue events."""
        kind = _str(body, "type")
        if kind in ("url_verification", "ssl_check"):
            return await next()
        if kind == "app_rate_limited":
            log.warning("Slack is withholding events: this app exceeded its event rate limit")
            return BoltResponse(status=200, body="")
        if not self.identity.knows(context.team_id, context.enterprise_id):
            log.info("ignored a Slack %s from an unknown workspace", kind or "request")
            return BoltResponse(status=200, body="")
        if kind == "event_callback":
            self._accept_event(body)
            return BoltResponse(status=200, body="")
        if kind in self._INTERACTIONS or (not kind and _str(body, "command")):
            if not _well_formed(body, kind):
                log.info("ignored a malformed Slack %s", kind or "command")
                return BoltResponse(status=200, body="")
            return await next()
        return BoltResponse(status=200, body="")  # block actions, closed views, ...: nothing of ours

    def _accept_event(self, body: dict[str, Any]) -> None:
        event = _dict(body, "event")
        event_id = _str(body, "event_id")
        if event_id and not self.seen.first("event:" + event_id):
            return  # a retry (X-Slack-Retry-Num / Socket Mode retry_attempt) of an event we have
        team = _str(body, "team_id") or self.identity.team_id
        kind = _str(event, "type")
        if kind in ("app_mention", "message"):
            if _str(event, "subtype") == "message_deleted":
                deleted = _str(event, "deleted_ts") or _str(_dict(event, "previous_message"), "ts")
                self.withdraw(f"{_str(event, 'channel')}/{deleted}")
            else:
                self.spawn(self._on_message(event, team))
        elif kind == "reaction_added":
            self.spawn(self._on_reaction(event, team, event_id))

    async def _on_error(self, error: Exception) -> None:
        """bolt's listeners (acks, views) fail into the runtime's guard, as handlers do."""
        self.handler_failed(error)

    # -- conversations ----------------------------------------------------------------

    async def _on_message(self, event: dict[str, Any], team: str) -> None:
        subtype = _str(event, "subtype")
        if subtype not in ("", "thread_broadcast", "file_share") or ("subtype" in event and not subtype):
            return  # edits, joins, bot posts, ... and malformed subtypes
        user, channel, ts, raw = _str(event, "user"), _str(event, "channel"), _str(event, "ts"), _str(event, "text")
        if not user or not channel or not ts or self.from_self(user, bot=bool(event.get("bot_id"))):
            return  # bots (this one included) never get an answer: no loops
        if not isinstance(event.get("text"), str) and subtype != "file_share":
            return  # malformed
        thread_ts = _str(event, "thread_ts")
        in_thread = bool(thread_ts) and thread_ts != ts
        direct = _str(event, "channel_type") == "im" or (not _str(event, "channel_type") and channel.startswith("D"))
        key = ChannelKey(self.platform, channel, space=team,
                         thread=(thread_ts if in_thread else "") if direct else (thread_ts if in_thread else ts))
        addressed = direct or _str(event, "type") == "app_mention" or mentions(raw, self.identity.user_id)
        if not addressed and not (in_thread and await self._bot_in_thread(key)):
            return
        if not self.fresh(f"ts:{channel}/{ts}"):
            return  # the same post as app_mention and as message
        text = from_slack(raw, self.identity.user_id)
        if not text and subtype == "file_share":
            return  # a file without words: nothing to answer
        better = parse_correction(text)
        if better is not None:
            await self._correct_by_reply(key, user=user, ts=ts, better=better, top_level=not in_thread,
                                         under_mine=_str(event, "parent_user_id") == self.identity.user_id)
            return
        if not direct:
            self._threads.put(f"{channel}/{key.thread}", True)
        turn = Turn(channel=key, text=text, author_id=user, message_id=ts, reply_to=thread_ts if in_thread else "",
                    extra={"team": team})
        await self.serve(key, lambda: self._answer(turn, thread_ts=key.thread),
                         lambda busy: self._ephemeral(channel, user, escape(busy), key.thread))

    async def _bot_in_thread(self, key: ChannelKey) -> bool:
        if f"{key.channel}/{key.thread}" in self._threads:
            return True
        try:
            await self.engine.explain(key)  # finds the bot's last reply in this thread, if any
        except HeedfulError:
            return False
        self._threads.put(f"{key.channel}/{key.thread}", True)
        return True

    async def _answer(self, turn: Turn, *, thread_ts: str) -> None:
        assert self._poster is not None
        channel, question = turn.channel.channel, f"{turn.channel.channel}/{turn.message_id}"
        posted: list[str] = []
        send, edit = reply_calls(self._poster, channel, thread_ts, posted)
        native = None
        if self.settings.native_streaming and self._native_ok and thread_ts:
            native = stream_calls(self._poster, channel, thread_ts, posted, user_id=turn.author_id,
                                  team_id=str(turn.extra.get("team") or self.identity.team_id))
        async with self.answering(question, lambda: self._delete(channel, posted)):
            await self.respond(turn, send=send, edit=edit, limit=self.message_limit,
                               interval=self.settings.edit_interval, native=native)
        if posted:
            self._last_reply.put(channel, posted[0])

    def native_refused(self, why: str) -> None:
        if self._native_ok:
            log.warning("Slack refused chat.startStream (%s); streaming replies by chat.update from now on", why)
        self._native_ok = False

    async def _delete(self, channel: str, posted: list[str]) -> None:
        assert self._web is not None
        for ts in posted:
            try:
                await self._web.chat_delete(channel=channel, ts=ts)
            except SlackApiError as err:
                log.info("could not delete a withdrawn reply: %s", api_error(err))

    # -- feedback ---------------------------------------------------------------------

    async def _correct_by_reply(self, key: ChannelKey, *, user: str, ts: str, better: str, top_level: bool,
                                under_mine: bool) -> None:
        """``correction: ...`` corrects the bot's latest reply in the thread (or the message the thread is under)."""
        thread = key.thread if key.thread != ts else ""
        if not better:
            await self._ephemeral(key.channel, user, "Write the better answer after `correction:`.", thread)
            return
        target = ""
        if top_level and key.thread == ts:  # "@heedful correction: ..." outside a thread: my latest reply here
            target, key = self._last_reply.get(key.channel, ""), key.scope
        elif under_mine and not await self._bot_in_thread(key):  # a thread under my answer (say, in a DM)
            target, key = key.thread, key.scope
        receipt = await self.feedback(key, Actor(user), FeedbackKind.CORRECTION, message_id=target, text=better,
                                      event_id=self.event_key("message", key.channel, ts))
        if receipt.accepted:
            await self._react(key.channel, ts, "white_check_mark")
        await self._ephemeral(key.channel, user, escape(receipt.message), thread)

    async def _on_reaction(self, event: dict[str, Any], team: str, event_id: str) -> None:
        kind = reaction_kind(_str(event, "reaction"))
        item, user = _dict(event, "item"), _str(event, "user")
        channel, ts = _str(item, "channel"), _str(item, "ts")
        if kind is None or _str(item, "type") != "message" or not (user and channel and ts):
            return
        if self.from_self(user) or _str(event, "item_user") not in ("", self.identity.user_id):
            return  # not a reaction by a person on one of the bot's messages
        receipt = await self.feedback(ChannelKey(self.platform, channel, space=team), Actor(user), FeedbackKind(kind),
                                      message_id=ts, event_id=self.event_key("event", event_id) if event_id else "")
        if receipt.accepted and kind == "down":
            await self._ephemeral(channel, user, "Noted. To teach me the better answer, reply in the thread with "
                                  "`correction: <the better answer>`, or use *Correct this answer* on my message.")
        elif not receipt.accepted:
            log.debug("reaction on a message that is not a known reply: %s", receipt.message)

    async def _on_correct_shortcut(self, ack: Callable[..., Awaitable[Any]], shortcut: dict[str, Any],
                                   respond: Respond) -> None:
        await ack()
        self.spawn(self._open_correction(shortcut, respond))

    async def _open_correction(self, shortcut: dict[str, Any], respond: Respond) -> None:
        assert self._web is not None
        message, channel = _dict(shortcut, "message"), _str(_dict(shortcut, "channel"), "id")
        user, trigger = _str(_dict(shortcut, "user"), "id"), _str(shortcut, "trigger_id")
        team = _str(_dict(shortcut, "team"), "id") or self.identity.team_id
        ts = _str(message, "ts")
        if not (channel and user and trigger and ts):
            return
        if not self.identity.wrote(message):
            await respond(text="I can only learn from corrections to my own answers: use this on one of my "
                          "messages.", response_type="ephemeral")
            return
        if not await self.may_correct(Actor(user)):
            await respond(text=self.policy.refusal, response_type="ephemeral")
            return
        try:
            await self.engine.explain(ChannelKey(self.platform, channel, space=team), message_id=ts)
        except NotFound:
            await respond(text="I have no record of that answer any more, so there is nothing to correct. Ask me "
                          "again and correct the new answer.", response_type="ephemeral")
            return
        target = Target(team=team, channel=channel, ts=ts, thread=_str(message, "thread_ts"), user=user)
        try:
            await self._web.views_open(trigger_id=trigger,
                                       view=correction_modal(_str(message, "text"), target, self._view_key))
        except SlackApiError as err:
            log.warning("could not open the correction modal: %s", api_error(err))
            await respond(text="Slack did not let me open the correction form; please try again.",
                          response_type="ephemeral")

    async def _on_correction_submitted(self, ack: Callable[..., Awaitable[Any]], body: dict[str, Any],
                                       view: dict[str, Any]) -> None:
        better, target = read_correction(view, self._view_key)
        user = _str(_dict(body, "user"), "id")
        if target is None or not user or target.user not in ("", user):
            # Not a form this bot opened for this person (altered, or from before an update):
            # its channel cannot be trusted, so nothing is taught anywhere.
            log.warning("a correction form came back with a target this bot did not sign; refused")
            await ack(response_action="errors", errors={
                ANSWER_BLOCK: "This form can no longer be used. Close it and pick Correct this answer again."})
            return
        if not better:
            await ack(response_action="errors", errors={ANSWER_BLOCK: "Write the better answer here."})
            return
        await ack()
        self.spawn(self._teach_from_modal(user, target, better, _str(view, "id")))

    async def _teach_from_modal(self, user: str, target: Target, better: str, view_id: str) -> None:
        key = ChannelKey(self.platform, target.channel, space=target.team or self.identity.team_id,
                         thread=target.thread)
        receipt = await self.feedback(key, Actor(user), FeedbackKind.CORRECTION, message_id=target.ts, text=better,
                                      event_id=self.event_key("view", view_id) if view_id else "")
        await self._ephemeral(target.channel, user, escape(receipt.message), target.thread)

    async def _on_why_shortcut(self, ack: Callable[..., Awaitable[Any]], shortcut: dict[str, Any],
                               respond: Respond) -> None:
        await ack()
        self.spawn(self._why_message(shortcut, respond))

    async def _why_message(self, shortcut: dict[str, Any], respond: Respond) -> None:
        channel, ts = _str(_dict(shortcut, "channel"), "id"), _str(_dict(shortcut, "message"), "ts")
        team = _str(_dict(shortcut, "team"), "id") or self.identity.team_id
        if not (channel and ts):
            return
        try:
            explanation = await self.engine.explain(ChannelKey(self.platform, channel, space=team), message_id=ts,
                                                    viewer=_str(_dict(shortcut, "user"), "id"))
            text = TEXTS.explanation_text(explanation)
        except NotFound:
            text = "That is not one of my answers (or I no longer have it on record)."
        await respond(text=text, response_type="ephemeral")

    # -- /heedful ---------------------------------------------------------------------

    async def _on_command(self, ack: Callable[..., Awaitable[Any]], command: dict[str, Any],
                          respond: Respond) -> None:
        await ack()
        self.spawn(self._command(command, respond))

    async def _command(self, command: dict[str, Any], respond: Respond) -> None:
        channel, user = _str(command, "channel_id"), _str(command, "user_id")
        if not (channel and user):
            return
        key = ChannelKey(self.platform, channel, space=_str(command, "team_id") or self.identity.team_id)
        actor = Actor(user)
        trigger = _str(command, "trigger_id")
        event_id = self.event_key("command", trigger) if trigger else ""
        text, public = await run_command(
            self.engine, key, user, _str(command, "text"), may_manage=lambda: self.may_manage(actor),
            forget_answer=lambda where, ts: self.feedback(where, actor, FeedbackKind.FORGET, message_id=ts,
                                                          event_id=event_id),
            forget_all=lambda where, ids: self.forget_all(where, ids, author_id=user, event_id=event_id),
            refusal=self.manage_refusal, last_reply=self._last_reply.get(channel, ""),
            correct_me=lambda where, text: self.feedback(where, actor, FeedbackKind.CORRECTION,
                                                         message_id=self._last_reply.get(channel, ""), text=text,
                                                         event_id=event_id, personal=True))
        await respond(text=text, response_type="in_channel" if public else "ephemeral")

    # -- small Slack calls ------------------------------------------------------------

    async def _ephemeral(self, channel: str, user: str, text: str, thread: str = "") -> None:
        assert self._web is not None
        try:
            await self._web.chat_postEphemeral(channel=channel, user=user, text=text, thread_ts=thread or None)
        except SlackApiError as err:
            log.info("could not post an ephemeral message: %s", api_error(err))

    async def _react(self, channel: str, ts: str, name: str) -> None:
        assert self._web is not None
        try:
            await self._web.reactions_add(channel=channel, timestamp=ts, name=name)
        except SlackApiError as err:
            if api_error(err) != "already_reacted":
                log.info("could not add a reaction: %s", api_error(err))
