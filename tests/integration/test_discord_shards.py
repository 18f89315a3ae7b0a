"""Discord shards: a process given a slice of the bot's shards identifies with exactly those shards
(discord.py's ``AutoShardedClient``), against the fake Discord of ``tests/fakes/discord.py``."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from adapters.discord import create
from adapters.discord.adapter import discord  # discord.py, imported without its audioop warning
from adapters.settings import DiscordSettings
from engine import Engine
from tests.env import heedful_env
from tests.fakes.discord import FakeDiscord, FakeGuild

TOKEN = "MTAwMDAwMDAwMDAwMDAwMDAw.fake.discord-test-token"


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(TOKEN) as server:
        yield server


def shards(fake: FakeDiscord) -> list[Any]:
    return [identify.get("shard") for identify in fake.identifies]


async def answered(fake: FakeDiscord, guild: FakeGuild, text: str) -> str:
    question = fake.say(guild.general, fake.user("Ann"), f"<@{fake.bot_id}> {text}", mentions=[fake.bot])
    parts = await fake.wait_for(lambda: [p for p in fake.answer_to(question) if p.final], timeout=300,
                                what="the answer")
    return parts[0].text


async def test_a_shard_slice_identifies_with_its_shards_and_serves(fake: FakeDiscord, tiny_engine: Engine) -> None:
    guild = fake.guild()
    settings = DiscordSettings(token=TOKEN, api_url=fake.api_url, gateway_url=fake.gateway_url,
                               guild_ready_timeout=0.05, shard_count=2, shard_ids=[1])
    adapter = create(tiny_engine, settings)
    await adapter.start()
    try:
        assert isinstance(adapter.client, discord.AutoShardedClient)
        assert adapter.client.shard_ids == [1] and adapter.client.shard_count == 2
        assert shards(fake) == [[1, 2]]
        assert not fake.served("GET", "/gateway/bot")  # the count is given: Discord is not asked for one
        assert await answered(fake, guild, "hello from shard one")
    finally:
        await adapter.stop()


async def test_without_a_shard_count_the_client_is_unsharded_as_before(fake: FakeDiscord, tiny_engine: Engine) -> None:
    settings = DiscordSettings(token=TOKEN, api_url=fake.api_url, gateway_url=fake.gateway_url,
                               guild_ready_timeout=0.05)
    adapter = create(tiny_engine, settings)
    await adapter.start()
    try:
        assert not isinstance(adapter.client, discord.AutoShardedClient)
        assert shards(fake) == [None]
    finally:
        await adapter.stop()


async def test_heedful_run_with_a_platform_and_a_shard_slice_identifies_with_exactly_those_shards(
    fake: FakeDiscord, tmp_path: Path, models_dir: Path
) -> None:
    """Telegram is configured too (at an address where nothing listens): ``--platform discord`` leaves it out."""
    guild = fake.guild()
    env = heedful_env()
    env.update(HEEDFUL_DATA_DIR=str(tmp_path), HEEDFUL_MODELS_DIR=str(models_dir), HEEDFUL_MODEL_ID="tiny:0",
               HEEDFUL_MODEL_MAX_NEW_TOKENS="8", HEEDFUL_LOG_LEVEL="INFO", HEEDFUL_HTTP_PORT="0",
               HEEDFUL_DISCORD_TOKEN=TOKEN, HEEDFUL_DISCORD_API_URL=fake.api_url,
               HEEDFUL_DISCORD_GATEWAY_URL=fake.gateway_url, HEEDFUL_DISCORD_GUILD_READY_TIMEOUT="0.05",
               HEEDFUL_TELEGRAM_TOKEN="123:telegram-token", HEEDFUL_TELEGRAM_API_URL="http://127.0.0.1:9/bot")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bots.cli", "run", "--platform", "discord", "--shards", "0,2/3", env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parents[2])
    try:
        # discord.py identifies shards one after another, 5 s apart (Discord's identify rate limit).
        await fake.wait_for(lambda: len(fake.identifies) >= 2, timeout=300, what="two shards to identify")
        assert await answered(fake, guild, "hello from a shard slice")
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), timeout=120)
    logs = err.decode()
    assert process.returncode == 0, logs[-3000:]
    assert sorted(shards(fake)) == [[0, 3], [2, 3]]  # exactly its slice: shard 1 is another process's
    assert "discord adapter started" in logs and "on shard(s) [0, 2] of 3" in logs
    assert "telegram" not in logs.lower()
