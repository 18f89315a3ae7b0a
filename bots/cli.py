"""The ``heedful`` command.

Commands that take ``--json`` print exactly one JSON object as the last line of
stdout; scripts can rely on its keys.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from engine import ChannelKey

from .config import ConfigError, Settings, load_settings
from .logs import setup_logging

app = typer.Typer(
    name="heedful",
    help="A self-hosted chat bot that learns per channel from the people who correct it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

def _register_learning_commands() -> None:
    from .learning_cli import eval_app, meta_train_app

    if importlib.util.find_spec("bots.lora_cli") is not None:
        importlib.import_module("bots.lora_cli")  # adds `meta-train lora` to meta_train_app
    app.add_typer(meta_train_app, name="meta-train")
    app.add_typer(eval_app, name="eval")


_register_learning_commands()

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML config file (default: $HEEDFUL_CONFIG or ./heedful.toml)")
]
JsonOption = Annotated[bool, typer.Option("--json", help="print one JSON object as the last line")]


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        settings = load_settings(config, **overrides)
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    setup_logging(settings.log_level, settings.secrets())
    return settings


def _emit(data: dict[str, Any], as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False) if as_json else text)


def _console_key(channel: str) -> ChannelKey:
    """``NAME`` for a console channel, or a full ``platform:space:channel`` key."""
    return ChannelKey.parse(channel) if channel.count(":") >= 2 else ChannelKey("console", channel, space="local")


@app.command()
def run(config: ConfigOption = None) -> None:
    """Run the bot: every platform with a token configured, else the console chat."""
    from .runner import run as run_bot

    settings = _settings(config)
    try:
        asyncio.run(run_bot(settings))
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass


@app.command()
def chat(
    channel: Annotated[str | None, typer.Option("--channel", help="local channel name; each is its own scope")] = None,
    config: ConfigOption = None,
) -> None:
    """Talk to the bot in the terminal (also reads piped stdin, one message a line)."""
    from .runner import chat as chat_loop

    settings = _settings(config)
    try:
        asyncio.run(chat_loop(settings, channel))
    except KeyboardInterrupt:
        pass


@app.command("config")
def show_config(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Show the effective configuration (secrets redacted)."""
    settings = _settings(config)
    data = settings.redacted()
    _emit(data, as_json, json.dumps(data, indent=2, ensure_ascii=False))


@app.command()
def prepare(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Convert and cache the configured model now, so the first chat starts fast."""
    from engine.generation.model_loader import load_model

    from .runner import prepare_environment

    settings = _settings(config)
    prepare_environment(settings)
    started = time.perf_counter()
    loaded = load_model(settings.model, settings.engine_settings().model_cache_dir)
    seconds = time.perf_counter() - started
    data = {"model": loaded.name, "device": str(loaded.device), "seconds": round(seconds, 2),
            "cache_dir": str(settings.engine_settings().model_cache_dir)}
    _emit(data, as_json, f"model {loaded.name} ready on {loaded.device} in {seconds:.1f} s")


async def _with_store(settings: Settings, action):  # type: ignore[no-untyped-def]
    from engine.store import Store

    store = Store(settings.engine_settings().database_path)
    await store.open()
    try:
        return await action(store)
    finally:
        await store.close()


@app.command()
def learned(
    channel: Annotated[str, typer.Argument(help="console channel name or platform:space:channel")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List a channel's active corrections."""
    settings = _settings(config)
    key = _console_key(channel)
    items = asyncio.run(_with_store(settings, lambda s: s.corrections(key)))
    rows = [c.public().to_dict() for c in items]
    text = "\n".join(f"#{r['correction_id']}: {r['question']!r} -> {r['answer']!r}" for r in rows) or "nothing learned"
    _emit({"channel": str(key), "corrections": rows}, as_json, text)


@app.command()
def forget(
    channel: Annotated[str, typer.Argument(help="console channel name or platform:space:channel")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Forget everything a channel taught the bot."""
    settings = _settings(config)
    key = _console_key(channel)
    ids = asyncio.run(_with_store(settings, lambda s: s.forget(key)))
    _emit({"channel": str(key), "forgotten": len(ids)}, as_json, f"forgot {len(ids)} correction(s)")


@app.command()
def lora_versions(
    channel: Annotated[str, typer.Argument(help="console channel name or platform:space:channel")],
    rollback: Annotated[bool, typer.Option("--rollback", help="serve the previous version instead")] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List a channel's LoRA versions (or roll back to the previous one)."""
    settings = _settings(config)
    key = _console_key(channel)

    async def action(store):  # type: ignore[no-untyped-def]
        active = await store.rollback_lora(key) if rollback else None
        return active, await store.lora_versions(key)

    active, versions = asyncio.run(_with_store(settings, action))
    rows = [{"version": a.version, "status": a.status, "created_at": a.created_at, "metrics": a.metrics}
            for a in versions]
    text = "\n".join(f"v{r['version']} {r['status']}" for r in rows) or "no adapters"
    data: dict[str, Any] = {"channel": str(key), "adapters": rows}
    if rollback:
        data["active"] = active
    _emit(data, as_json, text)


@app.command()
def version(as_json: JsonOption = False) -> None:
    """Print the version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        v = dist_version("heedful")
    except PackageNotFoundError:
        v = "unknown"
    _emit({"version": v, "python": sys.version.split()[0]}, as_json, f"heedful {v}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
