"""A command, button, reaction or link acts only on the channel where it was used; managers manage.

The real platform libraries against the fakes in ``tests/fakes`` and the real engine
(tiny model). What each platform's gestures are checked for (docs/slack.md,
docs/discord.md, docs/telegram.md list them):

- Slack: ``/heedful why|forget <link>`` to another channel's answer is refused (before,
  it switched to that channel: anyone could read a private channel's corrections, and a
  teacher of one channel wipe another's); the correction modal's target is signed, so a
  made-up ``private_metadata`` teaches nothing anywhere.
- Discord: the correction form carries its channel and is refused when submitted from
  another; a ``correction:`` that points at another channel's message (a forward) is refused.
- Telegram: ``/fix``, ``correction:``, ``/why`` and ``/forget`` sent as a reply to a message
  of another chat (Telegram's "reply in another chat") are refused, where before ``/fix``
  silently corrected the last answer of the chat it was typed in.
- Forgetting and changing the persona need the place's managers by default, on every
  platform alike (``manage = "admins"``); ``manage = "teachers"`` opens them to teachers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from adapters.discord import DiscordAdapter
from adapters.discord import create as create_discord
from adapters.settings import DiscordSettings, SlackSettings, TelegramSettings
from adapters.slack import SlackAdapter
from adapters.slack import create as create_slack
from adapters.slack.views import CORRECT_SHORTCUT
from adapters.telegram import TelegramAdapter
from adapters.telegram import create as create_telegram
from engine import ChannelKey, Engine, Feedback, FeedbackKind
from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import FakeTelegram
from tests.integration.test_slack import settle

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*attribute `retry_after` will be of type `datetime.timedelta`:telegram.warnings.PTBDeprecationWarning"
)

QUESTION = "What is the wifi password at the office?"
SECRET = "The private wifi password is heron-5521."


def new_channel(prefix: str = "C") -> str:
    return prefix + uuid.uuid4().hex[:10].upper()


async def teach(engine: Engine, key: ChannelKey, answer: str = SECRET) -> None:
    receipt = await engine.feedback(Feedback(key, FeedbackKind.CORRECTION, author_id="setup", question=QUESTION,
                                             text=answer))
    assert receipt.accepted


# -- Slack ------------------------------------------------------------------------------------


@asynccontextmanager
async def slack_adapter(engine: Engine, slack: FakeSlack, **extra: Any) -> AsyncIterator[SlackAdapter]:
    adapter = create_slack(engine, SlackSettings(bot_token=slack.bot_token, app_token=slack.app_token,
                                                 api_url=slack.api_url, mode="socket", **extra))
    await adapter.start()
    try:
        yield adapter
    finally:
        await settle(slack, adapter)
        await adapter.stop()


async def slack_answer(slack: FakeSlack, adapter: SlackAdapter, channel: str, text: str) -> tuple[str, str]:
    """Ask with a mention; (the question's ts, the answer's ts)."""
    event = await slack.say(channel, f"<@{slack.bot_user_id}> {text}")
    await settle(slack, adapter)
    (answer,) = slack.thread(channel, event["ts"])
    return event["ts"], answer.ts


async def command(slack: FakeSlack, channel: str, text: str, user: str) -> dict[str, Any]:
    seen = len(slack.responses)
    await slack.send_command(text, channel=channel, user=user)
    return (await slack.wait_for(lambda: slack.responses[seen:]))[0]


def permalink(channel: str, ts: str) -> str:
    return f"https://heedful-test.slack.com/archives/{channel}/p{ts.replace('.', '')}"


async def test_slack_why_and_forget_act_only_on_the_channel_they_are_typed_in(tiny_engine: Engine) -> None:
    private, public = new_channel("G"), new_channel()
    private_key = ChannelKey("slack", private, space="T0HEEDFUL")
    async with FakeSlack() as slack, slack_adapter(tiny_engine, slack) as adapter:
        await teach(tiny_engine, private_key)
        _, answer_ts = await slack_answer(slack, adapter, private, "whats the password for the office wifi?")
        link = permalink(private, answer_ts)
        assert "heron-5521" in (await command(slack, private, f"why {link}", "U0INSIDER"))["text"]

        peek = await command(slack, public, f"why {link}", "U0OUTSIDER")  # typed in a public channel
        assert "another channel" in peek["text"] and "heron" not in peek["text"]
        wipe = await command(slack, public, f"forget {link}", "U0OUTSIDER")  # whatever they may do there
        assert "another channel" in wipe["text"] and wipe["response_type"] == "ephemeral"
        assert [c.answer for c in await tiny_engine.learned(private_key)] == [SECRET]


async def test_slack_a_correction_form_with_a_made_up_target_teaches_nothing(tiny_engine: Engine) -> None:
    mine, theirs = new_channel(), new_channel("G")
    async with FakeSlack() as slack, slack_adapter(tiny_engine, slack) as adapter:
        _, their_answer = await slack_answer(slack, adapter, theirs, QUESTION)
        _, my_answer = await slack_answer(slack, adapter, mine, QUESTION)
        (answer,) = [p for p in slack.posts if p.ts == my_answer]
        await slack.send_shortcut(CORRECT_SHORTCUT, message=answer, channel=mine, user="U0MALLORY")
        view = await slack.wait_for(lambda: slack.views[-1] if slack.views else None)
        target = json.loads(view["private_metadata"])
        assert target["channel"] == mine

        forged = view | {"private_metadata": json.dumps(target | {"channel": theirs, "ts": their_answer})}
        refused = await slack.submit_view(forged, {"better_answer": "Mallory's answer."}, user="U0MALLORY")
        assert refused.body["response_action"] == "errors", "the form is refused in place"
        unsigned = {k: v for k, v in target.items() if k != "sig"} | {"channel": theirs, "ts": their_answer}
        await slack.submit_view(view | {"private_metadata": json.dumps(unsigned)}, {"better_answer": "Again."},
                                user="U0MALLORY")
        await settle(slack, adapter)
        for channel in (mine, theirs):
            assert await tiny_engine.learned(ChannelKey("slack", channel, space=slack.team_id)) == []

        await slack.submit_view(view, {"better_answer": "The honest answer."}, user="U0MALLORY")
        await settle(slack, adapter)
        assert [c.answer for c in await tiny_engine.learned(ChannelKey("slack", mine, space=slack.team_id))] == [
            "The honest answer."]


async def test_slack_forget_and_persona_need_workspace_admins_by_default(tiny_engine: Engine) -> None:
    channel = new_channel()
    key = ChannelKey("slack", channel, space="T0HEEDFUL")
    async with FakeSlack() as slack:
        slack.add_user("U0ADMIN", admin=True)
        await teach(tiny_engine, key)
        async with slack_adapter(tiny_engine, slack):  # teach = "everyone", manage = "admins": the defaults
            forget = await command(slack, channel, "forget", "U0MEMBER")
            assert "workspace admins" in forget["text"] and forget["response_type"] == "ephemeral"
            persona = await command(slack, channel, "persona tutor", "U0MEMBER")
            assert "workspace admins" in persona["text"]
            assert [c.answer for c in await tiny_engine.learned(key)] == [SECRET]
            assert (await tiny_engine.channel_settings(key)).persona == ""
            assert "1 correction" in (await command(slack, channel, "forget", "U0ADMIN"))["text"]
        await teach(tiny_engine, key)
        async with slack_adapter(tiny_engine, slack, manage="teachers"):  # the old behaviour, when asked for
            assert "1 correction" in (await command(slack, channel, "forget", "U0MEMBER"))["text"]
        async with slack_adapter(tiny_engine, slack, teach="admins", manage="teachers"):
            refused = await command(slack, channel, "persona tutor", "U0MEMBER")
            assert "allowed to teach" in refused["text"]


# -- Discord ----------------------------------------------------------------------------------

DISCORD_TOKEN = "MTAwMDAwMDAwMDAwMDAwMDAw.fake.discord-test-token"


@asynccontextmanager
async def discord_adapter(engine: Engine, fake: FakeDiscord, **extra: Any) -> AsyncIterator[DiscordAdapter]:
    adapter = create_discord(engine, DiscordSettings(token=DISCORD_TOKEN, api_url=fake.api_url,
                                                     gateway_url=fake.gateway_url, guild_ready_timeout=0.05, **extra))
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.stop()


async def test_discord_a_correction_form_or_a_forward_from_another_channel_is_refused(tiny_engine: Engine) -> None:
    async with FakeDiscord(DISCORD_TOKEN) as fake, discord_adapter(tiny_engine, fake) as bot:
        guild = fake.guild()
        here, there = fake.text_channel(guild, "here"), fake.text_channel(guild, "there")
        ann = fake.user("Ann")
        asked = fake.say(here, ann, f"<@{fake.bot_id}> {QUESTION}", mentions=[fake.bot])
        await fake.sync()
        await bot.idle()
        (answer,) = fake.answer_to(asked)
        target = fake.message(here["id"], answer.id)
        opened = await fake.response(fake.context_menu(here, ann, "Correct this answer", target))
        assert opened.modal is not None and here["id"] in opened.modal["custom_id"]

        form = {"custom_id": opened.modal["custom_id"], "components": [
            {"type": 18, "component": {"type": 4, "custom_id": "answer", "value": "Submitted elsewhere."}}]}
        elsewhere = await fake.response(fake.interact(there, ann, 5, form))
        assert "another channel" in elsewhere.text
        forward = fake.say(there, ann, "correction: Forwarded elsewhere.", reply_to=target,
                           reference_channel=here["id"])
        await fake.sync()
        await bot.idle()
        assert "another channel" in fake.answer_to(forward, there["id"])[0].text
        for channel in (here, there):
            assert await tiny_engine.learned(ChannelKey("discord", channel["id"], space=guild.id)) == []

        done = await fake.response(fake.submit_modal(opened, "Submitted here."))
        assert "Learned" in done.text


async def test_discord_manage_teachers_lets_whoever_may_teach_forget(tiny_engine: Engine) -> None:
    async with FakeDiscord(DISCORD_TOKEN) as fake:
        guild = fake.guild()
        channel = fake.text_channel(guild, "open")
        key = ChannelKey("discord", channel["id"], space=guild.id)
        await teach(tiny_engine, key)
        member = fake.user("Max")
        async with discord_adapter(tiny_engine, fake) as bot:
            await bot.commands_synced.wait()
            assert "Manage Server" in (await fake.response(fake.slash(channel, member, "forget"))).text
        async with discord_adapter(tiny_engine, fake, manage="teachers") as bot:
            await bot.commands_synced.wait()
            assert "1 correction" in (await fake.response(fake.slash(channel, member, "forget"))).text
        assert await tiny_engine.learned(key) == []


# -- Telegram ---------------------------------------------------------------------------------

TELEGRAM_TOKEN = "123456789:TEST-fake-token-xyz"


@asynccontextmanager
async def telegram_adapter(engine: Engine, tg: FakeTelegram, state: Path, **extra: Any
                           ) -> AsyncIterator[TelegramAdapter]:
    adapter = create_telegram(engine, TelegramSettings(token=TELEGRAM_TOKEN, api_url=tg.api_url, state_file=state,
                                                       drafts=False, **extra))
    await adapter.start()
    try:
        yield adapter
    finally:
        await adapter.stop()


async def test_telegram_a_reply_to_another_chat_is_refused_not_taken_for_the_last_answer_here(
    tiny_engine: Engine, tmp_path: Path
) -> None:
    async with FakeTelegram(TELEGRAM_TOKEN) as tg, telegram_adapter(tiny_engine, tg, tmp_path / "u.json"):
        ann = FakeTelegram.user(810_001, "Ann")
        chat, other = tg.private(ann), tg.group(-1_000_000_810_002, admins=(ann["id"],))
        asked = tg.say(chat, ann, QUESTION)
        await tg.answer(chat["id"], asked["message_id"])
        elsewhere = {"origin": {"type": "user", "sender_user": tg.bot_user, "date": 0},
                     "chat": other, "message_id": 1}
        for text in ("/fix Not for this chat.", "correction: Not for this chat either.", "/why", "/forget"):
            sent = tg.say(chat, ann, text, external_reply=elsewhere)
            refusal = await tg.said(chat["id"], "another chat", after=sent["message_id"])
            assert refusal.reply_to == sent["message_id"]
        assert await tiny_engine.learned(ChannelKey("telegram", str(chat["id"]))) == []
        fix = tg.say(chat, ann, "/fix The answer for this chat.")  # no reply at all: the last answer here
        await tg.said(chat["id"], "Learned", after=fix["message_id"])


async def test_telegram_manage_teachers_lets_whoever_may_teach_forget(tiny_engine: Engine, tmp_path: Path) -> None:
    async with FakeTelegram(TELEGRAM_TOKEN) as tg:
        group = tg.group(-1_000_000_810_003, admins=(810_004,))
        member = FakeTelegram.user(810_005, "Max")
        key = ChannelKey("telegram", str(group["id"]))
        await teach(tiny_engine, key)
        async with telegram_adapter(tiny_engine, tg, tmp_path / "u.json"):
            refused = tg.say(group, member, "/forget")
            await tg.said(group["id"], "Only the chat's admins", after=refused["message_id"])
        async with telegram_adapter(tiny_engine, tg, tmp_path / "u.json", manage="teachers"):
            done = tg.say(group, member, "/forget")
            await tg.said(group["id"], "Forgot 1 correction", after=done["message_id"])
        assert await tiny_engine.learned(key) == []
