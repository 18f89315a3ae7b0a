"""Assembles the engine and the adapters the configuration asks for, and runs them."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
from collections.abc import Sequence
from typing import BinaryIO, TextIO

from adapters.console import ConsoleAdapter
from engine import Engine
from engine.offline import offline_environment

from .config import ConfigError, Settings
from .http_server import HealthServer

__all__ = ["prepare_environment", "configured_platforms", "select_platforms", "run", "chat", "PLATFORMS"]

log = logging.getLogger(__name__)

PLATFORMS = ("telegram", "slack", "discord")
"""Each is a module ``adapters.<name>`` with ``create(engine, settings) -> BaseAdapter``."""


def prepare_environment(settings: Settings) -> None:
    """Process-wide switches that must be set before models load."""
    if settings.offline:
        offline_environment()
    else:  # downloads allowed, but the same quiet
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def configured_platforms(settings: Settings) -> list[str]:
    """The platforms whose token is set."""
    found = []
    if settings.telegram.token is not None:
        found.append("telegram")
    if settings.slack.bot_token is not None:
        found.append("slack")
    if settings.discord.token is not None:
        found.append("discord")
    return found


_TOKENS = {"telegram": "HEEDFUL_TELEGRAM_TOKEN", "slack": "HEEDFUL_SLACK_BOT_TOKEN", "discord": "HEEDFUL_DISCORD_TOKEN"}


def select_platforms(settings: Settings, wanted: Sequence[str] | None = None) -> list[str]:
    """The platforms ``run`` serves: ``wanted`` (``heedful run --platform``; each must be configured),
    or, when none is named, every configured one. Raises ``ConfigError`` naming what is wrong."""
    configured = configured_platforms(settings)
    if not wanted:
        return configured
    unknown = sorted({name for name in wanted if name not in PLATFORMS})
    if unknown:
        raise ConfigError(f"unknown platform {', '.join(map(repr, unknown))}: choose from {', '.join(PLATFORMS)}")
    for name in wanted:
        if name not in configured:
            raise ConfigError(f"--platform {name}: {name} is not configured ({_TOKENS[name]} is not set)")
    return [name for name in PLATFORMS if name in wanted]


async def chat(
    settings: Settings, channel: str | None = None, *, stdin: BinaryIO | None = None, stdout: TextIO | None = None,
    user: str | None = None,
) -> None:
    """A console conversation in ``channel`` until end of input, as ``user`` (default: ``console.user``)."""
    prepare_environment(settings)
    async with Engine(settings.engine_settings()) as engine:
        console = ConsoleAdapter(
            engine, channel or settings.console.channel, user=user or settings.console.user, stdin=stdin,
            stdout=stdout,
        )
        await console.run()


async def run(settings: Settings, platforms: Sequence[str] | None = None) -> None:
    """Run the platform adapters until SIGINT/SIGTERM: those named in ``platforms`` (each must be
    configured), else every configured one; the console when none is named or configured."""
    platforms = select_platforms(settings, platforms)
    if not platforms:
        await chat(settings)
        return
    modules = {}
    for name in platforms:
        try:
            modules[name] = importlib.import_module(f"adapters.{name}")
        except ImportError as err:
            raise ConfigError(
                f"a {name} token is set, but the {name} adapter cannot be loaded ({err}); "
                f"install it with: pip install 'heedful[{name}]'"
            ) from None
    prepare_environment(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Engine(settings.engine_settings()) as engine:
        running = []
        ready = False
        server = HealthServer(engine, settings.http.host, settings.http.port, lambda: ready,
                              secure_cookies=settings.http.secure_cookies) if settings.http.enabled else None
        try:
            if server is not None:
                try:
                    await server.start()
                except OSError as err:
                    raise ConfigError(str(err)) from None
                log.warning("health and metrics on http://%s:%d", settings.http.host, server.port)
            for name, module in modules.items():
                adapter = module.create(engine, getattr(settings, name))
                await adapter.start()
                running.append(adapter)
                log.warning("%s adapter started", name)
            ready = True
            await stop.wait()
        finally:
            ready = False
            for adapter in reversed(running):
                await adapter.stop()
            if server is not None:
                await server.stop()
