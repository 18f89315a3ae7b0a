"""Generality grows with use, reversibly: an asker's 👍 on an answer served from a correction makes
their phrasing a confirmed paraphrase of it; a correction of such an answer makes the phrasing a
negative of it; /forget undoes both. Through the real engine on the tiny model (real encoder and
metric, real SQLite), plus the store and the ``heedful learned`` command."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bots.cli import app
from engine import ChannelKey, Engine, Feedback, FeedbackKind, Route
from engine.reply import Reply
from engine.store import MIGRATIONS, Derived, Store
from tests.conftest import sqlite_only
from tests.turns import ask, explained

WIFI_Q = "What is the wifi password at the office?"
WIFI_A = "The office wifi password is pelican-4417."
ASKED = "how do I get on the office wifi"        # answered from WIFI_Q (metric score ~0.70, radius ~0.53)
NEARER = "how do i get internet at work"         # not answered from WIFI_Q alone (~0.41); near ASKED
WRONG = "what's the wifi code here"              # answered from WIFI_Q (~0.64), but it means something else
GUEST_A = "Guest wifi codes are handed out at reception."



def route(reply: Reply) -> Route:
    return explained(reply).route


async def teach(engine: Engine, key: ChannelKey, question: str = WIFI_Q, answer: str = WIFI_A) -> int:
    receipt = await engine.feedback(Feedback(key, FeedbackKind.CORRECTION, author_id="teacher", question=question,
                                             text=answer))
    assert receipt.accepted and receipt.correction_id is not None
    return receipt.correction_id


async def thumb(engine: Engine, key: ChannelKey, reply: Reply, author: str) -> None:
    assert (await engine.feedback(Feedback(key, FeedbackKind.UP, author_id=author, reply_id=reply.reply_id))).accepted


async def test_the_askers_thumbs_up_adds_their_phrasing_and_a_nearer_rewording_gets_the_answer(
        tiny_engine: Engine) -> None:
    key = ChannelKey("test", "para-up", space="s")
    source = await teach(tiny_engine, key)
    _, before = await ask(tiny_engine, key, NEARER)
    assert route(before) is not Route.CORRECTION
    text, reply = await ask(tiny_engine, key, ASKED)
    assert route(reply) is Route.CORRECTION and "pelican-4417" in text
    await thumb(tiny_engine, key, reply, "asker")

    learned = await tiny_engine.learned(key)
    assert [(c.question, c.answer, c.origin, c.source_id) for c in learned] == [
        (WIFI_Q, WIFI_A, "taught", None), (ASKED, WIFI_A, "confirmed", source)]
    assert learned[1].author_id == "asker"
    text, after = await ask(tiny_engine, key, NEARER)
    assert route(after) is Route.CORRECTION and "pelican-4417" in text

    # A second 👍 on the same reply, and the same phrasing confirmed again, add nothing.
    await thumb(tiny_engine, key, reply, "asker")
    _, again = await ask(tiny_engine, key, ASKED)
    await thumb(tiny_engine, key, again, "asker")
    assert len(await tiny_engine.learned(key)) == 2
    assert await tiny_engine.store.thumbs(key) == {"up": 3}
    entries = [e for e in await tiny_engine.audit(key) if e.action == "paraphrase"]
    assert [(e.author_id, e.detail["source_id"], e.detail["question"]) for e in entries] == [
        ("asker", source, ASKED)]


async def test_someone_elses_thumbs_up_only_records_the_thumb(tiny_engine: Engine) -> None:
    key = ChannelKey("test", "para-other", space="s")
    await teach(tiny_engine, key)
    _, reply = await ask(tiny_engine, key, ASKED, author="asker")
    assert route(reply) is Route.CORRECTION
    await thumb(tiny_engine, key, reply, "bystander")
    _, anonymous = await ask(tiny_engine, key, ASKED, author="")
    await thumb(tiny_engine, key, anonymous, "")  # no author to compare: not the asker
    _, base = await ask(tiny_engine, key, "Which plants need watering on Fridays?")
    assert route(base) is not Route.CORRECTION
    await thumb(tiny_engine, key, base, "asker")  # not served from a correction
    assert [c.origin for c in await tiny_engine.learned(key)] == ["taught"]
    assert await tiny_engine.store.thumbs(key) == {"up": 3}


async def test_a_correction_of_a_served_answer_makes_its_question_a_negative_that_blocks_it(
        tiny_engine: Engine) -> None:
    key = ChannelKey("test", "para-negative", space="s")
    source = await teach(tiny_engine, key)
    _, reply = await ask(tiny_engine, key, WRONG)
    assert route(reply) is Route.CORRECTION
    receipt = await tiny_engine.feedback(Feedback(key, FeedbackKind.CORRECTION, author_id="fixer",
                                                  reply_id=reply.reply_id, text=GUEST_A))
    assert receipt.accepted
    negatives = await tiny_engine.negatives(key)
    assert [(n.question, n.answer, n.origin, n.source_id, n.author_id) for n in negatives] == [
        (WRONG, WIFI_A, "negative", source, "fixer")]
    assert [(c.question, c.answer) for c in await tiny_engine.learned(key)] == [(WIFI_Q, WIFI_A), (WRONG, GUEST_A)]

    support = await tiny_engine._support_set(key)
    same = {m.correction.answer: m for m in await tiny_engine.matching.match(support, WRONG)}
    assert same[WIFI_A].blocked and same[WIFI_A].negative > 0.99
    assert not same[GUEST_A].blocked
    taught = {m.correction.answer: m for m in await tiny_engine.matching.match(support, WIFI_Q)}
    assert not taught[WIFI_A].blocked  # the taught question itself still gets its answer
    assert [e.author_id for e in await tiny_engine.audit(key) if e.action == "negative"] == ["fixer"]
    # What another process would compare with to see a change counts the negative too.
    assert (await tiny_engine.store.fingerprints([key]))[key.scope][:2] == support.fingerprint
    assert support.fingerprint[0] == len(support) + 1

    # Reloaded from the store (another process, a restart), the negative is there as before.
    tiny_engine._support.drop(key.scope)
    reloaded = await tiny_engine._support_set(key)
    assert [n.question for n in reloaded.negatives] == [WRONG]
    assert {m.correction.answer: m for m in await tiny_engine.matching.match(reloaded, WRONG)}[WIFI_A].blocked


async def test_a_correction_of_the_taught_question_itself_replaces_it_without_a_negative(
        tiny_engine: Engine) -> None:
    key = ChannelKey("test", "para-replace", space="s")
    await teach(tiny_engine, key)
    _, reply = await ask(tiny_engine, key, WIFI_Q)
    assert route(reply) is Route.CORRECTION
    await tiny_engine.feedback(Feedback(key, FeedbackKind.CORRECTION, author_id="fixer", reply_id=reply.reply_id,
                                        text="The office wifi password is now heron-2210."))
    assert [c.answer for c in await tiny_engine.learned(key)] == ["The office wifi password is now heron-2210."]
    assert await tiny_engine.negatives(key) == []


async def test_forget_undoes_what_was_derived(tiny_engine: Engine) -> None:
    key = ChannelKey("test", "para-forget", space="s")
    source = await teach(tiny_engine, key)
    _, reply = await ask(tiny_engine, key, ASKED)
    await thumb(tiny_engine, key, reply, "asker")
    _, wrong = await ask(tiny_engine, key, WRONG)
    assert route(wrong) is Route.CORRECTION
    await tiny_engine.feedback(Feedback(key, FeedbackKind.CORRECTION, author_id="fixer", reply_id=wrong.reply_id,
                                        text=GUEST_A))
    assert len(await tiny_engine.learned(key)) == 3 and len(await tiny_engine.negatives(key)) == 1

    # /forget on a reply served from the confirmed paraphrase forgets that paraphrase only.
    _, served = await ask(tiny_engine, key, ASKED)
    assert served.explanation is not None and route(served) is Route.CORRECTION
    paraphrase = served.explanation.corrections[0].correction_id
    assert paraphrase != source
    forgot = await tiny_engine.feedback(Feedback(key, FeedbackKind.FORGET, author_id="asker",
                                                 reply_id=served.reply_id))
    assert forgot.forgotten == 1
    assert [c.origin for c in await tiny_engine.learned(key)] == ["taught", "taught"]
    assert len(await tiny_engine.negatives(key)) == 1

    # Confirm it again, then forget the source: its paraphrase and its negative go with it.
    _, reply = await ask(tiny_engine, key, ASKED)
    await thumb(tiny_engine, key, reply, "asker")
    assert len(await tiny_engine.learned(key)) == 3
    assert await tiny_engine.forget(key, [source], author_id="admin") == 2
    assert [c.answer for c in await tiny_engine.learned(key)] == [GUEST_A]
    assert await tiny_engine.negatives(key) == []
    support = await tiny_engine._support_set(key)
    assert [c.answer for c in support] == [GUEST_A] and support.negatives == ()
    text, _ = await ask(tiny_engine, key, NEARER)
    assert "pelican-4417" not in text


@sqlite_only
async def test_a_database_of_the_previous_schema_keeps_its_corrections(
        tmp_path: Path, make_engine: Callable[..., AbstractAsyncContextManager[Engine]]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with sqlite3.connect(data / "heedful.sqlite3") as raw:
        for script in MIGRATIONS[:6]:
            raw.executescript(script)
        raw.execute("PRAGMA user_version = 6")
        raw.execute("INSERT INTO channels (platform, space, channel, created_at) VALUES ('test', 's', 'old', 0)")
        raw.execute("INSERT INTO corrections (channel_id, question, answer, author_id, embedding, encoder, created_at)"
                    " VALUES (1, ?, ?, 'teacher', ?, 'an-older-encoder', 0)",
                    (WIFI_Q, WIFI_A, np.zeros(384, dtype=np.float32).tobytes()))
    key = ChannelKey("test", "old", space="s")
    async with make_engine(data_dir=data) as engine:
        assert await engine.store.schema_version() == len(MIGRATIONS)
        learned = await engine.learned(key)
        assert [(c.correction_id, c.question, c.origin, c.source_id) for c in learned] == [
            (1, WIFI_Q, "taught", None)]
        text, reply = await ask(engine, key, ASKED)  # re-embedded for this encoder on first load
        assert route(reply) is Route.CORRECTION and "pelican-4417" in text
        await thumb(engine, key, reply, "asker")
        assert [c.origin for c in await engine.learned(key)] == ["taught", "confirmed"]


async def test_export_and_delete_include_derived_phrasings(tmp_path: Path) -> None:
    key, vector = ChannelKey("telegram", "-300", space="g"), np.ones(4, dtype=np.float32)
    store = Store(tmp_path / "db.sqlite3")
    await store.open()
    try:
        source = await store.add_correction(key, question="door?", answer="code 1234", author_id="7",
                                            embedding=vector, encoder="e", message_id=None)
        asked = await store.add_message(key, role="user", text="zebra way in?", author_id="42")
        reply = await store.add_message(key, role="assistant", text="code 1234", question_id=asked)
        confirmed = await store.add_thumb(key, reply, "up", "42", paraphrase=Derived(source.id, "zebra way in?",
                                                                                     vector, "e", reply))
        assert confirmed is not None and confirmed.origin == "confirmed" and confirmed.source_id == source.id
        again = await store.add_thumb(key, reply, "up", "42", paraphrase=Derived(source.id, "Zebra  way in?",
                                                                                 vector, "e", reply))
        assert again is None  # already a member
        other = await store.add_message(key, role="user", text="zebra gate code?", author_id="42")
        answered = await store.add_message(key, role="assistant", text="code 1234", question_id=other)
        _, negative = await store.add_correction_and_negative(
            key, question="zebra gate code?", answer="gate is 99", author_id="8", embedding=vector, encoder="e",
            message_id=answered, negative=Derived(source.id, "zebra gate code?", vector, "e", answered))
        assert negative is not None and negative.answer == "code 1234" and negative.author_id == "8"
        first = [c.id for c in await store.corrections(key) if c.question == "zebra gate code?"]
        _, twice = await store.add_correction_and_negative(
            key, question="zebra gate code?", answer="gate is 98", author_id="8", embedding=vector, encoder="e",
            message_id=answered, replaces=first, negative=Derived(source.id, "zebra gate code?", vector, "e", answered))
        assert twice is None  # already a negative of that answer
        assert len(await store.negatives(key)) == 1
        export = await store.user_data("telegram", "42")
        assert [(c["question"], c["origin"], c["source_id"]) for c in export["corrections"]] == [
            ("zebra way in?", "confirmed", source.id)]
        assert {n["question"] for n in export["negatives"]} == {"zebra gate code?"}  # their words
        counts = await store.delete_user("telegram", "42")
        assert counts["corrections"] == 1 and counts["negatives"] >= 1
        assert await store.negatives(key) == []
        assert [c.id for c in await store.corrections(key) if c.origin == "confirmed"] == []
    finally:
        await store.close()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("db.sqlite3"))
    assert b"zebra way in" not in on_disk  # (the fixer's own correction keeps its question, as before)


async def test_deleting_the_source_author_deletes_what_was_derived_from_their_corrections(tmp_path: Path) -> None:
    key, vector = ChannelKey("telegram", "-301", space="g"), np.ones(4, dtype=np.float32)
    store = Store(tmp_path / "db.sqlite3")
    await store.open()
    try:
        source = await store.add_correction(key, question="door?", answer="okapi 1234", author_id="7",
                                            embedding=vector, encoder="e", message_id=None)
        reply = await store.add_message(key, role="assistant", text="a reply")
        await store.add_thumb(key, reply, "up", "42", paraphrase=Derived(source.id, "way in?", vector, "e"))
        await store.add_correction_and_negative(key, question="gate?", answer="gate is 99", author_id="8",
                                                embedding=vector, encoder="e", message_id=None,
                                                negative=Derived(source.id, "gate?", vector, "e"))
        assert len(await store.corrections(key)) == 3 and len(await store.negatives(key)) == 1
        counts = await store.delete_user("telegram", "7")
        assert counts["corrections"] == 2 and counts["negatives"] == 1
        assert [c.answer for c in await store.corrections(key)] == ["gate is 99"]
    finally:
        await store.close()
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("db.sqlite3"))
    assert b"okapi" not in on_disk


async def _seed_derived(path: Path) -> int:
    key, vector = ChannelKey("console", "ops", space="local"), np.ones(3, dtype=np.float32)
    store = Store(path)
    await store.open()
    try:
        source = await store.add_correction(key, question="q?", answer="a!", author_id="u", embedding=vector,
                                            encoder="e", message_id=None)
        reply = await store.add_message(key, role="assistant", text="a!")
        await store.add_thumb(key, reply, "up", "asker", paraphrase=Derived(source.id, "q again?", vector, "e"))
        await store.add_correction_and_negative(key, question="not q?", answer="b!", author_id="fixer",
                                                embedding=vector, encoder="e", message_id=None,
                                                negative=Derived(source.id, "not q?", vector, "e"))
    finally:
        await store.close()
    return source.id


def test_heedful_learned_shows_origins_and_negatives(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HEEDFUL_DATA_DIR", str(tmp_path))
    source = asyncio.run(_seed_derived(tmp_path / "heedful.sqlite3"))  # the CLI runs its own event loop
    runner = CliRunner()
    listed = json.loads(runner.invoke(app, ["learned", "ops", "--json"]).output.strip().splitlines()[-1])
    assert [(r["question"], r["origin"], r["source_id"]) for r in listed["corrections"]] == [
        ("q?", "taught", None), ("q again?", "confirmed", source), ("not q?", "taught", None)]
    assert [(r["question"], r["answer"], r["origin"], r["source_id"]) for r in listed["negatives"]] == [
        ("not q?", "a!", "negative", source)]
    text = runner.invoke(app, ["learned", "ops"]).output
    assert f"(confirmed paraphrase of #{source})" in text and "negatives" in text and "-/->" in text
