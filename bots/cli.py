"""The ``heedful`` command: the app, its plain commands, and every sub-app, registered here.

Commands that take ``--json`` print exactly one JSON object as the last line of
stdout; scripts can rely on its keys. The learning commands (``meta-train``, ``eval``)
live in ``bots.learning_cli``; no command module imports this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import typer

from .admin_cli import audit, review, user_app
from .admin_web.cli import admin_cli
from .cli_common import ChannelArgument, ConfigOption, JsonOption, channel_key, emit, fail, with_store
from .config import ConfigError, settings_or_exit
from .learning_cli import eval_app, meta_train_app

if TYPE_CHECKING:
    from engine.store import Store, StoredLoraVersion

app = typer.Typer(
    name="heedful",
    help="A self-hosted chat bot that learns per channel from the people who correct it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(meta_train_app, name="meta-train")
app.add_typer(eval_app, name="eval")
app.add_typer(user_app, name="user")
app.add_typer(admin_cli, name="admin")
app.command()(audit)
app.command()(review)

RollbackOption = Annotated[bool, typer.Option("--rollback", help="serve the previous LoRA version instead")]


class PlatformName(StrEnum):
    """``heedful run --platform``: the names of ``bots.runner.PLATFORMS``."""

    discord = "discord"
    slack = "slack"
    telegram = "telegram"


class ShardSlice(NamedTuple):
    """``--shards IDS/COUNT``: the shard ids one process connects, of the bot's ``total`` (COUNT)."""

    ids: list[int]
    total: int


def parse_shard_slice(value: str | ShardSlice) -> ShardSlice:
    """``"0,1/4"`` -> ``ShardSlice([0, 1], 4)``; a ``ValueError`` says what is wrong."""
    from adapters.settings import check_shards, parse_shard_ids

    if isinstance(value, ShardSlice):
        return value
    ids_text, slash, count_text = value.partition("/")
    try:
        if not slash or not count_text.strip().isdigit():
            raise ValueError("expected IDS/COUNT: the shard ids this process connects, then the bot's shard count, "
                             "e.g. 0,1/4")
        ids, count = parse_shard_ids(ids_text), int(count_text)
        check_shards(ids, count)
    except ValueError as err:
        raise typer.BadParameter(f"{value!r}: {err}") from None
    return ShardSlice(ids, count)


@app.command()
def run(
    platform: Annotated[list[PlatformName] | None, typer.Option(
        "--platform", metavar="discord|slack|telegram",
        help="serve only this platform (repeat for several); it must be configured. Default: every platform "
        "with a token")] = None,
    shards: Annotated[ShardSlice | None, typer.Option(
        "--shards", metavar="IDS/COUNT", parser=parse_shard_slice,
        help="Discord: connect only these shards of the bot's COUNT, e.g. 0,1/4 (the other processes run the "
        "rest; HEEDFUL_DISCORD_SHARD_IDS and HEEDFUL_DISCORD_SHARD_COUNT)")] = None,
    config: ConfigOption = None,
) -> None:
    """Run the bot: every platform with a token configured (or those of --platform), else the console chat."""
    from .runner import configured_platforms
    from .runner import run as run_bot

    overrides = {"discord": {"shard_ids": shards.ids, "shard_count": shards.total}} if shards else {}
    settings = settings_or_exit(config, **overrides)
    names = [p.value for p in platform or []]
    if shards and "discord" not in (names or configured_platforms(settings)):
        typer.echo("error: --shards applies to Discord, which this run does not serve "
                   "(set HEEDFUL_DISCORD_TOKEN, or add --platform discord)", err=True)
        raise typer.Exit(2)
    try:
        asyncio.run(run_bot(settings, names))
    except ConfigError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass


@app.command()
def chat(
    channel: Annotated[str | None, typer.Option("--channel", help="local channel name; each is its own scope")] = None,
    user: Annotated[str | None, typer.Option("--user", help="speak as this person (their personal scope: "
                                             "/personal, /fixme, /forget me); default: console.user")] = None,
    config: ConfigOption = None,
) -> None:
    """Talk to the bot in the terminal (also reads piped stdin, one message a line)."""
    from .runner import chat as chat_loop

    settings = settings_or_exit(config)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(chat_loop(settings, channel, user=user))


@app.command("config")
def show_config(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Show the effective configuration (secrets redacted)."""
    settings = settings_or_exit(config)
    data = settings.redacted()
    note = settings.engine_settings().lora_note()
    data["notes"] = [note] if note else []
    import torch

    from engine.generation.compiled_decode import why_eager
    from engine.generation.model_loader import pick_device, pick_dtype, pick_matmul_dtype, pick_matmul_kernel

    # What "auto" resolves to on this machine: the encoder (and verifier) always run here.
    encoder = pick_matmul_dtype(settings.encoder.matmul_dtype, torch.device(settings.encoder.device), torch.float32)
    data["effective"] = {"encoder_matmul_dtype": str(encoder).removeprefix("torch.")}
    if settings.model.backend == "local":
        device = pick_device(settings.model.device)
        dtype = pick_dtype(settings.model.dtype, device)
        chosen = pick_matmul_dtype(settings.model.matmul_dtype, device, dtype)
        matmul = str(chosen).removeprefix("torch.")
        kernel = pick_matmul_kernel(settings.model.matmul_kernel, device, dtype, chosen)
        # The one-token decode step: compiled in the background (engine/generation/compiled_decode.py)
        # where it applies here, else the eager direct forward (or transformers' forward).
        why = why_eager(settings.model, device.type, matmul)
        data["effective"] |= {"device": str(device), "dtype": str(dtype).removeprefix("torch."),
                              "matmul_dtype": matmul, "matmul_kernel": kernel,
                              "decode_step": "eager" if why else "compiled",
                              "decode_step_why": why or "compiled in the background once the worker starts"}
    emit(data, as_json, json.dumps(data, indent=2, ensure_ascii=False))


@app.command()
def prepare(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Convert and cache the configured model now, so the first chat starts fast."""
    from engine.generation.model_loader import load_model

    from .runner import prepare_environment

    settings = settings_or_exit(config)
    prepare_environment(settings)
    started = time.perf_counter()
    loaded = load_model(settings.model, settings.engine_settings().model_cache_dir)
    seconds = time.perf_counter() - started
    data = {"model": loaded.name, "device": str(loaded.device), "seconds": round(seconds, 2),
            "cache_dir": str(settings.engine_settings().model_cache_dir)}
    emit(data, as_json, f"model {loaded.name} ready on {loaded.device} in {seconds:.1f} s")


@app.command()
def learned(
    channel: ChannelArgument,
    personal: Annotated[bool, typer.Option("--personal", help="also every person's personal scope there (facts "
                                           "they told, corrections just for them): for managers only")] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List a channel's active corrections (taught, or paraphrases an asker confirmed), then its
    negatives (phrasings an answer was corrected on: it does not apply to them). People's personal
    items are not the channel's: only with ``--personal``."""
    settings = settings_or_exit(config)
    key = channel_key(channel)

    async def read(store: Store) -> tuple[list[Any], list[Any], dict[str, Any]]:
        items, negatives = await store.support_rows(key)
        return items, negatives, (await store.personal_profiles(key) if personal else {})

    items, negatives, profiles = asyncio.run(with_store(settings, read))
    rows = [c.public().to_dict() for c in items]
    nots = [c.public().to_dict() for c in negatives]

    def origin(r: dict[str, Any]) -> str:
        return f" (confirmed paraphrase of #{r['source_id']})" if r["origin"] == "confirmed" else ""

    lines = [f"#{r['correction_id']}: {r['question']!r} -> {r['answer']!r}{origin(r)}" for r in rows]
    if nots:
        lines += ["negatives (the answer does not apply):"]
        lines += [f"  negative #{r['correction_id']}: {r['question']!r} -/-> {r['answer']!r} (of #{r['source_id']})"
                  for r in nots]
    data: dict[str, Any] = {"channel": str(key), "corrections": rows, "negatives": nots}
    if personal:
        data["personal"] = [{"person": who, "facts": [f.public().to_dict() for f in facts],
                             "corrections": [c.public().to_dict() for c in mine]}
                            for who, (mine, facts) in sorted(profiles.items())]
        for scope in data["personal"]:
            lines += [f"personal scope of {scope['person']}:"]
            lines += [f"  fact #{f['fact_id']}: {f['text']!r}" for f in scope["facts"]]
            lines += [f"  #{c['correction_id']}: {c['question']!r} -> {c['answer']!r}" for c in scope["corrections"]]
    emit(data, as_json, "\n".join(lines) or "nothing learned")


@app.command()
def forget(
    channel: ChannelArgument,
    author: Annotated[str | None, typer.Option("--author", help="only what this user id taught (undo by author)")]
    = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Forget everything a channel taught the bot (or one person's part of it).

    The channel's LoRA versions stop serving too: they may remember what was forgotten."""
    settings = settings_or_exit(config)
    key = channel_key(channel)
    ids = asyncio.run(with_store(settings, lambda s: s.forget(key, author_id="cli", by_author=author)))
    data: dict[str, Any] = {"channel": str(key), "forgotten": len(ids), "correction_ids": ids}
    if author is not None:
        data["author"] = author
    emit(data, as_json, f"forgot {len(ids)} correction(s)")


@app.command("lora-versions")
def lora_versions(
    channel: ChannelArgument,
    rollback: RollbackOption = False,
    export: Annotated[Path | None, typer.Option(
        "--export", help="write the active LoRA version (or --version) in PEFT's format to this directory "
        "(adapter_config.json + adapter_model.safetensors: what vLLM and peft load)")] = None,
    version: Annotated[int | None, typer.Option("--version", help="the version to --export")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """List a channel's LoRA versions (or roll back to the previous one, or export one for a server)."""
    if export is not None:
        _export_lora_version(channel, export, version, config, as_json)
        return
    _lora_versions(channel, rollback, config, as_json)


def _export_lora_version(channel: str, directory: Path, version: int | None, config: Path | None,
                         as_json: bool) -> None:
    from engine.nn.lora import weights_from_bytes
    from engine.nn.peft_format import save_peft

    settings = settings_or_exit(config)
    key = channel_key(channel)
    stored = asyncio.run(with_store(settings, lambda s: s.lora_versions(key, with_weights=True)))
    chosen = [v for v in stored if (v.version == version if version is not None else v.status == "active")]
    if not chosen or chosen[0].weights is None:
        raise fail(f"{key} has no {'LoRA version ' + str(version) if version is not None else 'active LoRA version'}")
    weights, lora_config, _ = weights_from_bytes(chosen[0].weights)
    save_peft(weights, lora_config, directory, base_model=settings.model.served_model or settings.model.id)
    emit({"channel": str(key), "version": chosen[0].version, "directory": str(directory)}, as_json,
         f"wrote v{chosen[0].version} of {key} to {directory}")


@app.command("adapters", hidden=True)
def adapters(
    channel: ChannelArgument,
    rollback: RollbackOption = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Deprecated (kept for one release): the old name of ``heedful lora-versions``."""
    typer.echo("note: `heedful adapters` is deprecated; use `heedful lora-versions`", err=True)
    _lora_versions(channel, rollback, config, as_json)


def _lora_versions(channel: str, rollback: bool, config: Path | None, as_json: bool) -> None:
    settings = settings_or_exit(config)
    key = channel_key(channel)

    async def action(store: Store) -> tuple[int | None, list[StoredLoraVersion]]:
        active = await store.rollback_lora(key, author_id="cli") if rollback else None
        return active, await store.lora_versions(key)

    active, versions = asyncio.run(with_store(settings, action))
    rows = [{"version": a.version, "status": a.status, "created_at": a.created_at, "metrics": a.metrics}
            for a in versions]
    text = "\n".join(f"v{r['version']} {r['status']}" for r in rows) or "no LoRA versions"
    # "adapters" is the old key of the same rows, kept for one release.
    data: dict[str, Any] = {"channel": str(key), "lora_versions": rows, "adapters": rows}
    if rollback:
        data["active"] = active
    emit(data, as_json, text)


@app.command()
def health(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Ask the running bot's /healthz (exit 0: healthy; 1: not): the container's health check.

    With no platform configured `heedful run` is a console chat and serves no endpoint: healthy."""
    import httpx

    from .runner import configured_platforms

    settings = settings_or_exit(config)
    if not configured_platforms(settings) or not settings.http.enabled:
        emit({"healthy": True, "checked": False}, as_json, "no health endpoint configured (console or http off)")
        return
    host = "127.0.0.1" if settings.http.host in ("0.0.0.0", "::", "") else settings.http.host
    url = f"http://{host}:{settings.http.port}/healthz"
    try:
        answer = httpx.get(url, timeout=5.0)
        data: dict[str, Any] = {"healthy": answer.status_code == 200, "checked": True, **answer.json()}
    except (httpx.HTTPError, ValueError) as err:
        data = {"healthy": False, "checked": True, "error": f"{url}: {err}"}
    emit(data, as_json, "healthy" if data["healthy"] else f"unhealthy: {data.get('error') or data}")
    if not data["healthy"]:
        raise typer.Exit(1)


@app.command()
def version(as_json: JsonOption = False) -> None:
    """Print the version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        v = dist_version("heedful")
    except PackageNotFoundError:
        v = "unknown"
    emit({"version": v, "python": sys.version.split()[0]}, as_json, f"heedful {v}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
