"""Posting to Telegram: Bot API calls with Telegram's failure modes mapped.

``Outbox`` wraps the few calls the adapter makes. One attempt of ``send``/``edit``
raises ``RateLimited`` on a 429 (with the server's ``retry_after``) or a transient
server/network failure, so the shared ``ReplyStreamer`` can skip an intermediate
edit and retry the final one; ``say`` retries by itself (command answers,
acknowledgements); ``draft`` shows a private-chat answer's unfinished part as an
ephemeral ``sendMessageDraft`` preview (``ReplyStreamer``'s ``preview``).
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import functools
import logging
import warnings
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from telegram import Bot, InlineKeyboardMarkup, LinkPreviewOptions, Message, ReplyParameters
from telegram.constants import MessageLimit
from telegram.error import BadRequest, ChatMigrated, Forbidden, InvalidToken, NetworkError, RetryAfter

from ..streaming import RateLimited, WaitBudget, retry_rate_limited, split_message

__all__ = ["LIMIT", "ChatUnavailable", "DraftsUnsupported", "Outbox", "fit", "retrying"]

log = logging.getLogger(__name__)

T = TypeVar("T")

LIMIT = MessageLimit.MAX_TEXT_LENGTH  # 4,096
TRANSIENT_WAIT = 1.0  # seconds before retrying after a 5xx or a network failure
RETRIES = 5  # further tries of a call that is rate limited or fails transiently
_CANNOT_POST = ("chat not found", "thread not found", "topic_closed", "topic_deleted", "not enough rights",
                "have no rights")
_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)  # a preview flickering under a streaming answer helps no one


class ChatUnavailable(Exception):
    """The bot cannot post in this chat any more (blocked by the user, removed from the group)."""


class DraftsUnsupported(Exception):
    """The Bot API server does not offer ``sendMessageDraft``."""


def fit(text: str) -> str:
    """``text`` cut to Telegram's limit, which counts UTF-16 code units (an emoji can count twice)."""
    if len(text) <= LIMIT // 2 or len(text.encode("utf-16-le")) // 2 <= LIMIT:
        return text
    kept, used = [], 0
    for char in text:
        used += 2 if ord(char) > 0xFFFF else 1
        if used > LIMIT - 1:
            break
        kept.append(char)
    return "".join(kept) + "…"


def retry_after(err: RetryAfter) -> float:
    with warnings.catch_warnings():  # the int form of retry_after is deprecated; either form works here
        warnings.simplefilter("ignore")
        value = err.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


async def attempt(call: Callable[[], Awaitable[T]]) -> T:
    """One Bot API call, with flood control and transient failures raised as ``RateLimited``."""
    try:
        return await call()
    except RetryAfter as err:
        raise RateLimited(retry_after(err)) from None
    except Forbidden as err:
        raise ChatUnavailable(str(err)) from None
    except ChatMigrated as err:  # a group became a supergroup (``Handlers.on_migrate`` moves what it taught)
        raise ChatUnavailable(f"the chat moved to {err.new_chat_id}") from None
    except BadRequest as err:
        if any(reason in str(err).lower() for reason in _CANNOT_POST):
            raise ChatUnavailable(str(err)) from None
        raise
    except InvalidToken:
        raise
    except NetworkError as err:  # 5xx, timeouts, connection resets: worth another try
        log.info("Telegram call failed (%s); retrying in %.0f s", err, TRANSIENT_WAIT)
        raise RateLimited(TRANSIENT_WAIT) from None


async def retrying(call: Callable[[], Awaitable[T]], attempts: int = RETRIES + 1, *, cap: float = 30.0) -> T:
    """``attempt`` until it succeeds, waiting as long as Telegram asks between tries, ``cap`` seconds in all."""
    return await retry_rate_limited(lambda: attempt(call), max_retries=attempts - 1, budget=WaitBudget(cap))


class Outbox:
    """The adapter's outgoing Bot API calls; ``say`` waits at most ``cap`` seconds on rate limits."""

    def __init__(self, bot: Bot, cap: float = 30.0) -> None:
        self.bot, self.cap = bot, cap

    async def send(self, chat_id: int, text: str, *, thread: int | None = None, reply_to: int | None = None,
                   markup: Any = None, html: bool = False) -> Message:
        """One attempt to post ``text``; see ``attempt`` for what it raises."""
        return await attempt(lambda: self.bot.send_message(
            chat_id, fit(text), message_thread_id=thread, reply_markup=markup,
            reply_parameters=ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None,
            link_preview_options=_NO_PREVIEW, parse_mode="HTML" if html else None,
        ))

    async def edit(self, chat_id: int, message_id: int, text: str, *, markup: InlineKeyboardMarkup | None = None
                   ) -> None:
        """One attempt to change a message's text (the keyboard must be given again, or it goes)."""
        try:
            await attempt(lambda: self.bot.edit_message_text(
                fit(text), chat_id, message_id, reply_markup=markup, link_preview_options=_NO_PREVIEW,
            ))
        except BadRequest as err:
            reason = str(err).lower()
            if "not modified" in reason:
                return  # already shows this text: what we wanted
            if "message to edit not found" in reason:
                log.info("message %s in chat %s was deleted while being written", message_id, chat_id)
                return
            raise

    async def say(self, chat_id: int, text: str, *, thread: int | None = None, reply_to: int | None = None,
                  markup: Any = None, html: bool = False) -> list[Message]:
        """Post ``text`` (split at the limit, ``markup`` under the last part), retrying rate limits."""
        parts = [text] if html else split_message(text, LIMIT) or ["…"]
        sent = []
        for index, part in enumerate(parts):
            under = markup if index == len(parts) - 1 else None
            post = functools.partial(self.send, chat_id, part, thread=thread, reply_to=reply_to, markup=under,
                                     html=html)
            sent.append(await retry_rate_limited(post, max_retries=RETRIES, budget=WaitBudget(self.cap)))
        return sent

    async def draft(self, chat_id: int, draft_id: int, text: str, *, thread: int | None = None) -> bool:
        """Show ``text`` as the chat's draft; False when it could not be shown this time.

        Raises ``DraftsUnsupported`` when the server has no ``sendMessageDraft``.
        """
        if not hasattr(self.bot, "send_message_draft"):  # python-telegram-bot before 22.6
            raise DraftsUnsupported("this python-telegram-bot has no send_message_draft")
        try:
            await attempt(lambda: self.bot.send_message_draft(chat_id, draft_id, fit(text), message_thread_id=thread))
            return True
        except RateLimited:
            return False  # drafts are a preview: skip one, the next or the final message follows
        except InvalidToken as err:  # how the library reports a 404 "method not found"
            raise DraftsUnsupported(str(err)) from None
        except BadRequest as err:
            log.info("a draft was refused in chat %s (%s)", chat_id, err)
            return False

    async def typing(self, chat_id: int, *, thread: int | None = None, after: float = 1.0, every: float = 4.5
                     ) -> None:
        """Show "typing…" from ``after`` seconds on until cancelled (Telegram shows it for 5 s)."""
        await asyncio.sleep(after)
        while True:
            try:
                await self.bot.send_chat_action(chat_id, "typing", message_thread_id=thread)
            except Exception as err:  # a cosmetic call: never let it disturb the answer
                log.debug("typing indicator failed in chat %s: %s", chat_id, err)
            await asyncio.sleep(every)
