"""Feedback is handled at least once and applied once, across crashes and redeliveries.

- Telegram: a process killed (kill -9) in the middle of a ``/fix`` handles it at the next
  start: every update is journalled before Telegram is told it arrived, and marked handled
  only once its handling is over. Before, the update id was saved first: the ``/fix`` was
  skipped on restart, silently. Killed after the correction was stored but before the
  update was marked handled, the replay teaches nothing twice: the feedback's event id
  is the update's, and the engine answers a repeat with the first receipt.
- Slack and Discord: an event delivered again after a restart (Slack retries for
  minutes; a new Discord session) is not applied twice either.

A kill -9 is played in process: at the chosen moment the adapter's state files and the
fake Telegram's unconfirmed updates are copied; the adapter is then stopped (however it
likes) and both put back as they were, so the next start sees exactly what it would
after a SIGKILL at that moment.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from adapters.discord import create as create_discord
from adapters.settings import DiscordSettings, SlackSettings, TelegramSettings
from adapters.slack import create as create_slack
from adapters.telegram import TelegramAdapter
from adapters.telegram import create as create_telegram
from engine import ChannelKey, Engine, Feedback, FeedbackReceipt
from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import FakeTelegram
from tests.integration.test_slack import settle

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*attribute `retry_after` will be of type `datetime.timedelta`:telegram.warnings.PTBDeprecationWarning"
)

TOKEN = "123456789:TEST-fake-token-xyz"
QUESTION = "What is the wifi password at the office?"
PARAPHRASE = "whats the password for the office wifi?"


class HeldEngine:
    """The real engine, except that ``feedback`` stops and waits (before or after applying it) until released."""

    def __init__(self, engine: Engine, *, after: bool) -> None:
        self._engine, self.after = engine, after
        self.entered, self.release = asyncio.Event(), asyncio.Event()
        self.receipts: list[FeedbackReceipt] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    async def feedback(self, feedback: Feedback) -> FeedbackReceipt:
        if not self.after:
            self.entered.set()
            await self.release.wait()
        receipt = await self._engine.feedback(feedback)
        self.receipts.append(receipt)
        if self.after:
            self.entered.set()
            await self.release.wait()
        return receipt


@asynccontextmanager
async def telegram(engine: Any, tg: FakeTelegram, state: Path) -> AsyncIterator[TelegramAdapter]:
    adapter = create_telegram(engine, TelegramSettings(token=TOKEN, api_url=tg.api_url, state_file=state,
                                                       drafts=False))
    adapter.shutdown_grace = 0.2
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.stop()


def crash_point(tg: FakeTelegram, state: Path) -> Callable[[], None]:
    """What a kill -9 now would leave: the state files, and the updates Telegram has not had confirmed.
    Returns what puts them back after the adapter was stopped."""
    files = {p: p.read_bytes() for p in state.parent.glob("*") if p.is_file()}
    pending = [dict(u) for u in tg._pending]

    def restore() -> None:
        for path in state.parent.glob("*"):
            if path.is_file() and path not in files:
                path.unlink()
        for path, data in files.items():
            path.write_bytes(data)
        tg._pending = pending

    return restore


@pytest.mark.parametrize("killed", ["before-the-correction-is-stored", "after-it-is-stored"])
async def test_telegram_a_fix_interrupted_by_kill_9_is_handled_after_the_restart_and_applied_once(
    tiny_engine: Engine, tmp_path: Path, killed: str
) -> None:
    state = tmp_path / "state" / "updates.json"
    ann = FakeTelegram.user(820_000 + (killed == "after-it-is-stored"), "Ann")
    better = f"The office wifi password is kestrel-{uuid.uuid4().hex[:6]}."
    key = ChannelKey("telegram", str(ann["id"]))
    async with FakeTelegram(TOKEN) as tg:
        chat = tg.private(ann)
        held = HeldEngine(tiny_engine, after=killed == "after-it-is-stored")
        async with telegram(held, tg, state):
            asked = tg.say(chat, ann, QUESTION)
            (answer,) = await tg.answer(chat["id"], asked["message_id"])
            fix = tg.say(chat, ann, f"/fix {better}", reply_to=answer.message_id)
            fix_id = tg.pushed[-1]["update_id"]
            await asyncio.wait_for(held.entered.wait(), 60)
            # Polling goes on: Telegram is told the /fix arrived (the next long poll confirms it) and drops it.
            while any(u["update_id"] == fix_id for u in tg._pending):
                await asyncio.sleep(0.01)
            restore = crash_point(tg, state)
        restore()  # kill -9 at that moment
        stored = [c.correction_id for c in await tiny_engine.learned(key)]
        assert len(stored) == (1 if held.after else 0)

        async with telegram(tiny_engine, tg, state):
            ack = await tg.said(chat["id"], "Learned", after=fix["message_id"])
            assert ack.reply_to == fix["message_id"] and better in ack.text
            again = tg.say(chat, ann, PARAPHRASE)
            (answer,) = await tg.answer(chat["id"], again["message_id"])
            assert answer.text == better
        learned = await tiny_engine.learned(key)
        assert [c.answer for c in learned] == [better]
        if held.after:
            assert [c.correction_id for c in learned] == stored, "the replay taught nothing twice"


async def test_slack_a_correction_redelivered_after_a_restart_is_applied_once(tiny_engine: Engine) -> None:
    channel = "C" + uuid.uuid4().hex[:10].upper()
    key = ChannelKey("slack", channel, space="T0HEEDFUL")
    async with FakeSlack() as slack:
        settings = SlackSettings(bot_token=slack.bot_token, app_token=slack.app_token, api_url=slack.api_url,
                                 mode="socket")
        adapter = create_slack(tiny_engine, settings)
        await adapter.start()
        question = await slack.say(channel, f"<@{slack.bot_user_id}> {QUESTION}")
        await settle(slack, adapter)
        correction = {"type": "message", "user": "U0ALICE", "text": "correction: It is osprey-77.",
                      "ts": slack.new_ts(), "thread_ts": question["ts"], "channel": channel,
                      "channel_type": "channel", "parent_user_id": slack.bot_user_id}
        await slack.send_event(correction, event_id="Ev0CORRECTION1")
        await settle(slack, adapter)
        first = [c.correction_id for c in await tiny_engine.learned(key)]
        await adapter.stop()

        adapter = create_slack(tiny_engine, settings)  # a new process: nothing remembered in memory
        await adapter.start()
        await slack.send_event(correction, event_id="Ev0CORRECTION1", retry=3)
        await settle(slack, adapter)
        await adapter.stop()
    assert len(first) == 1 and [c.correction_id for c in await tiny_engine.learned(key)] == first


async def test_discord_a_correction_redelivered_after_a_restart_is_applied_once(tiny_engine: Engine) -> None:
    token = "MTAwMDAwMDAwMDAwMDAwMDAw.fake.discord-test-token"
    async with FakeDiscord(token) as fake:
        settings = DiscordSettings(token=token, api_url=fake.api_url, gateway_url=fake.gateway_url,
                                   guild_ready_timeout=0.05)
        guild = fake.guild()
        channel = fake.text_channel(guild, "again")
        key = ChannelKey("discord", channel["id"], space=guild.id)
        ann = fake.user("Ann")
        bot = create_discord(tiny_engine, settings)
        await bot.start()
        asked = fake.say(channel, ann, f"<@{fake.bot_id}> {QUESTION}", mentions=[fake.bot])
        await fake.sync()
        await bot.idle()
        (answer,) = fake.answer_to(asked)
        correction = fake.say(channel, ann, "correction: It is plover-12.", reply_to=fake.message(channel["id"],
                                                                                                   answer.id))
        await fake.sync()
        await bot.idle()
        first = [c.correction_id for c in await tiny_engine.learned(key)]
        await bot.stop()

        bot = create_discord(tiny_engine, settings)
        await bot.start()
        fake.dispatch("MESSAGE_CREATE", correction)  # the same message, delivered to the new session
        await fake.sync()
        await bot.idle()
        await bot.stop()
    assert len(first) == 1 and [c.correction_id for c in await tiny_engine.learned(key)] == first
