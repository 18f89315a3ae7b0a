"""The Discord adapter: discord.py's gateway client in front of the engine.

What arrives, and what it becomes:

- a message that mentions the bot (or its managed role) or replies to one of its
  answers in a guild channel, any message in a thread the bot started, a direct
  message -> a ``Turn``. The answer replies to it (or fills a new thread, with
  ``auto_thread``): sent once, edited about once a second, continued in a new message
  at 2,000 characters. A thread is the ``ChannelKey`` thread, its parent channel the
  learning scope; a DM is its own channel in space ``@me``.
- a reply ``correction: <better answer>``, the context menu "Correct this answer"
  (a modal), a 👍/👎 reaction on an answer (raw, so old messages count) -> ``Feedback``
  on that answer; ``/why``, ``/learned``, ``/forget``, ``/persona`` (``commands``).

Each event heedful handles runs as a task of the shared runtime (``adapters.base``:
``idle()`` waits for them, ``stop()`` drains then cancels them), created when discord.py
dispatches it, so a re-delivered event (after a RESUME) is recognised by its message id;
feedback carries a stable event id (the message's, the reaction's, the interaction's),
so the engine applies it once. A question waits in its channel's queue, and gets a
short "busy" reply when that queue is full. Messages from bots and webhooks, system
messages, edits and empty messages get no answer; deleting a question stops (and
removes) its answer. A correction that points at a message of another channel (a
forward) is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

import aiohttp
import discord
import yarl

from engine import ChannelKey, Engine, FeedbackKind, HeedfulError, Turn

from ..base import BaseAdapter, Recent
from ..policy import TeachPolicy, parse_correction
from ..settings import DiscordSettings
from ..streaming import EditFn, RateLimited, SendFn
from .commands import Commands
from .members import NO_PINGS, Member, member_of
from .payloads import guard
from .texts import MESSAGE_LIMIT, TEXTS, readable_mentions, strip_bot_mentions, thread_name, thumbs

__all__ = ["INTENTS", "NO_PINGS", "DiscordAdapter", "DiscordStartError"]

log = logging.getLogger(__name__)

INTENTS = discord.Intents.none()
INTENTS.guilds = True  # channels, threads and roles in the cache (who may teach, thread parents)
INTENTS.guild_messages = INTENTS.dm_messages = True
INTENTS.message_content = True  # privileged: enable it in the Developer Portal (docs/discord.md)
INTENTS.guild_reactions = INTENTS.dm_reactions = True

_CONVERSATION = (discord.MessageType.default, discord.MessageType.reply)
_GUILD_CHANNELS = (discord.TextChannel, discord.VoiceChannel, discord.StageChannel, discord.ForumChannel,
                   discord.CategoryChannel)


class DiscordStartError(RuntimeError):
    """Discord refused to let the adapter start; the message says which setting to fix."""


class _Typing:
    """Shows "heedful is typing…" from the question until the first part of the answer is out.

    Discord shows it for 10 s per request; discord.py renews it every 5 s while it lasts.
    """

    def __init__(self, channel: discord.abc.Messageable) -> None:
        self._shown, self._done = asyncio.Event(), asyncio.Event()
        self._task = asyncio.create_task(self._run(channel))

    async def _run(self, channel: discord.abc.Messageable) -> None:
        try:
            async with channel.typing():
                self._shown.set()
                await self._done.wait()
        except (discord.HTTPException, aiohttp.ClientError) as err:
            log.debug("could not show typing: %s", err)
        finally:
            self._shown.set()

    async def shown(self, timeout: float = 2.0) -> None:
        """Wait (briefly) until the indicator request is out, so it cannot land after the answer."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._shown.wait(), timeout)

    def stop(self) -> None:
        self._done.set()


class _Client(discord.Client):
    """discord.py's client; the events heedful handles become the adapter's tracked tasks."""

    def __init__(self, adapter: DiscordAdapter, **options: Any) -> None:
        super().__init__(**options)
        self._adapter = adapter

    def dispatch(self, event: str, /, *args: Any, **kwargs: Any) -> None:
        super().dispatch(event, *args, **kwargs)
        self._adapter._on_event(event, args)


class _ShardedClient(_Client, discord.AutoShardedClient):
    """The same, as discord.py's ``AutoShardedClient``: one gateway connection per shard of ``shard_ids``."""


def _retry_after(err: discord.HTTPException) -> float:
    headers = err.response.headers if err.response is not None else {}
    for name in ("X-RateLimit-Reset-After", "Retry-After"):  # the first is precise, the second whole seconds
        with contextlib.suppress(TypeError, ValueError):
            return float(headers.get(name))  # type: ignore[arg-type]
    return 1.0


def _slowed(err: Exception) -> RateLimited | None:
    """discord.py retries a 429 itself when Discord's edge says so (a ``Via`` header); the rest come here."""
    if isinstance(err, discord.RateLimited):
        return RateLimited(err.retry_after)
    if isinstance(err, discord.HTTPException) and err.status == 429:
        return RateLimited(_retry_after(err))
    return None


class DiscordAdapter(BaseAdapter[Member]):
    """heedful on one Discord bot account, in every guild it is invited to and in DMs."""

    platform = "discord"
    texts = TEXTS
    message_limit = MESSAGE_LIMIT
    defer_after = 2.0
    """Seconds an interaction's work may take before it is deferred (Discord waits 3 s for an answer)."""

    def __init__(self, engine: Engine, settings: DiscordSettings) -> None:
        super().__init__(engine, settings)
        if settings.token is None:
            raise DiscordStartError("HEEDFUL_DISCORD_TOKEN is not set")
        self.settings = settings
        self.client: _Client | None = None
        self.commands = Commands(self)
        self.commands_synced = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._parents: Recent[int, int] = Recent()  # channel id -> parent channel id for threads, 0 for others

    # -- lifecycle --------------------------------------------------------------------

    @property
    def me(self) -> discord.ClientUser:
        assert self.client is not None and self.client.user is not None, "not connected"
        return self.client.user

    async def connect(self) -> None:
        """Log in, connect to the gateway and wait until it is ready; then serve in the background.

        Registers the commands in the background (``commands_synced`` is set when done).
        Raises ``DiscordStartError`` naming the setting Discord refused (``start`` closes
        what was opened then). The token never appears in messages or logs.
        """
        assert self.settings.token is not None
        self.commands_synced.clear()
        # discord.py reads both from class attributes: one Discord connection per process.
        discord.http.Route.BASE = self.settings.api_url.rstrip("/")
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.settings.gateway_url)
        options: dict[str, Any] = dict(
            intents=INTENTS, allowed_mentions=NO_PINGS, chunk_guilds_at_startup=False,
            guild_ready_timeout=self.settings.guild_ready_timeout, max_messages=1000,
            # discord.py waits out 429s itself; past this it raises instead (30 s is its least).
            max_ratelimit_timeout=max(30.0, self.settings.rate_limit_cap),
        )
        if self.settings.shard_count is None:
            self.client = client = _Client(self, **options)
        else:  # this process's slice of the bot's shards (HEEDFUL_DISCORD_SHARD_IDS / _COUNT, `run --shards`)
            self.client = client = _ShardedClient(self, shard_count=self.settings.shard_count,
                                                  shard_ids=self.settings.shard_ids, **options)
        guard(client._connection.parsers)  # malformed gateway payloads are dropped before discord.py parses them
        self.commands.attach(client)
        try:
            await client.login(self.settings.token.get_secret_value())
        except discord.LoginFailure:
            raise DiscordStartError("Discord refused HEEDFUL_DISCORD_TOKEN (401 Unauthorized)") from None
        except discord.HTTPException as err:
            raise DiscordStartError(f"Discord refused the login at HEEDFUL_DISCORD_API_URL ({err.status})") from None
        except (aiohttp.ClientError, OSError) as err:
            raise DiscordStartError(f"cannot reach Discord at HEEDFUL_DISCORD_API_URL ({type(err).__name__})") from None
        self._runner = asyncio.create_task(self._connect(client), name="discord-gateway")
        ready = asyncio.create_task(client.wait_until_ready())
        try:
            done, _ = await asyncio.wait({ready, self._runner}, timeout=self.settings.start_timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if self._runner in done:
            self._runner.result()  # raises DiscordStartError
            raise DiscordStartError("the Discord gateway closed before it was ready")
        if ready not in done:
            raise DiscordStartError(f"the Discord gateway at HEEDFUL_DISCORD_GATEWAY_URL was not ready within "
                                    f"{self.settings.start_timeout:g} s")
        self.own_id = str(self.me.id)
        self._runner.add_done_callback(self._gateway_ended)
        self.spawn(self._sync_commands())
        log.info("discord adapter serving as %s in %d guild(s)%s", self.me, len(client.guilds),
                 f" on shard(s) {client.shard_ids or 'all'} of {client.shard_count}"
                 if isinstance(client, _ShardedClient) else "")

    async def _connect(self, client: _Client) -> None:
        """Run the gateway (reconnecting and resuming by itself) until closed."""
        try:
            await client.connect(reconnect=True)
        except discord.PrivilegedIntentsRequired:
            raise DiscordStartError("Discord refused the Message Content intent: enable it for the bot in the "
                                    "Developer Portal (Bot -> Privileged Gateway Intents)") from None
        except discord.ConnectionClosed as err:
            if err.code == 4004:
                raise DiscordStartError("the Discord gateway refused HEEDFUL_DISCORD_TOKEN") from None
            raise DiscordStartError(f"the Discord gateway closed the connection ({err.code})") from None
        except (aiohttp.ClientError, OSError) as err:
            raise DiscordStartError(f"cannot reach the Discord gateway at HEEDFUL_DISCORD_GATEWAY_URL "
                                    f"({type(err).__name__})") from None

    def _gateway_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        err = task.exception()
        if err is not None and not self.closing:
            log.error("the Discord connection ended: %s", err)

    async def stop(self) -> None:
        """Stop taking events, let running replies finish (up to ``shutdown_grace`` s), disconnect.

        Safe to call twice, or after a failed ``start``.
        """
        await self.drain()
        client, self.client = self.client, None
        if client is not None:
            await client.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(runner, timeout=10)
        self.commands.detach()

    async def _sync_commands(self) -> None:
        """Register the commands (``command_sync``); a refusal is logged, never fatal."""
        try:
            if self.settings.command_sync == "global":
                await self.commands.sync(None)
            elif self.settings.command_sync == "guilds":
                for guild_id in self.settings.command_guilds:
                    await self.commands.sync(int(guild_id))
        finally:
            self.commands_synced.set()

    # -- intake -----------------------------------------------------------------------

    def _on_event(self, event: str, args: tuple[Any, ...]) -> None:
        """Called by discord.py for every gateway event, before any handler runs."""
        if event == "message":
            self.spawn(self._on_message(args[0]))
        elif event == "raw_reaction_add":
            self.spawn(self._on_reaction(args[0]))
        elif event == "raw_message_delete":
            self.withdraw(str(args[0].message_id))
        elif event == "interaction" and args[0].type in (discord.InteractionType.modal_submit,
                                                         discord.InteractionType.component):
            self.spawn(self.commands.on_interaction(args[0]))
        elif event == "resumed":
            log.info("discord gateway connection resumed")
        elif event == "disconnect" and not self.closing:
            log.info("discord gateway connection lost; reconnecting")

    def expected_failure(self, err: Exception) -> str | None:
        if isinstance(err, discord.Forbidden):
            return f"Discord refused an action (missing permission?): {err.text or err.status}"
        if isinstance(err, discord.HTTPException):
            return f"a Discord request failed: {err.status} {err.text}"
        if isinstance(err, RateLimited | aiohttp.ClientError):
            return f"gave up on a Discord request: {err}"
        return None

    def _knows_itself(self) -> bool:
        """Whether the gateway has said who the bot is (``own_id``); events before that are not handled."""
        user = self.client.user if self.client is not None else None
        if user is not None:
            self.own_id = str(user.id)
        return user is not None

    # -- where, who -------------------------------------------------------------------

    async def key_for(self, channel: Any, guild_id: int | None) -> ChannelKey:
        """The ``ChannelKey`` of a channel: a thread's parent is the channel, the thread its thread."""
        space = str(guild_id) if guild_id else "@me"
        if isinstance(channel, discord.Thread):
            return ChannelKey(self.platform, str(channel.parent_id), space=space, thread=str(channel.id))
        channel_id = int(channel.id)
        if guild_id and not isinstance(channel, _GUILD_CHANNELS):
            parent = await self._parent_of(channel_id)  # not in the cache: ask Discord what it is
            if parent:
                return ChannelKey(self.platform, str(parent), space=space, thread=str(channel_id))
        return ChannelKey(self.platform, str(channel_id), space=space)

    async def key_for_ids(self, channel_id: int, guild_id: int | None) -> ChannelKey:
        assert self.client is not None
        channel = self.client.get_channel(channel_id) or discord.Object(channel_id)
        return await self.key_for(channel, guild_id)

    async def _parent_of(self, channel_id: int) -> int:
        if channel_id in self._parents:
            return self._parents[channel_id]
        assert self.client is not None
        try:
            channel = await self.client.fetch_channel(channel_id)
        except discord.HTTPException as err:
            log.info("could not look up channel %s: %s", channel_id, err.status)
            return 0
        parent = channel.parent_id if isinstance(channel, discord.Thread) and channel.parent_id else 0
        self._parents.put(channel_id, parent)
        return parent

    def member(self, user: discord.abc.User, permissions: discord.Permissions | None,
               guild_id: int | None) -> Member:
        """``user`` as the rules see them where they acted (``member_of``, with ``manager_roles``)."""
        return member_of(user, permissions, guild_id, self.settings.manager_roles)

    def policy_for(self, actor: Member) -> TeachPolicy:
        """Who may teach in the actor's guild (``guild_teach`` overrides ``teach``)."""
        mode = self.settings.guild_teach.get(str(actor.guild_id)) if actor.guild_id else None
        return self.policy if mode is None else TeachPolicy(mode, self.policy.allowed)

    async def is_manager(self, actor: Member) -> bool:
        """Manage Server, Administrator or a ``manager_roles`` role; in a DM, its person."""
        return actor.manager

    async def groups_of(self, actor: Member, candidates: Iterable[str]) -> tuple[str, ...]:
        """The member's roles: ``teachers`` may list role ids."""
        return actor.roles

    # -- conversations ----------------------------------------------------------------

    async def _on_message(self, message: discord.Message) -> None:
        if not self._knows_itself():
            return
        if message.webhook_id is not None or message.type not in _CONVERSATION:
            return  # webhooks never get an answer: no loops; nor joins, pins, ...
        if getattr(message, "author", None) is None or not isinstance(message.content, str):
            return  # a payload discord.py could only half read (it skips fields it cannot parse)
        if not self.fresh(f"message:{message.id}"):
            return  # delivered again (a RESUME replays what may have been missed)
        if self.from_self(str(message.author.id), bot=message.author.bot):
            return  # bots (this one included) never get an answer: no loops
        if message.guild is None and not self.settings.dms:
            return
        if not await self._addressed(message):
            return
        key = await self.key_for(message.channel, message.guild.id if message.guild else None)
        text = self._text(message)
        if not text:
            return  # only attachments, embeds, stickers or a bare mention: nothing to answer
        better = parse_correction(text)
        if better is not None:
            await self._correct_by_message(message, key, better)
        else:
            await self.serve(key, lambda: self._answer(message, key, text),
                             lambda busy: self._notice(message, busy))

    def _bot_roles(self, guild: discord.Guild | None) -> list[int]:
        role = guild.self_role if guild is not None else None
        return [role.id] if role is not None else []

    async def _addressed(self, message: discord.Message) -> bool:
        me = self.me
        if message.guild is None:
            return True
        if any(user.id == me.id for user in message.mentions):
            return True
        if set(self._bot_roles(message.guild)) & set(message.raw_role_mentions):
            return True
        if isinstance(message.channel, discord.Thread) and message.channel.owner_id == me.id:
            return True
        reference = message.reference
        if reference is None or reference.message_id is None:
            return False
        replied = reference.resolved or reference.cached_message
        if isinstance(replied, discord.Message):
            author = getattr(replied, "author", None)  # absent when discord.py could only half read it
            return author is not None and author.id == me.id
        if replied is None:  # Discord did not say: is it one of my answers?
            key = await self.key_for(message.channel, message.guild.id)
            try:
                await self.engine.explain(key, message_id=str(reference.message_id))
                return True
            except HeedfulError:
                return False
        return False  # the replied-to message was deleted

    def _text(self, message: discord.Message) -> str:
        """The message as the bot should read it: its own mentions removed, others as names."""
        guild = message.guild
        content = strip_bot_mentions(message.content, self.me.id, self._bot_roles(guild))
        names = {user.id: user.display_name for user in message.mentions}

        def role(role_id: int) -> str | None:
            found = guild.get_role(role_id) if guild is not None else None
            return found.name if found is not None else None

        def channel(channel_id: int) -> str | None:
            assert self.client is not None
            found = self.client.get_channel(channel_id)
            return getattr(found, "name", None)

        return readable_mentions(content, names.get, role, channel).strip()

    async def _answer(self, message: discord.Message, key: ChannelKey, text: str) -> None:
        channel: discord.abc.Messageable = message.channel
        reference: discord.MessageReference | None = message.to_reference(fail_if_not_exists=False)
        if self.settings.auto_thread and isinstance(channel, discord.TextChannel):
            thread = await self._open_thread(message, text)
            if thread is not None:
                channel, reference = thread, None
                key = ChannelKey(self.platform, key.channel, space=key.space, thread=str(thread.id))
        turn = Turn(channel=key, text=text, author_id=str(message.author.id),
                    author_name=message.author.display_name, message_id=str(message.id),
                    reply_to=str(message.reference.message_id or "") if message.reference else "")
        posted: list[int] = []
        typing = _Typing(channel)
        send, edit = self._reply_calls(channel, reference, posted, typing)
        try:
            async with self.answering(str(message.id), lambda: self._delete(channel, posted)):
                await self.respond(turn, send=send, edit=edit, limit=self.message_limit,
                                   interval=self.settings.edit_interval)
        finally:
            typing.stop()

    async def _open_thread(self, message: discord.Message, text: str) -> discord.Thread | None:
        try:
            return await message.create_thread(name=thread_name(text),
                                               auto_archive_duration=self.settings.auto_thread_archive_minutes)
        except discord.HTTPException as err:  # no permission, or a thread exists already: answer in place
            log.info("could not open a thread for an answer (%s %s); answering in the channel", err.status, err.text)
            return None

    def _reply_calls(
        self, channel: discord.abc.Messageable, reference: discord.MessageReference | None, posted: list[int],
        typing: _Typing,
    ) -> tuple[SendFn, EditFn]:
        """send/edit for the streamer; 429s that discord.py did not retry itself become ``RateLimited``."""

        async def send(text: str) -> str:
            if not posted:
                await typing.shown()
            options: dict[str, Any] = {"allowed_mentions": NO_PINGS}
            if not posted and reference is not None:
                options |= {"reference": reference, "mention_author": False}
            try:
                sent = await channel.send(text, **options)
            except (discord.HTTPException, discord.RateLimited) as err:
                raise (_slowed(err) or err) from None
            posted.append(sent.id)
            typing.stop()
            return str(sent.id)

        async def edit(message_id: str, text: str) -> None:
            target = discord.PartialMessage(channel=channel, id=int(message_id))  # type: ignore[arg-type]
            try:
                await target.edit(content=text, allowed_mentions=NO_PINGS)
            except (discord.HTTPException, discord.RateLimited) as err:
                raise (_slowed(err) or err) from None

        return send, edit

    async def _delete(self, channel: discord.abc.Messageable, posted: list[int]) -> None:
        for message_id in posted:
            with contextlib.suppress(discord.HTTPException):
                await discord.PartialMessage(channel=channel, id=message_id).delete()  # type: ignore[arg-type]

    # -- feedback by message and reaction ---------------------------------------------

    async def _correct_by_message(self, message: discord.Message, key: ChannelKey, better: str) -> None:
        if not better:
            await self._notice(message, "Write the better answer after `correction:`, in a reply to my answer.")
            return
        reference = message.reference
        if reference is not None and reference.channel_id not in (None, message.channel.id):
            await self._notice(message, TEXTS.elsewhere_text())  # a forward: that answer belongs to its channel
            return
        target = str(reference.message_id) if reference is not None and reference.message_id else ""
        guild_id = message.guild.id if message.guild else None
        permissions = message.author.guild_permissions if isinstance(message.author, discord.Member) else None
        receipt = await self.feedback(key, self.member(message.author, permissions, guild_id),
                                      FeedbackKind.CORRECTION, message_id=target, text=better,
                                      event_id=self.event_key("message", message.id))
        if receipt.accepted:
            with contextlib.suppress(discord.HTTPException):
                await message.add_reaction("✅")
        else:
            await self._notice(message, receipt.message)

    async def _notice(self, message: discord.Message, text: str) -> None:
        """A short answer to ``message`` (not ephemeral: plain messages cannot be)."""
        with contextlib.suppress(discord.HTTPException):
            await message.reply(text, allowed_mentions=NO_PINGS, mention_author=False)

    async def _on_reaction(self, event: discord.RawReactionActionEvent) -> None:
        if not self._knows_itself():
            return
        kind = thumbs(event.emoji.name or "") if event.emoji.is_unicode_emoji() else None
        if kind is None or self.from_self(str(event.user_id), bot=event.member is not None and event.member.bot):
            return
        if event.message_author_id is not None and str(event.message_author_id) != self.own_id:
            return  # a reaction on someone else's message
        if not self.fresh(f"reaction:{event.message_id}:{event.user_id}:{kind}"):
            return
        key = await self.key_for_ids(event.channel_id, event.guild_id)
        receipt = await self.feedback(key, Member(str(event.user_id), event.guild_id), FeedbackKind(kind),
                                      message_id=str(event.message_id),
                                      event_id=self.event_key("reaction", event.message_id, event.user_id, kind))
        if not receipt.accepted:
            log.debug("a reaction on a message that is not a known answer: %s", receipt.message)
