"""The Telegram adapter end to end: the real python-telegram-bot, over HTTP, against a fake Bot API server.

Every test plays users on ``tests/fakes/telegram.py`` and awaits what the bot does; the
engine is the real one (tiny random LLM, real MiniLM, real SQLite). Learning is shown
with invented facts: a correction is answered verbatim for a paraphrase.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.settings import TelegramSettings
from adapters.telegram import ALLOWED_UPDATES, TelegramAdapter, TelegramStartError, create
from adapters.telegram._delivery import fit
from adapters.telegram._prompts import PromptBook
from adapters.telegram._updates import UpdateLog
from engine import ChannelKey, Engine, Feedback, FeedbackKind
from tests.env import heedful_env
from tests.fakes.telegram import FakeTelegram, utf16_len

# python-telegram-bot 22.8 builds every RetryAfter (each 429) by reading its own deprecated int-valued
# `retry_after`, which warns; with warnings as errors a 429 would surface as that warning instead.
pytestmark = pytest.mark.filterwarnings(
    "ignore:.*attribute `retry_after` will be of type `datetime.timedelta`:telegram.warnings.PTBDeprecationWarning"
)

TOKEN = "123456789:TEST-fake-token-xyz"
QUESTION = "What is the wifi password at the office?"
PARAPHRASE = "whats the password for the office wifi?"
_ids = itertools.count(1)

Running = Callable[..., AbstractAsyncContextManager[TelegramAdapter]]


def new_user(name: str = "Ann", **fields: Any) -> dict[str, Any]:
    return FakeTelegram.user(700_000 + next(_ids), name, **fields)


def new_group(tg: FakeTelegram, *, forum: bool = False, admins: tuple[int, ...] = ()) -> dict[str, Any]:
    return tg.group(-1_000_000_000_000 - next(_ids), forum=forum, admins=admins)


def fact() -> str:
    """An answer no model could know: the proof that an answer was learned."""
    return f"The office wifi password is tulip-{next(_ids):05d}."


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(TOKEN) as server:
        yield server


@pytest.fixture
def running(tg: FakeTelegram, tiny_engine: Engine, tmp_path: Path) -> Running:
    """``async with running(**settings) as adapter``: the adapter, started against the fake."""

    @asynccontextmanager
    async def start(engine: Engine | None = None, **overrides: Any) -> AsyncIterator[TelegramAdapter]:
        fields: dict[str, Any] = {"token": TOKEN, "api_url": tg.api_url, "state_file": tmp_path / "updates.json",
                                  "drafts": False} | overrides
        adapter = create(engine or tiny_engine, TelegramSettings(**fields))
        await adapter.start()
        try:
            yield adapter
        finally:
            await adapter.stop()

    return start


@pytest.fixture
async def bot(running: Running) -> AsyncIterator[TelegramAdapter]:
    async with running() as adapter:
        yield adapter


async def ask(tg: FakeTelegram, chat: dict[str, Any], user: dict[str, Any], text: str, **how: Any) -> str:
    """Ask, and return the bot's finished answer text."""
    asked = tg.say(chat, user, text, **how)
    (answer,) = await tg.answer(chat["id"], asked["message_id"])
    return answer.text


async def teach_directly(engine: Engine, chat_id: int, question: str, answer: str) -> None:
    receipt = await engine.feedback(Feedback(ChannelKey("telegram", str(chat_id)), FeedbackKind.CORRECTION,
                                             author_id="setup", question=question, text=answer))
    assert receipt.accepted


# -- conversations and learning ------------------------------------------------------------


async def test_private_chat_streams_by_edits_and_learns_from_a_fix_reply(
    bot: TelegramAdapter, tg: FakeTelegram, tiny_engine: Engine
) -> None:
    ann = new_user()
    chat = tg.private(ann)
    asked = tg.say(chat, ann, QUESTION)
    (answer,) = await tg.answer(chat["id"], asked["message_id"])
    assert answer.reply_to == asked["message_id"]  # the answer replies to the question
    assert answer.texts[0].endswith(" …") and len(answer.texts) >= 2  # sent once, then edited to the end
    assert answer.buttons == ["hf:up", "hf:down", "hf:fix"]

    better = fact()
    fix = tg.say(chat, ann, f"/fix {better}", reply_to=answer.message_id)
    ack = await tg.said(chat["id"], "Learned", after=fix["message_id"])
    assert ack.reply_to == fix["message_id"] and better in ack.text

    assert await ask(tg, chat, ann, PARAPHRASE) == better
    bob = new_user("Bob")
    assert better not in await ask(tg, tg.private(bob), bob, PARAPHRASE)  # another chat learned nothing


async def test_the_pencil_button_asks_with_force_reply_and_takes_that_users_reply(
    bot: TelegramAdapter, tg: FakeTelegram
) -> None:
    ann, bob = new_user(), new_user("Bob")
    group = new_group(tg)
    asked = tg.say(group, ann, f"@heedful_test_bot {QUESTION}")
    (answer,) = await tg.answer(group["id"], asked["message_id"])

    tg.press(group, ann, answer.message_id, "hf:fix")
    prompt = await tg.said(group["id"], "reply to this message with the better answer")
    assert prompt.reply_markup is not None and prompt.reply_markup.get("force_reply") is True
    assert prompt.reply_markup.get("selective") is True and f"tg://user?id={ann['id']}" in prompt.text
    await tg.wait_for(lambda: tg.callback_answers)  # the button's spinner stops

    better = fact()
    other = tg.say(group, bob, "not me", reply_to=prompt.message_id)  # someone else's reply is no correction
    await tg.said(group["id"], "isn't waiting for your answer", after=other["message_id"])
    own = tg.say(group, ann, better, reply_to=prompt.message_id)
    ack = await tg.said(group["id"], "Learned", after=own["message_id"])
    assert ack.reply_to == own["message_id"]
    assert await ask(tg, group, ann, f"@heedful_test_bot {PARAPHRASE}") == better


async def test_a_pencil_prompt_still_takes_its_answer_after_a_restart(running: Running, tg: FakeTelegram,
                                                                      tmp_path: Path) -> None:
    ann = new_user()
    chat = tg.private(ann)
    async with running():
        asked = tg.say(chat, ann, QUESTION)
        (answer,) = await tg.answer(chat["id"], asked["message_id"])
        tg.press(chat, ann, answer.message_id, "hf:fix")
        prompt = await tg.said(chat["id"], "Reply to this message with the better answer")
    assert list(tmp_path.glob("*.prompts.json")), "the waiting prompt is on disk"
    better = fact()
    async with running():  # a new process would start the same way, from the same state files
        own = tg.say(chat, ann, better, reply_to=prompt.message_id)
        await tg.said(chat["id"], "Learned", after=own["message_id"])
        assert await ask(tg, chat, ann, PARAPHRASE) == better


async def test_a_thumbs_down_reaction_records_feedback_and_invites_the_better_answer(
    bot: TelegramAdapter, tg: FakeTelegram
) -> None:
    ann = new_user()
    chat = tg.private(ann)
    asked = tg.say(chat, ann, QUESTION)
    (answer,) = await tg.answer(chat["id"], asked["message_id"])
    assert "message_reaction" in tg.allowed_updates  # asked for, or Telegram never sends them

    tg.react(chat, ann, answer.message_id, ["👎"])
    prompt = await tg.said(chat["id"], "Reply to this message with the better answer")
    better = fact()
    own = tg.say(chat, ann, better, reply_to=prompt.message_id)
    await tg.said(chat["id"], "Learned", after=own["message_id"])
    assert await ask(tg, chat, ann, PARAPHRASE) == better


async def test_private_answers_stream_as_drafts_then_land_as_one_message(
    running: Running, tg: FakeTelegram, tiny_engine: Engine
) -> None:
    ann = new_user()
    chat = tg.private(ann)
    better = fact()
    await teach_directly(tiny_engine, chat["id"], QUESTION, better)
    async with running(drafts=True):
        asked = tg.say(chat, ann, QUESTION)
        (answer,) = await tg.answer(chat["id"], asked["message_id"])
    assert answer.texts == [better]  # posted once, complete: no edits
    assert answer.buttons == ["hf:up", "hf:down", "hf:fix"] and answer.reply_to == asked["message_id"]
    assert tg.drafts[chat["id"]] and tg.drafts[chat["id"]][0].endswith(" …")  # the preview streamed first


async def test_without_drafts_on_the_server_private_answers_fall_back_to_edits(
    running: Running, tg: FakeTelegram, tiny_engine: Engine
) -> None:
    tg.supports_drafts = False  # an older self-hosted Bot API server
    ann = new_user()
    chat = tg.private(ann)
    first, second = fact(), "Ask the front desk for a guest badge."
    await teach_directly(tiny_engine, chat["id"], QUESTION, first)
    await teach_directly(tiny_engine, chat["id"], "How do visitors get into the building?", second)
    async with running(drafts=True):
        assert await ask(tg, chat, ann, QUESTION) == first  # the draft failed; the answer still came
        asked = tg.say(chat, ann, "How do visitors get into the building?")
        (answer,) = await tg.answer(chat["id"], asked["message_id"])
    assert answer.texts[0].endswith(" …") and answer.texts[-1] == second  # streamed by edits now
    assert [c.status for c in tg.calls_to("sendMessageDraft")] == [404]  # tried once, then left alone


# -- limits and failures --------------------------------------------------------------------


async def test_rate_limits_and_server_errors_still_end_with_the_full_final_text(
    bot: TelegramAdapter, tg: FakeTelegram, tiny_engine: Engine
) -> None:
    ann = new_user()
    group = new_group(tg)
    better = "Use the guest network; " + fact()
    await teach_directly(tiny_engine, group["id"], QUESTION, better)
    in_group: Callable[[dict[str, Any]], bool] = lambda params: params.get("chat_id") == group["id"]  # noqa: E731
    tg.fail("sendMessage", status=429, retry_after=1, when=in_group)
    tg.fail("editMessageText", status=429, retry_after=1, when=in_group)
    tg.fail("editMessageText", status=500, when=in_group)
    asked = tg.say(group, ann, f"/ask {QUESTION}")
    (answer,) = await tg.answer(group["id"], asked["message_id"])
    assert answer.text == better
    edits = [c.status for c in tg.calls_to("editMessageText", group["id"])]
    sends = [c.status for c in tg.calls_to("sendMessage", group["id"])]
    assert sends == [429, 200] and edits[:2] == [429, 500] and edits[-1] == 200


@pytest.mark.parametrize("drafts", [False, True], ids=["edits", "drafts"])
async def test_a_6000_character_answer_arrives_as_two_messages(
    running: Running, tg: FakeTelegram, tiny_engine: Engine, drafts: bool
) -> None:
    ann = new_user()
    chat = tg.private(ann)
    long_answer = " ".join(f"step{i} of the procedure;" for i in range(400))[:6000].rsplit(" ", 1)[0]
    assert len(long_answer) > 5900
    await teach_directly(tiny_engine, chat["id"], QUESTION, long_answer)
    async with running(drafts=drafts):
        asked = tg.say(chat, ann, QUESTION)
        parts = await tg.answer(chat["id"], asked["message_id"], parts=2)
        assert len(parts) == 2 and all(len(p.text) <= 4096 for p in parts)
        assert " ".join(p.text for p in parts) == long_answer  # cut at a space, nothing lost
        # Every part is linked to the answer: a correction on the first part is understood.
        better = fact()
        fix = tg.say(chat, ann, f"/fix {better}", reply_to=parts[0].message_id)
        await tg.said(chat["id"], "Learned", after=fix["message_id"])
    assert parts[-1].buttons == ["hf:up", "hf:down", "hf:fix"]


async def test_a_long_code_block_is_closed_and_reopened_across_messages(
    bot: TelegramAdapter, tg: FakeTelegram, tiny_engine: Engine
) -> None:
    ann = new_user()
    chat = tg.private(ann)
    code = "\n".join(f"    setting_{i} = {i}  # keep" for i in range(200))
    answer = f"Put this in config.py:\n```python\n{code}\n```\nThen restart."
    await teach_directly(tiny_engine, chat["id"], QUESTION, answer)
    asked = tg.say(chat, ann, QUESTION)
    parts = await tg.answer(chat["id"], asked["message_id"], parts=2)
    for part in parts:
        assert part.text.count("```") % 2 == 0  # every message renders on its own
    assert parts[1].text.startswith("```python\n")


async def test_a_duplicated_update_is_answered_once(bot: TelegramAdapter, tg: FakeTelegram) -> None:
    ann = new_user()
    chat = tg.private(ann)
    asked = tg.say(chat, ann, "Tell me about the office.")
    tg.push(tg.pushed[-1])  # Telegram delivers the same update again
    (_,) = await tg.answer(chat["id"], asked["message_id"])
    later = tg.say(chat, ann, "And the parking?")
    await tg.answer(chat["id"], later["message_id"])
    assert len(tg.replies_to(chat["id"], asked["message_id"])) == 1
    assert tg.delivered.count(tg.pushed[-2]["update_id"]) == 2  # it really was delivered twice


async def test_after_a_restart_polling_resumes_after_the_last_handled_update(
    running: Running, tg: FakeTelegram
) -> None:
    ann = new_user()
    chat = tg.private(ann)
    async with running():
        asked = tg.say(chat, ann, "Where is the printer?")
        handled = tg.pushed[-1]
        await tg.answer(chat["id"], asked["message_id"])
    tg.forget_confirmations([handled])  # as if the process died before polling confirmed it
    restart = len(tg.calls)
    async with running():
        later = tg.say(chat, ann, "And the scanner?")
        await tg.answer(chat["id"], later["message_id"])
    polls = [c for c in tg.calls[restart:] if c.method == "getUpdates"]
    assert polls[0].params["offset"] == handled["update_id"] + 1
    assert len(tg.replies_to(chat["id"], asked["message_id"])) == 1


# -- groups, topics and who may teach --------------------------------------------------------


async def test_groups_answer_only_when_addressed_and_topics_are_threads(
    bot: TelegramAdapter, tg: FakeTelegram
) -> None:
    ann = new_user()
    group = new_group(tg, forum=True)
    chatter = tg.say(group, ann, "lunch at noon, everyone?")
    other_bot = tg.say(group, ann, "/ask@some_other_bot what now?")
    mention = tg.say(group, ann, "@heedful_test_bot where is the kitchen?", thread=7)
    (answer,) = await tg.answer(group["id"], mention["message_id"])
    assert answer.thread == 7 and tg.calls_to("sendMessage", group["id"])[0].params["message_thread_id"] == 7
    follow_up = tg.say(group, ann, "and the fridge?", reply_to=answer.message_id)
    await tg.answer(group["id"], follow_up["message_id"])
    command = tg.say(group, ann, "/ask@heedful_test_bot what time is it?")
    await tg.answer(group["id"], command["message_id"])
    assert tg.replies_to(group["id"], chatter["message_id"]) == []
    assert tg.replies_to(group["id"], other_bot["message_id"]) == []

    # What one topic teaches, the whole chat knows.
    asked = tg.say(group, ann, f"@heedful_test_bot {QUESTION}", thread=7)
    (answer,) = await tg.answer(group["id"], asked["message_id"])
    better = fact()
    fix = tg.say(group, ann, f"/fix {better}", reply_to=answer.message_id)
    await tg.said(group["id"], "Learned", after=fix["message_id"])
    assert await ask(tg, group, ann, f"@heedful_test_bot {PARAPHRASE}", thread=9) == better


@pytest.mark.parametrize("new_first", [False, True], ids=["old-chat-told-first", "new-chat-told-first"])
async def test_what_a_group_taught_moves_with_it_when_it_becomes_a_supergroup(
    bot: TelegramAdapter, tg: FakeTelegram, tiny_engine: Engine, new_first: bool
) -> None:
    ann = new_user()
    group = tg.group(-next(_ids), basic=True)
    asked = tg.say(group, ann, f"@heedful_test_bot {QUESTION}")
    (answer,) = await tg.answer(group["id"], asked["message_id"])
    better = fact()
    fix = tg.say(group, ann, f"/fix {better}", reply_to=answer.message_id)
    await tg.said(group["id"], "Learned", after=fix["message_id"])

    supergroup = tg.migrate(group, ann, -1_000_000_000_000 - next(_ids), new_first=new_first)
    new_key = ChannelKey("telegram", str(supergroup["id"]))
    for _ in range(400):  # the service messages are handled in the background
        if await tiny_engine.learned(new_key):
            break
        await asyncio.sleep(0.05)
    assert [c.answer for c in await tiny_engine.learned(new_key)] == [better]
    assert await tiny_engine.learned(ChannelKey("telegram", str(group["id"]))) == []
    assert await ask(tg, supergroup, ann, f"@heedful_test_bot {PARAPHRASE}") == better


async def test_a_non_admin_cannot_make_the_bot_forget_in_a_group(
    bot: TelegramAdapter, tg: FakeTelegram, tiny_engine: Engine
) -> None:
    admin, member = new_user("Ada"), new_user("Max")
    group = new_group(tg, admins=(admin["id"],))
    better = fact()
    await teach_directly(tiny_engine, group["id"], QUESTION, better)
    refused = tg.say(group, member, "/forget")
    assert "Only the chat's admins" in (await tg.said(group["id"], "admins", after=refused["message_id"])).text
    assert await ask(tg, group, member, f"/ask {PARAPHRASE}") == better  # still known

    anonymous = tg.say(group, FakeTelegram.user(1087968824, "Group", username="GroupAnonymousBot", is_bot=True),
                       "/persona tutor", sender_chat=group)  # an anonymous admin posts as the group
    await tg.said(group["id"], "Persona set to 'tutor'", after=anonymous["message_id"])
    done = tg.say(group, admin, "/forget")
    assert "Forgot 1 correction" in (await tg.said(group["id"], "Forgot", after=done["message_id"])).text
    assert better not in await ask(tg, group, member, f"/ask {PARAPHRASE}")


async def test_when_only_admins_may_teach_others_are_refused_clearly(
    running: Running, tg: FakeTelegram
) -> None:
    admin, member = new_user("Ada"), new_user("Max")
    group = new_group(tg, admins=(admin["id"],))
    async with running(teach="admins"):
        asked = tg.say(group, member, f"/ask {QUESTION}")
        (answer,) = await tg.answer(group["id"], asked["message_id"])
        fix = tg.say(group, member, f"/fix {fact()}", reply_to=answer.message_id)
        refusal = await tg.said(group["id"], "allowed to teach", after=fix["message_id"])
        assert refusal.reply_to == fix["message_id"]

        query = tg.press(group, member, answer.message_id, "hf:fix")
        await tg.wait_for(lambda: query in tg.callback_answers)
        assert tg.callback_answers[query]["show_alert"] is True
        assert "allowed to teach" in tg.callback_answers[query]["text"]

        better = fact()
        fix = tg.say(group, admin, f"/fix {better}", reply_to=answer.message_id)
        await tg.said(group["id"], "Learned", after=fix["message_id"])
        assert await ask(tg, group, member, f"/ask {PARAPHRASE}") == better


async def test_in_review_mode_a_members_correction_waits_for_a_manager(
    running: Running, tg: FakeTelegram, tiny_engine: Engine
) -> None:
    """``teach = "review"``: a member's /fix is kept, unused, until a manager approves it; an admin's applies."""
    admin, member = new_user("Ada"), new_user("Max")
    group = new_group(tg, admins=(admin["id"],))
    key = ChannelKey("telegram", str(group["id"]))
    async with running(teach="review"):
        asked = tg.say(group, member, f"/ask {QUESTION}")
        (answer,) = await tg.answer(group["id"], asked["message_id"])
        waiting = fact()
        fix = tg.say(group, member, f"/fix {waiting}", reply_to=answer.message_id)
        await tg.said(group["id"], "review", after=fix["message_id"])
        (pending,) = await tiny_engine.pending(key)
        assert pending.answer == waiting and await ask(tg, group, member, f"/ask {PARAPHRASE}") != waiting
        await tiny_engine.review(key, pending.correction_id, approve=True, author_id=str(admin["id"]))
        assert await ask(tg, group, member, f"/ask {PARAPHRASE}") == waiting
        better = fact()
        fix = tg.say(group, admin, f"/fix {better}", reply_to=answer.message_id)
        await tg.said(group["id"], "Learned", after=fix["message_id"])
        assert await ask(tg, group, member, f"/ask {PARAPHRASE}") == better


async def test_who_may_teach_can_be_set_per_chat(running: Running, tg: FakeTelegram) -> None:
    teacher, member = new_user("Tea"), new_user("Max")
    strict, open_ = new_group(tg), new_group(tg)
    chats = {str(strict["id"]): {"teach": "listed", "teachers": [str(teacher["id"])]}}
    async with running(chats=chats):
        asked = tg.say(strict, member, f"/ask {QUESTION}")
        (answer,) = await tg.answer(strict["id"], asked["message_id"])
        refused = tg.say(strict, member, f"correction: {fact()}", reply_to=answer.message_id)
        await tg.said(strict["id"], "allowed to teach", after=refused["message_id"])
        accepted = tg.say(strict, teacher, f"correction: {fact()}", reply_to=answer.message_id)
        await tg.said(strict["id"], "Learned", after=accepted["message_id"])

        asked = tg.say(open_, member, f"/ask {QUESTION}")  # other chats keep the default: everyone
        (answer,) = await tg.answer(open_["id"], asked["message_id"])
        fix = tg.say(open_, member, f"/fix {fact()}", reply_to=answer.message_id)
        await tg.said(open_["id"], "Learned", after=fix["message_id"])


async def test_personal_facts_and_corrections_just_for_me_shape_only_their_authors_answers(
    running: Running, tg: FakeTelegram
) -> None:
    """``/personal``, ``/fixme`` and ``/forget me`` in a group where only admins may teach: open to
    everyone, as they shape only the replies to their author; ``/why`` shows them to that person only."""
    admin, ann, bob = new_user("Ada"), new_user("Ann"), new_user("Bob")
    group = new_group(tg, admins=(admin["id"],))
    plan = f"Zorvex-{next(_ids):05d}"
    async with running(teach="admins"):
        told = tg.say(group, ann, f"/personal My plan is the {plan} plan.")
        noted = await tg.said(group["id"], "Noted, just for you", after=told["message_id"])
        assert plan not in noted.text  # not repeated to the group
        asked = tg.say(group, ann, "/ask which plan am I on?")
        (answer,) = await tg.answer(group["id"], asked["message_id"])
        mine = tg.say(group, ann, "/why", reply_to=answer.message_id)
        assert plan in (await tg.said(group["id"], "route", after=mine["message_id"])).text
        theirs = tg.say(group, bob, "/why", reply_to=answer.message_id)
        shown = (await tg.said(group["id"], "route", after=theirs["message_id"])).text
        assert plan not in shown and "personal profile" in shown
        asked = tg.say(group, bob, "/ask which plan am I on?")
        (answer,) = await tg.answer(group["id"], asked["message_id"])
        why = tg.say(group, bob, "/why", reply_to=answer.message_id)
        assert "told me about themselves" not in (await tg.said(group["id"], "route", after=why["message_id"])).text

        asked = tg.say(group, ann, f"/ask {QUESTION}")
        (answer,) = await tg.answer(group["id"], asked["message_id"])
        better = fact()
        fix = tg.say(group, ann, f"/fixme {better}", reply_to=answer.message_id)
        assert better in (await tg.said(group["id"], "Learned, just for you", after=fix["message_id"])).text
        assert await ask(tg, group, ann, f"/ask {PARAPHRASE}") == better
        assert better not in await ask(tg, group, bob, f"/ask {PARAPHRASE}")
        listed = tg.say(group, ann, "/learned")
        assert better not in (await tg.said(group["id"], "Nothing learned", after=listed["message_id"])).text
        counted = tg.say(group, ann, "/personal")
        text = (await tg.said(group["id"], "in a group I don't list them", after=counted["message_id"])).text
        assert "1 thing(s)" in text and "1 correction(s)" in text and plan not in text

        forgot = tg.say(group, ann, "/forget me")
        assert "Forgot 1 thing(s) you told me about yourself and 1 correction(s)" in (
            await tg.said(group["id"], "Forgot", after=forgot["message_id"])).text
        assert better not in await ask(tg, group, ann, f"/ask {PARAPHRASE}")

        chat = tg.private(ann)  # a private chat is a scope of its own, and there the list is shown
        told = tg.say(chat, ann, f"/personal I'm in level {plan}.")
        await tg.said(chat["id"], "Noted", after=told["message_id"])
        listed = tg.say(chat, ann, "/personal")
        assert plan in (await tg.said(chat["id"], "Just for you", after=listed["message_id"])).text


# -- buttons, reactions, commands -----------------------------------------------------------


async def test_thumbs_by_button_and_reaction_are_recorded(bot: TelegramAdapter, tg: FakeTelegram) -> None:
    ann = new_user()
    chat = tg.private(ann)
    asked = tg.say(chat, ann, "How do I book a room?")
    (answer,) = await tg.answer(chat["id"], asked["message_id"])
    query = tg.press(chat, ann, answer.message_id, "hf:up")
    await tg.wait_for(lambda: query in tg.callback_answers)
    assert tg.callback_answers[query]["text"] == "Thanks for the feedback."
    tg.react(chat, ann, answer.message_id, ["👍"])
    tg.react(chat, ann, asked["message_id"], ["👎"])  # on the user's own message: not feedback, no prompt
    later = tg.say(chat, ann, "Thanks!")
    await tg.answer(chat["id"], later["message_id"])
    assert not [m for m in tg.bot_messages(chat["id"]) if "better answer" in m.text]


async def test_commands_are_registered_and_answered(bot: TelegramAdapter, tg: FakeTelegram) -> None:
    assert [c["command"] for c in tg.commands] == ["ask", "fix", "fixme", "personal", "why", "learned", "stats",
                                                   "forget", "persona", "cancel", "help", "start"]
    ann = new_user()
    chat = tg.private(ann)
    start = tg.say(chat, ann, "/start")
    assert "/fix" in (await tg.said(chat["id"], "heedful", after=start["message_id"])).text
    help_ = tg.say(chat, ann, "/help")
    assert "/forget" in (await tg.said(chat["id"], "Commands:", after=help_["message_id"])).text

    asked = tg.say(chat, ann, QUESTION)
    (answer,) = await tg.answer(chat["id"], asked["message_id"])
    why = tg.say(chat, ann, "/why", reply_to=answer.message_id)
    assert "no learned correction applied" in (await tg.said(chat["id"], "route", after=why["message_id"])).text
    nothing = tg.say(chat, ann, "/learned")
    await tg.said(chat["id"], "Nothing learned", after=nothing["message_id"])
    better = fact()
    fix = tg.say(chat, ann, f"/fix {better}")  # no reply: corrects the last answer here
    await tg.said(chat["id"], "Learned", after=fix["message_id"])
    learned = tg.say(chat, ann, "/learned")
    assert better in (await tg.said(chat["id"], "taught me 1", after=learned["message_id"])).text
    stats = tg.say(chat, ann, "/stats")
    assert "corrections: 1 active" in (await tg.said(chat["id"], "Learning report", after=stats["message_id"])).text
    again = tg.say(chat, ann, PARAPHRASE)
    (answer,) = await tg.answer(chat["id"], again["message_id"])
    why = tg.say(chat, ann, "/why", reply_to=answer.message_id)
    assert "route correction" in (await tg.said(chat["id"], "route", after=why["message_id"])).text

    persona = tg.say(chat, ann, "/persona tutor")
    await tg.said(chat["id"], "Persona set to 'tutor'", after=persona["message_id"])
    shown = tg.say(chat, ann, "/persona")
    assert "Presets:" in (await tg.said(chat["id"], "My persona here: tutor", after=shown["message_id"])).text
    cancel = tg.say(chat, ann, "/cancel")
    await tg.said(chat["id"], "nothing to cancel", after=cancel["message_id"])
    usage = tg.say(chat, ann, "/fix")
    await tg.said(chat["id"], "Usage", after=usage["message_id"])


# -- bad input ---------------------------------------------------------------------------------


async def test_bad_input_gets_a_clear_answer_or_is_ignored_and_never_crashes(
    bot: TelegramAdapter, tg: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    ann = new_user()
    chat = tg.private(ann)
    group = new_group(tg)
    sticker = tg.say(chat, ann, None, sticker={"file_id": "s1", "file_unique_id": "u1", "type": "regular",
                                                "width": 512, "height": 512, "is_animated": False, "is_video": False})
    await tg.said(chat["id"], "only read text", after=sticker["message_id"])
    photo = tg.say(chat, ann, None, photo=[{"file_id": "p1", "file_unique_id": "u2", "width": 90, "height": 90}])
    await tg.said(chat["id"], "only read text", after=photo["message_id"])
    unknown = tg.say(chat, ann, "/frobnicate now")
    await tg.said(chat["id"], "I don't know the command /frobnicate", after=unknown["message_id"])
    garbage = tg.say(chat, ann, "\x01\x02\x1b[0m")  # nothing left once cleaned: the engine refuses it
    refusal = (await tg.answer(chat["id"], garbage["message_id"]))[0]
    assert "empty" in refusal.text and refusal.buttons == []  # an error notice, not an answer to rate
    huge = tg.say(chat, ann, ("Explain this log line please. " * 200)[:4096])
    (answer,) = await tg.answer(chat["id"], huge["message_id"])
    assert answer.text.strip()

    edited = tg.say(chat, ann, "Where is the kitchen?")
    await tg.answer(chat["id"], edited["message_id"])
    tg.edit(chat, edited["message_id"], "Where is the kitchen, again?")
    robot = tg.say(group, new_user("Robo", is_bot=True), "@heedful_test_bot hello fellow bot")
    tg.push({"message": {"message_id": 999, "date": 0, "chat": chat, "text": "no sender"}})
    tg.push({"message": {"message_id": 998, "text": "no chat, no date"}})  # malformed: must not stall polling
    tg.push({"callback_query": {"id": "q-none", "from": ann, "chat_instance": "x", "data": "hf:up"}})
    tg.push({"message_reaction": {"chat": chat, "message_id": 1, "date": 0, "old_reaction": [],
                                  "new_reaction": [{"type": "emoji", "emoji": "👍"}]}})
    tg.push({"some_future_update": {"x": 1}})
    stale = tg.press(chat, ann, edited["message_id"], "hf:unknown")

    marker = tg.say(chat, ann, "Are you still there?")
    await tg.answer(chat["id"], marker["message_id"])
    await tg.wait_for(lambda: {"q-none", stale} <= set(tg.callback_answers))
    assert tg.callback_answers[stale]["text"] == "This button no longer works."
    assert len(tg.replies_to(chat["id"], edited["message_id"])) == 1  # the edit was not answered again
    assert tg.replies_to(group["id"], robot["message_id"]) == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_stopping_lets_an_answer_in_progress_finish(running: Running, tg: FakeTelegram) -> None:
    ann = new_user()
    group = new_group(tg)
    async with running():
        asked = tg.say(group, ann, "/ask Describe the office in detail, please.")
        await tg.next_call("sendMessage", chat_id=group["id"])  # the answer has begun
    (answer,) = tg.replies_to(group["id"], asked["message_id"])
    assert answer.final  # stop waited for the final text


def test_the_update_log_survives_restarts_and_ignores_a_stale_or_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "updates.json"
    log = UpdateLog(path, keep=3)
    assert log.resume_offset is None and log.first(10) and not log.first(10)  # being handled: a repeat is skipped
    log.done(10)
    for update_id in (11, 12, 13):
        log.received(update_id, {"update_id": update_id})
        assert log.first(update_id)
        log.done(update_id)
    log.received(14, {"update_id": 14, "message": {"text": "/fix a crash came before this was handled"}})
    with path.open("a") as torn:
        torn.write('{"r": {"update_id": 15, "mess')  # a kill -9 in the middle of a line
    again = UpdateLog(path, keep=3)
    assert again.resume_offset == 15 and not again.first(13) and again.first(10)  # 10 fell out of the window
    assert again.pending() == [{"update_id": 14, "message": {"text": "/fix a crash came before this was handled"}}]
    for update_id in range(100, 700):  # the journal is compacted as it grows
        again.received(update_id, {"update_id": update_id})
        again.done(update_id)
    assert len(path.read_text().splitlines()) < 200 and UpdateLog(path).pending()[0]["update_id"] == 14
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    stale = [line | {k: line[k] - 7 * 24 * 3600 for k in ("at", "saved_at") if k in line} for line in lines]
    path.write_text("".join(json.dumps(line) + "\n" for line in stale))
    assert UpdateLog(path).resume_offset is None  # Telegram may restart its numbering after a week
    path.write_text("{not json")
    assert UpdateLog(path).first(13)  # a broken file is ignored (and logged), not fatal


def test_waiting_prompts_survive_restarts_expire_and_ignore_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "bot.prompts.json"
    book = PromptBook(path, ttl=60.0)
    book.add(-5, 100, user_id=7, target=99)
    book.add(-5, 101, user_id=8, target=98)
    again = PromptBook(path, ttl=60.0)
    assert again.waiting(-5, 100, 7) == book.waiting(-5, 100, 7) and again.waiting(-5, 100, 8) is None
    again.take(-5, 100)
    assert PromptBook(path, ttl=60.0).waiting(-5, 100, 7) is None and len(PromptBook(path, ttl=60.0)) == 1
    assert PromptBook(path, ttl=60.0).cancel(-5, 8) == 1 and len(PromptBook(path, ttl=60.0)) == 0
    PromptBook(path, ttl=-1.0).add(-5, 102, user_id=7, target=97)  # born expired
    assert PromptBook(path, ttl=60.0).waiting(-5, 102, 7) is None
    path.write_text("{not json")
    assert len(PromptBook(path, ttl=60.0)) == 0  # a broken file is ignored (and logged), not fatal


def test_texts_are_fitted_to_telegrams_utf16_limit() -> None:
    assert fit("a" * 4096) == "a" * 4096
    fitted = fit("😀" * 3000)  # 6,000 UTF-16 code units
    assert utf16_len(fitted) <= 4096 and fitted.endswith("…")


# -- delivery modes, configuration, secrets -------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_webhook_mode_checks_the_secret_token(
    running: Running, tg: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram/hook"
    ann = new_user()
    chat = tg.private(ann)
    forged = {"update_id": 42, "message": {"message_id": 77, "date": 0, "chat": chat, "from": ann, "text": "forged"}}
    async with running(webhook_url=url, webhook_listen="127.0.0.1", webhook_port=port,
                       webhook_secret="s3cret-Value_1"):
        assert tg.webhook_url == url and tg.webhook_secret == "s3cret-Value_1"
        async with aiohttp.ClientSession() as http:
            for secret in ("wrong", None):
                headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret else {}
                async with http.post(url, json=forged, headers=headers) as response:
                    assert response.status == 403
        asked = tg.say(chat, ann, "Hello over the webhook")
        await tg.answer(chat["id"], asked["message_id"])
        assert 200 in tg.webhook_statuses
    assert not tg.calls_to("getUpdates")
    assert tg.replies_to(chat["id"], 77) == []
    async with running(webhook_url=url, webhook_listen="127.0.0.1", webhook_port=port):
        assert len(tg.webhook_secret) >= 32  # none configured: a random one per start
    assert "setWebhook" in caplog.text and "s3cret-Value_1" not in caplog.text and tg.webhook_secret not in caplog.text
    assert ALLOWED_UPDATES == ["message", "edited_message", "callback_query", "message_reaction"]


async def test_the_token_never_reaches_the_logs(
    running: Running, tg: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tg.fail("getUpdates", status=500)  # a polling error is logged, and polling goes on
    ann = new_user()
    chat = tg.private(ann)
    async with running():
        asked = tg.say(chat, ann, "Is the token safe?")
        await tg.answer(chat["id"], asked["message_id"])
    with pytest.raises(TelegramStartError) as refused:
        async with running(token="987654321:WRONG-token-abc"):
            pass
    assert "987654321:WRONG-token-abc" not in str(refused.value) and "rejected" in str(refused.value)
    assert "HTTP Request: POST" in caplog.text and "**********" in caplog.text  # httpx did log, redacted
    for secret in (TOKEN, TOKEN.split(":")[1], "987654321:WRONG-token-abc", "WRONG-token-abc"):
        assert secret not in caplog.text


async def test_heedful_run_serves_telegram_when_the_token_is_set(
    tg: FakeTelegram, tmp_path: Path, models_dir: Path
) -> None:
    env = heedful_env()
    env.update(HEEDFUL_TELEGRAM_TOKEN=TOKEN, HEEDFUL_TELEGRAM_API_URL=tg.api_url, HEEDFUL_TELEGRAM_DRAFTS="false",
               HEEDFUL_LOG_LEVEL="INFO", HEEDFUL_DATA_DIR=str(tmp_path), HEEDFUL_MODELS_DIR=str(models_dir),
               HEEDFUL_MODEL_ID="tiny:0", HEEDFUL_MODEL_MAX_NEW_TOKENS="8")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bots.cli", "run", env=env, cwd=Path(__file__).resolve().parents[2],
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        ann = new_user()
        chat = tg.private(ann)
        asked = tg.say(chat, ann, "Hello from the outside?")
        (answer,) = await tg.answer(chat["id"], asked["message_id"], timeout=240)  # includes the engine's start
        assert answer.text.strip()
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = await process.communicate()
    log_text = stderr.decode()
    assert process.returncode == 0, log_text
    assert "telegram adapter started" in log_text and "HTTP Request: POST" in log_text
    assert TOKEN not in log_text and TOKEN.split(":")[1] not in log_text
    assert (tmp_path / "telegram" / f"{TOKEN.split(':')[0]}.json").is_file()  # handled updates survive restarts
