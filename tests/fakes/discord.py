"""A fake Discord on 127.0.0.1, for running the real discord.py against.

It speaks the wire protocol: REST under ``/api/v10`` (``Authorization: Bot <token>``,
JSON answers with ``Content-Type: application/json``, Discord's error codes, the
2,000-character limit, ``X-RateLimit-*`` headers, 429s with ``retry_after`` and a
``Via`` header) and the gateway over a websocket (HELLO, heartbeats and their ACKs,
IDENTIFY (a shard's too: each payload is kept in ``identifies``) -> READY and
GUILD_CREATE, dispatches with sequence numbers, RESUME with replay -> RESUMED,
INVALID_SESSION, RECONNECT, the 4014 close for a privileged intent the application
lacks). It keeps guilds, channels, threads and messages as Discord
would, records every request and every payload the bot sent, and answers interactions
(``/interactions/{id}/{token}/callback``, ``/webhooks/{app}/{token}/messages/@original``).

Tests play the users (``say``, ``react``, ``edit``, ``delete``, ``slash``,
``context_menu``, ``autocomplete``, ``submit_modal``, ``interact``), break things
(``fail_next`` for 429s with or without ``Via`` and 5xx, ``enforce_rate_limits``,
``drop_gateway``, ``hold_events``, ``replay_overlap``, ``request_reconnect``,
``invalidate_sessions``) and await what the bot does (``wait_for``, ``response``,
``sync``) instead of sleeping::

    async with FakeDiscord() as fake:
        guild = fake.guild()
        ...  # start the adapter against fake.api_url / fake.gateway_url
        asked = fake.say(guild.general, ann, f"<@{fake.bot_id}> hello", mentions=[fake.bot])
        await fake.sync()  # the bot has received (and dispatched) everything sent so far

``sync`` is a barrier through the gateway itself: the fake asks for a heartbeat (op 1)
and waits until the bot's heartbeat acknowledges the last sequence number sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import unquote

from aiohttp import WSMsgType, web

__all__ = [
    "MAX_CONTENT",
    "PLACEHOLDER_TAIL",
    "FakeDiscord",
    "FakeGuild",
    "Intent",
    "Interaction",
    "Permission",
    "Posted",
    "Request",
    "pings_possible",
]

T = TypeVar("T")

PLACEHOLDER_TAIL = " …"  # how the adapter marks a message still being written
MAX_CONTENT = 2000
DISCORD_EPOCH_MS = 1_420_070_400_000
API = "/api/v10"


class Permission:
    """Permission bits used by the fake (Discord's values)."""

    ADMINISTRATOR = 1 << 3
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    READ_MESSAGE_HISTORY = 1 << 16
    CREATE_PUBLIC_THREADS = 1 << 35
    SEND_MESSAGES_IN_THREADS = 1 << 38
    MEMBER = VIEW_CHANNEL | SEND_MESSAGES | READ_MESSAGE_HISTORY | ADD_REACTIONS | SEND_MESSAGES_IN_THREADS


class Intent:
    GUILDS = 1 << 0
    GUILD_MEMBERS = 1 << 1
    GUILD_MESSAGES = 1 << 9
    GUILD_MESSAGE_REACTIONS = 1 << 10
    DIRECT_MESSAGES = 1 << 12
    DIRECT_MESSAGE_REACTIONS = 1 << 13
    MESSAGE_CONTENT = 1 << 15
    PRIVILEGED = GUILD_MEMBERS | MESSAGE_CONTENT | (1 << 8)  # members, message content, presences


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def pings_possible(payload: dict[str, Any]) -> bool:
    """Whether a message payload could ping anyone (no ``allowed_mentions`` means Discord's defaults: yes)."""
    allowed = payload.get("allowed_mentions")
    if not isinstance(allowed, dict):
        return True
    return bool(allowed.get("parse") or allowed.get("users") or allowed.get("roles") or allowed.get("replied_user"))


@dataclass
class Request:
    """One REST request the bot made, and how the fake answered."""

    method: str
    path: str
    body: Any
    status: int
    authorized: bool
    at: float = field(default_factory=time.perf_counter)


@dataclass
class Posted:
    """A message the bot posted; ``texts`` is every text it showed, ``payloads`` every body that set them."""

    channel_id: str
    id: str
    texts: list[str]
    payloads: list[dict[str, Any]]
    reference: str | None = None
    deleted: bool = False

    @property
    def text(self) -> str:
        return self.texts[-1]

    @property
    def final(self) -> bool:
        return not self.text.endswith(PLACEHOLDER_TAIL)


@dataclass
class Interaction:
    """An interaction the fake sent, and everything the bot answered to it."""

    id: str
    token: str
    type: int
    payload: dict[str, Any]
    callbacks: list[dict[str, Any]] = field(default_factory=list)  # bodies POSTed to .../callback
    original_edits: list[dict[str, Any]] = field(default_factory=list)  # PATCH .../messages/@original
    followups: list[dict[str, Any]] = field(default_factory=list)  # POST /webhooks/{app}/{token}

    @property
    def text(self) -> str:
        """What the user finally sees as the answer (the reply, or the deferred reply's edit)."""
        for body in reversed(self.original_edits):
            if "content" in body:
                return str(body["content"])
        for body in self.callbacks:
            if body.get("type") == 4:
                return str((body.get("data") or {}).get("content", ""))
        return ""

    @property
    def ephemeral(self) -> bool:
        for body in self.callbacks:
            if body.get("type") in (4, 5):
                return bool(int((body.get("data") or {}).get("flags", 0)) & 64)
        return False

    @property
    def modal(self) -> dict[str, Any] | None:
        for body in self.callbacks:
            if body.get("type") == 9:
                return dict(body.get("data") or {})
        return None

    @property
    def answered(self) -> bool:
        """The answer is complete: a reply, or a defer followed by its edit; a modal, or choices."""
        types = [b.get("type") for b in self.callbacks]
        if 5 in types:
            return bool(self.original_edits or self.followups)
        return bool(types)


@dataclass
class FakeGuild:
    """Handy handles on a guild the fake made."""

    data: dict[str, Any]
    general: dict[str, Any]
    everyone: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.data["id"])


@dataclass
class _Fault:
    method: str
    path: re.Pattern[str]
    status: int
    times: int
    retry_after: float
    via: bool
    is_global: bool
    served: int = 0


@dataclass
class _Session:
    id: str
    events: list[tuple[int, str, Any]] = field(default_factory=list)  # (seq, t, d)

    @property
    def seq(self) -> int:
        return self.events[-1][0] if self.events else 0


class _RateLimitedError(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__("rate limited")
        self.retry_after = retry_after


class _ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


class FakeDiscord:
    """The fake Discord; ``async with FakeDiscord() as fake``."""

    def __init__(
        self,
        token: str = "MTAwMDAwMDAwMDAwMDAwMDAw.fake.discord-test-token",
        *,
        bot_name: str = "heedful",
        privileged_intents: bool = True,
        heartbeat_interval_ms: int = 41_250,
    ) -> None:
        self.token = token
        self._counter = itertools.count(1)
        self.bot = self.user(bot_name, bot=True)
        self.bot_id = self.bot["id"]
        self.app_id = self.snowflake()
        self.privileged_intents = privileged_intents
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.requests: list[Request] = []
        self.guilds: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, dict[str, dict[str, Any]]] = {}  # channel id -> message id -> payload
        self.posted: dict[str, list[Posted]] = {}  # channel id -> the bot's messages there, in order
        self.interactions: dict[str, Interaction] = {}
        self.commands: dict[str | None, list[dict[str, Any]]] = {}  # guild id (None: global) -> registered
        self.typing: list[str] = []  # channel ids the bot showed "typing" in
        self.bot_reactions: list[tuple[str, str, str]] = []  # (channel, message, emoji)
        self.identified_intents: int | None = None
        self.identifies: list[dict[str, Any]] = []  # every IDENTIFY's payload, the token left out (``shard``: [id, n])
        self.connections: list[tuple[str, str]] = []  # (path, "identify" | "resume") per gateway connection
        self.heartbeats: list[Any] = []
        self.replay_overlap = 0  # on RESUME, also re-send this many events the bot already acknowledged
        self.replayed: list[tuple[int, str, Any]] = []  # events re-sent on RESUME (missed, or overlap)
        self.hold_events = False  # events are queued but not sent (lost in transit, if the connection drops)
        self._faults: list[_Fault] = []
        self._sessions: dict[str, _Session] = {}
        self._session: _Session | None = None
        self._backlog: list[tuple[str, Any]] = []  # dispatched before any session
        self._ws: web.WebSocketResponse | None = None
        self._ws_request: web.Request | None = None
        self._sent_seq = 0  # the last sequence number written to the current connection
        self._acked_seq = 0  # the last sequence number the bot acknowledged in a heartbeat
        self._wake = asyncio.Event()  # something to send
        self._changed = asyncio.Event()  # anything a test may wait for
        self._writer: asyncio.Task[None] | None = None
        self._replay: list[tuple[int, str, Any]] = []
        self._buckets: dict[str, tuple[float, int]] = {}
        self.rate_limit = (50, 1.0)  # per route and channel: requests per window (seconds), as headers say
        self.enforce_rate_limits = False  # answer 429 (with Via) to a request beyond the bucket, as Discord does
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/resume", self._gateway)
        app.router.add_route("*", API + "/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{API}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @property
    def resume_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/resume"

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    # -- the world ------------------------------------------------------------------------

    def snowflake(self) -> str:
        millis = int(time.time() * 1000) - DISCORD_EPOCH_MS
        return str((millis << 22) | (next(self._counter) & 0x3FFFFF))

    def user(self, name: str, *, bot: bool = False) -> dict[str, Any]:
        user = {"id": self.snowflake(), "username": name.lower(), "global_name": name, "discriminator": "0",
                "avatar": None, "public_flags": 0}
        if bot:
            user["bot"] = True
        return user

    def guild(self, name: str = "Test guild", *, owner: dict[str, Any] | None = None) -> FakeGuild:
        """A guild with an @everyone role, a #general channel and the bot as a member."""
        gid = self.snowflake()
        everyone = {"id": gid, "name": "@everyone", "permissions": str(Permission.MEMBER), "position": 0,
                    "color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0}
        bot_role = {"id": self.snowflake(), "name": self.bot["global_name"], "permissions": str(Permission.MEMBER),
                    "position": 1, "color": 0, "hoist": False, "managed": True, "mentionable": False, "flags": 0,
                    "tags": {"bot_id": self.bot_id}}
        guild: dict[str, Any] = {
            "id": gid, "name": name, "icon": None, "owner_id": (owner or self.bot)["id"], "roles": [everyone, bot_role],
            "emojis": [], "stickers": [], "features": [], "member_count": 2, "large": False, "unavailable": False,
            "channels": [], "threads": [], "members": [self.member_payload(self.bot, [bot_role["id"]])],
            "voice_states": [], "presences": [], "stage_instances": [], "guild_scheduled_events": [],
            "soundboard_sounds": [], "mfa_level": 0, "verification_level": 0, "default_message_notifications": 0,
            "explicit_content_filter": 0, "nsfw_level": 0, "premium_tier": 0, "preferred_locale": "en-US",
            "system_channel_id": None, "afk_channel_id": None, "afk_timeout": 300, "joined_at": _now_iso(),
        }
        self.guilds[gid] = guild
        general = self._add_channel(guild, {"id": self.snowflake(), "type": 0, "name": "general"}, announce=False)
        if self._session is not None:
            self.dispatch("GUILD_CREATE", guild)
        return FakeGuild(guild, general, everyone)

    def role(self, guild: FakeGuild, name: str, *, permissions: int = 0) -> dict[str, Any]:
        role = {"id": self.snowflake(), "name": name, "permissions": str(permissions), "position": 2, "color": 0,
                "hoist": False, "managed": False, "mentionable": True, "flags": 0}
        guild.data["roles"].append(role)
        if self._session is not None:
            self.dispatch("GUILD_ROLE_CREATE", {"guild_id": guild.id, "role": role})
        return role

    def text_channel(self, guild: FakeGuild, name: str) -> dict[str, Any]:
        return self._add_channel(guild.data, {"id": self.snowflake(), "type": 0, "name": name})

    def thread(self, guild: FakeGuild, parent: dict[str, Any], *, owner: dict[str, Any], name: str = "a thread",
               thread_id: str | None = None, announce: bool = True) -> dict[str, Any]:
        """A public thread in ``parent`` started by ``owner``, announced with THREAD_CREATE unless ``announce``
        is off (a thread the bot has not heard of: it must look it up)."""
        thread = self._thread_payload(guild.id, parent["id"], owner["id"], name, thread_id or self.snowflake())
        self.channels[thread["id"]] = thread
        self.messages.setdefault(thread["id"], {})
        if not announce:
            return thread
        guild.data["threads"].append(thread)
        if self._session is not None:
            self.dispatch("THREAD_CREATE", thread | {"newly_created": True})
        return thread

    def dm(self, user: dict[str, Any]) -> dict[str, Any]:
        """The direct-message channel between ``user`` and the bot."""
        for channel in self.channels.values():
            if channel["type"] == 1 and channel["recipients"][0]["id"] == user["id"]:
                return channel
        channel = {"id": self.snowflake(), "type": 1, "recipients": [user], "last_message_id": None, "flags": 0}
        self.channels[channel["id"]] = channel
        self.messages[channel["id"]] = {}
        return channel

    def member_payload(self, user: dict[str, Any], roles: Iterable[str] = ()) -> dict[str, Any]:
        return {"user": user, "roles": list(roles), "joined_at": _now_iso(), "deaf": False, "mute": False,
                "nick": None, "avatar": None, "flags": 0, "pending": False, "premium_since": None}

    def permissions_of(self, guild_id: str, roles: Iterable[str], user_id: str) -> int:
        guild = self.guilds[guild_id]
        if guild["owner_id"] == user_id:
            return (1 << 53) - 1
        wanted = {guild_id, *roles}
        value = 0
        for role in guild["roles"]:
            if role["id"] in wanted:
                value |= int(role["permissions"])
        return (1 << 53) - 1 if value & Permission.ADMINISTRATOR else value

    def _add_channel(self, guild: dict[str, Any], channel: dict[str, Any], *, announce: bool = True) -> dict[str, Any]:
        channel |= {"guild_id": guild["id"], "position": len(guild["channels"]), "permission_overwrites": [],
                    "nsfw": False, "parent_id": None, "topic": None, "last_message_id": None,
                    "rate_limit_per_user": 0, "flags": 0}
        guild["channels"].append(channel)
        self.channels[channel["id"]] = channel
        self.messages[channel["id"]] = {}
        if announce and self._session is not None:
            self.dispatch("CHANNEL_CREATE", channel)
        return channel

    def _thread_payload(self, guild_id: str, parent_id: str, owner_id: str, name: str, thread_id: str,
                        archive_minutes: int = 1440) -> dict[str, Any]:
        return {"id": thread_id, "type": 11, "guild_id": guild_id, "parent_id": parent_id, "owner_id": owner_id,
                "name": name, "last_message_id": None, "member_count": 1, "message_count": 0,
                "rate_limit_per_user": 0, "flags": 0, "total_message_sent": 0,
                "thread_metadata": {"archived": False, "auto_archive_duration": archive_minutes,
                                    "archive_timestamp": _now_iso(), "locked": False}}

    # -- users act --------------------------------------------------------------------------

    def say(
        self,
        channel: dict[str, Any],
        author: dict[str, Any],
        content: str,
        *,
        mentions: Iterable[dict[str, Any]] = (),
        mention_roles: Iterable[str] = (),
        reply_to: dict[str, Any] | None = None,
        reply_ping: bool = True,
        roles: Iterable[str] = (),
        attachments: Iterable[dict[str, Any]] = (),
        embeds: Iterable[dict[str, Any]] = (),
        type: int = 0,
        webhook_id: str | None = None,
        mention_everyone: bool = False,
        reference_channel: str | None = None,
    ) -> dict[str, Any]:
        """``author`` posts in ``channel`` (MESSAGE_CREATE); a reply pings its target's author unless ``reply_ping``
        is switched off, as in Discord. ``reference_channel``: the channel the referenced message is in, when
        not ``channel`` (a forward)."""
        mentioned = list(mentions)
        message = self._message(channel, author, content, type=19 if reply_to is not None and type == 0 else type)
        message |= {"mention_roles": list(mention_roles), "attachments": list(attachments), "embeds": list(embeds),
                    "mention_everyone": mention_everyone}
        if reply_to is not None:
            message["message_reference"] = {"type": 0 if reference_channel is None else 1, "message_id": reply_to["id"],
                                            "channel_id": reference_channel or channel["id"],
                                            "guild_id": channel.get("guild_id")}
            message["referenced_message"] = reply_to
            if reply_ping and all(u["id"] != reply_to["author"]["id"] for u in mentioned):
                mentioned.append(reply_to["author"])
        message["mentions"] = mentioned
        if webhook_id is not None:
            message["webhook_id"] = webhook_id
        if channel.get("guild_id") and webhook_id is None:
            message["member"] = {k: v for k, v in self.member_payload(author, roles).items() if k != "user"}
        self.messages[channel["id"]][message["id"]] = message
        self.dispatch("MESSAGE_CREATE", message)
        return message

    def edit(self, message: dict[str, Any], content: str) -> dict[str, Any]:
        message |= {"content": content, "edited_timestamp": _now_iso()}
        self.dispatch("MESSAGE_UPDATE", message)
        return message

    def delete(self, message: dict[str, Any]) -> None:
        self.messages.get(message["channel_id"], {}).pop(message["id"], None)
        data = {"id": message["id"], "channel_id": message["channel_id"]}
        if message.get("guild_id"):
            data["guild_id"] = message["guild_id"]
        self.dispatch("MESSAGE_DELETE", data)

    def react(self, channel_id: str, message_id: str, user: dict[str, Any], emoji: str = "👍",
              *, roles: Iterable[str] = ()) -> None:
        """``user`` adds a reaction (MESSAGE_REACTION_ADD, with ``message_author_id`` as Discord sends it)."""
        channel = self.channels[channel_id]
        target = self.messages.get(channel_id, {}).get(message_id)
        data: dict[str, Any] = {"user_id": user["id"], "channel_id": channel_id, "message_id": message_id,
                                "emoji": {"id": None, "name": emoji}, "burst": False, "type": 0}
        if target is not None:
            data["message_author_id"] = target["author"]["id"]
        if channel.get("guild_id"):
            data["guild_id"] = channel["guild_id"]
            data["member"] = self.member_payload(user, roles)
        self.dispatch("MESSAGE_REACTION_ADD", data)

    def _message(self, channel: dict[str, Any], author: dict[str, Any], content: str, *, type: int = 0,
                 message_id: str | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {
            "id": message_id or self.snowflake(), "channel_id": channel["id"], "author": author, "content": content,
            "timestamp": _now_iso(), "edited_timestamp": None, "tts": False, "mention_everyone": False,
            "mentions": [], "mention_roles": [], "attachments": [], "embeds": [], "pinned": False, "type": type,
            "flags": 0, "components": [],
        }
        if channel.get("guild_id"):
            message["guild_id"] = channel["guild_id"]
        channel["last_message_id"] = message["id"]
        return message

    # -- interactions -----------------------------------------------------------------------

    def interact(self, channel: dict[str, Any], user: dict[str, Any], type: int, data: dict[str, Any] | None,
                 *, roles: Iterable[str] = ()) -> Interaction:
        """Send an INTERACTION_CREATE of ``type`` (2 command, 3 component, 4 autocomplete, 5 modal submit)."""
        iid, token = self.snowflake(), "itok-" + secrets.token_urlsafe(24)
        channel_data = dict(channel)
        payload: dict[str, Any] = {
            "id": iid, "application_id": self.app_id, "type": type, "token": token, "version": 1,
            "channel_id": channel["id"], "channel": channel_data, "locale": "en-US", "app_permissions": "0",
            "attachment_size_limit": 10_485_760, "entitlements": [], "authorizing_integration_owners": {},
        }
        if data is not None:
            payload["data"] = data
        guild_id = channel.get("guild_id")
        if guild_id:
            roles = list(roles)
            member = self.member_payload(user, roles)
            member["permissions"] = str(self.permissions_of(guild_id, roles, user["id"]))
            payload |= {"guild_id": guild_id, "member": member, "guild_locale": "en-US", "context": 0,
                        "guild": {"id": guild_id, "locale": "en-US", "features": []}}
        else:
            payload |= {"user": user, "context": 1}
        record = Interaction(iid, token, type, payload)
        self.interactions[iid] = record
        self.dispatch("INTERACTION_CREATE", payload)
        return record

    def slash(self, channel: dict[str, Any], user: dict[str, Any], name: str, *, roles: Iterable[str] = (),
              **options: Any) -> Interaction:
        command = self._command(channel, name, 1)
        data: dict[str, Any] = {"id": command["id"] if command else self.snowflake(), "name": name, "type": 1,
                                "options": [{"name": k, "type": _option_type(v), "value": v}
                                            for k, v in options.items() if v is not None]}
        if channel.get("guild_id"):
            data["guild_id"] = channel["guild_id"] if command and command.get("guild_id") else None
            if data["guild_id"] is None:
                del data["guild_id"]
        return self.interact(channel, user, 2, data, roles=roles)

    def autocomplete(self, channel: dict[str, Any], user: dict[str, Any], name: str, option: str, value: str,
                     *, roles: Iterable[str] = ()) -> Interaction:
        command = self._command(channel, name, 1)
        data = {"id": command["id"] if command else self.snowflake(), "name": name, "type": 1,
                "options": [{"name": option, "type": 3, "value": value, "focused": True}]}
        return self.interact(channel, user, 4, data, roles=roles)

    def context_menu(self, channel: dict[str, Any], user: dict[str, Any], name: str, target: dict[str, Any],
                     *, roles: Iterable[str] = ()) -> Interaction:
        """A message context-menu command (Apps -> ``name``) on ``target``."""
        command = self._command(channel, name, 3)
        data = {"id": command["id"] if command else self.snowflake(), "name": name, "type": 3,
                "target_id": target["id"], "resolved": {"messages": {target["id"]: target}}}
        return self.interact(channel, user, 2, data, roles=roles)

    def submit_modal(self, opened: Interaction, values: dict[str, str] | str, *,
                     user: dict[str, Any] | None = None, roles: Iterable[str] = ()) -> Interaction:
        """Submit the modal the bot opened in answer to ``opened``; a str fills its only text input."""
        modal = opened.modal
        assert modal is not None, "the bot opened no modal"
        inputs = [c for c in _walk_components(modal.get("components", [])) if c.get("type") == 4]
        if isinstance(values, str):
            assert len(inputs) == 1, f"the modal has {len(inputs)} inputs"
            values = {inputs[0]["custom_id"]: values}
        rows = []
        for row in modal.get("components", []):
            if row.get("type") == 1:
                rows.append({"type": 1, "components": [
                    {"type": 4, "custom_id": c["custom_id"], "value": values.get(c["custom_id"], "")}
                    for c in row.get("components", []) if c.get("type") == 4]})
            elif row.get("type") == 18 and (row.get("component") or {}).get("type") == 4:
                inner = row["component"]
                rows.append({"type": 18, "component": {"type": 4, "custom_id": inner["custom_id"],
                                                       "value": values.get(inner["custom_id"], "")}})
        payload = opened.payload
        channel = self.channels[payload["channel_id"]]
        who = user or payload.get("member", {}).get("user") or payload["user"]
        return self.interact(channel, who, 5, {"custom_id": modal["custom_id"], "components": rows},
                             roles=roles or payload.get("member", {}).get("roles", ()))

    def _command(self, channel: dict[str, Any], name: str, type: int) -> dict[str, Any] | None:
        for scope in (channel.get("guild_id"), None):
            for command in self.commands.get(scope, []):
                if command["name"] == name and command["type"] == type:
                    return command
        return None

    async def response(self, interaction: Interaction, *, timeout: float = 60.0) -> Interaction:
        """Wait until the bot has fully answered ``interaction``."""
        return await self.wait_for(lambda: interaction if interaction.answered else None, timeout=timeout,
                                   what=f"an answer to interaction {interaction.id}")

    # -- faults -----------------------------------------------------------------------------

    def fail_next(self, method: str, path: str, *, status: int = 429, times: int = 1, retry_after: float = 0.05,
                  via: bool = True, is_global: bool = False) -> _Fault:
        """Answer the next ``times`` ``method`` requests whose path (after /api/v10) matches ``path``."""
        fault = _Fault(method.upper(), re.compile(path), status, times, retry_after, via, is_global)
        self._faults.append(fault)
        return fault

    async def drop_gateway(self, *, code: int | None = None) -> None:
        """Lose the gateway connection: abort the socket (``code=None``), or close it with ``code``."""
        ws, request = self._ws, self._ws_request
        self._ws = self._ws_request = None
        self.hold_events = False
        if ws is None:
            return
        if code is None and request is not None and request.transport is not None:
            request.transport.abort()
        else:
            await ws.close(code=code or 4000)
        self._poke()

    def invalidate_sessions(self) -> None:
        """Forget every gateway session: the next RESUME is answered with op 9 (INVALID_SESSION, not resumable)."""
        self._sessions.clear()

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT: the bot should reconnect and resume."""
        await self._send({"op": 7, "d": None})

    # -- what the bot did -------------------------------------------------------------------

    def message(self, channel_id: str, message_id: str) -> dict[str, Any]:
        """A message as Discord keeps it (the payload a reply to it references)."""
        return self.messages[channel_id][message_id]

    def bot_messages(self, channel_id: str) -> list[Posted]:
        return [p for p in self.posted.get(channel_id, []) if not p.deleted]

    def answer_to(self, question: dict[str, Any], channel_id: str | None = None) -> list[Posted]:
        """The bot's messages answering ``question``: the reply to it and the messages continuing it.

        ``channel_id`` names where to look when the answer is not a reply (in a new thread).
        """
        posted = self.posted.get(channel_id or question["channel_id"], [])
        start = 0 if channel_id else next((i for i, p in enumerate(posted) if p.reference == question["id"]), None)
        if start is None:
            return []
        out = [posted[start]]
        for more in posted[start + 1 :]:
            if more.reference is not None:
                break
            out.append(more)
        return [p for p in out if not p.deleted]

    def payloads(self) -> list[dict[str, Any]]:
        """Every message body the bot sent (posts, edits, interaction replies and their edits)."""
        out = [body for posts in self.posted.values() for p in posts for body in p.payloads]
        for interaction in self.interactions.values():
            out += [b.get("data") or {} for b in interaction.callbacks if b.get("type") in (4, 7)]
            out += interaction.original_edits + interaction.followups
        return out

    def served(self, method: str, path: str) -> list[Request]:
        pattern = re.compile(path)
        return [r for r in self.requests if r.method == method.upper() and pattern.fullmatch(r.path)]

    async def wait_for(self, probe: Callable[[], T | None], *, timeout: float = 60.0, what: str = "") -> T:
        """Wait until ``probe()`` returns something truthy (re-checked whenever the fake's state changes)."""
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what or probe}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 0.5))

    async def sync(self, *, timeout: float = 60.0) -> None:
        """Barrier: the bot has received and dispatched every event the fake sent so far.

        Asks for a heartbeat (op 1), which the bot answers after every earlier frame; if the
        connection changes meanwhile (a reconnect), asks again on the new one.
        """
        while True:
            await self.wait_for(lambda: self.connected and self._session is not None, timeout=timeout,
                                what="a gateway connection")
            await self.wait_for(lambda: self._sent_seq >= (self._session.seq if self._session else 0)
                                or not self.connected, timeout=timeout, what="the events to be written")
            ws, target = self._ws, self._sent_seq
            await self._send({"op": 1, "d": None})
            await self.wait_for(lambda ws=ws, target=target: self._acked_seq >= target or self._ws is not ws,
                                timeout=timeout, what=f"a heartbeat acking {target}")
            if self._ws is ws and self._acked_seq >= target:
                return

    # -- gateway ----------------------------------------------------------------------------

    def dispatch(self, event: str, data: Any) -> None:
        """Queue a dispatch (op 0); it reaches the bot now, or on RESUME if the connection is down."""
        if self._session is None:
            self._backlog.append((event, data))
            return
        self._session.events.append((self._session.seq + 1, event, data))
        self._wake.set()

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}}))
        try:
            async for message in ws:
                if message.type is not WSMsgType.TEXT:
                    continue
                frame = json.loads(message.data)
                await self._on_frame(ws, request, frame)
        finally:
            if self._ws is ws:
                self._ws = self._ws_request = None
                self._poke()
        return ws

    async def _on_frame(self, ws: web.WebSocketResponse, request: web.Request, frame: dict[str, Any]) -> None:
        op, data = frame.get("op"), frame.get("d")
        if op == 1:
            self.heartbeats.append(data)
            if isinstance(data, int):
                self._acked_seq = max(self._acked_seq, data)
            await ws.send_str(json.dumps({"op": 11}))
            self._poke()
        elif op == 2:
            await self._identify(ws, request, data or {})
        elif op == 6:
            await self._resume(ws, request, data or {})

    async def _identify(self, ws: web.WebSocketResponse, request: web.Request, data: dict[str, Any]) -> None:
        if data.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = int(data.get("intents", 0))
        self.identified_intents = intents
        self.identifies.append({k: v for k, v in data.items() if k != "token"})
        if intents & Intent.PRIVILEGED and not self.privileged_intents:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        self.connections.append((request.path, "identify"))
        session = _Session(secrets.token_hex(16))
        self._sessions[session.id] = session
        self._session = session
        ready = {"v": 10, "user": self.bot, "guilds": [{"id": g, "unavailable": True} for g in self.guilds],
                 "session_id": session.id, "resume_gateway_url": self.resume_url, "session_type": "normal",
                 "application": {"id": self.app_id, "flags": 0}, "private_channels": [], "relationships": [],
                 "user_settings": {}, "geo_ordered_rtc_regions": [], "_trace": ["fake-discord"]}
        if data.get("shard") is not None:
            ready["shard"] = data["shard"]  # as Discord echoes it; every shard is sent every guild here
        session.events.append((1, "READY", ready))
        for guild in self.guilds.values():
            session.events.append((session.seq + 1, "GUILD_CREATE", guild))
        backlog, self._backlog = self._backlog, []
        for event, payload in backlog:
            session.events.append((session.seq + 1, event, payload))
        self._attach(ws, request, 0)

    async def _resume(self, ws: web.WebSocketResponse, request: web.Request, data: dict[str, Any]) -> None:
        session = self._sessions.get(str(data.get("session_id")))
        if data.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        if session is None or session is not self._session:
            await ws.send_str(json.dumps({"op": 9, "d": False}))
            return
        self.connections.append((request.path, "resume"))
        acked = int(data.get("seq") or 0)
        # Discord replays what the bot missed, then RESUMED; ``replay_overlap`` also re-sends some of what it
        # had already received (a re-delivery the bot must recognise).
        seen = [e for e in session.events if e[0] <= acked and e[1] not in ("READY", "GUILD_CREATE", "RESUMED")]
        replay = seen[-self.replay_overlap :] if self.replay_overlap else []
        self.replayed += replay + [e for e in session.events if e[0] > acked]
        session.events.append((session.seq + 1, "RESUMED", {"_trace": ["fake-discord"]}))
        self._attach(ws, request, acked, replay)

    def _attach(self, ws: web.WebSocketResponse, request: web.Request, sent_seq: int,
                replay: list[tuple[int, str, Any]] | None = None) -> None:
        self._ws, self._ws_request = ws, request
        self._sent_seq = sent_seq
        self._replay = list(replay or [])
        self._acked_seq = 0
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_events())
        self._wake.set()
        self._poke()

    async def _write_events(self) -> None:
        """Write the session's events, in order, to whichever connection is current."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            session, ws = self._session, self._ws
            if session is None or ws is None or ws.closed or self.hold_events:
                continue
            replay, self._replay = self._replay, []
            for seq, event, data in replay + [e for e in list(session.events) if e[0] > self._sent_seq]:
                if self._ws is not ws or self.hold_events:
                    break
                try:
                    await ws.send_str(json.dumps({"op": 0, "s": seq, "t": event, "d": data}))
                except (ConnectionError, RuntimeError):
                    break
                self._sent_seq = max(self._sent_seq, seq)
            self._poke()

    async def _send(self, frame: dict[str, Any]) -> None:
        ws = self._ws
        if ws is not None and not ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(json.dumps(frame))

    def _poke(self) -> None:
        self._changed.set()

    def release(self) -> None:
        """Send events held back with ``hold_events``."""
        self.hold_events = False
        self._wake.set()

    # -- REST -------------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
        authorized = request.headers.get("Authorization") == f"Bot {self.token}"
        record = Request(request.method, path, body, 0, authorized)
        self.requests.append(record)
        try:
            fault = self._fault_for(request.method, path)
            if fault is not None:
                response = self._fault_response(fault)
            else:
                needs_auth = not path.startswith(("/interactions/", "/webhooks/"))
                if needs_auth and not authorized:
                    raise _ApiError(401, 0, "401: Unauthorized")
                headers = self._bucket_headers(request.method, path)
                if headers["X-RateLimit-Remaining"] == "-1":
                    raise _RateLimitedError(float(headers["X-RateLimit-Reset-After"]))
                status, result = self._route(request.method, path, body, request.query)
                response = self._json(status, result, headers)
        except _RateLimitedError as err:
            response = self._fault_response(_Fault(request.method, re.compile(""), 429, 1, err.retry_after, True,
                                                   False))
        except _ApiError as err:
            response = self._json(err.status, {"code": err.code, "message": err.message, **err.extra})
        record.status = response.status
        self._poke()
        return response

    def _fault_for(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.served < fault.times and fault.method == method and fault.path.fullmatch(path):
                fault.served += 1
                return fault
        return None

    def _fault_response(self, fault: _Fault) -> web.Response:
        headers = {"Retry-After": str(max(1, round(fault.retry_after)))} if fault.status == 429 else {}
        if fault.via:
            headers["Via"] = "1.1 google"
        if fault.status == 429:
            headers |= {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0",
                        "X-RateLimit-Reset-After": f"{fault.retry_after:.3f}", "X-RateLimit-Scope": "user"}
            if fault.is_global:
                headers["X-RateLimit-Global"] = "true"
            body = {"message": "You are being rate limited.", "retry_after": fault.retry_after,
                    "global": fault.is_global, "code": 0}
        else:
            body = {"message": f"{fault.status}: injected failure", "code": 0}
        return self._json(fault.status, body, headers)

    def _bucket_headers(self, method: str, path: str) -> dict[str, str]:
        key = method + " " + re.sub(r"/\d{6,}(?=/|$)", "/{id}", path, count=0)
        major = re.match(r"/(channels|guilds|webhooks)/(\d+)", path)
        bucket = key + (major.group(2) if major else "")
        limit, window = self.rate_limit
        now = time.monotonic()
        start, used = self._buckets.get(bucket, (now, 0))
        if now - start >= window:
            start, used = now, 0
        if used >= limit and self.enforce_rate_limits:
            remaining = -1  # over the limit: this request is refused
        else:
            used += 1
            remaining = max(0, limit - used)
        self._buckets[bucket] = (start, used)
        return {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining),
                "X-RateLimit-Reset-After": f"{max(0.001, window - (now - start)):.3f}",
                "X-RateLimit-Bucket": f"{abs(hash(key)):x}"}

    @staticmethod
    def _json(status: int, result: Any, headers: dict[str, str] | None = None) -> web.Response:
        if status == 204:
            return web.Response(status=204, headers=headers)
        # discord.py parses JSON only when Content-Type is exactly application/json (no charset).
        return web.Response(status=status, body=json.dumps(result).encode(), headers=headers,
                            content_type="application/json")

    def _route(self, method: str, path: str, body: Any, query: Any) -> tuple[int, Any]:
        for verb, pattern, handler in self._routes():
            if verb != method:
                continue
            match = re.fullmatch(pattern, path)
            if match:
                return handler(body, *[unquote(g) for g in match.groups()])
        raise _ApiError(404, 0, "404: Not Found")

    def _routes(self) -> list[tuple[str, str, Callable[..., tuple[int, Any]]]]:
        return [
            ("GET", r"/users/@me", lambda body: (200, self.bot)),
            ("GET", r"/oauth2/applications/@me", lambda body: (200, self._application())),
            ("GET", r"/gateway", lambda body: (200, {"url": self.gateway_url})),
            ("GET", r"/gateway/bot", lambda body: (200, {"url": self.gateway_url, "shards": 1,
                                                         "session_start_limit": {"total": 1000, "remaining": 999,
                                                                                 "reset_after": 0,
                                                                                 "max_concurrency": 1}})),
            ("GET", r"/channels/(\d+)", self._get_channel),
            ("POST", r"/channels/(\d+)/messages", self._post_message),
            ("GET", r"/channels/(\d+)/messages/(\d+)", self._get_message),
            ("PATCH", r"/channels/(\d+)/messages/(\d+)", self._patch_message),
            ("DELETE", r"/channels/(\d+)/messages/(\d+)", self._delete_message),
            ("POST", r"/channels/(\d+)/typing", self._typing),
            ("PUT", r"/channels/(\d+)/messages/(\d+)/reactions/([^/]+)/@me", self._add_reaction),
            ("POST", r"/channels/(\d+)/messages/(\d+)/threads", self._start_thread),
            ("PUT", r"/applications/(\d+)/commands", lambda body, app: self._put_commands(body, app, None)),
            ("PUT", r"/applications/(\d+)/guilds/(\d+)/commands", self._put_commands),
            ("GET", r"/applications/(\d+)/commands", lambda body, app: (200, self.commands.get(None, []))),
            ("GET", r"/applications/(\d+)/guilds/(\d+)/commands",
             lambda body, app, guild: (200, self.commands.get(guild, []))),
            ("POST", r"/interactions/(\d+)/([^/]+)/callback", self._callback),
            ("PATCH", r"/webhooks/(\d+)/([^/]+)/messages/@original", self._edit_original),
            ("POST", r"/webhooks/(\d+)/([^/]+)", self._followup),
        ]

    def _application(self) -> dict[str, Any]:
        owner = self.user("owner")
        return {"id": self.app_id, "name": self.bot["global_name"], "description": "", "icon": None,
                "bot_public": True, "bot_require_code_grant": False, "owner": owner, "verify_key": "00" * 32,
                "flags": 0, "team": None, "summary": "", "rpc_origins": [], "bot": self.bot}

    def _channel(self, channel_id: str) -> dict[str, Any]:
        channel = self.channels.get(channel_id)
        if channel is None:
            raise _ApiError(404, 10003, "Unknown Channel")
        return channel

    def _get_channel(self, body: Any, channel_id: str) -> tuple[int, Any]:
        return 200, self._channel(channel_id)

    def _check_content(self, body: dict[str, Any], *, creating: bool) -> None:
        content = body.get("content")
        if content is not None and not isinstance(content, str):
            raise _ApiError(400, 50035, "Invalid Form Body")
        if content is not None and len(content) > MAX_CONTENT:
            raise _ApiError(400, 50035, "Invalid Form Body", errors={"content": {"_errors": [
                {"code": "BASE_TYPE_MAX_LENGTH", "message": f"Must be {MAX_CONTENT} or fewer in length."}]}})
        if creating and not (content or "").strip() and not body.get("embeds") and not body.get("sticker_ids"):
            raise _ApiError(400, 50006, "Cannot send an empty message")

    def _post_message(self, body: Any, channel_id: str) -> tuple[int, Any]:
        channel = self._channel(channel_id)
        body = body if isinstance(body, dict) else {}
        self._check_content(body, creating=True)
        reference = None
        ref = body.get("message_reference")
        if isinstance(ref, dict) and ref.get("message_id"):
            reference = str(ref["message_id"])
            if reference not in self.messages.get(channel_id, {}):
                if ref.get("fail_if_not_exists", True):
                    raise _ApiError(400, 50035, "Invalid Form Body", errors={"message_reference": {"_errors": [
                        {"code": "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "message": "Unknown message"}]}})
                reference = None
        message = self._message(channel, self.bot, body.get("content") or "", type=19 if reference else 0)
        if reference:
            message["message_reference"] = {"type": 0, "message_id": reference, "channel_id": channel_id}
            message["referenced_message"] = self.messages[channel_id][reference]
        self.messages.setdefault(channel_id, {})[message["id"]] = message
        self.posted.setdefault(channel_id, []).append(
            Posted(channel_id, message["id"], [message["content"]], [body], reference))
        self.dispatch("MESSAGE_CREATE", message)  # Discord echoes the bot's own messages
        return 200, message

    def _find_posted(self, channel_id: str, message_id: str) -> Posted | None:
        return next((p for p in self.posted.get(channel_id, []) if p.id == message_id and not p.deleted), None)

    def _stored(self, channel_id: str, message_id: str) -> dict[str, Any]:
        message = self.messages.get(channel_id, {}).get(message_id)
        if message is None:
            raise _ApiError(404, 10008, "Unknown Message")
        return message

    def _get_message(self, body: Any, channel_id: str, message_id: str) -> tuple[int, Any]:
        self._channel(channel_id)
        return 200, self._stored(channel_id, message_id)

    def _patch_message(self, body: Any, channel_id: str, message_id: str) -> tuple[int, Any]:
        self._channel(channel_id)
        message = self._stored(channel_id, message_id)
        posted = self._find_posted(channel_id, message_id)
        if posted is None:
            raise _ApiError(403, 50005, "Cannot edit a message authored by another user")
        body = body if isinstance(body, dict) else {}
        self._check_content(body, creating=False)
        if "content" in body:
            message["content"] = body["content"] or ""
            posted.texts.append(message["content"])
        posted.payloads.append(body)
        message["edited_timestamp"] = _now_iso()
        self.dispatch("MESSAGE_UPDATE", message)
        return 200, message

    def _delete_message(self, body: Any, channel_id: str, message_id: str) -> tuple[int, Any]:
        message = self._stored(channel_id, message_id)
        posted = self._find_posted(channel_id, message_id)
        if posted is not None:
            posted.deleted = True
        del self.messages[channel_id][message_id]
        data = {"id": message_id, "channel_id": channel_id}
        if message.get("guild_id"):
            data["guild_id"] = message["guild_id"]
        self.dispatch("MESSAGE_DELETE", data)
        return 204, None

    def _typing(self, body: Any, channel_id: str) -> tuple[int, Any]:
        self._channel(channel_id)
        self.typing.append(channel_id)
        return 204, None

    def _add_reaction(self, body: Any, channel_id: str, message_id: str, emoji: str) -> tuple[int, Any]:
        self._channel(channel_id)
        self._stored(channel_id, message_id)
        self.bot_reactions.append((channel_id, message_id, emoji))
        channel = self.channels[channel_id]
        data: dict[str, Any] = {"user_id": self.bot_id, "channel_id": channel_id, "message_id": message_id,
                                "emoji": {"id": None, "name": emoji}, "burst": False, "type": 0}
        if channel.get("guild_id"):
            data |= {"guild_id": channel["guild_id"], "member": self.member_payload(self.bot)}
        self.dispatch("MESSAGE_REACTION_ADD", data)
        return 204, None

    def _start_thread(self, body: Any, channel_id: str, message_id: str) -> tuple[int, Any]:
        channel = self._channel(channel_id)
        message = self._stored(channel_id, message_id)
        if channel["type"] != 0 or not channel.get("guild_id"):
            raise _ApiError(400, 50024, "Cannot execute action on this channel type")
        body = body if isinstance(body, dict) else {}
        name = str(body.get("name") or "")
        if not 1 <= len(name) <= 100:
            raise _ApiError(400, 50035, "Invalid Form Body")
        # A thread started from a message has that message's id.
        thread = self._thread_payload(channel["guild_id"], channel_id, self.bot_id, name, message_id,
                                      int(body.get("auto_archive_duration") or 1440))
        self.guilds[channel["guild_id"]]["threads"].append(thread)
        self.channels[thread["id"]] = thread
        self.messages.setdefault(thread["id"], {})
        message["thread"] = thread
        self.dispatch("THREAD_CREATE", thread | {"newly_created": True})
        return 201, thread

    def _put_commands(self, body: Any, app_id: str, guild_id: str | None) -> tuple[int, Any]:
        if app_id != self.app_id:
            raise _ApiError(403, 50001, "Missing Access")
        if guild_id is not None and guild_id not in self.guilds:
            raise _ApiError(403, 50001, "Missing Access")
        if not isinstance(body, list):
            raise _ApiError(400, 50035, "Invalid Form Body")
        registered = []
        for command in body:
            name = str(command.get("name", ""))
            if not re.fullmatch(r"[-_\w]{1,32}", name) and command.get("type", 1) == 1:
                raise _ApiError(400, 50035, "Invalid Form Body", errors={"name": "invalid"})
            registered.append(command | {"id": self.snowflake(), "application_id": self.app_id, "version": "1",
                                         "type": command.get("type", 1), "guild_id": guild_id,
                                         "description": command.get("description", "")})
        self.commands[guild_id] = registered
        return 200, registered

    def _interaction_by_token(self, token: str) -> Interaction:
        for interaction in self.interactions.values():
            if interaction.token == token:
                return interaction
        raise _ApiError(404, 10015, "Unknown Webhook")

    def _callback(self, body: Any, interaction_id: str, token: str) -> tuple[int, Any]:
        interaction = self.interactions.get(interaction_id)
        if interaction is None or interaction.token != token:
            raise _ApiError(404, 10062, "Unknown interaction")
        if interaction.callbacks:
            raise _ApiError(400, 40060, "Interaction has already been acknowledged.")
        body = body if isinstance(body, dict) else {}
        data = body.get("data") or {}
        if body.get("type") in (4, 7):
            self._check_content(data, creating=body.get("type") == 4)
        if body.get("type") == 9:
            title = str(data.get("title", ""))
            if not (1 <= len(title) <= 45 and data.get("custom_id") and data.get("components")):
                raise _ApiError(400, 50035, "Invalid Form Body")
        interaction.callbacks.append(body)
        flags = int(data.get("flags") or 0)
        result: dict[str, Any] = {"interaction": {
            "id": interaction_id, "type": interaction.type, "response_message_loading": body.get("type") == 5,
            "response_message_ephemeral": bool(flags & 64)}, "resource": {"type": body.get("type")}}
        if body.get("type") == 4:
            channel = self.channels.get(interaction.payload["channel_id"], {"id": interaction.payload["channel_id"]})
            message = self._message(channel, self.bot, data.get("content") or "")
            message["flags"] = flags
            message["interaction_metadata"] = {"id": interaction_id, "type": interaction.type,
                                               "user": self.bot, "authorizing_integration_owners": {}}
            result["interaction"]["response_message_id"] = message["id"]
            result["resource"]["message"] = message
        return 200, result

    def _edit_original(self, body: Any, app_id: str, token: str) -> tuple[int, Any]:
        interaction = self._interaction_by_token(token)
        body = body if isinstance(body, dict) else {}
        self._check_content(body, creating=False)
        interaction.original_edits.append(body)
        channel = self.channels.get(interaction.payload["channel_id"], {"id": interaction.payload["channel_id"]})
        return 200, self._message(channel, self.bot, body.get("content") or "")

    def _followup(self, body: Any, app_id: str, token: str) -> tuple[int, Any]:
        interaction = self._interaction_by_token(token)
        body = body if isinstance(body, dict) else {}
        self._check_content(body, creating=True)
        interaction.followups.append(body)
        channel = self.channels.get(interaction.payload["channel_id"], {"id": interaction.payload["channel_id"]})
        return 200, self._message(channel, self.bot, body.get("content") or "")


def _option_type(value: Any) -> int:
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return 4
    return 3


def _walk_components(components: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for component in components:
        yield component
        yield from _walk_components(component.get("components", []))
        if isinstance(component.get("component"), dict):
            yield component["component"]
