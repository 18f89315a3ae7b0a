"""The Telegram adapter's conversations: where a message lives, who wrote it, and how to answer.

``TelegramCore`` knows where a message lives (chat, forum topic, ``ChannelKey``), who
wrote it and whether they are an admin there, and how to answer: stream a reply
(drafts in private chats when the server has them, else send-then-edit), teach a
correction, ask for one with a ForceReply prompt. It holds the connection's state and
is held by ``TelegramAdapter`` (``_adapter.py``: lifecycle and routing), whose shared
runtime (``adapters.base``) it answers and teaches through; the handlers that route
updates to these steps are in ``_handlers.py``.
"""

from __future__ import annotations

import asyncio
import html
import itertools
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

from telegram import (
    Chat,
    ForceReply,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    MessageEntity,
    User,
)
from telegram.constants import ChatType
from telegram.error import TelegramError

from engine import ChannelKey, Engine, FeedbackKind, Turn

from ..base import Actor, BaseAdapter
from ..policy import TeachPolicy
from ..settings import TelegramSettings
from ..streaming import RateLimited
from ._delivery import LIMIT, ChatUnavailable, DraftsUnsupported, Outbox, retrying
from ._prompts import PromptBook
from ._texts import PROMPT_GROUP, PROMPT_MARK, PROMPT_PRIVATE

__all__ = [
    "Author",
    "TelegramCore",
    "TelegramStartError",
    "Where",
    "author_of",
    "where_in",
    "where_of",
]

log = logging.getLogger("adapters.telegram")

PROMPT_TTL = 15 * 60.0  # a ✏️ prompt waits this long for its answer
ADMIN_TTL = 60.0  # chat administrator lists are cached this long


class TelegramStartError(RuntimeError):
    """The adapter could not connect; the message says why (and never contains the token)."""


@dataclass(frozen=True, slots=True)
class Where:
    """Where a message lives: the chat, its forum topic, and the engine's key for it."""

    chat_id: int
    thread: int | None
    private: bool
    key: ChannelKey


@dataclass(frozen=True)
class Author(Actor):
    """Who acted, and where: what deciding whether they are an admin there takes."""

    where: Where
    message: Message | None = None
    """The message they sent, when there is one: an anonymous admin posts as the group itself."""


class TelegramCore:
    """The conversation steps of the Telegram adapter, and the connection state they use."""

    def __init__(self, runtime: BaseAdapter[Author], settings: TelegramSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.me: User | None = None  # these three are set by ``TelegramAdapter.start``
        self.out: Outbox | None = None
        self.prompts = PromptBook(None, PROMPT_TTL)
        self.keyboard = InlineKeyboardMarkup([[
            InlineKeyboardButton("👍", callback_data="hf:up"),
            InlineKeyboardButton("👎", callback_data="hf:down"),
            InlineKeyboardButton("✏️", callback_data="hf:fix"),
        ]]) if settings.buttons else None
        self._chat_policies = {
            int(chat_id): TeachPolicy(rule.teach, frozenset(rule.teachers)) for chat_id, rule in settings.chats.items()
        }
        self._admins: dict[int, tuple[float, frozenset[int]]] = {}
        self._drafts_ok = settings.drafts
        self._draft_ids = itertools.count(1)

    @property
    def engine(self) -> Engine:
        return self.runtime.engine

    # -- who and where ---------------------------------------------------------------------

    def replies_to_me(self, message: Message) -> bool:
        replied = message.reply_to_message
        if replied is None or replied.from_user is None or self.me is None or is_topic_header(message):
            return False
        return replied.from_user.id == self.me.id

    def mentions_me(self, message: Message) -> bool:
        assert self.me is not None
        handle = f"@{self.me.username}".lower()
        kinds: list[str | None] = [MessageEntity.MENTION, MessageEntity.TEXT_MENTION]
        found = {**message.parse_entities(kinds), **message.parse_caption_entities(kinds)}
        return any(
            (entity.type == MessageEntity.MENTION and text.lower() == handle)
            or (entity.type == MessageEntity.TEXT_MENTION and entity.user is not None and entity.user.id == self.me.id)
            for entity, text in found.items()
        )

    def strip_mention(self, text: str) -> str:
        assert self.me is not None
        if self.me.username:
            text = re.sub(rf"@{re.escape(self.me.username)}\b", " ", text, flags=re.IGNORECASE)
        return text.strip().lstrip(",:;").strip()

    def policy_in(self, where: Where) -> TeachPolicy:
        """Who may teach in that chat (``chats`` overrides ``teach``)."""
        return self._chat_policies.get(where.chat_id, self.runtime.policy)

    async def is_admin(self, author: Author) -> bool:
        """Chat admins, configured bot admins, anonymous admins, and the user of a private chat."""
        where, message = author.where, author.message
        if where.private or author.user_id in self.settings.admins:
            return True
        if message is not None and message.sender_chat is not None and message.sender_chat.id == where.chat_id:
            return True  # an anonymous admin, posting as the group itself
        if not author.user_id.lstrip("-").isdigit():
            return False
        return int(author.user_id) in await self._chat_admins(where.chat_id)

    async def _chat_admins(self, chat_id: int) -> frozenset[int]:
        cached = self._admins.get(chat_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        assert self.out is not None
        bot = self.out.bot
        try:
            members = await retrying(lambda: bot.get_chat_administrators(chat_id), attempts=3,
                                     cap=self.settings.rate_limit_cap)
        except (TelegramError, RateLimited, ChatUnavailable) as err:
            log.warning("could not read the admins of chat %s: %s", chat_id, err)
            return frozenset()
        admins = frozenset(member.user.id for member in members)
        self._admins[chat_id] = (time.monotonic() + ADMIN_TTL, admins)
        return admins

    # -- answering -------------------------------------------------------------------------

    async def say(self, where: Where, text: str, *, reply_to: int | None = None, markup: Any = None,
                  html: bool = False) -> list[Message]:
        """Post a message of the bot's own (not an answer): retried through rate limits, split if long."""
        assert self.out is not None
        return await self.out.say(where.chat_id, text, thread=where.thread, reply_to=reply_to, markup=markup,
                                  html=html)

    async def ask(self, message: Message, where: Where, question: str) -> None:
        """Answer ``question`` (from ``message``) with a streamed reply to that message, in
        its chat's queue (``BaseAdapter.serve``); a short "busy" reply when that queue is full.

        In private chats the unfinished answer shows as a draft when the server has
        ``sendMessageDraft``; elsewhere it is sent once and edited as it grows.
        """
        await self.runtime.serve(where.key, lambda: self._answer(message, where, question),
                                 lambda busy: self.say(where, busy, reply_to=message.message_id))

    async def _answer(self, message: Message, where: Where, question: str) -> None:
        author_id, author_name = author_of(message) or ("", "")
        replied = message.reply_to_message
        turn = Turn(
            channel=where.key,
            text=question,
            author_id=author_id,
            author_name=author_name,
            message_id=str(message.message_id),
            reply_to=str(replied.message_id) if replied is not None and not is_topic_header(message) else "",
        )
        out = self.out
        assert out is not None
        reply_to = message.message_id
        typing = asyncio.create_task(out.typing(where.chat_id, thread=where.thread))
        draft_id = next(self._draft_ids)

        async def send(text: str) -> str:
            typing.cancel()
            sent = await out.send(where.chat_id, text, thread=where.thread, reply_to=reply_to, markup=self.keyboard)
            return str(sent.message_id)

        async def edit(message_id: str, text: str) -> None:
            await out.edit(where.chat_id, int(message_id), text, markup=self.keyboard)

        async def fail(text: str) -> str:  # an error notice gets no feedback buttons
            typing.cancel()
            return str((await self.say(where, text, reply_to=reply_to))[-1].message_id)

        async def draft(text: str) -> bool:
            typing.cancel()
            try:
                return await out.draft(where.chat_id, draft_id, text, thread=where.thread)
            except DraftsUnsupported:
                if self._drafts_ok:
                    log.warning("the Bot API server has no sendMessageDraft; streaming private answers by edits")
                self._drafts_ok = False
                return False

        interval = self.settings.edit_interval_private if where.private else self.settings.edit_interval_group
        try:
            await self.runtime.respond(turn, send=send, edit=edit, fail=fail, limit=LIMIT, interval=interval,
                                       preview=draft if where.private and self._drafts_ok else None)
        finally:
            typing.cancel()

    # -- teaching --------------------------------------------------------------------------

    async def correct(self, message: Message, where: Where, target: int | None, better: str, *,
                      event_id: str = "", personal: bool = False) -> None:
        """Teach ``better`` as the answer behind ``target`` (None: the last answer here), and say how that
        went. ``event_id``: the update's (``BaseAdapter.feedback``); ``personal``: just for its author."""
        if not better.strip():
            command = "/fixme" if personal else "/fix"
            await self.say(where, f"Usage: reply to my answer with {command} <the better answer>.",
                           reply_to=message.message_id)
            return
        author_id, _ = author_of(message) or ("", "")
        receipt = await self.runtime.feedback(where.key, Author(author_id, where, message), FeedbackKind.CORRECTION,
                                              message_id=str(target) if target else "", text=better,
                                              event_id=event_id, personal=personal)
        await self.say(where, receipt.message, reply_to=message.message_id)

    async def answer_prompt(self, message: Message, where: Where, text: str, *, event_id: str = "") -> bool:
        """Take ``message`` as the better answer if it replies to a ✏️ prompt of its author's."""
        replied = message.reply_to_message
        if replied is None or message.from_user is None:
            return False
        prompt = self.prompts.waiting(where.chat_id, replied.message_id, message.from_user.id)
        if prompt is None:
            if not (self.replies_to_me(message) and (replied.text or "").startswith(PROMPT_MARK)):
                return False
            # A reply to a prompt meant for someone else, or expired.
            await self.say(where, "That request isn't waiting for your answer any more; press ✏️ under my answer "
                                  "(or reply to it with /fix <better answer>).", reply_to=message.message_id)
            return True
        if not text.strip():
            await self.say(where, "Please send the better answer as text (or /cancel).", reply_to=message.message_id)
            return True
        self.prompts.take(where.chat_id, replied.message_id)
        await self.correct(message, where, prompt.target, text.strip(), event_id=event_id)
        return True

    async def prompt_for_correction(self, where: Where, user: User, target: int) -> None:
        """Ask ``user`` (with a ForceReply) for the better answer to the bot message ``target``."""
        if where.private:
            text, as_html = PROMPT_PRIVATE, False
        else:  # in a group, the mention is what lets the ForceReply pick this one user
            mention = user.mention_html()
            before, _, after = PROMPT_GROUP.partition("{who}")
            text, as_html = html.escape(before) + mention + html.escape(after), True
        sent = await self.say(where, text, reply_to=target, html=as_html,
                              markup=ForceReply(selective=True, input_field_placeholder="The better answer"))
        self.prompts.add(where.chat_id, sent[-1].message_id, user.id, target)

    def cancel_prompts(self, chat_id: int, user_id: int) -> int:
        return self.prompts.cancel(chat_id, user_id)


def chat_key(chat_id: int, thread: int | None = None) -> ChannelKey:
    """The engine's key of a chat (or of one of its forum topics)."""
    return ChannelKey("telegram", str(chat_id), thread=str(thread) if thread else "")


def where_in(chat: Chat, thread: int | None = None) -> Where:
    key = chat_key(chat.id, thread)
    return Where(chat.id, thread, chat.type == ChatType.PRIVATE, key)


def where_of(message: object) -> Where:
    """Works for inaccessible (old) messages too: they keep only the chat and the id."""
    topic = getattr(message, "is_topic_message", None) and getattr(message, "message_thread_id", None)
    return where_in(message.chat, topic or None)  # type: ignore[attr-defined]


def author_of(message: Message) -> tuple[str, str] | None:
    """(id, name) of who sent ``message``: a user, or a chat posting as itself (anonymous admin, channel)."""
    if message.sender_chat is not None:
        chat = message.sender_chat
        return f"chat:{chat.id}", chat.title or chat.full_name or str(chat.id)
    if message.from_user is not None:
        return str(message.from_user.id), message.from_user.full_name
    return None


def is_topic_header(message: Message) -> bool:
    """In a forum topic every message "replies" to the topic's first message; that is no reply."""
    replied = message.reply_to_message
    return bool(
        replied is not None and message.is_topic_message
        and (replied.message_id == message.message_thread_id or replied.forum_topic_created is not None)
    )
