"""The Telegram adapter: python-telegram-bot built, routed, started and stopped, on the shared runtime.

``TelegramAdapter`` holds its parts rather than inheriting them: ``core``
(``_core.py``: where and who, answering, teaching), ``handlers`` (``_handlers.py``:
the python-telegram-bot callbacks) and the ``Application``. Routing (handler groups):

- group -1, every update: drop it if its id was handled (or is being handled) before
  (also across restarts: the runtime's de-duplication, on the persistent ``UpdateLog``)
  or if another bot sent it; track its task, so that ``idle`` and ``stop`` wait for it,
  and mark the update handled in the log when that task ends.
- group 0: commands; unknown commands; messages; edited messages (ignored); inline
  buttons; reactions.

Every update is journalled (``JournalQueue``) before Telegram is told it arrived, and
marked handled only when its handling is over: updates a crash interrupted are handled
again at the next start (at least once), and the feedback they carry is applied once
(its event id is the update's). Updates are processed concurrently; answers wait in
their chat's queue for one of ``concurrency`` slots (``BaseAdapter.serve``), so one busy
chat never holds up another. A handler's error goes to the runtime's guard
(``BaseAdapter.handler_failed``).
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import functools
import logging
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from telegram import BotCommand, Update
from telegram.error import InvalidToken, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    MessageReactionHandler,
    TypeHandler,
    filters,
)

from engine import Engine

from ..base import BaseAdapter
from ..policy import TeachPolicy
from ..settings import TelegramSettings
from ..streaming import RateLimited
from ._core import PROMPT_TTL, Author, TelegramCore, TelegramStartError
from ._delivery import ChatUnavailable, Outbox, retrying
from ._handlers import Handlers
from ._prompts import PromptBook
from ._redact import SecretFilter
from ._texts import COMMANDS, TEXTS
from ._updates import JournalQueue, UpdateLog, UpdatesRequest, well_formed

__all__ = ["ALLOWED_UPDATES", "TelegramAdapter", "TelegramStartError"]

log = logging.getLogger("adapters.telegram")

ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "message_reaction"]


class TelegramAdapter(BaseAdapter[Author]):
    """Serves every Telegram chat the bot is in through one engine."""

    platform = "telegram"
    texts = TEXTS

    def __init__(self, engine: Engine, settings: TelegramSettings) -> None:
        super().__init__(engine, settings)
        if settings.token is None or not settings.token.get_secret_value().strip():
            raise TelegramStartError("no Telegram bot token: set HEEDFUL_TELEGRAM_TOKEN")
        self.settings = settings
        self.app: Application[Any, Any, Any, Any, Any, Any] | None = None
        self.updates = UpdateLog(None)
        self.seen = self.updates
        self.webhook_secret = (
            settings.webhook_secret.get_secret_value() if settings.webhook_secret else secrets.token_urlsafe(32)
        )
        self.redact = SecretFilter([settings.token.get_secret_value(), self.webhook_secret])
        self.core = TelegramCore(self, settings)
        self.handlers = Handlers(self.core)

    async def connect(self) -> None:
        """Connect (``getMe``), register the commands, and start polling or the webhook server.

        Returns once updates are being received in the background. Raises
        ``TelegramStartError`` (token-free message) when Telegram cannot be reached or
        refuses the token (``start`` stops what was started then).
        """
        self.redact.attach()  # before the Bot exists: it logs its URL, token included, at DEBUG
        try:
            self.app = app = self._build()
            await app.initialize()
            me = app.bot.bot
            self.core.me, self.core.out, self.own_id = me, Outbox(app.bot, self.settings.rate_limit_cap), str(me.id)
            state = self._state_file(me.id)
            self.seen = self.updates = UpdateLog(state)
            self.core.prompts = PromptBook(state.with_name(state.stem + ".prompts.json") if state else None,
                                           PROMPT_TTL)
            self._route(app)
            await self._register_commands()
            await app.start()
            await self._replay(app)
            if self.settings.webhook_url:
                await self._start_webhook(app)
            else:
                await self._start_polling(app)
        except InvalidToken:
            raise TelegramStartError(
                f"Telegram ({self.settings.api_url}) rejected the bot token; check HEEDFUL_TELEGRAM_TOKEN"
            ) from None
        except (TelegramError, RateLimited, OSError) as err:
            raise TelegramStartError(f"could not start the Telegram adapter: {self.redact.scrub(str(err))}") from None
        mode = "a webhook" if self.settings.webhook_url else "long polling"
        log.info("Telegram adapter serving @%s by %s", me.username, mode)

    async def stop(self) -> None:
        """Stop receiving, let answers in progress finish (up to ``shutdown_grace`` s), disconnect.

        Safe to call twice or after a failed start.
        """
        app, self.app = self.app, None
        try:
            if app is not None:
                if app.updater is not None and app.updater.running:
                    await app.updater.stop()
                await self.drain()
                if app.running:
                    await app.stop()
                await app.shutdown()
                await app.bot.shutdown()  # closes the connections when start failed before the app was up
        finally:
            self.redact.detach()

    # -- set-up ----------------------------------------------------------------------------

    def _build(self) -> Application[Any, Any, Any, Any, Any, Any]:
        settings = self.settings
        assert settings.token is not None
        api_url = settings.api_url
        file_url = settings.file_url or (api_url[: -len("bot")] + "file/bot" if api_url.endswith("/bot") else api_url)
        polling = UpdatesRequest(connection_pool_size=1, connect_timeout=10.0, read_timeout=10.0, pool_timeout=10.0)
        return (
            ApplicationBuilder()
            .token(settings.token.get_secret_value())
            .base_url(api_url)
            .base_file_url(file_url)
            .get_updates_request(polling)
            .connection_pool_size(max(8, settings.concurrency + 8))
            .connect_timeout(10.0)
            .read_timeout(15.0)
            .write_timeout(15.0)
            .pool_timeout(15.0)
            # Handlers run at once; answers then wait in their chat's queue (``serve``), so this bound
            # must leave room for every question the queues hold, or one busy chat would block others here.
            .concurrent_updates(self.backlog + settings.concurrency + 64)
            .update_queue(JournalQueue(lambda: self.updates))
            .job_queue(None)
            .build()
        )

    def _state_file(self, bot_id: int) -> Path | None:
        if self.settings.state_file is not None:
            return self.settings.state_file
        data_dir = getattr(getattr(self.engine, "settings", None), "data_dir", None)
        return Path(data_dir) / "telegram" / f"{bot_id}.json" if data_dir else None

    def _route(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        app.add_handler(TypeHandler(Update, self._gate), group=-1)
        new = filters.UpdateType.MESSAGE  # commands in edited messages are not run again
        on = self.handlers
        for name, callback in (
            ("start", on.cmd_start), ("help", on.cmd_help), ("ask", on.cmd_ask), ("fix", on.cmd_fix),
            ("fixme", on.cmd_fixme), ("personal", on.cmd_personal),
            ("why", on.cmd_why), ("learned", on.cmd_learned), ("stats", on.cmd_stats), ("forget", on.cmd_forget),
            ("persona", on.cmd_persona), ("cancel", on.cmd_cancel),
        ):
            app.add_handler(CommandHandler(name, callback, filters=new))
        app.add_handler(MessageHandler(filters.StatusUpdate.MIGRATE, on.on_migrate))
        app.add_handler(MessageHandler(filters.COMMAND & new, on.on_unknown_command))
        app.add_handler(MessageHandler(new, on.on_message))
        app.add_handler(MessageHandler(filters.UpdateType.EDITED_MESSAGE, on.on_edited))
        app.add_handler(CallbackQueryHandler(on.on_button))
        app.add_handler(MessageReactionHandler(on.on_reaction))
        app.add_error_handler(self._on_error)

    async def _register_commands(self) -> None:
        assert self.app is not None
        bot = self.app.bot
        try:
            await retrying(lambda: bot.set_my_commands([BotCommand(name, text) for name, text in COMMANDS]))
        except (TelegramError, RateLimited) as err:
            log.warning("could not register the command list (setMyCommands): %s", err)

    async def _replay(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        """Handle again what was received but not handled before the last stop (a crash, say)."""
        pending = self.updates.pending()
        if pending:
            log.warning("handling %d update(s) received before a restart but never handled", len(pending))
        for data in pending:
            try:
                update = Update.de_json(data, app.bot)
            except Exception as err:  # whatever the parser trips on, this update is unusable
                log.warning("could not read back update %s (%s); dropping it", data.get("update_id"), err)
                self.updates.done(int(data.get("update_id", 0)))
                continue
            await app.update_queue.put(update)

    async def _start_polling(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        assert app.updater is not None
        offset = self.updates.resume_offset
        if offset is not None:
            # Confirm what was handled before the restart, so it is not fetched again.
            await retrying(lambda: app.bot.delete_webhook())
            await retrying(lambda: app.bot.get_updates(offset=offset, limit=1, timeout=0))
        await app.updater.start_polling(
            poll_interval=0.0,
            timeout=dtm.timedelta(seconds=self.settings.poll_timeout),
            bootstrap_retries=3,
            allowed_updates=ALLOWED_UPDATES,
            drop_pending_updates=False,
            error_callback=lambda err: log.warning("polling Telegram failed (%s); retrying", err),
        )

    async def _start_webhook(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        assert app.updater is not None
        settings = self.settings
        path = (settings.webhook_path or urlparse(settings.webhook_url).path).strip("/")
        await app.updater.start_webhook(
            listen=settings.webhook_listen,
            port=settings.webhook_port,
            url_path=path,
            webhook_url=settings.webhook_url,
            secret_token=self.webhook_secret,  # requests without it are answered 403
            allowed_updates=ALLOWED_UPDATES,
            drop_pending_updates=False,
            bootstrap_retries=3,
        )

    # -- the runtime's hooks ---------------------------------------------------------------

    def policy_for(self, actor: Author) -> TeachPolicy:
        return self.core.policy_in(actor.where)

    async def is_manager(self, actor: Author) -> bool:
        return await self.core.is_admin(actor)

    def expected_failure(self, err: Exception) -> str | None:
        if isinstance(err, ChatUnavailable):
            return f"cannot post in a chat any more: {err}"
        if isinstance(err, RateLimited):
            return f"gave up on a message after repeated rate limits: {err}"
        return None

    # -- every update ----------------------------------------------------------------------

    async def _gate(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not self.fresh(update.update_id):
            log.info("update %d was handled before; skipping it", update.update_id)
            raise ApplicationHandlerStop
        task = asyncio.current_task()
        if task is not None:
            self.tasks.track(task)
            task.add_done_callback(functools.partial(self._handled, update.update_id))
        else:  # not in a task of its own (never with concurrent updates): handled once it is seen
            self.updates.done(update.update_id)
        if not well_formed(update.to_dict()):  # a webhook's updates do not pass ``sanitize_updates``
            log.warning("update %d is malformed; skipping it", update.update_id)
            raise ApplicationHandlerStop
        message = update.message or update.edited_message
        if message is not None and message.from_user is not None:
            anonymous = message.sender_chat is not None and message.sender_chat.id == message.chat.id
            if self.from_self(str(message.from_user.id), bot=message.from_user.is_bot and not anonymous):
                raise ApplicationHandlerStop  # another bot (anonymous admins post as a bot, and pass)

    def _handled(self, update_id: int, task: asyncio.Task[Any]) -> None:
        """The task that handled ``update_id`` ended: the update is done, unless it was cut short
        (a shutdown), when it stays journalled to be handled at the next start."""
        if task.cancelled():
            self.updates.abandoned(update_id)
        else:
            self.updates.done(update_id)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        if isinstance(context.error, Exception):
            self.handler_failed(context.error)
