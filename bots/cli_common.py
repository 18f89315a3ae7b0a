"""What the ``heedful`` command modules share: the common options, the ``--json`` contract,
and how a command fails (message on stderr, exit status 2).

Commands that take ``--json`` print exactly one JSON object as the last line of stdout;
progress bars and news go to stderr.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from engine import ChannelKey

if TYPE_CHECKING:
    from engine.store import Store

    from .config import Settings

__all__ = ["ConfigOption", "JsonOption", "ChannelArgument", "channel_key", "with_store", "csv", "emit", "fail"]

T = TypeVar("T")

ChannelArgument = Annotated[str, typer.Argument(help="console channel name or platform:space:channel")]


def channel_key(channel: str) -> ChannelKey:
    """``NAME`` for a console channel, or a full ``platform:space:channel`` key."""
    return ChannelKey.parse(channel) if channel.count(":") >= 2 else ChannelKey("console", channel, space="local")


async def with_store(settings: Settings, action: Callable[[Store], Awaitable[T]]) -> T:
    """Run ``action`` on the configured database (no model loaded); a running bot sees the change
    from its next message (SQLite's ``data_version``, PostgreSQL's NOTIFY)."""
    from engine.store import Store

    store = Store(settings.engine_settings().store_location)
    await store.open()
    try:
        return await action(store)
    finally:
        await store.close()

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file (default: $HEEDFUL_CONFIG or ./heedful.toml)")
]
JsonOption = Annotated[bool, typer.Option("--json", help="print one JSON object as the last line of stdout")]


def emit(data: dict[str, Any], as_json: bool, text: str) -> None:
    """Print a command's result: ``data`` as one JSON line with ``--json``, else ``text``."""
    typer.echo(json.dumps(data, ensure_ascii=False) if as_json else text)


def fail(message: str) -> typer.Exit:
    """Say what is wrong on stderr; the caller raises the returned exit (status 2)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def csv(text: str) -> list[str]:
    """A comma-separated option's items, blanks dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]
