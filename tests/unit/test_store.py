"""The store's contract: every test taking ``store_location`` runs against SQLite and against a
real PostgreSQL (``tests/postgres.py``); the few about one backend's files say so in their name."""

import asyncio
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from engine import ChannelKey, ChannelSettings
from engine.store import MIGRATIONS, Store


async def raw_execute(location: Path | str, sql_sqlite: str, sql_postgres: str) -> None:
    """Run a statement on the database behind the store's back (another tool, a crash)."""
    if isinstance(location, Path):
        with sqlite3.connect(location) as raw:
            raw.executescript(sql_sqlite)
        return
    import asyncpg

    conn = await asyncpg.connect(location)
    try:
        await conn.execute(sql_postgres)
    finally:
        await conn.close()


async def fail_on(location: Path | str, table: str, event: str) -> None:
    """Make the next ``event`` (INSERT / UPDATE) on ``table`` fail, as a crash between statements would."""
    await raw_execute(
        location, f"CREATE TRIGGER crash BEFORE {event} ON {table} BEGIN SELECT RAISE(ABORT, 'crash'); END",
        "CREATE OR REPLACE FUNCTION crash() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'crash'; END $$"
        f" LANGUAGE plpgsql; CREATE TRIGGER crash BEFORE {event} ON {table} FOR EACH ROW EXECUTE FUNCTION crash()")


async def heal(location: Path | str, table: str) -> None:
    await raw_execute(location, "DROP TRIGGER crash", f"DROP TRIGGER crash ON {table}")


async def test_a_sqlite_schema_is_migrated_and_versioned_in_wal_mode(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    await store.open()
    assert await store.schema_version() == len(MIGRATIONS)
    await store.close()
    with sqlite3.connect(tmp_path / "db.sqlite3") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        raw.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(RuntimeError, match="newer than this heedful"):
        await Store(tmp_path / "db.sqlite3").open()


async def test_corrections_are_scoped_and_survive_reopen(store_location: Path | str) -> None:
    a, b = ChannelKey("t", "a", space="s", thread="th"), ChannelKey("t", "b", space="s")
    store = Store(store_location)
    await store.open()
    vector = np.ones(4, dtype=np.float32)
    saved = await store.add_correction(a, question="q", answer="ans", author_id="u", embedding=vector,
                                       encoder="e", message_id=None)
    await store.set_channel_settings(a, ChannelSettings(persona="tutor"))
    await store.close()

    store = Store(store_location)
    await store.open()
    (loaded,) = await store.corrections(a.scope)  # thread-less scope sees the thread's correction
    assert loaded.id == saved.id and loaded.answer == "ans" and np.array_equal(loaded.embedding, vector)
    assert await store.corrections(b) == []
    assert (await store.channel_settings(a)).persona == "tutor"
    assert await store.forget(a, [saved.id + 100]) == []
    assert await store.forget(a) == [saved.id]
    assert await store.corrections(a) == []
    await store.close()


async def test_platform_message_links_find_the_reply(store_location: Path | str) -> None:
    key = ChannelKey("t", "c", space="s")
    store = Store(store_location)
    await store.open()
    q = await store.add_message(key, role="user", text="question")
    await store.add_message(key, role="assistant", text="answer", reply_id="r1", question_id=q)
    await store.link_message(key, "r1", "platform-42")
    found = await store.find_reply(key, message_id="platform-42")
    assert found is not None and found.reply_id == "r1" and found.question_id == q
    assert await store.find_reply(ChannelKey("t", "other"), message_id="platform-42") is None
    await store.close()


async def test_lora_versions_promote_and_roll_back(store_location: Path | str) -> None:
    key = ChannelKey("t", "lora", space="s")
    store = Store(store_location)
    await store.open()
    assert await store.active_lora_version(key) is None
    v1 = await store.add_lora_version(key, b"one", {"loss": 1.0}, "active")
    v2 = await store.add_lora_version(key, b"two", {"loss": 2.0}, "rejected")
    v3 = await store.add_lora_version(key, b"three", {"loss": 0.5}, "active")
    assert (v1, v2, v3) == (1, 2, 3)
    active = await store.active_lora_version(key)
    assert active is not None and (active.version, active.weights) == (3, b"three")
    assert [a.status for a in await store.lora_versions(key)] == ["active", "rejected", "retired"]
    assert await store.rollback_lora(key) == 1
    assert (await store.active_lora_version(key)).weights == b"one"  # type: ignore[union-attr]
    assert await store.rollback_lora(key) is None
    assert await store.active_lora_version(key) is None
    await store.close()


async def test_consolidation_jobs_survive_reopen(store_location: Path | str) -> None:
    key = ChannelKey("t", "jobs", space="s")
    store = Store(store_location)
    await store.open()
    await store.request_job(key)
    await store.close()
    store = Store(store_location)
    await store.open()
    [(found, requested_at, attempts)] = await store.pending_jobs()
    assert found == key and attempts == 0
    assert await store.fail_job(key) == 1
    await store.finish_job(key, requested_at)
    assert await store.pending_jobs() == []
    await store.close()


async def test_a_channel_moves_to_a_new_id_whole_or_into_an_existing_one(store_location: Path | str) -> None:
    store = Store(store_location)
    await store.open()
    vector = np.ones(4, dtype=np.float32)

    async def teach(key: ChannelKey, answer: str) -> int:
        return (await store.add_correction(key, question=answer, answer=answer, author_id="u", embedding=vector,
                                           encoder="e", message_id=None)).id

    old, new, busy = (ChannelKey("telegram", c) for c in ("-5", "-1005", "-1006"))
    await teach(old, "one")
    forgotten = await teach(old, "two")
    await store.forget(old, [forgotten])
    await store.set_channel_settings(old, ChannelSettings(persona="tutor"))
    await store.request_job(old)
    # new id unseen: the row is renamed, with its settings and pending job
    assert await store.move_channel(old, new) == 1
    assert [c.answer for c in await store.corrections(new)] == ["one"] and await store.corrections(old) == []
    assert (await store.channel_settings(new)).persona == "tutor"
    assert [key for key, _, _ in await store.pending_jobs()] == [new]
    assert await store.move_channel(old, new) == 0  # told twice: nothing left to move

    # new id already in use: corrections join it, its own settings win
    await teach(busy, "three")
    await store.set_channel_settings(busy, ChannelSettings(persona="support"))
    assert await store.move_channel(new, busy) == 1
    assert sorted(c.answer for c in await store.corrections(busy)) == ["one", "three"]
    assert (await store.channel_settings(busy)).persona == "support"
    assert await store.pending_jobs() == []  # the old scope's job went with it; the engine asks anew
    await store.close()


async def test_a_sqlite_database_from_before_the_rename_keeps_its_lora_versions(tmp_path: Path) -> None:
    """Schema 2 called them ``adapter_versions``; migration 3 renames the table and keeps every row."""
    path = tmp_path / "db.sqlite3"
    with sqlite3.connect(path) as raw:
        for script in MIGRATIONS[:2]:
            raw.executescript(script)
        raw.execute("PRAGMA user_version = 2")
        raw.execute("INSERT INTO channels (platform, space, channel, created_at) VALUES ('t', '', 'c', 0)")
        raw.execute("INSERT INTO adapter_versions (channel_id, version, status, weights, created_at)"
                    " VALUES (1, 1, 'active', x'01', 0)")
    store = Store(path)
    await store.open()
    try:
        active = await store.active_lora_version(ChannelKey("t", "c"))
        assert active is not None and active.version == 1 and active.weights == b"\x01"
    finally:
        await store.close()


async def test_a_replacing_correction_lands_whole_or_not_at_all(store_location: Path | str) -> None:
    """The old answer is retired in the same transaction that stores the new one."""
    path, key = store_location, ChannelKey("t", "c")
    store = Store(path)
    await store.open()
    try:
        old = await store.add_correction(key, question="q", answer="old", author_id="u", embedding=np.ones(4),
                                         encoder="e", message_id=None)
        await fail_on(path, "corrections", "INSERT")
        with pytest.raises(Exception, match="crash"):
            await store.add_correction(key, question="q", answer="new", author_id="u", embedding=np.ones(4),
                                       encoder="e", message_id=None, replaces=[old.id])
        await heal(path, "corrections")
        await store.add_message(key, role="user", text="later work commits")
        assert [c.answer for c in await store.corrections(key)] == ["old"]
    finally:
        await store.close()


async def test_a_failed_move_leaves_the_channel_whole(store_location: Path | str) -> None:
    """Merging a scope into another moves corrections, history and thumbs together or not at all."""
    path = store_location
    old, new = ChannelKey("telegram", "-1", space="g"), ChannelKey("telegram", "-100", space="g")
    store = Store(path)
    await store.open()
    try:
        await store.add_correction(old, question="q", answer="a", author_id="u", embedding=np.ones(4), encoder="e",
                                   message_id=None)
        await store.add_message(old, role="user", text="hello")
        await store.add_message(new, role="user", text="the new id spoke first")
        await fail_on(path, "messages", "UPDATE")
        with pytest.raises(Exception, match="crash"):
            await store.move_channel(old, new)
        await heal(path, "messages")
        await store.add_message(new, role="user", text="later work commits")
        assert [c.answer for c in await store.corrections(old)] == ["a"]
        assert await store.corrections(new) == []
    finally:
        await store.close()


async def test_promoting_a_lora_version_keeps_exactly_one_active(store_location: Path | str) -> None:
    path, key = store_location, ChannelKey("t", "c")
    store = Store(path)
    await store.open()
    try:
        v1 = await store.add_lora_version(key, b"one", {}, "active")
        await fail_on(path, "lora_versions", "INSERT")
        with pytest.raises(Exception, match="crash"):
            await store.add_lora_version(key, b"two", {}, "active")
        await heal(path, "lora_versions")
        await store.add_message(key, role="user", text="later work commits")
        active = await store.active_lora_version(key)
        assert active is not None and active.version == v1
    finally:
        await store.close()


async def test_every_change_is_in_the_audit_log_with_its_author(store_location: Path | str) -> None:
    key = ChannelKey("slack", "C1", space="T1")
    store = Store(store_location)
    await store.open()
    try:
        first = await store.add_correction(key, question="q", answer="a", author_id="U1", embedding=np.ones(4),
                                           encoder="e", message_id=None)
        waiting = await store.add_correction(key, question="q", answer="b", author_id="U2", embedding=np.ones(4),
                                             encoder="e", message_id=None, pending=True)
        assert [c.answer for c in await store.corrections(key)] == ["a"]  # pending: not in use yet
        approved = await store.review(key, waiting.id, approve=True, author_id="M1")
        assert approved is not None and [c.answer for c in await store.corrections(key)] == ["b"]
        await store.set_channel_settings(key, ChannelSettings(persona="tutor"), author_id="M1")
        await store.add_lora_version(key, b"w", {}, "active")
        await store.rollback_lora(key, author_id="M2")
        await store.forget(key, author_id="M2")
        entries = await store.audit(key)
        assert [(e.action, e.author_id) for e in reversed(entries)] == [
            ("correction", "U1"), ("correction_pending", "U2"), ("approve", "M1"), ("settings", "M1"),
            ("lora_version", ""), ("rollback", "M2"), ("forget", "M2")]
        assert entries[-1].detail["correction_id"] == first.id
        assert [e.action for e in await store.audit(author_id="M1")] == ["settings", "approve"]
    finally:
        await store.close()


async def test_undo_by_author_forgets_one_persons_corrections_and_retires_lora_versions(
        store_location: Path | str) -> None:
    key = ChannelKey("t", "c")
    store = Store(store_location)
    await store.open()
    try:
        for n, author in enumerate(["good", "spammer", "spammer", "good"]):
            await store.add_correction(key, question=f"q{n}", answer=f"a{n}", author_id=author,
                                       embedding=np.ones(4), encoder="e", message_id=None)
        await store.add_lora_version(key, b"w", {}, "active")
        forgotten = await store.forget(key, by_author="spammer", author_id="admin")
        assert len(forgotten) == 2
        assert [c.author_id for c in await store.corrections(key)] == ["good", "good"]
        assert await store.active_lora_version(key) is None  # it was trained on the spam
    finally:
        await store.close()


async def test_deleting_a_user_removes_them_from_the_database(store_location: Path | str) -> None:
    path, key = store_location, ChannelKey("telegram", "-100", space="g")
    other = ChannelKey("telegram", "-200", space="g")
    store = Store(path)
    await store.open()
    try:
        asked = await store.add_message(key, role="user", text="zebra-question-8812", author_id="42")
        reply = await store.add_message(key, role="assistant", text="zebra-reply-8812", question_id=asked)
        mine = await store.add_correction(key, question="door?", answer="zebra-answer-8812", author_id="42",
                                          embedding=np.ones(4), encoder="e", message_id=reply)
        theirs = await store.add_correction(key, question="wifi?", answer="pelican", author_id="7",
                                            embedding=np.ones(4), encoder="e", message_id=None)
        used = await store.add_message(other, role="assistant", text="an answer", author_id="")
        await store.finish_message(used, "an answer", {"corrections": [
            {"correction_id": mine.id, "question": "door?", "answer": "zebra-answer-8812"},
            {"correction_id": theirs.id, "question": "wifi?", "answer": "pelican"}]})
        await store.add_lora_version(key, b"trained-on-42", {}, "active")
        await store.review(key, mine.id, approve=False, author_id="7")  # not pending: no-op
        export = await store.user_data("telegram", "42")
        assert [c["answer"] for c in export["corrections"]] == ["zebra-answer-8812"]
        assert [m["text"] for m in export["messages"]] == ["zebra-question-8812"]
        counts = await store.delete_user("telegram", "42", author_id="admin")
        assert counts["corrections"] == 1 and counts["messages"] == 2 and counts["lora_versions"] == 1
        assert [c.answer for c in await store.corrections(key)] == ["pelican"]
        explained = await store.message(used)
        assert explained is not None and explained.explanation is not None
        assert [u["correction_id"] for u in explained.explanation["corrections"]] == [theirs.id]
        assert await store.lora_versions(key) == []
        assert [j[0] for j in await store.pending_jobs()] == [key]  # retrain without them
        assert (await store.user_data("telegram", "42"))["corrections"] == []
    finally:
        await store.close()
    if isinstance(store_location, Path):  # SQLite's secure_delete: not even the file's free pages keep them
        on_disk = b"".join(p.read_bytes() for p in store_location.parent.iterdir() if p.name.startswith("db.sqlite3"))
        assert b"zebra" not in on_disk and b"pelican" in on_disk


async def test_history_older_than_the_retention_is_pruned_corrections_stay(store_location: Path | str) -> None:
    key = ChannelKey("t", "c")
    store = Store(store_location)
    await store.open()
    try:
        old = await store.add_message(key, role="user", text="old")
        await store.add_correction(key, question="old", answer="kept", author_id="u", embedding=np.ones(4),
                                   encoder="e", message_id=old)
        cutoff = time.time() + 0.001
        await asyncio.sleep(0.01)
        await store.add_message(key, role="user", text="new")
        assert await store.prune_messages(cutoff) == 1
        assert [m.text for m in await store.history(key, 10)] == ["new"]
        assert [c.answer for c in await store.corrections(key)] == ["kept"]
    finally:
        await store.close()


async def test_each_consolidation_job_is_claimed_by_exactly_one_process(store_location: Path | str) -> None:
    """Two processes (two stores on one database) race for the same jobs: each job goes to one of
    them; a claim of a process that died is taken over once its lease runs out."""
    keys = [ChannelKey("t", f"job-{n}", space="s") for n in range(8)]
    one, two = Store(store_location), Store(store_location)
    await one.open()
    await two.open()
    try:
        for key in keys:
            await one.request_job(key)
        claims = await asyncio.gather(*(store.claim_job(key, owner, 60.0) for key in keys
                                        for store, owner in ((one, "one"), (two, "two"))))
        for n in range(len(keys)):
            assert sum(c is not None for c in claims[2 * n:2 * n + 2]) == 1
        assert await one.claimable_jobs("three", settled_before=time.time() + 1) == []  # all are claimed

        # A job re-requested while it trained is not dropped: its claim is released, to train again.
        winner = one if claims[0] is not None else two
        requested_at = claims[0] if claims[0] is not None else claims[1]
        assert requested_at is not None
        await asyncio.sleep(0.01)
        await two.request_job(keys[0])
        assert await winner.finish_job(keys[0], requested_at) is False
        assert keys[0] in await two.claimable_jobs("two", settled_before=time.time() + 1)
        assert (again := await two.claim_job(keys[0], "two", 60.0)) is not None
        assert await two.finish_job(keys[0], again) is True

        # A process dies holding a claim: after its lease, another takes the job over.
        dying = keys[1]
        holder, other = ("one", "two") if claims[2] is not None else ("two", "one")
        assert await one.claim_job(dying, other, 60.0) is None
        await one.fail_job(dying)  # as if the holder's job failed: released, one attempt counted
        assert await one.claim_job(dying, other, 0.001) is not None
        await asyncio.sleep(0.01)
        assert dying in await two.claimable_jobs(holder, settled_before=time.time() + 1)
        assert await two.claim_job(dying, holder, 60.0) is not None
    finally:
        await one.close()
        await two.close()


async def test_another_process_changing_what_was_learned_shows_in_data_version(store_location: Path | str) -> None:
    key = ChannelKey("t", "shared", space="s")
    mine, theirs = Store(store_location), Store(store_location)
    await mine.open()
    await theirs.open()
    try:
        start = await mine.data_version()
        await mine.add_correction(key, question="q", answer="a", author_id="u", embedding=np.ones(4), encoder="e",
                                  message_id=None)
        assert await mine.data_version() == start  # its own change: it knows already
        await theirs.add_correction(key, question="q2", answer="b", author_id="u", embedding=np.ones(4),
                                    encoder="e", message_id=None)
        for _ in range(500):  # PostgreSQL's NOTIFY arrives on its own connection, a moment after the commit
            if await mine.data_version() != start:
                break
            await asyncio.sleep(0.01)
        assert await mine.data_version() != start
        assert [c.answer for c in await mine.corrections(key)] == ["a", "b"]
    finally:
        await mine.close()
        await theirs.close()


async def test_hostile_text_in_any_field_is_stored_not_an_error(store_location: Path | str) -> None:
    """NUL and long odd text in names, threads and ids: every backend
    stores it (PostgreSQL's text cannot hold NUL: it becomes U+FFFD there)."""
    key = ChannelKey("t", "c\x00hostile", space="s\x00", thread="th\x00read")
    store = Store(store_location)
    await store.open()
    try:
        asked = await store.add_message(key, role="user", text="hello", author_id="u\x00", author_name="Eve\x00" * 500,
                                        platform_message_id="m\x00")
        await store.add_message(key, role="assistant", text="hi", reply_id="r\x00", question_id=asked)
        await store.link_message(key, "r\x00", "p\x00")
        found = await store.find_reply(key, message_id="p\x00")
        assert found is not None and found.text == "hi"
        assert [m.text for m in await store.history(key, 10)] == ["hello", "hi"]
        saved = await store.add_correction(key, question="q\x00?", answer="a\x00!", author_id="u\x00",
                                           embedding=np.ones(4), encoder="e", message_id=None)
        (loaded,) = await store.corrections(key)
        assert loaded.id == saved.id and loaded.answer.replace("\ufffd", "\x00") == "a\x00!"
    finally:
        await store.close()
