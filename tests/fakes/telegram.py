"""A fake Telegram Bot API server on 127.0.0.1, for running the real python-telegram-bot against.

It speaks the wire protocol (``POST /bot<TOKEN>/<method>``, form or JSON bodies,
``{"ok": ..., "result": ...}`` answers, Telegram's error codes and texts), keeps
each chat's messages as Telegram would (sends, edits, drafts, keyboards), hands out
updates by long polling with Telegram's offset semantics (an update is confirmed, and
gone, once ``getUpdates`` is called with a higher offset) or pushes them to a webhook
with the secret header, and injects 429/500 answers on demand.

Tests play the users (``say``, ``press``, ``react``, ``edit``, ``push``) and await
what the bot does (``wait_for``, ``next_call``, ``answer``) instead of sleeping::

    async with FakeTelegram() as tg:
        ...  # point the adapter at tg.api_url with tg.token
        asked = tg.say(tg.private(ann), ann, "hello")
        (reply,) = await tg.answer(ann["id"], asked["message_id"])
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

__all__ = ["PLACEHOLDER_TAIL", "Call", "ChatMessage", "FakeTelegram", "utf16_len"]

T = TypeVar("T")

PLACEHOLDER_TAIL = " …"  # how the adapter marks a message still being written
MAX_TEXT = 4096
DEFAULT_UPDATES = (  # Telegram's default when allowed_updates was never given
    "message", "edited_message", "channel_post", "edited_channel_post", "inline_query", "chosen_inline_result",
    "callback_query", "shipping_query", "pre_checkout_query", "poll", "poll_answer", "my_chat_member",
    "chat_join_request",
)
_INT_PARAMS = {"chat_id", "message_id", "offset", "limit", "timeout", "draft_id", "message_thread_id", "user_id",
               "max_connections", "cache_time"}
_JSON_PARAMS = {"reply_markup", "reply_parameters", "entities", "allowed_updates", "commands", "scope", "reaction",
                "link_preview_options", "caption_entities"}
_BOOL_PARAMS = {"drop_pending_updates", "show_alert", "disable_notification", "protect_content", "is_big"}


def utf16_len(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units)."""
    return len(text.encode("utf-16-le")) // 2


@dataclass
class Call:
    """One Bot API request the bot made, and how the fake answered it."""

    method: str
    params: dict[str, Any]
    status: int
    result: Any = None
    index: int = 0
    at: float = field(default_factory=time.perf_counter)  # when the request arrived


@dataclass
class ChatMessage:
    """A message in a chat, as the fake keeps it; ``texts`` is every text it showed."""

    chat_id: int
    message_id: int
    text: str
    from_bot: bool
    sender: dict[str, Any]
    reply_to: int | None = None
    thread: int | None = None
    reply_markup: dict[str, Any] | None = None
    texts: list[str] = field(default_factory=list)
    date: int = field(default_factory=lambda: int(time.time()))
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return not self.text.endswith(PLACEHOLDER_TAIL)

    @property
    def buttons(self) -> list[str]:
        rows = (self.reply_markup or {}).get("inline_keyboard", [])
        return [button.get("callback_data", "") for row in rows for button in row]


class _ApiError(Exception):
    def __init__(self, status: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.status, self.description, self.parameters = status, description, parameters


@dataclass
class _Fault:
    method: str
    status: int
    times: int
    retry_after: int
    when: Callable[[dict[str, Any]], bool] | None


class FakeTelegram:
    """The fake server; use as ``async with FakeTelegram() as tg``."""

    def __init__(
        self,
        token: str = "123456789:TEST-fake-token-xyz",
        *,
        username: str = "heedful_test_bot",
        drafts: bool = True,
    ) -> None:
        self.token = token
        self.bot_user = {"id": int(token.split(":")[0]), "is_bot": True, "first_name": "heedful",
                         "username": username, "can_join_groups": True, "can_read_all_group_messages": False,
                         "supports_inline_queries": False}
        self.supports_drafts = drafts
        self.calls: list[Call] = []
        self.chats: dict[int, dict[str, Any]] = {}
        self.messages: dict[int, dict[int, ChatMessage]] = {}
        self.drafts: dict[int, list[str]] = {}
        self.admins: dict[int, list[int]] = {}
        self.commands: list[dict[str, Any]] = []
        self.callback_answers: dict[str, dict[str, Any]] = {}
        self.webhook_url = ""
        self.webhook_secret = ""
        self.webhook_statuses: list[int] = []
        self.allowed_updates: tuple[str, ...] = DEFAULT_UPDATES
        self.delivered: list[int] = []  # update ids handed to the bot, in order
        self.pushed: list[dict[str, Any]] = []  # every update queued, in order
        self.delivered_at: dict[int, float] = {}  # update id -> perf_counter when first handed out
        self._pending: list[dict[str, Any]] = []
        self._update_ids = itertools.count(500_000)
        self._callback_ids = itertools.count(1)
        self._faults: list[_Fault] = []
        self._changed = asyncio.Event()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._pusher: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)  # aiohttp's access log would print the token
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        self._closing = True
        self._notify()  # ends long polls still waiting, so the server can close at once
        await self._stop_pusher()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    # -- the users' side -----------------------------------------------------------------

    @staticmethod
    def user(user_id: int, first_name: str = "Ann", *, username: str | None = None, is_bot: bool = False
             ) -> dict[str, Any]:
        user: dict[str, Any] = {"id": user_id, "is_bot": is_bot, "first_name": first_name}
        if username:
            user["username"] = username
        return user

    def private(self, user: dict[str, Any]) -> dict[str, Any]:
        chat = {"id": user["id"], "type": "private", "first_name": user["first_name"]}
        self.chats[chat["id"]] = chat
        return chat

    def group(self, chat_id: int, title: str = "team", *, forum: bool = False, admins: Iterable[int] = (),
              basic: bool = False) -> dict[str, Any]:
        """A supergroup (or, ``basic``, an old-style group, which may later migrate)."""
        assert chat_id < 0, "group chat ids are negative"
        chat: dict[str, Any] = {"id": chat_id, "type": "group" if basic else "supergroup", "title": title}
        if forum:
            chat["is_forum"] = True
        self.chats[chat_id] = chat
        self.admins[chat_id] = list(admins)
        return chat

    def say(
        self,
        chat: dict[str, Any],
        user: dict[str, Any],
        text: str | None,
        *,
        reply_to: int | None = None,
        thread: int | None = None,
        sender_chat: dict[str, Any] | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """A user sends a message; returns its message object (``message_id`` etc.)."""
        message = self._user_message(chat, user, text, reply_to=reply_to, thread=thread, fields=fields)
        if sender_chat is not None:
            message["sender_chat"] = sender_chat
        self.push({"message": message})
        return message

    def migrate(self, group: dict[str, Any], user: dict[str, Any], new_id: int, *, new_first: bool = False
                ) -> dict[str, Any]:
        """A basic group is upgraded to a supergroup with a new id; as Telegram does it, a
        service message in each chat says so (``new_first``: the new chat's arrives first)."""
        supergroup = self.group(new_id, group.get("title", "team"), admins=self.admins.get(group["id"], ()))
        told_old = lambda: self.say(group, user, None, migrate_to_chat_id=new_id)  # noqa: E731
        told_new = lambda: self.say(supergroup, user, None, migrate_from_chat_id=group["id"])  # noqa: E731
        for tell in ((told_new, told_old) if new_first else (told_old, told_new)):
            tell()
        return supergroup

    def edit(self, chat: dict[str, Any], message_id: int, text: str) -> dict[str, Any]:
        """A user edits their message: an ``edited_message`` update."""
        stored = self.messages[chat["id"]][message_id]
        stored.text = text
        stored.texts.append(text)
        message = self._message_dict(stored) | {"edit_date": int(time.time())}
        self.push({"edited_message": message})
        return message

    def press(self, chat: dict[str, Any], user: dict[str, Any], message_id: int, data: str) -> str:
        """A user presses an inline button under a bot message; returns the callback query id."""
        query_id = str(next(self._callback_ids))
        message = self._message_dict(self.messages[chat["id"]][message_id])
        self.push({"callback_query": {"id": query_id, "from": user, "message": message,
                                      "chat_instance": f"ci{chat['id']}", "data": data}})
        return query_id

    def react(self, chat: dict[str, Any], user: dict[str, Any] | None, message_id: int, new: Iterable[str],
              old: Iterable[str] = ()) -> None:
        """A user (``None``: anonymously) sets reactions on a message."""
        reaction: dict[str, Any] = {
            "chat": chat, "message_id": message_id, "date": int(time.time()),
            "old_reaction": [{"type": "emoji", "emoji": e} for e in old],
            "new_reaction": [{"type": "emoji", "emoji": e} for e in new],
        }
        if user is not None:
            reaction["user"] = user
        else:
            reaction["actor_chat"] = chat
        self.push({"message_reaction": reaction})

    def push(self, update: dict[str, Any]) -> int:
        """Queue a raw update (an ``update_id`` is added unless given); returns its id."""
        update = dict(update)
        update.setdefault("update_id", next(self._update_ids))
        self.pushed.append(update)
        self._pending.append(update)
        self._notify()
        return int(update["update_id"])

    def set_admins(self, chat_id: int, user_ids: Iterable[int]) -> None:
        self.admins[chat_id] = list(user_ids)

    def forget_confirmations(self, updates: Iterable[dict[str, Any]]) -> None:
        """Put already-confirmed updates back in the queue, as after a crash before confirming."""
        self._pending[:0] = [dict(u) for u in updates]
        self._notify()

    # -- inspection and waiting ----------------------------------------------------------

    def bot_messages(self, chat_id: int) -> list[ChatMessage]:
        return [m for m in self.messages.get(chat_id, {}).values() if m.from_bot]

    def replies_to(self, chat_id: int, message_id: int) -> list[ChatMessage]:
        return [m for m in self.bot_messages(chat_id) if m.reply_to == message_id]

    def calls_to(self, method: str, chat_id: int | None = None) -> list[Call]:
        return [c for c in self.calls
                if c.method == method and (chat_id is None or c.params.get("chat_id") == chat_id)]

    async def wait_for(self, predicate: Callable[[], T | None], timeout: float = 60.0) -> T:
        """Wait until ``predicate()`` is truthy (checked after every request); returns its value.

        The timeout only keeps a broken test from hanging; it is no performance bound.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            event = self._changed
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                recent = [(c.method, c.status, {k: str(v)[:60] for k, v in c.params.items()}) for c in self.calls[-8:]]
                raise AssertionError(f"condition not met within {timeout} s; last calls: {recent}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), remaining)

    async def next_call(self, method: str, *, after: int | None = None, **match: Any) -> Call:
        """The first ``method`` call at or after index ``after`` (default: from now) whose params match."""
        start = len(self.calls) if after is None else after

        def found() -> Call | None:
            for call in self.calls[start:]:
                if call.method == method and all(call.params.get(k) == v for k, v in match.items()):
                    return call
            return None

        return await self.wait_for(found)

    async def answer(self, chat_id: int, message_id: int, parts: int = 1, *, timeout: float = 60.0
                     ) -> list[ChatMessage]:
        """The bot's finished answer (``parts`` messages) to the user message ``message_id``."""

        def done() -> list[ChatMessage] | None:
            sent = self.replies_to(chat_id, message_id)
            return sent if len(sent) >= parts and all(m.final for m in sent) else None

        return await self.wait_for(done, timeout)

    async def said(self, chat_id: int, contains: str, *, after: int = 0, timeout: float = 60.0) -> ChatMessage:
        """The first bot message in ``chat_id`` (message id above ``after``) whose text contains ``contains``."""
        return await self.wait_for(lambda: next(
            (m for m in self.bot_messages(chat_id) if m.message_id > after and contains in m.text), None), timeout)

    # -- faults --------------------------------------------------------------------------

    def fail(self, method: str, *, status: int = 429, times: int = 1, retry_after: int = 1,
             when: Callable[[dict[str, Any]], bool] | None = None) -> None:
        """Answer the next ``times`` matching ``method`` calls with ``status`` (429 carries ``retry_after``)."""
        self._faults.append(_Fault(method, status, times, retry_after, when))

    def _fault_for(self, method: str, params: dict[str, Any]) -> _Fault | None:
        for fault in self._faults:
            if fault.method == method and fault.times > 0 and (fault.when is None or fault.when(params)):
                fault.times -= 1
                return fault
        return None

    # -- HTTP ----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.path
        match = re.fullmatch(r"/bot([^/]+)/([A-Za-z]+)", path)
        if match is None:
            return _reply(404, {"ok": False, "error_code": 404, "description": "Not Found"})
        token, method = match.groups()
        if token != self.token:
            return _reply(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
        params = await _params(request)
        call = Call(method, params, 200, index=len(self.calls))
        fault = self._fault_for(method, params)
        try:
            if fault is not None:
                if fault.status == 429:
                    raise _ApiError(429, f"Too Many Requests: retry after {fault.retry_after}",
                                    {"retry_after": fault.retry_after})
                raise _ApiError(fault.status, "Internal Server Error")
            handler = getattr(self, f"_api_{method}", None)
            if handler is None:
                raise _ApiError(404, "Not Found: method not found")
            call.result = await handler(params) if method == "getUpdates" else handler(params)
            body: dict[str, Any] = {"ok": True, "result": call.result}
        except _ApiError as err:
            call.status = err.status
            body = {"ok": False, "error_code": err.status, "description": err.description}
            if err.parameters:
                body["parameters"] = err.parameters
        self.calls.append(call)
        self._notify()
        return _reply(call.status, body)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- Bot API methods -----------------------------------------------------------------

    def _api_getMe(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.bot_user

    def _api_logOut(self, params: dict[str, Any]) -> bool:
        return True

    def _api_close(self, params: dict[str, Any]) -> bool:
        return True

    async def _api_getUpdates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        if self.webhook_url:
            raise _ApiError(409, "Conflict: can't use getUpdates method while webhook is active; "
                                 "use deleteWebhook to delete the webhook first")
        if params.get("allowed_updates") is not None:
            self.allowed_updates = tuple(params["allowed_updates"]) or DEFAULT_UPDATES
        offset = int(params.get("offset") or 0)
        if offset > 0:
            self._pending = [u for u in self._pending if u["update_id"] >= offset]
        elif offset < 0:
            self._pending = self._pending[offset:]
        limit = int(params.get("limit") or 100)
        deadline = asyncio.get_running_loop().time() + float(params.get("timeout") or 0)
        while True:
            self._pending = [u for u in self._pending if self._allowed(u)]  # others are dropped, as Telegram does
            if self._pending or self._closing or asyncio.get_running_loop().time() >= deadline:
                break
            event = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), deadline - asyncio.get_running_loop().time())
        batch = self._pending[:limit]
        self._record_delivery(batch)
        return batch

    def _record_delivery(self, updates: list[dict[str, Any]]) -> None:
        now = time.perf_counter()
        for update in updates:
            self.delivered.append(update["update_id"])
            self.delivered_at.setdefault(update["update_id"], now)

    def _allowed(self, update: dict[str, Any]) -> bool:
        kinds = [k for k in update if k != "update_id"]
        return not kinds or any(k in self.allowed_updates for k in kinds) or kinds[0] not in _KNOWN_KINDS

    def _api_deleteWebhook(self, params: dict[str, Any]) -> bool:
        self.webhook_url = self.webhook_secret = ""
        if self._pusher is not None:
            self._pusher.cancel()
            self._pusher = None
        if params.get("drop_pending_updates"):
            self._pending.clear()
        return True

    def _api_setWebhook(self, params: dict[str, Any]) -> bool:
        self.webhook_url = params["url"]
        self.webhook_secret = params.get("secret_token", "")
        if params.get("allowed_updates") is not None:
            self.allowed_updates = tuple(params["allowed_updates"]) or DEFAULT_UPDATES
        if params.get("drop_pending_updates"):
            self._pending.clear()
        if self._pusher is None:
            self._pusher = asyncio.create_task(self._push_to_webhook())
        return True

    def _api_getWebhookInfo(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"url": self.webhook_url, "has_custom_certificate": False, "pending_update_count": len(self._pending)}

    def _api_sendMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = params["chat_id"]
        text = _check_text(params.get("text", ""))
        reply = params.get("reply_parameters") or {}
        reply_to = reply.get("message_id")
        chat_messages = self.messages.setdefault(chat_id, {})
        thread = params.get("message_thread_id")
        if reply_to is not None and reply_to not in chat_messages:
            if not reply.get("allow_sending_without_reply"):
                raise _ApiError(400, "Bad Request: message to be replied not found")
            reply_to = None
        if reply_to is not None and thread is None:
            thread = chat_messages[reply_to].thread
        message = ChatMessage(chat_id, len(chat_messages) + 1, text, True, self.bot_user, reply_to, thread,
                              params.get("reply_markup"), [text])
        chat_messages[message.message_id] = message
        return self._message_dict(message)

    def _api_editMessageText(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._bot_message(params)
        text = _check_text(params.get("text", ""))
        markup = params.get("reply_markup")
        if text == message.text and markup == message.reply_markup:
            raise _ApiError(400, "Bad Request: message is not modified: specified new message content and reply "
                                 "markup are exactly the same as a current content and reply markup of the message")
        message.text, message.reply_markup = text, markup  # no reply_markup removes the keyboard
        message.texts.append(text)
        return self._message_dict(message)

    def _api_editMessageReplyMarkup(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._bot_message(params)
        message.reply_markup = params.get("reply_markup")
        return self._message_dict(message)

    def _api_sendMessageDraft(self, params: dict[str, Any]) -> bool:
        if not self.supports_drafts:
            raise _ApiError(404, "Not Found: method not found")
        chat_id = params["chat_id"]
        if chat_id < 0:
            raise _ApiError(400, "Bad Request: TEXTDRAFT_PEER_INVALID")
        if not params.get("draft_id"):
            raise _ApiError(400, "Bad Request: draft_id must be non-zero")
        text = params.get("text") or ""
        if utf16_len(text) > MAX_TEXT:
            raise _ApiError(400, "Bad Request: message is too long")
        self.drafts.setdefault(chat_id, []).append(text)
        return True

    def _api_sendChatAction(self, params: dict[str, Any]) -> bool:
        return True

    def _api_setMessageReaction(self, params: dict[str, Any]) -> bool:
        self._bot_message(params, own=False).extra["reaction"] = params.get("reaction")
        return True

    def _api_answerCallbackQuery(self, params: dict[str, Any]) -> bool:
        query_id = params["callback_query_id"]
        if query_id in self.callback_answers:
            raise _ApiError(400, "Bad Request: query is too old and response timeout expired or query ID is invalid")
        self.callback_answers[query_id] = params
        return True

    def _api_setMyCommands(self, params: dict[str, Any]) -> bool:
        commands = params.get("commands") or []
        for command in commands:
            if not re.fullmatch(r"[a-z0-9_]{1,32}", command.get("command", "")) or not (
                1 <= len(command.get("description", "")) <= 256
            ):
                raise _ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
        self.commands = commands
        return True

    def _api_getMyCommands(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return self.commands

    def _api_getChatAdministrators(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        chat = self.chats.get(params["chat_id"])
        if chat is None:
            raise _ApiError(400, "Bad Request: chat not found")
        return [_member(self.user(uid, f"admin{uid}"), owner=i == 0) for i, uid in enumerate(self.admins[chat["id"]])]

    def _api_getChatMember(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id, user_id = params["chat_id"], params["user_id"]
        admins = self.admins.get(chat_id, [])
        if user_id in admins:
            return _member(self.user(user_id, f"admin{user_id}"), owner=admins.index(user_id) == 0)
        return {"status": "member", "user": self.user(user_id, f"user{user_id}")}

    # -- internals -----------------------------------------------------------------------

    def _user_message(self, chat: dict[str, Any], user: dict[str, Any], text: str | None, *, reply_to: int | None,
                      thread: int | None, fields: dict[str, Any]) -> dict[str, Any]:
        chat_messages = self.messages.setdefault(chat["id"], {})
        if reply_to is not None and thread is None:
            thread = chat_messages[reply_to].thread
        message = ChatMessage(chat["id"], len(chat_messages) + 1, text or "", False, user, reply_to, thread,
                              texts=[text or ""], extra=fields)
        chat_messages[message.message_id] = message
        return self._message_dict(message, text_missing=text is None)

    def _message_dict(self, message: ChatMessage, *, text_missing: bool = False, nested: bool = True
                      ) -> dict[str, Any]:
        chat = self.chats.get(message.chat_id) or {"id": message.chat_id, "type": "private"}
        data: dict[str, Any] = {"message_id": message.message_id, "date": message.date, "chat": chat,
                                "from": message.sender}
        if not text_missing and message.text:
            data["text"] = message.text
            entities = _entities(message.text)
            if entities:
                data["entities"] = entities
        if message.reply_markup and "inline_keyboard" in message.reply_markup:
            data["reply_markup"] = message.reply_markup  # messages show only inline keyboards
        if message.thread is not None:
            data["message_thread_id"] = message.thread
            if chat.get("is_forum"):
                data["is_topic_message"] = True
        if nested and message.reply_to is not None:
            replied = self.messages[message.chat_id].get(message.reply_to)
            if replied is not None:
                data["reply_to_message"] = self._message_dict(replied, nested=False)
        data.update(message.extra)
        return data

    def _bot_message(self, params: dict[str, Any], *, own: bool = True) -> ChatMessage:
        message = self.messages.get(params.get("chat_id", 0), {}).get(params.get("message_id", 0))
        if message is None or (own and not message.from_bot):
            raise _ApiError(400, "Bad Request: message to edit not found")
        return message

    async def _push_to_webhook(self) -> None:
        """Deliver queued updates to the webhook one at a time, retrying failures, as Telegram does."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        while True:
            while not self._pending:
                await self._changed.wait()
            update = self._pending[0]
            self.delivered_at.setdefault(update["update_id"], time.perf_counter())
            headers = {"Content-Type": "application/json"}
            if self.webhook_secret:
                headers["X-Telegram-Bot-Api-Secret-Token"] = self.webhook_secret
            try:
                async with self._session.post(self.webhook_url, data=json.dumps(update), headers=headers) as resp:
                    status = resp.status
            except aiohttp.ClientError:
                status = 0
            self.webhook_statuses.append(status)
            if status == 200:
                if self._pending and self._pending[0] is update:
                    self._pending.pop(0)
                self.delivered.append(update["update_id"])
                self._notify()
            else:
                await asyncio.sleep(0.05)  # Telegram backs off before retrying a failed delivery

    async def _stop_pusher(self) -> None:
        if self._pusher is not None:
            self._pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pusher
            self._pusher = None


_KNOWN_KINDS = set(DEFAULT_UPDATES) | {"message_reaction", "message_reaction_count", "chat_member", "chat_boost",
                                       "removed_chat_boost", "business_connection", "business_message"}


def _reply(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


async def _params(request: web.Request) -> dict[str, Any]:
    """The request's parameters, decoded the way the Bot API reads them (form values may be JSON)."""
    raw: dict[str, Any] = dict(request.query)
    if request.can_read_body:
        if request.content_type == "application/json":
            raw.update(await request.json())
            return raw
        raw.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
    params: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(value, str):
            params[key] = value
        elif key in _JSON_PARAMS:
            params[key] = json.loads(value)
        elif key in _INT_PARAMS:
            params[key] = int(value) if re.fullmatch(r"-?\d+", value) else value
        elif key in _BOOL_PARAMS:
            params[key] = value.lower() in ("true", "1")
        else:
            params[key] = value
    return params


def _check_text(text: str) -> str:
    """The text as Telegram keeps it (trimmed), or the error it answers."""
    if not text.strip():
        raise _ApiError(400, "Bad Request: message text is empty")
    if utf16_len(text) > MAX_TEXT:
        raise _ApiError(400, "Bad Request: message is too long")
    return text.strip()


def _entities(text: str) -> list[dict[str, Any]]:
    """The entities Telegram's servers detect: a leading /command and @mentions (UTF-16 offsets)."""
    found = []
    for match in re.finditer(r"(?:^/[A-Za-z0-9_]+(?:@[A-Za-z0-9_]+)?)|(?<![\w@])@[A-Za-z0-9_]{5,32}", text):
        kind = "bot_command" if match.group().startswith("/") else "mention"
        found.append({"type": kind, "offset": utf16_len(text[: match.start()]), "length": utf16_len(match.group())})
    return found


def _member(user: dict[str, Any], *, owner: bool) -> dict[str, Any]:
    if owner:
        return {"status": "creator", "user": user, "is_anonymous": False}
    rights = ("can_be_edited", "is_anonymous", "can_manage_chat", "can_delete_messages", "can_manage_video_chats",
              "can_restrict_members", "can_promote_members", "can_change_info", "can_invite_users",
              "can_post_stories", "can_edit_stories", "can_delete_stories")
    return {"status": "administrator", "user": user} | {r: r not in ("can_be_edited", "is_anonymous") for r in rights}
