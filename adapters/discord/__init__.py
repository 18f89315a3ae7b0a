"""heedful in Discord: discord.py over the gateway.

``bots.runner`` calls ``create(engine, settings)`` when ``HEEDFUL_DISCORD_TOKEN`` is
set, then ``await adapter.start()`` / ``await adapter.stop()``. Set-up (application,
intents, permissions, invite link): ``docs/discord.md``.

- ``adapter``: gateway events -> engine turns and feedback; replies streamed by edits
- ``commands``: the slash commands, the message context menus and the correction modal
- ``texts``: pure text functions (mentions, gestures, what commands show)

Inside this package ``import discord`` is the discord.py library (absolute imports);
this package is ``adapters.discord``.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    # discord.py's voice support imports the deprecated audioop module; heedful never uses voice.
    warnings.filterwarnings("ignore", message="'audioop' is deprecated", category=DeprecationWarning)
    import discord  # noqa: F401

from engine import Engine

from ..settings import DiscordSettings
from .adapter import DiscordAdapter, DiscordStartError

__all__ = ["DiscordAdapter", "DiscordStartError", "create"]


def create(engine: Engine, settings: DiscordSettings) -> DiscordAdapter:
    """The Discord adapter for ``settings`` (not started yet)."""
    return DiscordAdapter(engine, settings)
