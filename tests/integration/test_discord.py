"""The Discord adapter end to end: the real discord.py, over HTTP and a websocket, against a fake Discord.

Every test plays users on ``tests/fakes/discord.py`` and awaits what the bot does;
``settle`` is the barrier (the bot has received every event sent so far, through the
gateway itself, and finished handling it). The engine is the real one (tiny random
LLM, real MiniLM, real SQLite). Learning is shown with invented facts: a correction
is answered verbatim for a paraphrase.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from adapters.discord import DiscordAdapter, DiscordStartError, create
from adapters.discord.texts import (
    learned_text,
    message_link,
    parse_ids,
    readable_mentions,
    strip_bot_mentions,
    thread_name,
    thumbs,
)
from adapters.settings import DiscordSettings
from engine import ChannelKey, Correction, Engine, Feedback, FeedbackKind
from tests.env import heedful_env
from tests.fakes.discord import MAX_CONTENT, PLACEHOLDER_TAIL, FakeDiscord, FakeGuild, Permission, pings_possible

TOKEN = "MTAwMDAwMDAwMDAwMDAwMDAw.fake.discord-test-token"
QUESTION = "What is the wifi password at the office?"
PARAPHRASE = "whats the password for the office wifi?"
_ids = itertools.count(1)

Running = Callable[..., AbstractAsyncContextManager[DiscordAdapter]]


def fact() -> str:
    """An answer no model could know: the proof that an answer was learned."""
    return f"The office wifi password is tulip-{next(_ids):05d}."


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    """The fake Discord; after every test, no message body the bot sent could have pinged anyone."""
    async with FakeDiscord(TOKEN) as server:
        yield server
    assert [p for p in server.payloads() if pings_possible(p)] == []


@pytest.fixture
def running(fake: FakeDiscord, tiny_engine: Engine) -> Running:
    """``async with running(**settings) as adapter``: the adapter, started against the fake."""

    @asynccontextmanager
    async def start(engine: Engine | None = None, **overrides: Any) -> AsyncIterator[DiscordAdapter]:
        fields: dict[str, Any] = {"token": TOKEN, "api_url": fake.api_url, "gateway_url": fake.gateway_url,
                                  "guild_ready_timeout": 0.05} | overrides
        adapter = create(engine or tiny_engine, DiscordSettings(**fields))
        await adapter.start()
        try:
            yield adapter
        finally:
            await adapter.stop()

    return start


@pytest.fixture
async def bot(running: Running) -> AsyncIterator[DiscordAdapter]:
    async with running() as adapter:
        yield adapter


@pytest.fixture
def guild(fake: FakeDiscord) -> FakeGuild:
    return fake.guild()


@pytest.fixture
def ann(fake: FakeDiscord) -> dict[str, Any]:
    return fake.user("Ann")


async def settle(fake: FakeDiscord, bot: DiscordAdapter) -> None:
    """The bot has received every event sent so far and finished handling it."""
    await fake.sync()
    await bot.idle()


def mention(fake: FakeDiscord, text: str) -> dict[str, Any]:
    return {"content": f"<@{fake.bot_id}> {text}", "mentions": [fake.bot]}


async def ask(fake: FakeDiscord, bot: DiscordAdapter, channel: dict[str, Any], user: dict[str, Any], text: str,
              **how: Any) -> tuple[dict[str, Any], str]:
    """Ask with a mention (in a guild) and return the question and the bot's finished answer text."""
    content, extra = (mention(fake, text)["content"], {"mentions": [fake.bot]}) if channel.get("guild_id") \
        else (text, {})
    question = fake.say(channel, user, content, **(extra | how))
    await settle(fake, bot)
    parts = fake.answer_to(question)
    assert parts, f"no answer to {text!r}"
    assert all(p.final for p in parts)
    return question, "\n".join(p.text for p in parts)


async def teach_directly(engine: Engine, key: ChannelKey, question: str, answer: str) -> None:
    receipt = await engine.feedback(Feedback(key, FeedbackKind.CORRECTION, author_id="setup", question=question,
                                             text=answer))
    assert receipt.accepted


def key_of(channel: dict[str, Any]) -> ChannelKey:
    return ChannelKey("discord", channel["id"], space=channel.get("guild_id") or "@me")


# -- conversations and streaming --------------------------------------------------------------


async def test_a_mention_is_answered_by_a_reply_sent_once_then_edited_to_the_end(
    bot: DiscordAdapter, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any]
) -> None:
    question, _ = await ask(fake, bot, guild.general, ann, QUESTION)
    (answer,) = fake.answer_to(question)
    assert answer.reference == question["id"]  # a reply to the question
    assert answer.texts[0].endswith(PLACEHOLDER_TAIL) and len(answer.texts) >= 2  # sent once, then edited
    assert answer.final and f"<@{fake.bot_id}>" not in answer.text
    assert all(a != b for a, b in itertools.pairwise(answer.texts))  # no edit that changes nothing
    assert guild.general["id"] in fake.typing  # "heedful is typing…" before the answer
    first = answer.payloads[0]
    assert first["message_reference"]["fail_if_not_exists"] is False  # a deleted question is no error
    assert not pings_possible(first) and first["allowed_mentions"].get("replied_user") is False
    assert fake.bot_messages(guild.general["id"]) == [answer]  # its own echoed message got no answer


async def test_streaming_with_no_interval_edits_often_and_never_repeats_a_text(
    running: Running, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any]
) -> None:
    async with running(edit_interval=0.0) as bot:
        question, _ = await ask(fake, bot, guild.general, ann, "Tell me a story about a lighthouse.")
    (answer,) = fake.answer_to(question)
    assert len(answer.texts) >= 3
    assert all(a != b for a, b in itertools.pairwise(answer.texts))
    assert all(t.endswith(PLACEHOLDER_TAIL) for t in answer.texts[:-1]) and answer.final


async def test_edits_follow_the_rate_limit_headers_and_never_hit_a_429(
    running: Running, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any], tiny_engine: Engine
) -> None:
    better = "Ask " + " ".join(f"desk{n}" for n in range(8)) + " for the password."  # streamed word by word
    await teach_directly(tiny_engine, key_of(guild.general), QUESTION, better)
    fake.rate_limit, fake.enforce_rate_limits = (2, 0.5), True  # 2 edits per half second, or a 429
    async with running(edit_interval=0.0) as bot:
        question, text = await ask(fake, bot, guild.general, ann, PARAPHRASE)
    (answer,) = fake.answer_to(question)
    # The reply is read apart from the platform calls (``adapters.streaming.decoupled``): the words that come
    # while discord.py waits for its bucket go out together in the next edit, so there are few edits here.
    assert text == better and len(answer.texts) >= 2  # it edited...
    assert [r for r in fake.requests if r.status == 429] == []  # ...waiting whenever the headers said so


async def test_a_correction_reply_teaches_the_channel_and_no_other(
    bot: DiscordAdapter, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any]
) -> None:
    question, _ = await ask(fake, bot, guild.general, ann, QUESTION)
    (answer,) = fake.answer_to(question)
    better = fact()
    fix = fake.say(guild.general, ann, f"correction: {better}",
                   reply_to=fake.message(guild.general["id"], answer.id))
    await settle(fake, bot)
    assert (guild.general["id"], fix["id"], "✅") in fake.bot_reactions  # accepted
    assert fake.answer_to(fix) == []  # no chat answer to a correction

    assert (await ask(fake, bot, guild.general, ann, PARAPHRASE))[1] == better
    other = fake.text_channel(guild, "random")
    assert better not in (await ask(fake, bot, other, ann, PARAPHRASE))[1]  # another channel learned nothing


async def test_a_reply_to_the_bot_without_a_mention_continues_the_conversation(
    bot: DiscordAdapter, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any]
) -> None:
    question, _ = await ask(fake, bot, guild.general, ann, "Hello there")
    (answer,) = fake.answer_to(question)
    follow = fake.say(guild.general, ann, "and what else?", reply_to=fake.message(guild.general["id"], answer.id),
                      reply_ping=False)
    chatter = fake.say(guild.general, ann, "lunch anyone?")  # not for the bot
    await settle(fake, bot)
    assert len(fake.answer_to(follow)) == 1
    assert fake.answer_to(chatter) == []


async def test_the_context_menu_opens_a_modal_whose_answer_is_learned_and_acknowledged_ephemerally(
    bot: DiscordAdapter, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any]
) -> None:
    channel = fake.text_channel(guild, "support")
    question, _ = await ask(fake, bot, channel, ann, QUESTION)
    (answer,) = fake.answer_to(question)
    opened = await fake.response(fake.context_menu(channel, ann, "Correct this answer",
                                                   fake.message(channel["id"], answer.id)))
    assert opened.modal is not None and opened.modal["title"] == "Correct this answer"
    first_line = answer.text.strip().splitlines()[0][:30]
    assert first_line in json_text(opened.modal)  # the modal shows the answer being corrected

    better = fact()
    submitted = await fake.response(fake.submit_modal(opened, better))
    assert submitted.ephemeral and "Learned" in submitted.text and better in submitted.text
    assert (await ask(fake, bot, channel, ann, PARAPHRASE))[1] == better


async def test_the_context_menu_refuses_messages_that_are_not_answers(
    bot: DiscordAdapter, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any]
) -> None:
    own = fake.say(guild.general, ann, "my own words")
    done = await fake.response(fake.context_menu(guild.general, ann, "Correct this answer", own))
    assert done.modal is None and done.ephemeral and "my own answers" in done.text


async def test_thumbs_reactions_count_on_answers_only_and_once(
    bot: DiscordAdapter, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any], tiny_engine: Engine
) -> None:
    channel = fake.text_channel(guild, "thumbs")
    question, _ = await ask(fake, bot, channel, ann, "Name a colour.")
    (answer,) = fake.answer_to(question)
    bob = fake.user("Bob")
    fake.react(channel["id"], answer.id, ann, "👍")
    fake.react(channel["id"], answer.id, ann, "👍")  # the same reaction delivered twice
    fake.react(channel["id"], answer.id, bob, "👎🏽")  # any skin tone
    fake.react(channel["id"], answer.id, bob, "🎉")  # not a judgement
    fake.react(channel["id"], question["id"], bob, "👎")  # not on an answer
    await settle(fake, bot)
    assert await tiny_engine.store.thumbs(key_of(channel)) == {"up": 1, "down": 1}


async def test_a_thread_is_answered_in_place_and_learns_for_its_parent_channel(
    bot: DiscordAdapter, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any]
) -> None:
    parent = fake.text_channel(guild, "help")
    thread = fake.thread(guild, parent, owner=ann)
    question, _ = await ask(fake, bot, thread, ann, QUESTION)
    (answer,) = fake.answer_to(question)
    better = fact()
    opened = await fake.response(fake.context_menu(thread, ann, "Correct this answer",
                                                   fake.message(thread["id"], answer.id)))
    assert "Learned" in (await fake.response(fake.submit_modal(opened, better))).text
    assert (await ask(fake, bot, parent, ann, PARAPHRASE))[1] == better  # the parent channel is the scope
    chatter = fake.say(thread, ann, "thanks all")  # a thread the bot did not start: mentions only
    await settle(fake, bot)
    assert fake.answer_to(chatter) == []


async def test_a_thread_unknown_to_the_cache_is_looked_up(
    bot: DiscordAdapter, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any], tiny_engine: Engine
) -> None:
    parent = fake.text_channel(guild, "forum-ish")
    thread = fake.thread(guild, parent, owner=ann, announce=False)  # exists, but no THREAD_CREATE reached the bot
    better = fact()
    await teach_directly(tiny_engine, key_of(parent), QUESTION, better)
    assert (await ask(fake, bot, thread, ann, PARAPHRASE))[1] == better
    assert fake.served("GET", rf"/channels/{thread['id']}")


async def test_auto_thread_answers_in_a_new_thread_that_continues_without_mentions(
    running: Running, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any]
) -> None:
    async with running(auto_thread=True) as bot:
        question = fake.say(guild.general, ann, **mention(fake, "How do I **reset** my password?\nThanks"))
        await settle(fake, bot)
        assert fake.answer_to(question) == []  # not in the channel...
        thread = fake.channels[question["id"]]  # ...but in a thread started from the question
        assert thread["name"] == "How do I reset my password?" and thread["owner_id"] == fake.bot_id
        (answer,) = fake.answer_to(question, thread["id"])
        assert answer.final and answer.reference is None

        follow = fake.say(thread, ann, "and on mobile?")  # no mention needed in the bot's thread
        await settle(fake, bot)
        assert len(fake.bot_messages(thread["id"])) == 2
        assert follow["id"] not in fake.channels  # no thread in a thread


async def test_direct_messages_are_answered_and_learn_on_their_own(
    bot: DiscordAdapter, fake: FakeDiscord, ann: dict[str, Any]
) -> None:
    dm = fake.dm(ann)
    question, _ = await ask(fake, bot, dm, ann, QUESTION)
    (answer,) = fake.answer_to(question)
    better = fact()
    fix = fake.say(dm, ann, f"correction: {better}", reply_to=fake.message(dm["id"], answer.id))
    await settle(fake, bot)
    assert (dm["id"], fix["id"], "✅") in fake.bot_reactions
    assert (await ask(fake, bot, dm, ann, PARAPHRASE))[1] == better
    bob = fake.user("Bob")
    assert better not in (await ask(fake, bot, fake.dm(bob), bob, PARAPHRASE))[1]


async def test_direct_messages_can_be_switched_off(
    running: Running, fake: FakeDiscord, ann: dict[str, Any]
) -> None:
    async with running(dms=False) as bot:
        question = fake.say(fake.dm(ann), ann, "hello?")
        await settle(fake, bot)
        assert fake.answer_to(question) == []


# -- limits and failures ---------------------------------------------------------------------


@pytest.mark.parametrize("via", [True, False], ids=["retried-by-discord.py", "retried-by-the-streamer"])
async def test_a_429_on_the_final_edit_still_ends_with_the_full_text(
    bot: DiscordAdapter, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any], tiny_engine: Engine, via: bool
) -> None:
    channel = fake.text_channel(guild, f"limits-{via}")
    better = "Use the guest network: " + " ".join(f"step{n}" for n in range(40)) + "."
    await teach_directly(tiny_engine, key_of(channel), QUESTION, better)
    fault = fake.fail_next("PATCH", rf"/channels/{channel['id']}/messages/\d+", retry_after=0.05, via=via, times=2)
    _, text = await ask(fake, bot, channel, ann, PARAPHRASE)
    assert fault.served == 2
    assert text == better
    assert [r.status for r in fake.served("PATCH", rf"/channels/{channel['id']}/messages/\d+")][:2] == [429, 429]


async def test_a_5000_character_answer_arrives_as_three_messages_without_breaking_code(
    bot: DiscordAdapter, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any], tiny_engine: Engine
) -> None:
    channel = fake.text_channel(guild, "long")
    code = "```python\n" + "\n".join(f"print('line {n:02d}')  # {'x' * 20}" for n in range(50)) + "\n```"
    body = " ".join(f"word{n}" for n in range(250)) + "\n\n" + code + "\n\n"
    better = body + " ".join(f"tail{n}" for n in range(2000))[: 5000 - len(body) - 4].rsplit(" ", 1)[0] + " end"
    assert 4900 <= len(better) <= 5000
    await teach_directly(tiny_engine, key_of(channel), QUESTION, better)
    question = fake.say(channel, ann, **mention(fake, PARAPHRASE))
    await settle(fake, bot)
    parts = fake.answer_to(question)
    assert len(parts) == 3
    assert all(p.final and len(p.text) <= MAX_CONTENT for p in parts)
    assert all(p.text.count("```") % 2 == 0 for p in parts)  # every part renders on its own
    squashed = re.sub(r"\s+|```(python)?", "", "".join(p.text for p in parts))
    assert squashed == re.sub(r"\s+|```(python)?", "", better)


async def test_a_dropped_gateway_resumes_without_losing_or_repeating_a_reply(
    bot: DiscordAdapter, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any]
) -> None:
    channel = fake.text_channel(guild, "flaky")
    before, _ = await ask(fake, bot, channel, ann, "first question")

    fake.hold_events = True  # the next message reaches Discord, but not the bot, before the drop
    in_flight = fake.say(channel, ann, **mention(fake, "second question"))
    fake.replay_overlap = 20  # and on RESUME Discord also re-sends events the bot already had
    await fake.drop_gateway()
    while_down = fake.say(channel, ann, **mention(fake, "third question"))
    await settle(fake, bot)

    assert fake.connections[-1] == ("/resume", "resume")  # resumed at resume_gateway_url, no new IDENTIFY
    assert [k for _, k in fake.connections].count("identify") == 1
    replayed = {d.get("id") for _, t, d in fake.replayed if t == "MESSAGE_CREATE"}
    assert {before["id"], in_flight["id"], while_down["id"]} <= replayed
    for question in (before, in_flight, while_down):
        assert len(fake.answer_to(question)) == 1, question["content"]
    assert len(fake.bot_messages(channel["id"])) == 3


async def test_an_op7_reconnect_resumes_too(
    bot: DiscordAdapter, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any]
) -> None:
    await fake.request_reconnect()
    question, _ = await ask(fake, bot, guild.general, ann, "still there?")
    assert ("/resume", "resume") in fake.connections
    assert len(fake.answer_to(question)) == 1


async def test_an_invalidated_session_identifies_afresh_and_keeps_answering(
    bot: DiscordAdapter, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any]
) -> None:
    fake.invalidate_sessions()
    await fake.drop_gateway()
    await fake.wait_for(lambda: [k for _, k in fake.connections].count("identify") == 2, what="a new IDENTIFY")
    question, _ = await ask(fake, bot, guild.general, ann, "are you back?")
    assert len(fake.answer_to(question)) == 1


async def test_a_server_error_on_send_is_retried(
    bot: DiscordAdapter, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any]
) -> None:
    channel = fake.text_channel(guild, "wobbly")
    fault = fake.fail_next("POST", rf"/channels/{channel['id']}/messages", status=500)
    question, text = await ask(fake, bot, channel, ann, "hello?")
    assert fault.served == 1 and text and len(fake.answer_to(question)) == 1


async def test_deleting_the_question_withdraws_an_unfinished_answer(
    bot: DiscordAdapter, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any]
) -> None:
    channel = fake.text_channel(guild, "regrets")
    fake.fail_next("PATCH", rf"/channels/{channel['id']}/messages/\d+", via=False, retry_after=60, times=100)
    question = fake.say(channel, ann, **mention(fake, "Tell me a long story"))
    await fake.wait_for(lambda: any(r.status == 429 and not str(r.body.get("content")).endswith(PLACEHOLDER_TAIL)
                                    for r in fake.served("PATCH", rf"/channels/{channel['id']}/messages/\d+")),
                        what="the final edit to be rate limited")
    fake.delete(question)
    await settle(fake, bot)
    assert fake.bot_messages(channel["id"]) == []  # the half answer is gone


async def test_bad_input_gets_no_reply_and_breaks_nothing(
    bot: DiscordAdapter, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any]
) -> None:
    channel = fake.text_channel(guild, "noise")
    other_bot = fake.user("OtherBot", bot=True)
    quiet = [
        fake.say(channel, other_bot, **mention(fake, "bots never get answers")),
        fake.say(channel, fake.user("Hook"), **mention(fake, "nor webhooks"), webhook_id=fake.snowflake()),
        fake.say(channel, ann, **mention(fake, ""), attachments=[{
            "id": fake.snowflake(), "filename": "cat.png", "size": 10, "url": "http://127.0.0.1/cat.png",
            "proxy_url": "http://127.0.0.1/cat.png", "content_type": "image/png"}]),
        fake.say(channel, ann, "", embeds=[{"type": "rich", "title": "an embed"}]),
        fake.say(channel, ann, f"<@{fake.bot_id}>", mentions=[fake.bot], type=7),  # a join message
        fake.say(channel, ann, f"<@{fake.bot_id}>", mentions=[fake.bot], type=6),  # a pin notice
        fake.say(channel, ann, "@everyone look", mention_everyone=True),
    ]
    plain = fake.say(channel, ann, "just chatting")
    fake.edit(plain, f"<@{fake.bot_id}> an edit that mentions the bot")  # edits are not new questions
    fake.delete(plain)
    fake.delete({"id": fake.snowflake(), "channel_id": channel["id"], "guild_id": guild.id})  # unknown message
    unknown = [
        fake.slash(channel, ann, "no-such-command"),
        fake.interact(channel, ann, 3, {"custom_id": "some-button", "component_type": 2}),
        fake.interact(channel, ann, 5, {"custom_id": "someone-elses-form", "components": []}),
        fake.interact(channel, ann, 5, {"custom_id": "heedful:correct:not-a-number", "components": []}),
    ]
    for interaction in unknown:
        done = await fake.response(interaction)
        assert done.ephemeral and done.text  # a polite word instead of "This interaction failed"
    await settle(fake, bot)
    assert fake.bot_messages(channel["id"]) == []
    assert all(fake.answer_to(q) == [] for q in quiet)

    await ask(fake, bot, channel, ann, "are you still fine?")  # and the bot still works
    assert len(fake.bot_messages(channel["id"])) == 1


async def test_empty_and_refused_corrections_explain_themselves(
    running: Running, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any]
) -> None:
    async with running(teach="admins") as bot:
        question, _ = await ask(fake, bot, guild.general, ann, QUESTION)
        (answer,) = fake.answer_to(question)
        target = fake.message(guild.general["id"], answer.id)
        empty = fake.say(guild.general, ann, "correction:", reply_to=target)
        refused = fake.say(guild.general, ann, f"correction: {fact()}", reply_to=target)
        await settle(fake, bot)
        assert "Write the better answer" in fake.answer_to(empty)[0].text
        assert "allowed to teach" in fake.answer_to(refused)[0].text
        assert not any(m == refused["id"] for _, m, _ in fake.bot_reactions)


async def test_the_concurrency_setting_bounds_the_events_handled_at_once(
    running: Running, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any]
) -> None:
    one, two = fake.text_channel(guild, "queue-a"), fake.text_channel(guild, "queue-b")
    async with running(concurrency=1, edit_interval=0.0) as bot:
        await bot.commands_synced.wait()  # registering the commands is one of the runtime's tasks too
        first = fake.say(one, ann, **mention(fake, "Tell me a story about a lighthouse."))
        second = fake.say(two, ann, **mention(fake, "Tell me a story about a harbour."))
        await settle(fake, bot)
    assert len(fake.answer_to(first)) == 1 and len(fake.answer_to(second)) == 1
    writes = [r.path.split("/")[2] for r in fake.requests
              if r.method in ("POST", "PATCH") and re.fullmatch(r"/channels/\d+/messages(/\d+)?", r.path)]
    order = [channel for channel in writes if channel in (one["id"], two["id"])]
    assert len(order) >= 4 and order == sorted(order, key=order.index), "one answer ends before the next begins"


# -- who may teach, and the commands -----------------------------------------------------------


async def test_who_may_teach_follows_roles_manage_server_and_per_guild_settings(
    running: Running, fake: FakeDiscord, ann: dict[str, Any]
) -> None:
    strict, relaxed = fake.guild("strict"), fake.guild("relaxed")
    teachers = fake.role(strict, "teachers")
    mods = fake.role(strict, "mods", permissions=Permission.MANAGE_GUILD)
    bob, cid = fake.user("Bob"), fake.user("Cid")
    async with running(teach="listed", teachers=[teachers["id"]], guild_teach={relaxed.id: "everyone"}) as bot:
        results = {}
        for name, user, roles, where in [("plain", ann, [], strict), ("role", bob, [teachers["id"]], strict),
                                         ("manager", cid, [mods["id"]], strict), ("relaxed", ann, [], relaxed)]:
            channel = fake.text_channel(where, f"teach-{name}")
            question, _ = await ask(fake, bot, channel, user, QUESTION, roles=roles)
            (answer,) = fake.answer_to(question)
            opened = await fake.response(fake.context_menu(channel, user, "Correct this answer",
                                                           fake.message(channel["id"], answer.id), roles=roles))
            if opened.modal is None:
                results[name] = opened.text
                continue
            results[name] = (await fake.response(fake.submit_modal(opened, fact()))).text
    assert "allowed to teach" in results["plain"]
    assert all("Learned" in results[name] for name in ("role", "manager", "relaxed")), results


async def test_forget_and_setting_the_persona_need_a_manager(
    running: Running, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any], tiny_engine: Engine
) -> None:
    helpers = fake.role(guild, "heedful-admins")
    boss = fake.user("Boss")
    channel = fake.text_channel(guild, "admin")
    await teach_directly(tiny_engine, key_of(channel), QUESTION, fact())
    await teach_directly(tiny_engine, key_of(channel), "Where is the coffee?", "Second floor, left.")
    async with running(manager_roles=[helpers["id"]]):
        listed = await fake.response(fake.slash(channel, ann, "learned"))
        assert listed.ephemeral and "2 correction(s)" in listed.text and "Second floor" in listed.text
        stats = await fake.response(fake.slash(channel, ann, "stats"))
        assert stats.ephemeral and "corrections: 2 active" in stats.text
        first_id = re.search(r"#(\d+)", listed.text).group(1)  # type: ignore[union-attr]

        refused = await fake.response(fake.slash(channel, ann, "forget"))
        assert refused.ephemeral and "Manage Server" in refused.text
        assert len(await tiny_engine.learned(key_of(channel))) == 2

        one = await fake.response(fake.slash(channel, boss, "forget", roles=[helpers["id"]],
                                             corrections=f"#{first_id}"))
        assert not one.ephemeral and "1 correction(s)" in one.text and f"<@{boss['id']}>" in one.text
        assert not pings_possible(one.callbacks[0]["data"])  # the announcement names, never pings
        assert len(await tiny_engine.learned(key_of(channel))) == 1

        shown = await fake.response(fake.slash(channel, ann, "persona"))
        assert shown.ephemeral and "the default" in shown.text and "`tutor`" in shown.text
        assert "Manage Server" in (await fake.response(fake.slash(channel, ann, "persona", persona="tutor"))).text
        choices = await fake.response(fake.autocomplete(channel, ann, "persona", "persona", "tu"))
        assert [c["value"] for c in choices.callbacks[0]["data"]["choices"]] == ["tutor"]
        owner_guild = fake.guild("owned", owner=boss)  # the owner may, with no role at all
        owned = fake.text_channel(owner_guild, "general2")
        done = await fake.response(fake.slash(owned, boss, "persona", persona="tutor"))
        assert not done.ephemeral and "tutor" in done.text
        assert (await tiny_engine.channel_settings(key_of(owned))).persona == "tutor"


async def test_personal_commands_and_corrections_just_for_me_shape_only_their_users_answers(
    running: Running, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any], tiny_engine: Engine
) -> None:
    """``/personal``, "Correct just for me" and ``/forget corrections:me``: open to everyone (only listed
    teachers teach here), answered ephemerally; ``/why`` shows the personal items to their owner only."""
    bob = fake.user("Bob")
    channel = fake.text_channel(guild, "personal")
    plan = f"Zorvex-{next(_ids):05d}"
    async with running(teach="listed") as bot:
        told = await fake.response(fake.slash(channel, ann, "personal", about_you=f"My plan is the {plan} plan."))
        assert told.ephemeral and "Noted, just for you" in told.text
        await ask(fake, bot, channel, ann, "which plan am I on?")
        mine = await fake.response(fake.slash(channel, ann, "why"))
        assert mine.ephemeral and plan in mine.text
        theirs = await fake.response(fake.slash(channel, bob, "why"))
        assert plan not in theirs.text and "personal profile" in theirs.text

        question, _ = await ask(fake, bot, channel, ann, QUESTION)
        (answer,) = fake.answer_to(question)
        refused = await fake.response(fake.context_menu(channel, ann, "Correct this answer",
                                                        fake.message(channel["id"], answer.id)))
        assert refused.modal is None and "allowed to teach" in refused.text  # not for the channel...
        opened = await fake.response(fake.context_menu(channel, ann, "Correct just for me",
                                                       fake.message(channel["id"], answer.id)))
        assert opened.modal is not None and opened.modal["title"] == "Correct just for me"  # ...but for her
        better = fact()
        submitted = await fake.response(fake.submit_modal(opened, better))
        assert submitted.ephemeral and "Learned, just for you" in submitted.text
        assert (await ask(fake, bot, channel, ann, PARAPHRASE))[1] == better
        assert better not in (await ask(fake, bot, channel, bob, PARAPHRASE))[1]
        assert await tiny_engine.learned(key_of(channel)) == []
        listed = await fake.response(fake.slash(channel, ann, "personal"))
        assert listed.ephemeral and plan in listed.text and better in listed.text
        assert "told me nothing" in (await fake.response(fake.slash(channel, bob, "personal"))).text

        forgot = await fake.response(fake.slash(channel, ann, "forget", corrections="me"))
        assert forgot.ephemeral and "Forgot 1 thing(s)" in forgot.text and "1 correction(s)" in forgot.text
        assert better not in (await ask(fake, bot, channel, ann, PARAPHRASE))[1]


async def test_why_explains_the_last_answer_a_linked_one_or_the_one_picked(
    bot: DiscordAdapter, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any], tiny_engine: Engine
) -> None:
    channel = fake.text_channel(guild, "why")
    better = fact()
    await teach_directly(tiny_engine, key_of(channel), QUESTION, better)
    question, _ = await ask(fake, bot, channel, ann, PARAPHRASE)
    (answer,) = fake.answer_to(question)
    last = await fake.response(fake.slash(channel, ann, "why"))
    assert last.ephemeral and "route correction" in last.text and "tulip" in last.text

    link = f"https://discord.com/channels/{guild.id}/{channel['id']}/{answer.id}"
    assert "route correction" in (await fake.response(fake.slash(channel, ann, "why", message=link))).text
    picked = await fake.response(fake.context_menu(channel, ann, "Why this answer?",
                                                   fake.message(channel["id"], answer.id)))
    assert "route correction" in picked.text
    elsewhere = fake.text_channel(guild, "elsewhere")
    away = await fake.response(fake.slash(elsewhere, ann, "why", message=link))
    assert "channel of that answer" in away.text and "tulip" not in away.text  # no peeking across channels
    help_text = (await fake.response(fake.slash(channel, ann, "help"))).text
    assert "Correct this answer" in help_text and "correction:" in help_text


async def test_slow_command_work_is_deferred_then_edited(
    bot: DiscordAdapter, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any]
) -> None:
    bot.defer_after = 0.0
    done = await fake.response(fake.slash(guild.general, ann, "learned"))
    assert [c["type"] for c in done.callbacks] == [5] and done.ephemeral
    assert done.text == "Nothing learned in this channel yet."


# -- start-up, commands, secrets ---------------------------------------------------------------


async def test_commands_are_registered_globally_by_default(bot: DiscordAdapter, fake: FakeDiscord) -> None:
    await bot.commands_synced.wait()
    names = {(c["name"], c["type"]) for c in fake.commands[None]}
    assert names == {("why", 1), ("learned", 1), ("stats", 1), ("personal", 1), ("forget", 1), ("persona", 1),
                     ("help", 1), ("Correct this answer", 3), ("Correct just for me", 3), ("Why this answer?", 3)}
    assert all(c["contexts"] == [0, 1] for c in fake.commands[None])  # guilds and the bot's DMs


async def test_commands_can_be_registered_per_guild_or_not_at_all(
    running: Running, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any]
) -> None:
    async with running(command_sync="guilds", command_guilds=[guild.id]) as bot:
        await bot.commands_synced.wait()
        assert None not in fake.commands and len(fake.commands[guild.id]) == 10
        assert "Nothing learned" in (await fake.response(fake.slash(guild.general, ann, "learned"))).text
    fake.commands.clear()
    async with running(command_sync="off") as bot:
        await bot.commands_synced.wait()
        assert fake.commands == {}


async def test_the_message_content_intent_is_asked_for_and_its_absence_explained(
    running: Running, fake: FakeDiscord
) -> None:
    async with running():
        assert fake.identified_intents is not None and fake.identified_intents & (1 << 15)
    fake.privileged_intents = False
    with pytest.raises(DiscordStartError, match="Message Content intent"):
        async with running():
            pass


async def test_a_refused_token_is_named_but_never_shown(
    running: Running, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DiscordStartError, match="HEEDFUL_DISCORD_TOKEN") as refused:
        async with running(token="MTk5OTk5.wrong.token-that-is-secret"):
            pass
    assert "token-that-is-secret" not in str(refused.value)
    assert "token-that-is-secret" not in caplog.text


async def test_unreachable_discord_is_a_clear_start_error(running: Running) -> None:
    with pytest.raises(DiscordStartError, match="HEEDFUL_DISCORD_API_URL"):
        async with running(api_url="http://127.0.0.1:9/api/v10"):
            pass


async def test_the_token_never_reaches_the_logs_and_no_send_can_ping(
    running: Running, fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running() as bot:
        question = fake.say(guild.general, ann, f"<@{fake.bot_id}> say @everyone and <@{ann['id']}> and <@&{guild.id}>",
                            mentions=[fake.bot, ann])
        await settle(fake, bot)
        (answer,) = fake.answer_to(question)
        fix = fake.say(guild.general, ann, "correction: ping @everyone @here",
                       reply_to=fake.message(guild.general["id"], answer.id))
        await settle(fake, bot)
        await fake.response(fake.slash(guild.general, ann, "forget", roles=[]))
        await fake.drop_gateway()
        await ask(fake, bot, guild.general, ann, "after the drop")
    assert fix["id"] in {m for _, m, _ in fake.bot_reactions}
    payloads = fake.payloads()
    assert len(payloads) >= 4 and not [p for p in payloads if pings_possible(p)]
    assert TOKEN not in caplog.text and TOKEN.split(".")[-1] not in caplog.text
    assert all(r.authorized for r in fake.requests if not r.path.startswith(("/interactions/", "/webhooks/")))


async def test_heedful_run_serves_discord_when_the_token_is_set_and_stops_cleanly_on_sigterm(
    fake: FakeDiscord, guild: FakeGuild, ann: dict[str, Any], tmp_path: Path, models_dir: Path
) -> None:
    env = heedful_env()
    env.update(HEEDFUL_DATA_DIR=str(tmp_path), HEEDFUL_MODELS_DIR=str(models_dir), HEEDFUL_MODEL_ID="tiny:0",
               HEEDFUL_MODEL_MAX_NEW_TOKENS="8", HEEDFUL_LOG_LEVEL="DEBUG", HEEDFUL_DISCORD_TOKEN=TOKEN,
               HEEDFUL_DISCORD_API_URL=fake.api_url, HEEDFUL_DISCORD_GATEWAY_URL=fake.gateway_url,
               HEEDFUL_DISCORD_GUILD_READY_TIMEOUT="0.05")
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "bots.cli", "run", env=env,
                                                   stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE, cwd=Path(__file__).parents[2])
    try:
        await fake.wait_for(lambda: fake.connections, timeout=300, what="heedful run to connect")
        question = fake.say(guild.general, ann, **mention(fake, "hello from the runner"))
        await fake.wait_for(lambda: [p for p in fake.answer_to(question) if p.final], timeout=300,
                            what="the answer")
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    logs = err.decode()
    assert process.returncode == 0, logs[-3000:]
    assert "discord adapter started" in logs and "DEBUG" in logs
    assert TOKEN not in logs + out.decode() and TOKEN.split(".")[-1] not in logs


# -- the pure parts ----------------------------------------------------------------------------


def test_thumbs_are_recognised_in_every_skin_tone_and_nothing_else_is() -> None:
    assert [thumbs(e) for e in ("👍", "👍🏿", "👎", "👎🏻", "+1", "🎉", "👌", "")] == \
        ["up", "up", "down", "down", "up", None, None, None]


def test_the_bots_mentions_are_removed_and_others_become_names() -> None:
    text = strip_bot_mentions("<@42> hi <@!42> ask <@&7> about <@9>", 42, [7])
    assert text == "hi ask about <@9>"
    names = readable_mentions("ask <@9> or <@&5> in <#3>, not <@1>", {9: "Ann"}.get, {5: "mods"}.get,
                              {3: "general"}.get)
    assert names == "ask @Ann or @mods in #general, not @someone"


def test_thread_names_links_and_ids() -> None:
    assert thread_name("\n**How** do I `reset`\nmore") == "How do I reset"
    assert len(thread_name("x" * 500)) == 90 and thread_name("```") == "heedful"
    assert message_link("see https://discord.com/channels/1/2/3 please") == ("1", 2, 3)
    assert message_link("https://ptb.discord.com/channels/@me/2/3") == ("@me", 2, 3)
    assert message_link("https://example.com/channels/1/2/3") is None
    assert parse_ids("#12 #15") == [12, 15] and parse_ids("3, 4") == [3, 4]
    assert parse_ids("all of them") is None and parse_ids("") is None


def test_long_command_texts_stay_within_a_message_and_cannot_ping() -> None:
    many = [Correction(n, f"question {n} @everyone", "answer `x` " * 30, "u", 0.0) for n in range(200)]
    text = learned_text(many)
    assert len(text) <= MAX_CONTENT and "…and" in text and "@everyone" not in text
    assert learned_text([]) == "Nothing learned in this channel yet."


def test_discord_settings_read_ids_from_the_environment_and_name_bad_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bots.config import ConfigError, load_settings

    monkeypatch.setenv("HEEDFUL_DISCORD_MANAGER_ROLES", "[123, \"456\"]")
    monkeypatch.setenv("HEEDFUL_DISCORD_GUILD_TEACH", '{"789": "admins"}')
    monkeypatch.setenv("HEEDFUL_DISCORD_AUTO_THREAD", "true")
    settings = load_settings().discord
    assert settings.manager_roles == ["123", "456"] and settings.guild_teach == {"789": "admins"}
    assert settings.auto_thread and settings.command_sync == "global"
    monkeypatch.setenv("HEEDFUL_DISCORD_COMMAND_SYNC", "guilds")
    with pytest.raises(ConfigError, match="command_guilds"):
        load_settings()
    monkeypatch.setenv("HEEDFUL_DISCORD_COMMAND_SYNC", "global")
    monkeypatch.setenv("HEEDFUL_DISCORD_TEACHERS", '["@mods"]')
    with pytest.raises(ConfigError, match=r"discord\.teachers"):
        load_settings()


def json_text(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False)
