"""The Slack adapter end to end: real slack-bolt/slack_sdk against a fake Slack on 127.0.0.1.

Every test drives the adapter the way Slack does (signed HTTP requests or Socket
Mode envelopes) and checks what reached the fake's Web API. Synchronisation is by
awaiting: ``settle`` waits until the fake has delivered every echo and the adapter
has finished every event it accepted; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import re
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from adapters.settings import SlackSettings
from adapters.slack import SlackAdapter, SlackStartError, create
from adapters.slack.markup import from_slack, permalink_ts, reaction_kind, to_slack
from adapters.slack.views import CORRECT_SHORTCUT, WHY_SHORTCUT
from engine import ChannelKey, Engine
from tests.env import heedful_env
from tests.fakes.slack import FakeSlack, Posted

WIFI_Q = "What is the wifi password at the office?"
WIFI_PARAPHRASE = "whats the password for the office wifi?"
WIFI_A = "The office wifi password is purple-otter-42 (ask Dana at reception for a guest pass)."
LIMIT = SlackAdapter.message_limit


def new_channel(prefix: str = "C") -> str:
    return prefix + uuid.uuid4().hex[:10].upper()


def plain(posts: list[Posted]) -> str:
    """What a person reads: the messages' text joined, Slack's escapes undone."""
    return "\n".join(html.unescape(p.text) for p in posts)


def settings_for(slack: FakeSlack, mode: str = "socket", **extra: Any) -> SlackSettings:
    fields: dict[str, Any] = {"bot_token": slack.bot_token, "api_url": slack.api_url, "mode": mode}
    if mode == "socket":
        fields["app_token"] = slack.app_token
    else:
        fields |= {"signing_secret": slack.signing_secret, "host": "127.0.0.1", "port": 0}
    return SlackSettings(**(fields | extra))


async def settle(slack: FakeSlack, adapter: SlackAdapter) -> None:
    """Wait until every echo is delivered and every accepted event fully handled."""
    while True:
        await slack.quiet()
        await adapter.idle()
        if not slack.echoing:
            return


@asynccontextmanager
async def running(engine: Engine, slack: FakeSlack, mode: str = "socket", **extra: Any) -> AsyncIterator[SlackAdapter]:
    adapter = create(engine, settings_for(slack, mode, **extra))
    await adapter.start()
    if mode == "http":
        slack.request_url = adapter.url
    try:
        yield adapter
    finally:
        await settle(slack, adapter)
        await adapter.stop()
        slack.request_url = None


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        yield fake


async def ask(slack: FakeSlack, adapter: SlackAdapter, channel: str, text: str, *, mention: bool = True,
              **kwargs: Any) -> tuple[dict[str, Any], list[Posted]]:
    """A person asks; returns their message event and the bot's messages posted since."""
    before = len(slack.posts)
    event = await slack.say(channel, (f"<@{slack.bot_user_id}> " if mention else "") + text, **kwargs)
    await settle(slack, adapter)
    return event, [p for p in slack.posts[before:] if p.channel == channel and not p.deleted]


def typed(text: str) -> str:
    """``text`` as a Slack client sends what a person typed: ``&``, ``<``, ``>`` escaped."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# -- conversations ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_mention_is_answered_once_in_its_thread_by_streaming_edits(
    tiny_engine: Engine, slack: FakeSlack, mode: str
) -> None:
    channel = new_channel()
    async with running(tiny_engine, slack, mode, edit_interval=0.0, native_streaming=False) as adapter:
        event, posts = await ask(slack, adapter, channel, "Tell me about the office.")
    assert len(posts) == 1, "the mention arrives as app_mention and as message; it is answered once"
    reply = posts[0]
    assert reply.thread_ts == event["ts"] and reply.user == slack.bot_user_id
    assert reply.text.strip() and not reply.text.endswith(" …"), "the final text has no 'more to come' mark"
    assert not slack.called("chat.startStream")
    updates = [c for c in slack.called("chat.update") if c.args["ts"] == reply.ts]
    assert updates and len(reply.versions) == len(updates) + 1
    assert all(a != b for a, b in zip(reply.versions, reply.versions[1:], strict=False)), "no no-op chat.update"
    assert reply.versions[0].endswith(" …"), "the first post says more is coming"
    # The platform message is linked to the engine's reply, so feedback on it finds the reply.
    explanation = await tiny_engine.explain(ChannelKey("slack", channel, space=slack.team_id), message_id=reply.ts)
    assert explanation.channel.thread == event["ts"]


@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_a_thread_reply_streams_natively_and_stays_linked(tiny_engine: Engine, slack: FakeSlack,
                                                                 mode: str) -> None:
    channel = new_channel()
    async with running(tiny_engine, slack, mode, edit_interval=0.0) as adapter:
        event, posts = await ask(slack, adapter, channel, WIFI_Q)
        await slack.say(channel, f"correction: {WIFI_A}", thread_ts=event["ts"])  # feedback on the streamed reply
        await settle(slack, adapter)
        _, answer = await ask(slack, adapter, channel, WIFI_PARAPHRASE)
    assert plain(answer) == WIFI_A
    (reply,) = posts
    start = slack.called("chat.startStream")[0]
    assert start.args["thread_ts"] == event["ts"] and start.args["recipient_user_id"] == "U0ALICE"
    assert start.args["recipient_team_id"] == slack.team_id
    appends = [c for c in slack.called("chat.appendStream") if c.args["ts"] == reply.ts]
    assert reply.ts in [c.args["ts"] for c in slack.called("chat.stopStream")] and not reply.streaming
    assert not [c for c in slack.called("chat.update") + slack.called("chat.postMessage")
                if c.args.get("thread_ts") == event["ts"] or c.args.get("ts") == reply.ts]
    assert reply.thread_ts == event["ts"] and reply.text.strip() and "…" not in reply.text
    assert len(reply.versions) == len(appends) + 1, "each append grows the message; nothing is sent twice"
    explanation = await tiny_engine.explain(ChannelKey("slack", channel, space=slack.team_id), message_id=reply.ts)
    assert explanation.channel.thread == event["ts"]


async def test_without_native_streaming_replies_fall_back_to_edits_once_for_all(tiny_engine: Engine) -> None:
    channel = new_channel()
    async with FakeSlack(streaming=False) as slack, running(tiny_engine, slack, edit_interval=0.0) as adapter:
        _, first = await ask(slack, adapter, channel, "Tell me about the office.")
        _, second = await ask(slack, adapter, channel, "And about the kitchen?")
        assert len(first) == 1 and len(second) == 1 and first[0].text.strip() and second[0].text.strip()
        assert [c.status for c in slack.called("chat.startStream")] == [200], "asked once, then remembered"
        assert slack.called("chat.postMessage") and slack.called("chat.update")


async def test_direct_messages_and_thread_follow_ups(tiny_engine: Engine, slack: FakeSlack) -> None:
    dm, channel = new_channel("D"), new_channel()
    async with running(tiny_engine, slack) as adapter:
        _, dm_posts = await ask(slack, adapter, dm, WIFI_Q, mention=False)
        assert len(dm_posts) == 1 and dm_posts[0].thread_ts is None, "a DM is answered in the conversation"

        first, _ = await ask(slack, adapter, channel, "Where do we keep the spare keys?")
        _, follow = await ask(slack, adapter, channel, "and the office printer?", mention=False,
                              thread_ts=first["ts"])
        assert len(follow) == 1 and follow[0].thread_ts == first["ts"], "a follow-up in the bot's thread"

        # A correction in a thread under the bot's DM answer corrects that answer.
        await slack.say(dm, f"correction: {WIFI_A}", thread_ts=dm_posts[0].ts)
        await settle(slack, adapter)
        assert slack.ephemerals[-1]["text"].startswith("Learned")
        assert slack.ephemerals[-1]["thread_ts"] == dm_posts[0].ts

        _, chatter = await ask(slack, adapter, channel, "lunch anyone?", mention=False)
        other_root = await slack.say(channel, "a thread among people")
        _, other = await ask(slack, adapter, channel, "reply among people", mention=False,
                             thread_ts=other_root["ts"])
        assert chatter == [] and other == [], "no reply to messages not addressed to the bot"
        _, learned = await ask(slack, adapter, dm, WIFI_PARAPHRASE, mention=False)
        assert plain(learned) == WIFI_A


# -- learning -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_correction_by_thread_reply_is_learned_for_the_channel_only(
    tiny_engine: Engine, slack: FakeSlack, mode: str
) -> None:
    channel, elsewhere = new_channel(), new_channel()
    async with running(tiny_engine, slack, mode) as adapter:
        question, _ = await ask(slack, adapter, channel, WIFI_Q)
        correction = await slack.say(channel, f"correction: {WIFI_A}", thread_ts=question["ts"], user="U0BOB")
        await settle(slack, adapter)
        assert {"channel": channel, "timestamp": correction["ts"], "name": "white_check_mark"} in slack.reactions
        receipt = slack.ephemerals[-1]
        assert receipt["user"] == "U0BOB" and receipt["text"].startswith("Learned")

        _, answer = await ask(slack, adapter, channel, WIFI_PARAPHRASE)
        assert plain(answer) == WIFI_A
        _, other = await ask(slack, adapter, elsewhere, WIFI_PARAPHRASE)
        assert other and "purple-otter" not in plain(other), "another channel is unaffected"


@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_correction_by_message_shortcut_and_modal(tiny_engine: Engine, slack: FakeSlack, mode: str) -> None:
    channel = new_channel()
    async with running(tiny_engine, slack, mode) as adapter:
        _, (answer,) = await ask(slack, adapter, channel, WIFI_Q)
        await slack.send_shortcut(CORRECT_SHORTCUT, message=answer, channel=channel, user="U0CARA")
        view = await slack.wait_for(lambda: slack.views[-1] if slack.views else None)
        shown = view["blocks"][0]["text"]["text"]
        assert view["title"]["text"] == "Correct this answer"
        assert all(line in shown for line in answer.text.split("\n")), "the modal shows the answer"

        empty = await slack.submit_view(view, {"better_answer": "   "}, user="U0CARA")
        assert empty.body["response_action"] == "errors" and "better_answer" in empty.body["errors"]
        await slack.submit_view(view, {"better_answer": WIFI_A}, user="U0CARA")
        receipt = await slack.wait_for(lambda: [e for e in slack.ephemerals if e["user"] == "U0CARA"])
        assert receipt[-1]["text"].startswith("Learned") and receipt[-1]["channel"] == channel

        _, paraphrased = await ask(slack, adapter, channel, WIFI_PARAPHRASE)
        assert plain(paraphrased) == WIFI_A

        # The shortcut on someone else's message is refused, politely and privately.
        person = {"type": "message", "user": "U0CARA", "text": "my own words", "ts": slack.new_ts()}
        await slack.send_shortcut(CORRECT_SHORTCUT, message=person, channel=channel, user="U0CARA")
        refusal = await slack.wait_for(lambda: slack.responses)
        assert "my own answers" in refusal[-1]["text"] and refusal[-1]["response_type"] == "ephemeral"
        assert len(slack.views) == 1


async def test_reactions_rate_the_bot_message(tiny_engine: Engine, slack: FakeSlack) -> None:
    channel = new_channel()
    async with running(tiny_engine, slack) as adapter:
        _, (answer,) = await ask(slack, adapter, channel, "How do I book a meeting room?")

        def reaction(name: str, ts: str, item_user: str) -> dict[str, Any]:
            return {"type": "reaction_added", "user": "U0DAN", "reaction": name, "item_user": item_user,
                    "item": {"type": "message", "channel": channel, "ts": ts}, "event_ts": slack.new_ts()}

        await slack.send_event(reaction("+1::skin-tone-3", answer.ts, slack.bot_user_id))
        await settle(slack, adapter)
        assert slack.ephemerals == [], "a thumbs up is taken silently"
        await slack.send_event(reaction("-1", answer.ts, slack.bot_user_id))
        await settle(slack, adapter)
        assert len(slack.ephemerals) == 1 and "correction:" in slack.ephemerals[0]["text"]
        await slack.send_event(reaction("-1", slack.new_ts(), "U0DAN"))  # on a person's message
        await slack.send_event(reaction("tada", answer.ts, slack.bot_user_id))  # not a rating
        await settle(slack, adapter)
        assert len(slack.ephemerals) == 1


async def test_slash_command(tiny_engine: Engine, slack: FakeSlack) -> None:
    channel = new_channel()
    # U0EVE is no workspace admin: with manage = "teachers", whoever may teach (everyone, here) may also
    # make the bot forget and set its persona (the default, "admins", refuses them: test_platform_trust.py).
    async with running(tiny_engine, slack, manage="teachers") as adapter:

        async def command(text: str) -> dict[str, Any]:
            seen = len(slack.responses)
            await slack.send_command(text, channel=channel, user="U0EVE")
            return (await slack.wait_for(lambda: slack.responses[seen:]))[0]

        assert "correction:" in (await command("help"))["text"]
        assert "/heedful why" in (await command("bogus"))["text"]
        assert "not answered anything" in (await command("why"))["text"]
        question, (answer,) = await ask(slack, adapter, channel, WIFI_Q)
        why = await command("why")
        assert "no learned correction applied" in why["text"] and why["response_type"] == "ephemeral"
        link = f"https://heedful-test.slack.com/archives/{channel}/p{answer.ts.replace('.', '')}"
        assert "route base" in (await command(f"why {link}"))["text"]
        await slack.send_shortcut(WHY_SHORTCUT, message=answer, channel=channel, user="U0EVE")
        assert "route base" in (await slack.wait_for(lambda: slack.responses[-1:]))[0]["text"]

        await slack.say(channel, f"correction: {WIFI_A}", thread_ts=question["ts"], user="U0EVE")
        await settle(slack, adapter)
        learned = await command("learned")
        assert "purple-otter-42" in learned["text"] and WIFI_Q in learned["text"]
        _, paraphrased = await ask(slack, adapter, channel, WIFI_PARAPHRASE)
        stats = await command("stats")
        assert "corrections: 1 active" in stats["text"] and "answers from corrections: 1 of" in stats["text"]
        assert "route correction" in (await command("why"))["text"]

        assert "tutor" in (await command("persona"))["text"]
        persona = await command("persona tutor")
        assert persona["response_type"] == "in_channel" and "tutor" in persona["text"]
        settings = await tiny_engine.channel_settings(ChannelKey("slack", channel, space=slack.team_id))
        assert settings.persona == "tutor"

        _, (learned_answer,) = await ask(slack, adapter, channel, WIFI_Q)
        link = f"https://heedful-test.slack.com/archives/{channel}/p{learned_answer.ts.replace('.', '')}"
        forget = await command(f"forget {link}")
        assert forget["response_type"] == "in_channel" and "Forgot 1 correction" in forget["text"]
        assert "Nothing learned" in (await command("learned"))["text"]
        await slack.say(channel, f"correction: {WIFI_A}", thread_ts=question["ts"], user="U0EVE")
        await settle(slack, adapter)
        forget = await command("forget")
        assert forget["response_type"] == "in_channel" and "1 correction" in forget["text"]
        assert "Nothing learned" in (await command("learned"))["text"]
        _, after = await ask(slack, adapter, channel, WIFI_PARAPHRASE)
        assert "purple-otter" not in plain(after)
        assert paraphrased and plain(paraphrased) == WIFI_A


async def test_personal_subcommands_shape_only_their_users_answers(tiny_engine: Engine, slack: FakeSlack) -> None:
    """``/heedful personal``, ``fixme`` and ``forget me``: open to everyone (only admins teach here),
    answered to that user only; ``why`` shows the personal items to their owner only."""
    channel = new_channel()
    slack.add_user("U0ANN")
    slack.add_user("U0BOB")
    plan = f"Zorvex-{uuid.uuid4().hex[:6]}"
    key = ChannelKey("slack", channel, space=slack.team_id)
    async with running(tiny_engine, slack, teach="admins") as adapter:

        async def command(text: str, user: str) -> dict[str, Any]:
            seen = len(slack.responses)
            await slack.send_command(text, channel=channel, user=user)
            return (await slack.wait_for(lambda: slack.responses[seen:]))[0]

        told = await command(f"personal My plan is the {plan} plan.", "U0ANN")
        assert "Noted, just for you" in told["text"] and told["response_type"] == "ephemeral"
        await ask(slack, adapter, channel, "which plan am I on?", user="U0ANN")
        assert plan in (await command("why", "U0ANN"))["text"]
        theirs = (await command("why", "U0BOB"))["text"]
        assert plan not in theirs and "personal profile" in theirs

        await ask(slack, adapter, channel, WIFI_Q, user="U0ANN")
        fixed = await command(f"fixme {WIFI_A}", "U0ANN")
        assert "Learned, just for you" in fixed["text"] and fixed["response_type"] == "ephemeral"
        _, mine = await ask(slack, adapter, channel, WIFI_PARAPHRASE, user="U0ANN")
        assert plain(mine) == WIFI_A
        _, others = await ask(slack, adapter, channel, WIFI_PARAPHRASE, user="U0BOB")
        assert "purple-otter" not in plain(others)
        assert "Nothing learned" in (await command("learned", "U0ANN"))["text"]
        assert await tiny_engine.learned(key) == []
        listed = await command("personal", "U0ANN")
        assert plan in listed["text"] and "purple-otter-42" in listed["text"] and listed["response_type"] == "ephemeral"
        assert "told me nothing" in (await command("personal", "U0BOB"))["text"]
        assert "Usage" in (await command("fixme", "U0ANN"))["text"]

        forgot = await command("forget me", "U0ANN")
        assert "Forgot 1 thing(s)" in forgot["text"] and "1 correction(s)" in forgot["text"]
        assert forgot["response_type"] == "ephemeral"
        _, after = await ask(slack, adapter, channel, WIFI_PARAPHRASE, user="U0ANN")
        assert "purple-otter" not in plain(after)


# -- who may teach -------------------------------------------------------------------------


async def test_only_admins_may_teach_when_configured(tiny_engine: Engine, slack: FakeSlack) -> None:
    channel = new_channel()
    slack.add_user("U0ADMIN", admin=True)
    slack.add_user("U0GUEST")
    key = ChannelKey("slack", channel, space=slack.team_id)
    async with running(tiny_engine, slack, teach="admins") as adapter:
        question, (answer,) = await ask(slack, adapter, channel, WIFI_Q, user="U0GUEST")
        await slack.say(channel, "correction: it is hunter2", thread_ts=question["ts"], user="U0GUEST")
        await settle(slack, adapter)
        refusal = slack.ephemerals[-1]
        assert refusal["user"] == "U0GUEST" and "allowed to teach" in refusal["text"]
        assert await tiny_engine.learned(key) == []

        await slack.send_shortcut(CORRECT_SHORTCUT, message=answer, channel=channel, user="U0GUEST")
        assert "allowed to teach" in (await slack.wait_for(lambda: slack.responses))[-1]["text"]
        assert slack.views == [], "no modal for someone who may not teach"
        await slack.send_command("forget", channel=channel, user="U0GUEST")
        assert "ask an admin" in (await slack.wait_for(lambda: slack.responses[1:]))[0]["text"]

        await slack.say(channel, f"correction: {WIFI_A}", thread_ts=question["ts"], user="U0ADMIN")
        await settle(slack, adapter)
        assert [c.answer for c in await tiny_engine.learned(key)] == [WIFI_A]
        # thumbs stay open to everyone
        await slack.send_event({"type": "reaction_added", "user": "U0GUEST", "reaction": "-1",
                                "item_user": slack.bot_user_id,
                                "item": {"type": "message", "channel": channel, "ts": answer.ts}})
        await settle(slack, adapter)
        assert "correction:" in slack.ephemerals[-1]["text"]


async def test_listed_user_groups_may_teach(tiny_engine: Engine, slack: FakeSlack) -> None:
    channel = new_channel()
    slack.usergroups["S0TEACHERS"] = ["U0TINA"]
    key = ChannelKey("slack", channel, space=slack.team_id)
    async with running(tiny_engine, slack, teach="listed", teachers=["S0TEACHERS", "U0LISTED"]) as adapter:
        question, _ = await ask(slack, adapter, channel, WIFI_Q)
        for user, answer in (("U0BOB", "not this"), ("U0TINA", "Group member answer."),
                             ("U0LISTED", WIFI_A)):
            await slack.say(channel, f"correction: {answer}", thread_ts=question["ts"], user=user)
            await settle(slack, adapter)
        assert [c.author_id for c in await tiny_engine.learned(key)] == ["U0LISTED"]  # the same question, replaced
        refused = [e for e in slack.ephemerals if e["user"] == "U0BOB"]
        assert refused and "allowed to teach" in refused[0]["text"]


# -- delivery: retries, signatures, rate limits ----------------------------------------------


@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_a_retried_event_is_answered_once(tiny_engine: Engine, slack: FakeSlack, mode: str) -> None:
    channel = new_channel()
    async with running(tiny_engine, slack, mode) as adapter:
        event = {"type": "app_mention", "user": "U0ALICE", "text": f"<@{slack.bot_user_id}> ping", "ts": slack.new_ts(),
                 "channel": channel}
        first = await slack.send_event(event, event_id="Ev0RETRIED01")
        again = await slack.send_event(event, event_id="Ev0RETRIED01", retry=1)
        assert first.status == again.status == 200
        await settle(slack, adapter)
    assert len(slack.thread(channel, event["ts"])) == 1


async def test_http_requests_must_be_signed_and_fresh(tiny_engine: Engine, slack: FakeSlack) -> None:
    channel = new_channel()
    async with running(tiny_engine, slack, "http") as adapter:
        challenge = {"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                     "type": "url_verification"}
        raw = json.dumps(challenge).encode()
        ok = await slack.post_raw(raw, {"Content-Type": "application/json", **slack.signed_headers(raw)})
        assert ok.status == 200 and challenge["challenge"] in json.dumps(ok.body)
        assert (await slack.post_raw(raw, {"Content-Type": "application/json"})).status == 401

        event = {"type": "app_mention", "user": "U0ALICE", "text": f"<@{slack.bot_user_id}> hi", "ts": slack.new_ts(),
                 "channel": channel}
        body = json.dumps(slack.event_body(event)).encode()
        stale = slack.signed_headers(body, timestamp=int(time.time()) - 600)
        forged = slack.signed_headers(body, secret="not-the-signing-secret")
        tampered = slack.signed_headers(body)
        for headers, data in ((stale, body), (forged, body), (tampered, body.replace(b"hi", b"yo"))):
            answer = await slack.post_raw(data, {"Content-Type": "application/json", **headers})
            assert answer.status == 401
        await settle(slack, adapter)
        assert slack.messages(channel) == []
        genuine = await slack.post_raw(body, {"Content-Type": "application/json", **slack.signed_headers(body)})
        assert genuine.status == 200
        await settle(slack, adapter)
        assert len(slack.messages(channel)) == 1, "the same event, correctly signed, is answered"
        async with aiohttp.ClientSession() as client, client.get(adapter.url.replace("/slack/events", "/healthz")) as r:
            assert r.status == 200 and await r.text() == "ok"


@pytest.mark.parametrize("native", [False, True], ids=["edits", "native"])
async def test_the_final_text_lands_despite_rate_limits(tiny_engine: Engine, slack: FakeSlack, native: bool) -> None:
    channel = new_channel()
    first, then = ("chat.startStream", "chat.stopStream") if native else ("chat.postMessage", "chat.update")
    async with running(tiny_engine, slack, native_streaming=native) as adapter:
        question, _ = await ask(slack, adapter, channel, WIFI_Q)
        await slack.say(channel, f"correction: {WIFI_A}", thread_ts=question["ts"])
        await settle(slack, adapter)
        slack.fail(then, status=429, retry_after=0, times=3)
        slack.fail(first, status=500, times=1)
        _, answer = await ask(slack, adapter, channel, WIFI_PARAPHRASE)
    assert plain(answer) == WIFI_A
    statuses = [c.status for c in slack.calls if c.method in (first, then)]
    assert statuses.count(429) == 3 and statuses.count(500) == 1


async def test_a_long_answer_is_split_without_breaking_code(tiny_engine: Engine, slack: FakeSlack) -> None:
    channel = new_channel()
    code = "```python\n" + "\n".join(f"print('line {i:04d} of the setup script')" for i in range(120)) + "\n```"
    prose = " ".join(f"Step {i}: check the <router> & the cable." for i in range(1, 200))
    long_answer = (prose[:4200] + "\n\n" + code + "\n\n" + prose)[:10_000].rstrip()
    assert len(long_answer) == 10_000 or len(long_answer) > 9_990
    async with running(tiny_engine, slack) as adapter:
        question, _ = await ask(slack, adapter, channel, "How do I set up the office router?")
        await slack.say(channel, f"correction: {typed(long_answer)}", thread_ts=question["ts"])
        await settle(slack, adapter)
        _, parts = await ask(slack, adapter, channel, "how to set up the router in the office?")
    assert len(parts) == 3
    for part in parts:
        text = html.unescape(part.text)
        assert len(text) <= LIMIT
        assert text.count("```") % 2 == 0, "every part renders on its own"
        assert "&lt;router&gt; &amp;" in part.text or "router" not in text, "escaped for Slack"
    words = re.sub(r"```(python)?", "", plain(parts)).split()
    assert words == re.sub(r"```(python)?", "", long_answer).split()


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_bad_input_gets_no_reply_and_breaks_nothing(tiny_engine: Engine, slack: FakeSlack, mode: str) -> None:
    channel, dm = new_channel(), new_channel("D")
    bot = f"<@{slack.bot_user_id}>"
    async with running(tiny_engine, slack, mode) as adapter:
        base = {"type": "message", "channel": channel, "channel_type": "channel"}
        events: list[dict[str, Any]] = [
            base | {"subtype": "bot_message", "bot_id": "B0OTHER", "text": f"{bot} hi", "ts": slack.new_ts()},
            base | {"bot_id": "B0OTHER", "user": "U0OTHERBOT", "text": f"{bot} loop?", "ts": slack.new_ts()},
            base | {"user": slack.bot_user_id, "bot_id": slack.bot_id, "text": f"{bot} me", "ts": slack.new_ts()},
            base | {"subtype": "message_changed", "hidden": True, "ts": slack.new_ts(),
                    "message": {"user": "U0ALICE", "text": f"{bot} edited", "ts": slack.new_ts()}},
            base | {"subtype": "message_deleted", "hidden": True, "ts": slack.new_ts(), "deleted_ts": "1.2"},
            base | {"subtype": "file_share", "user": "U0ALICE", "text": "", "ts": slack.new_ts(),
                    "files": [{"id": "F1", "name": "a.png"}], "channel": dm, "channel_type": "im"},
            base | {"subtype": "channel_join", "user": "U0ALICE", "text": f"{bot} joined", "ts": slack.new_ts()},
            {"type": "app_mention", "user": "U0ALICE", "text": f"{bot} no channel", "ts": slack.new_ts()},
            {"type": "app_mention", "user": "U0ALICE", "text": ["not", "text"], "ts": slack.new_ts(),
             "channel": channel},
            {"type": "app_mention", "user": {"id": "U0ALICE"}, "text": f"{bot} odd user", "ts": slack.new_ts(),
             "channel": channel},
            {"type": "message", "subtype": None, "text": None, "ts": None, "channel": None},
            {"type": "reaction_added", "user": "U0ALICE", "reaction": "+1", "item": "not a dict"},
            {"type": "totally_unknown_event"},
        ]
        for event in events:
            assert (await slack.send_event(event)).status == 200
        foreign = {"type": "app_mention", "user": "U0MALLORY", "text": f"{bot} hi", "ts": slack.new_ts(),
                   "channel": channel}
        assert (await slack.send_event(foreign, team_id="T0ELSEWHERE")).status == 200
        for body in ({"type": "event_callback", "team_id": slack.team_id, "event": "not a dict"},
                     {"type": "event_callback", "team_id": slack.team_id},
                     {"type": "block_actions", "team": {"id": slack.team_id}, "actions": "?"},
                     {"type": "view_submission", "team": {"id": slack.team_id}, "user": {"id": "U0ALICE"},
                      "view": {"callback_id": "heedful_correction", "private_metadata": "{bad json",
                               "state": {"values": {"better_answer": {"text": {"value": "x"}}}}}}):
            await slack.deliver(body, kind="events_api" if body["type"] == "event_callback" else "interactive")
        if mode == "http":
            raw = b"{not json"
            answer = await slack.post_raw(raw, {"Content-Type": "application/json", **slack.signed_headers(raw)})
            assert answer.status == 400
            raw = b"payload=%7Bbroken"
            form = {"Content-Type": "application/x-www-form-urlencoded", **slack.signed_headers(raw)}
            assert (await slack.post_raw(raw, form)).status == 400
        else:
            await slack.send_envelope("not json at all", wait_ack=False)
            ack = await slack.send_envelope({"envelope_id": "e-1", "type": "events_api", "payload": "oops"})
            assert ack["envelope_id"] == "e-1"
        await settle(slack, adapter)
        assert slack.posts == [] and slack.ephemerals == [] and slack.views == []

        _, still = await ask(slack, adapter, channel, "still there?")
        assert len(still) == 1, "and the adapter still answers"


@pytest.mark.parametrize("growing", ["chat.update", "chat.appendStream"])
async def test_a_deleted_question_stops_and_withdraws_its_reply(tiny_engine: Engine, slack: FakeSlack,
                                                                growing: str) -> None:
    channel = new_channel()
    native = growing == "chat.appendStream"
    async with running(tiny_engine, slack, edit_interval=0.0, native_streaming=native) as adapter:
        release = slack.hold(growing)
        first_post = asyncio.ensure_future(slack.next_message(channel))
        question = await slack.say(channel, f"<@{slack.bot_user_id}> Write a long story about the office.")
        reply = await first_post
        await slack.wait_for(lambda: slack.held.get(growing))  # the reply is mid-stream
        await slack.send_event({"type": "message", "subtype": "message_deleted", "hidden": True,
                                "channel": channel, "channel_type": "channel", "ts": slack.new_ts(),
                                "deleted_ts": question["ts"], "previous_message": {"ts": question["ts"]}})
        await adapter.idle()
        release.set()
        await settle(slack, adapter)
    assert reply.thread_ts == question["ts"] and reply.deleted and slack.thread(channel, question["ts"]) == []


async def test_socket_mode_survives_slack_asking_to_reconnect(tiny_engine: Engine, slack: FakeSlack) -> None:
    channel = new_channel()
    async with running(tiny_engine, slack) as adapter:
        await slack.send_envelope({"type": "disconnect", "reason": "refresh_requested"}, wait_ack=False)
        await slack.wait_for(lambda: slack.socket_connections >= 2)
        _, posts = await ask(slack, adapter, channel, "are you back?")
        assert len(posts) == 1
    assert len(slack.called("apps.connections.open")) >= 2


# -- configuration, start-up, secrets ------------------------------------------------------------


async def test_bad_tokens_fail_start_clearly_and_settings_are_checked(tiny_engine: Engine) -> None:
    async with FakeSlack(bot_token="xoxb-the-real-one") as slack:
        adapter = create(tiny_engine, settings_for(slack, bot_token="xoxb-wrong-token-value"))
        with pytest.raises(SlackStartError, match="HEEDFUL_SLACK_BOT_TOKEN") as raised:
            await adapter.start()
        assert "wrong-token-value" not in str(raised.value)
        await adapter.stop()  # safe after a failed start
    async with FakeSlack(app_token="xapp-the-real-one") as slack:
        adapter = create(tiny_engine, settings_for(slack, app_token="xapp-wrong"))
        with pytest.raises(SlackStartError, match="HEEDFUL_SLACK_APP_TOKEN"):
            await adapter.start()
    async with FakeSlack() as slack, running(tiny_engine, slack, "http", api_url=slack.api_url.rstrip("/")) as first:
        assert first.http is not None
        taken = create(tiny_engine, settings_for(slack, "http", port=first.http.bound_port))
        with pytest.raises(SlackStartError, match="HEEDFUL_SLACK_HOST/PORT"):
            await taken.start()
    with pytest.raises(ValidationError, match="xoxb-"):
        SlackSettings(bot_token="xoxp-user-token", app_token="xapp-1")
    with pytest.raises(ValidationError, match="signing_secret"):
        SlackSettings(bot_token="xoxb-1", mode="http")
    with pytest.raises(ValidationError, match="app_token"):
        SlackSettings(bot_token="xoxb-1", mode="socket", signing_secret="s")
    assert SlackSettings(bot_token="xoxb-1", app_token="xapp-1").resolved_mode == "socket"
    assert SlackSettings(signing_secret="s").resolved_mode == "http"  # no bot token: nothing is required


def test_each_platform_reads_its_concurrency_from_its_own_section(monkeypatch: pytest.MonkeyPatch) -> None:
    from bots.config import ConfigError, load_settings

    monkeypatch.setenv("HEEDFUL_SLACK_CONCURRENCY", "4")
    monkeypatch.setenv("HEEDFUL_TELEGRAM_CONCURRENCY", "8")
    settings = load_settings()
    assert (settings.slack.concurrency, settings.telegram.concurrency, settings.discord.concurrency) == (4, 8, 32)
    monkeypatch.setenv("HEEDFUL_DISCORD_CONCURRENCY", "0")
    with pytest.raises(ConfigError, match=r"discord\.concurrency"):
        load_settings()


@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_tokens_and_signing_secret_never_reach_the_logs(
    tiny_engine: Engine, slack: FakeSlack, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    channel = new_channel()
    caplog.set_level(logging.DEBUG)
    async with running(tiny_engine, slack, mode) as adapter:
        question, (answer,) = await ask(slack, adapter, channel, WIFI_Q)
        await slack.say(channel, f"correction: {WIFI_A}", thread_ts=question["ts"])
        await slack.send_command("learned", channel=channel)
        await slack.send_shortcut(CORRECT_SHORTCUT, message=answer, channel=channel)
        await slack.wait_for(lambda: slack.views and slack.responses)
        slack.fail("chat.update", status=429, retry_after=0)
        await ask(slack, adapter, channel, WIFI_PARAPHRASE)
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "chat.startStream" in logged, "debug logging was on"
    for secret in (slack.bot_token, slack.app_token, slack.signing_secret):
        assert secret not in logged


async def test_heedful_run_serves_slack_when_a_bot_token_is_set(
    slack: FakeSlack, tmp_path: Path, models_dir: Path
) -> None:
    env = heedful_env() | {
        "HEEDFUL_DATA_DIR": str(tmp_path), "HEEDFUL_MODELS_DIR": str(models_dir), "HEEDFUL_MODEL_ID": "tiny:0",
        "HEEDFUL_MODEL_MAX_NEW_TOKENS": "8", "HEEDFUL_LOG_LEVEL": "DEBUG",
        "HEEDFUL_SLACK_BOT_TOKEN": slack.bot_token, "HEEDFUL_SLACK_APP_TOKEN": slack.app_token,
        "HEEDFUL_SLACK_SIGNING_SECRET": slack.signing_secret, "HEEDFUL_SLACK_API_URL": slack.api_url,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bots.cli", "run", env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        await slack.wait_for(lambda: slack.socket_connections, timeout=300)
        channel = new_channel()
        question = await slack.say(channel, f"<@{slack.bot_user_id}> hello from the runner")
        await slack.wait_for(lambda: [p for p in slack.thread(channel, question["ts"]) if not p.text.endswith(" …")],
                             timeout=300)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    log_text = (out + err).decode(errors="replace")
    assert process.returncode == 0, log_text[-3000:]
    assert "slack adapter started" in log_text and "DEBUG" in log_text
    for secret in (slack.bot_token, slack.app_token, slack.signing_secret):
        assert secret not in log_text


# -- pure text conversions ------------------------------------------------------------------


def test_slack_text_conversions() -> None:
    assert from_slack("<@U0BOT> what is <#C1|general> &amp; <https://x.io|the site>?", "U0BOT") == (
        "what is #general & the site (https://x.io)?")
    assert from_slack("<@U0ANN|ann> and <@U0BOB> &lt;3 <!here>", "U0BOT") == "@ann and @U0BOB <3 @here"
    assert to_slack("<!channel> & <@U1>") == "&lt;!channel&gt; &amp; &lt;@U1&gt;", "no live pings from text"
    assert to_slack("**bold** and [docs](https://d.io) `a**b**` ~~no~~") == (
        "*bold* and docs (https://d.io) `a**b**` ~no~"), "a link never hides its address"
    assert to_slack("```python\nx = a < b\n```") == "```\nx = a &lt; b\n```"
    assert to_slack("# Title\ntext") == "*Title*\ntext"
    assert permalink_ts("see https://t.slack.com/archives/C0123/p1700000000123456") == ("C0123", "1700000000.123456")
    assert (reaction_kind("+1::skin-tone-2"), reaction_kind("thumbsdown"), reaction_kind("tada")) == (
        "up", "down", None)
