"""Telegram adapter: heedful in private chats, groups and forum topics (python-telegram-bot v22).

``create(engine, settings)`` is what ``heedful run`` calls when ``HEEDFUL_TELEGRAM_TOKEN``
is set. Set-up, permissions and configuration: ``docs/telegram.md``.
"""

from __future__ import annotations

from engine import Engine

from ..settings import TelegramSettings
from ._adapter import ALLOWED_UPDATES, TelegramAdapter, TelegramStartError

__all__ = ["ALLOWED_UPDATES", "TelegramAdapter", "TelegramStartError", "create"]


def create(engine: Engine, settings: TelegramSettings) -> TelegramAdapter:
    """The adapter for ``settings``; ``await adapter.start()`` connects it."""
    return TelegramAdapter(engine, settings)
