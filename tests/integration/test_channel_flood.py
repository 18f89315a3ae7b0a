"""One busy channel starves no one, and a question that cannot be served gets a busy reply, never silence.

A small run of ``benchmarks/bench_channel_flood.py`` (the real Slack adapter, the engine
stand-in): one channel floods, the others each ask once meanwhile. Before, the flood
took every shared slot and the others waited for it; past 1,000 events in progress
Slack events were dropped with a log line. Then the same queues on Telegram and
Discord, whose runtimes are the same ``adapters.base.Lanes``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from adapters.base import Lanes
from adapters.discord import create as create_discord
from adapters.settings import DiscordSettings, TelegramSettings
from adapters.telegram import create as create_telegram
from adapters.texts import Texts
from tests.fakes.discord import FakeDiscord
from tests.fakes.engine import StandInEngine
from tests.fakes.telegram import FakeTelegram

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*attribute `retry_after` will be of type `datetime.timedelta`:telegram.warnings.PTBDeprecationWarning"
)

ROOT = Path(__file__).resolve().parents[2]
BUSY = Texts.busy


def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_channel_flood", ROOT / "benchmarks" / "bench_channel_flood.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_channel_flood", module)
    spec.loader.exec_module(module)
    return module


async def test_a_flooding_slack_channel_does_not_hold_up_the_others_and_every_question_gets_a_word() -> None:
    result = await bench().run(channels=60, flood=60, window=3.0, turn=0.3, concurrency=8)
    assert result["others_unanswered"] == 0 and result["flood_silent"] == 0, result
    assert result["flood_busy"] > 0 and result["flood_answered"] >= 10  # 2 at once, 8 waiting: the rest told
    assert result["wait_p99_s"] <= 2 * result["turn_s"], result


async def test_lanes_serve_channels_in_order_and_refuse_past_the_backlog() -> None:
    lanes = Lanes(concurrency=2, per_channel=1, channel_backlog=2, backlog=3)
    release = asyncio.Event()
    order: list[str] = []

    async def work(name: str) -> None:
        order.append(name)
        await release.wait()

    busy = [asyncio.create_task(lanes.run("busy", lambda n=n: work(f"busy{n}"))) for n in range(4)]
    await asyncio.sleep(0)
    other = asyncio.create_task(lanes.run("other", lambda: work("other")))
    await asyncio.sleep(0.01)
    assert order == ["busy0", "other"], "one slot for the busy channel, the other one free for another"
    assert busy[3].done() and busy[3].result() is False, "past the channel's backlog: refused at once"
    waiting = asyncio.create_task(lanes.run("waiting", lambda: work("waiting")))  # both shared slots are taken
    await asyncio.sleep(0.01)
    assert lanes.waiting == 3 and order == ["busy0", "other"]
    assert await lanes.run("third", lambda: work("never")) is False, "past the backlog in all: refused at once"
    release.set()
    assert [await t for t in busy[:3]] == [True, True, True] and await other and await waiting
    assert [name for name in order if name.startswith("busy")] == ["busy0", "busy1", "busy2"], "in order"
    assert sorted(order) == ["busy0", "busy1", "busy2", "other", "waiting"]
    assert lanes.waiting == 0 and lanes.running == 0 and lanes.refused == 2


async def test_telegram_and_discord_queue_per_chat_and_say_they_are_busy(tmp_path: Path) -> None:
    engine = StandInEngine(turn_seconds=1.0, chunks=4)
    async with FakeTelegram() as tg:
        adapter = create_telegram(engine, TelegramSettings(token=tg.token, api_url=tg.api_url, drafts=False,
                                                           state_file=tmp_path / "u.json", channel_concurrency=1,
                                                           channel_backlog=1))
        await adapter.start()
        try:
            ann, bob = FakeTelegram.user(840_001, "Ann"), FakeTelegram.user(840_002, "Bob")
            chat, other = tg.private(ann), tg.private(bob)
            flood = [tg.say(chat, ann, f"question {n}") for n in range(4)]
            later = tg.say(other, bob, "and mine?")
            await tg.answer(other["id"], later["message_id"])  # answered while the flood waits
            for asked in flood[2:]:
                told = await tg.said(chat["id"], BUSY, after=asked["message_id"] - 1)
                assert told.reply_to in (flood[2]["message_id"], flood[3]["message_id"])
            for asked in flood[:2]:
                await tg.answer(chat["id"], asked["message_id"])
        finally:
            await adapter.stop()

    token = "MTAwMDAwMDAwMDAwMDAwMDAw.fake.discord-test-token"
    async with FakeDiscord(token) as fake:
        bot = create_discord(engine, DiscordSettings(token=token, api_url=fake.api_url, gateway_url=fake.gateway_url,
                                                     guild_ready_timeout=0.05, channel_concurrency=1,
                                                     channel_backlog=1))
        await bot.start()
        try:
            guild = fake.guild()
            busy, calm = fake.text_channel(guild, "busy"), fake.text_channel(guild, "calm")
            ann = fake.user("Ann")
            flood = [fake.say(busy, ann, f"<@{fake.bot_id}> question {n}", mentions=[fake.bot]) for n in range(4)]
            calm_q = fake.say(calm, ann, f"<@{fake.bot_id}> and mine?", mentions=[fake.bot])
            await fake.sync()
            await bot.idle()
            assert len(fake.answer_to(calm_q)) == 1
            replies = [fake.answer_to(q) for q in flood]
            assert all(len(r) == 1 for r in replies), "an answer or a busy note for every question"
            assert sum(BUSY in r[0].text for r in replies) == 2
        finally:
            await bot.stop()
