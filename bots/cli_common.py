"""What the ``heedful`` command modules share: the common options, the ``--json`` contract,
and how a command fails (message on stderr, exit status 2).

Commands that take ``--json`` print exactly one JSON object as the last line of stdout;
progress bars and news go to stderr.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["ConfigOption", "JsonOption", "csv", "emit", "fail"]

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
