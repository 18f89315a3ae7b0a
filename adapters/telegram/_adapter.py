"""The Telegram adapter's lifecycle: build python-telegram-bot, route updates, start and stop.

Routing (python-telegram-bot handler groups):

- group -1, every update: drop it if its id was handled before (also across restarts)
  or if another bot sent it; remember the task so ``stop`` can wait for it.
- group 0: commands; unknown commands; messages; edited messages (ignored); inline
  buttons; reactions (``_handlers.py``).

Updates are processed concurrently (one slow answer never holds up another chat);
the engine serialises the turns of one thread.
"""

from __future__ import annotations

import asyncio
import datetime as dtm
import logging
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

from ..settings import TelegramSettings
from ..streaming import RateLimited
from ._core import PROMPT_TTL, TelegramStartError
from ._delivery import ChatUnavailable, Outbox, retrying
from ._handlers import Handlers
from ._prompts import PromptBook
from ._texts import COMMANDS
from ._updates import UpdateLog, UpdatesRequest

__all__ = ["TelegramAdapter", "TelegramStartError", "ALLOWED_UPDATES"]

log = logging.getLogger("adapters.telegram")

ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "message_reaction"]
STOP_GRACE = 10.0  # seconds ``stop`` lets answers in progress finish


class TelegramAdapter(Handlers):
    """Serves every Telegram chat the bot is in through one engine."""

    def __init__(self, engine: Engine, settings: TelegramSettings) -> None:
        super().__init__(engine, settings)
        self._busy: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Connect (``getMe``), register the commands, and start polling or the webhook server.

        Returns once updates are being received in the background. Raises
        ``TelegramStartError`` (token-free message) when Telegram cannot be reached or
        refuses the token; everything started so far is stopped again.
        """
        if self.app is not None:
            return
        self.redact.attach()  # before the Bot exists: it logs its URL, token included, at DEBUG
        try:
            self.app = app = self._build()
            await app.initialize()
            self.me = app.bot.bot
            self.out = Outbox(app.bot)
            state = self._state_file(self.me.id)
            self.updates = UpdateLog(state)
            self.prompts = PromptBook(state.with_name(state.stem + ".prompts.json") if state else None, PROMPT_TTL)
            self._route(app)
            await self._register_commands()
            await app.start()
            if self.settings.webhook_url:
                await self._start_webhook(app)
            else:
                await self._start_polling(app)
        except InvalidToken:
            await self.stop()
            raise TelegramStartError(
                f"Telegram ({self.settings.api_url}) rejected the bot token; check HEEDFUL_TELEGRAM_TOKEN"
            ) from None
        except (TelegramError, RateLimited, OSError) as err:
            await self.stop()
            raise TelegramStartError(f"could not start the Telegram adapter: {self.redact.scrub(str(err))}") from None
        except BaseException:
            await self.stop()
            raise
        mode = "a webhook" if self.settings.webhook_url else "long polling"
        log.info("Telegram adapter serving @%s by %s", self.me.username, mode)

    async def stop(self) -> None:
        """Stop receiving, let answers in progress finish (up to ``STOP_GRACE`` s), disconnect.

        Safe to call twice or after a failed start.
        """
        app, self.app = self.app, None
        try:
            if app is not None:
                if app.updater is not None and app.updater.running:
                    await app.updater.stop()
                await self._drain()
                if app.running:
                    await app.stop()
                await app.shutdown()
                await app.bot.shutdown()  # closes the connections when start failed before the app was up
        finally:
            self.redact.detach()

    async def __aenter__(self) -> TelegramAdapter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

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
            .connection_pool_size(max(8, settings.concurrency))
            .connect_timeout(10.0)
            .read_timeout(15.0)
            .write_timeout(15.0)
            .pool_timeout(15.0)
            .concurrent_updates(max(2, settings.concurrency))  # one slow answer must not hold up other chats
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
        for name, callback in (
            ("start", self.cmd_start), ("help", self.cmd_help), ("ask", self.cmd_ask), ("fix", self.cmd_fix),
            ("why", self.cmd_why), ("learned", self.cmd_learned), ("forget", self.cmd_forget),
            ("persona", self.cmd_persona), ("cancel", self.cmd_cancel),
        ):
            app.add_handler(CommandHandler(name, callback, filters=new))
        app.add_handler(MessageHandler(filters.StatusUpdate.MIGRATE, self.on_migrate))
        app.add_handler(MessageHandler(filters.COMMAND & new, self.on_unknown_command))
        app.add_handler(MessageHandler(new, self.on_message))
        app.add_handler(MessageHandler(filters.UpdateType.EDITED_MESSAGE, self.on_edited))
        app.add_handler(CallbackQueryHandler(self.on_button))
        app.add_handler(MessageReactionHandler(self.on_reaction))
        app.add_error_handler(self._on_error)

    async def _register_commands(self) -> None:
        assert self.app is not None
        bot = self.app.bot
        try:
            await retrying(lambda: bot.set_my_commands([BotCommand(name, text) for name, text in COMMANDS]))
        except (TelegramError, RateLimited) as err:
            log.warning("could not register the command list (setMyCommands): %s", err)

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

    async def _drain(self) -> None:
        busy = {task for task in self._busy if task is not asyncio.current_task() and not task.done()}
        if not busy:
            return
        _, late = await asyncio.wait(busy, timeout=STOP_GRACE)
        for task in late:
            task.cancel()  # cancelling an answer stops its generation; what was said so far is kept
        if late:
            await asyncio.wait(late, timeout=STOP_GRACE)

    # -- every update ----------------------------------------------------------------------

    async def _gate(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not self.updates.first(update.update_id):
            log.info("update %d was handled before; skipping it", update.update_id)
            raise ApplicationHandlerStop
        message = update.message or update.edited_message
        if message is not None and message.from_user is not None and message.from_user.is_bot:
            if message.sender_chat is None or message.sender_chat.id != message.chat.id:
                raise ApplicationHandlerStop  # another bot (anonymous admins post as a bot, and pass)
        task = asyncio.current_task()
        if task is not None:
            self._busy.add(task)
            task.add_done_callback(self._busy.discard)

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        error = context.error
        if isinstance(error, ChatUnavailable):
            log.info("cannot post in a chat any more: %s", error)
        elif isinstance(error, RateLimited):
            log.warning("gave up on a message after repeated rate limits: %s", error)
        else:
            log.error("handling a Telegram update failed: %r", error, exc_info=error)
