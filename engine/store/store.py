"""Everything that must survive a restart: one ``Store`` over SQLite (the default, one file)
or PostgreSQL (several processes or machines), chosen by ``HEEDFUL_STORE_URL``.

Each store operation is one transaction, so what one operation writes lands whole or not at
all; a write operation has returned only once it is durable. Schema changes are numbered
migrations (``schema.MIGRATIONS``), the same on both. What differs between the two lives in
``sqlite.py`` and ``postgres.py`` behind ``database.Database``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import ChannelKey, ChannelSettings, Correction, PersonalFact
from ..errors import NotFound
from .backends import connect
from .database import Database, Transaction, redact_url
from .schema import MIGRATIONS

__all__ = ["Store", "StoredCorrection", "StoredFact", "StoredMessage", "StoredLoraVersion", "StoredAudit",
           "AlreadyApplied", "StoredAdminToken", "StoredAdminSession", "Spaces", "Derived",
           "question_key"]

CACHED_CHANNEL_IDS = 65536
"""Scope -> row id lookups kept in memory (a few MB at most); older ones are read again."""



def question_key(question: str) -> str:
    """Two corrections answer the same question when their questions are equal up to case and spacing."""
    return " ".join(question.split()).casefold()


class AlreadyApplied(Exception):
    """The event was applied before (``result``: what it did then); nothing was changed now."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__("event already applied")
        self.result = result


@dataclass(frozen=True, slots=True)
class StoredCorrection:
    id: int
    question: str
    answer: str
    author_id: str
    embedding: np.ndarray
    encoder: str
    created_at: float
    origin: str = "taught"  # taught | confirmed (a paraphrase an asker confirmed) | negative
    source_id: int | None = None  # the taught correction a confirmed paraphrase or a negative came from
    person: str = ""  # whose personal ("just for me") correction it is; "" for the channel's

    def public(self) -> Correction:
        return Correction(self.id, self.question, self.answer, self.author_id, self.created_at,
                          origin=self.origin, source_id=self.source_id, person=self.person)


@dataclass(frozen=True, slots=True)
class StoredFact:
    """Something ``person`` told the bot about themselves in one scope, embedded to find related questions."""

    id: int
    person: str
    text: str
    embedding: np.ndarray
    encoder: str
    created_at: float

    def public(self) -> PersonalFact:
        return PersonalFact(self.id, self.text, self.created_at)


@dataclass(frozen=True, slots=True)
class Derived:
    """A phrasing to derive from correction ``source_id``: a confirmed paraphrase or a negative.

    ``message_id``: the reply whose question it is (its feedback made it)."""

    source_id: int
    question: str
    embedding: np.ndarray
    encoder: str
    message_id: int | None = None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    thread: str
    role: str
    reply_id: str | None
    text: str
    question_id: int | None
    explanation: dict[str, Any] | None
    author_id: str = ""


@dataclass(frozen=True, slots=True)
class StoredAudit:
    id: int
    scope: ChannelKey | None
    author_id: str
    action: str
    detail: dict[str, Any]
    created_at: float


@dataclass(frozen=True, slots=True)
class StoredLoraVersion:
    version: int
    status: str  # candidate | active | rejected | retired
    weights: bytes | None
    metrics: dict[str, Any]
    created_at: float


@dataclass(frozen=True, slots=True)
class StoredAdminToken:
    id: int
    name: str
    scope: str  # "platform:space", or "" for every space
    salt: bytes
    digest: bytes
    created_at: float
    revoked_at: float | None


@dataclass(frozen=True, slots=True)
class StoredAdminSession:
    token: StoredAdminToken
    csrf: str
    expires_at: float


Spaces = Sequence[tuple[str, str]] | None
"""The (platform, space) pairs a reader may see; None: every space."""


class Store:
    """Async access to the heedful database. One instance per process.

    Every operation is one transaction: an operation that writes several rows lands whole or
    not at all, even under ``kill -9``. The connection is shared by every coroutine of the
    process, so a lock keeps one operation's statements from interleaving with another's (and
    one operation's commit from committing half of another). Across processes, writers of one
    learning scope are serialised by the database (``Transaction.lock``).
    """

    def __init__(self, location: Path | str) -> None:
        """``location``: a SQLite file's path, or a ``postgresql://`` URL."""
        self.location = location
        self._database: Database = connect(location)
        self._lock = asyncio.Lock()
        self._writing = False  # inside a write operation: scope lookups take the scope's writer lock
        self._created: list[tuple[ChannelKey, int]] = []  # scopes the operation in progress created
        self._channel_ids: OrderedDict[ChannelKey, int] = OrderedDict()  # row ids of recently used scopes

    def __repr__(self) -> str:
        return f"Store({self.where!r})"

    @property
    def where(self) -> str:
        """The location, fit for logs: a URL's password hidden."""
        return redact_url(self.location)

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._database.name

    async def open(self) -> None:
        """Connect to (creating if needed) and migrate the database."""
        await self._database.open(MIGRATIONS)

    async def close(self) -> None:
        async with self._lock:
            await self._database.close()

    @asynccontextmanager
    async def _write(self, *, notify: bool = True) -> AsyncIterator[Transaction]:
        """One operation that writes: its statements commit together or not at all. ``notify``:
        it changes what was learned (other processes reload it); False for history and sessions."""
        async with self._lock, self._database.transaction(write=True, notify=notify) as db:
            created: list[tuple[ChannelKey, int]] = []
            self._created, self._writing = created, True
            try:
                yield db
            finally:
                self._writing = False
        for scope, row_id in created:  # only rows that exist now (committed) may be cached
            self._remember(scope, row_id)

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[Transaction]:
        """One operation that only reads: never sees another operation half done."""
        async with self._lock, self._database.transaction(write=False) as db:
            yield db

    async def data_version(self) -> int:
        """Changes when *another* process (another bot process, the ``heedful`` CLI) commits a change."""
        async with self._lock:
            return await self._database.data_version()

    async def fingerprints(self, keys: Sequence[ChannelKey]) -> dict[ChannelKey, tuple[int, int, int | None]]:
        """Per scope: (active corrections and negatives, newest active correction id plus newest
        active negative id, active LoRA version); ``SupportSet.fingerprint`` is the same pair.

        Cheap enough to compare with what is cached, to see which scopes another process changed.
        """
        found: dict[ChannelKey, tuple[int, int, int | None]] = {key.scope: (0, 0, None) for key in keys}
        async with self._read() as db:
            ids: dict[int, ChannelKey] = {}
            for scope in found:
                cid = await self._scope_id(db, scope)
                if cid is not None:
                    ids[cid] = scope
            for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
                chunk = list(ids)[start:start + 500]
                marks = ",".join("?" * len(chunk))
                async with db.execute(
                    f"SELECT channel_id, COUNT(*), MAX(id) FROM corrections WHERE active = 1 AND person = ''"
                    f" AND channel_id IN ({marks}) GROUP BY channel_id", chunk,
                ) as cur:
                    for cid, count, newest in await cur.fetchall():
                        found[ids[cid]] = (int(count), int(newest), None)
                async with db.execute(
                    f"SELECT channel_id, COUNT(*), MAX(id) FROM negatives WHERE active = 1"
                    f" AND channel_id IN ({marks}) GROUP BY channel_id", chunk,
                ) as cur:
                    for cid, count, newest in await cur.fetchall():
                        before, top, _ = found[ids[cid]]
                        found[ids[cid]] = (before + int(count), top + int(newest), None)
                async with db.execute(
                    f"SELECT channel_id, version FROM lora_versions WHERE status = 'active'"
                    f" AND channel_id IN ({marks})", chunk,
                ) as cur:
                    for cid, version in await cur.fetchall():
                        count, newest, _ = found[ids[cid]]
                        found[ids[cid]] = (count, newest, int(version))
        return found

    async def schema_version(self) -> int:
        async with self._lock:
            return await self._database.schema_version()

    # -- channels ---------------------------------------------------------------------

    def _remember(self, scope: ChannelKey, row_id: int) -> None:
        self._channel_ids[scope] = row_id
        self._channel_ids.move_to_end(scope)
        if len(self._channel_ids) > CACHED_CHANNEL_IDS:
            self._channel_ids.popitem(last=False)

    async def _scope_id(self, db: Transaction, key: ChannelKey, *, create: bool = False) -> int | None:
        """The row id of ``key``'s learning scope (inside an operation); created when asked."""
        scope = key.scope
        if scope in self._channel_ids:
            self._channel_ids.move_to_end(scope)
            if self._writing:
                await db.lock(self._channel_ids[scope])
            return self._channel_ids[scope]
        if create:
            await db.execute(
                "INSERT INTO channels (platform, space, channel, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (platform, space, channel) DO NOTHING",
                (scope.platform, scope.space, scope.channel, time.time()),
            )
        async with db.execute(
            "SELECT id FROM channels WHERE platform = ? AND space = ? AND channel = ?",
            (scope.platform, scope.space, scope.channel),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        if create:
            self._created.append((scope, int(row[0])))  # cached once the operation commits
        else:
            self._remember(scope, int(row[0]))
        if self._writing:
            await db.lock(int(row[0]))
        return int(row[0])

    async def _new_scope_id(self, db: Transaction, key: ChannelKey) -> int:
        row_id = await self._scope_id(db, key, create=True)
        assert row_id is not None
        return row_id

    async def channel_id(self, key: ChannelKey) -> int:
        """The row id of the learning scope of ``key``, created on first use."""
        async with self._write() as db:
            return await self._new_scope_id(db, key)

    async def move_channel(self, old: ChannelKey, new: ChannelKey) -> int:
        """Give ``old``'s learning scope the id ``new``; returns how many active corrections moved.

        When ``new`` has no row yet, the row is renamed: corrections, history, settings,
        LoRA versions and pending jobs all move. When it has one already (the platform's first
        event from the new id came first), ``old``'s corrections, history and thumbs join
        it, and ``old``'s settings too if ``new`` has none of its own; ``old``'s LoRA versions
        stay behind (they were trained on a different set). One transaction either way.
        """
        old, new = old.scope, new.scope
        if old == new:
            return 0
        async with self._write() as db:
            source = await self._scope_id(db, old)
            if source is None:
                return 0
            async with db.execute(
                "SELECT COUNT(*) FROM corrections WHERE channel_id = ? AND active = 1", (source,)
            ) as cur:
                row = await cur.fetchone()
            moved = int(row[0]) if row else 0
            target = await self._scope_id(db, new)
            self._channel_ids.pop(old, None)
            self._channel_ids.pop(new, None)
            if target is None:
                await db.execute("UPDATE channels SET platform = ?, space = ?, channel = ? WHERE id = ?",
                                 (new.platform, new.space, new.channel, source))
            else:
                for table in ("corrections", "negatives", "messages", "thumbs", "personal_facts"):
                    await db.execute(f"UPDATE {table} SET channel_id = ? WHERE channel_id = ?", (target, source))
                await db.execute("UPDATE message_links SET channel_id = ? WHERE channel_id = ? AND platform_message_id"
                                 " NOT IN (SELECT platform_message_id FROM message_links WHERE channel_id = ?)",
                                 (target, source, target))
                await db.execute("DELETE FROM message_links WHERE channel_id = ?", (source,))
                await db.execute("DELETE FROM consolidation_jobs WHERE channel_id = ?", (source,))
                await db.execute(
                    "UPDATE channels SET settings = (SELECT settings FROM channels WHERE id = ?)"
                    " WHERE id = ? AND settings = '{}'", (source, target))
            await self._audit(db, target if target is not None else source, "", "move",
                              {"from": str(old), "to": str(new), "corrections": moved})
        self._channel_ids.pop(old, None)
        self._channel_ids.pop(new, None)
        return moved

    async def channel_settings(self, key: ChannelKey) -> ChannelSettings:
        async with self._read() as db:
            cid = await self._scope_id(db, key)
            if cid is None:
                return ChannelSettings()
            async with db.execute("SELECT settings FROM channels WHERE id = ?", (cid,)) as cur:
                row = await cur.fetchone()
        return ChannelSettings.from_dict(json.loads(row[0])) if row else ChannelSettings()

    async def set_channel_settings(self, key: ChannelKey, settings: ChannelSettings, *, author_id: str = "") -> None:
        async with self._write() as db:
            cid = await self._new_scope_id(db, key)
            await db.execute("UPDATE channels SET settings = ? WHERE id = ?", (json.dumps(settings.to_dict()), cid))
            await self._audit(db, cid, author_id, "settings", settings.to_dict())

    # -- messages ---------------------------------------------------------------------

    async def add_message(
        self,
        key: ChannelKey,
        *,
        role: str,
        text: str,
        reply_id: str | None = None,
        platform_message_id: str = "",
        reply_to: str = "",
        question_id: int | None = None,
        author_id: str = "",
        author_name: str = "",
        complete: bool = True,
    ) -> int:
        async with self._write(notify=False) as db:
            cid = await self._new_scope_id(db, key)
            return await _insert(
                db, "INSERT INTO messages (channel_id, thread, role, reply_id, platform_message_id, reply_to,"
                " question_id, author_id, author_name, text, complete, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (cid, key.thread, role, reply_id, platform_message_id, reply_to, question_id, author_id, author_name,
                 text, int(complete), time.time()),
            )

    async def finish_message(self, message_id: int, text: str, explanation: dict[str, Any]) -> None:
        async with self._write(notify=False) as db:
            await db.execute(
                "UPDATE messages SET text = ?, explanation = ?, complete = 1 WHERE id = ?",
                (text, json.dumps(explanation), message_id),
            )

    async def link_message(self, key: ChannelKey, reply_id: str, platform_message_id: str) -> None:
        """Record that the platform message ``platform_message_id`` shows (part of) ``reply_id``."""
        async with self._write(notify=False) as db:
            cid = await self._scope_id(db, key)
            row = None
            if cid is not None:
                async with db.execute(
                    "SELECT id FROM messages WHERE channel_id = ? AND reply_id = ?", (cid, reply_id)
                ) as cur:
                    row = await cur.fetchone()
            if row is None:
                raise NotFound(f"no reply {reply_id!r} in {key.scope}")
            await db.execute(
                "INSERT INTO message_links (channel_id, platform_message_id, message_id) VALUES (?, ?, ?)"
                " ON CONFLICT (channel_id, platform_message_id) DO UPDATE SET message_id = excluded.message_id",
                (cid, platform_message_id, row[0]),
            )

    async def find_reply(self, key: ChannelKey, *, reply_id: str = "", message_id: str = "") -> StoredMessage | None:
        """The bot reply named by engine ``reply_id`` or by a linked platform ``message_id``."""
        async with self._read() as db:
            cid = await self._scope_id(db, key)
            if cid is None:
                return None
            if reply_id:
                query, args = "SELECT * FROM messages WHERE channel_id = ? AND reply_id = ?", (cid, reply_id)
            elif message_id:
                query = (
                    "SELECT m.* FROM messages m JOIN message_links l ON l.message_id = m.id"
                    " WHERE l.channel_id = ? AND l.platform_message_id = ?"
                )
                args = (cid, message_id)
            else:
                query = (
                    "SELECT * FROM messages WHERE channel_id = ? AND thread = ? AND role = 'assistant'"
                    " ORDER BY id DESC LIMIT 1"
                )
                args = (cid, key.thread)
            async with db.execute(query, args) as cur:
                row = await cur.fetchone()
        return _message(row) if row else None

    async def message(self, message_id: int) -> StoredMessage | None:
        async with self._read() as db, db.execute("SELECT * FROM messages WHERE id = ?", (message_id,)) as cur:
            row = await cur.fetchone()
        return _message(row) if row else None

    async def history(self, key: ChannelKey, limit: int, before_id: int | None = None) -> list[StoredMessage]:
        """The last ``limit`` complete messages of ``key``'s thread, oldest first."""
        rows = await self._scope_rows(
            key, "SELECT * FROM messages WHERE channel_id = ? AND thread = ? AND complete = 1 AND id < ?"
            " ORDER BY id DESC LIMIT ?", key.thread, before_id if before_id is not None else 2**62, limit)
        return [_message(r) for r in reversed(rows)]

    async def _scope_rows(self, key: ChannelKey, query: str, *args: Any) -> list[Any]:
        """The rows of ``query`` (its first parameter: the row id of ``key``'s scope, then ``args``);
        none for a scope that was never stored."""
        async with self._read() as db:
            cid = await self._scope_id(db, key)
            if cid is None:
                return []
            async with db.execute(query, (cid, *args)) as cur:
                return list(await cur.fetchall())

    # -- corrections ------------------------------------------------------------------

    async def add_correction(
        self,
        key: ChannelKey,
        *,
        question: str,
        answer: str,
        author_id: str,
        embedding: np.ndarray,
        encoder: str,
        message_id: int | None,
        replaces: Sequence[int] = (),
        event_id: str = "",
        pending: bool = False,
    ) -> StoredCorrection:
        """Store a correction durably (committed with synchronous=FULL before returning).

        ``replaces``: corrections of the scope it supersedes (a new answer to the same
        question), forgotten in the same transaction, so that no crash can leave the
        scope with neither answer. ``event_id``: see ``_once``; raises ``AlreadyApplied``.
        ``pending``: stored for review, inactive until ``approve`` (``replaces`` waits too).
        """
        stored, _ = await self.add_correction_and_negative(
            key, question=question, answer=answer, author_id=author_id, embedding=embedding, encoder=encoder,
            message_id=message_id, replaces=replaces, event_id=event_id, pending=pending)
        return stored

    async def add_correction_and_negative(
        self,
        key: ChannelKey,
        *,
        question: str,
        answer: str,
        author_id: str,
        embedding: np.ndarray,
        encoder: str,
        message_id: int | None,
        replaces: Sequence[int] = (),
        event_id: str = "",
        pending: bool = False,
        negative: Derived | None = None,
        person: str = "",
    ) -> tuple[StoredCorrection, StoredCorrection | None]:
        """``add_correction``, and in the same transaction (unless ``pending``) the corrected
        reply's question as a negative of the correction that reply was served from
        (``negative``; see ``_add_negative``). Returns the correction and the negative (None
        when none was added: already one, a member, or its source is gone).

        ``person``: a personal ("just for me") correction of that person; its audit entry keeps
        no text (the audit log is read by managers; the text stays the person's)."""
        now = time.time()
        vector = np.asarray(embedding, dtype=np.float32)
        async with self._write() as db:
            cid = await self._new_scope_id(db, key)
            await self._once(db, cid, event_id)
            replaced = [] if pending else await self._deactivate(db, cid, replaces, now)
            added = None if pending or negative is None else await self._add_negative(db, cid, author_id, negative,
                                                                                      now)
            correction_id = await _insert(
                db, "INSERT INTO corrections (channel_id, message_id, question, answer, author_id, embedding, encoder,"
                " created_at, active, review, person) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (cid, message_id, question, answer, author_id, vector.tobytes(), encoder, now, int(not pending),
                 "pending" if pending else "", person),
            )
            await self._applied(db, cid, event_id, {"correction_id": correction_id, "question": question,
                                                    "answer": answer, "pending": pending,
                                                    **({"personal": True} if person else {})})
            if person:
                await self._audit(db, cid, author_id, "personal_correction",
                                  {"correction_id": correction_id, "replaces": replaced})
            else:
                await self._audit(db, cid, author_id, "correction_pending" if pending else "correction",
                                  {"correction_id": correction_id, "question": question, "answer": answer,
                                   "replaces": replaced})
        return StoredCorrection(correction_id, question, answer, author_id, vector, encoder, now,
                                person=person), added

    @staticmethod
    async def _source(db: Transaction, cid: int, correction_id: int) -> tuple[int, str] | None:
        """Inside an operation: (id, answer) of the active taught correction that ``correction_id``
        is or was derived from, in scope ``cid``; None when it is not active there."""
        async with db.execute("SELECT id, answer, origin, source_id FROM corrections"
                              " WHERE id = ? AND channel_id = ? AND active = 1 AND person = ''",
                              (correction_id, cid)) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        if row[2] == "confirmed" and row[3] is not None:
            return await Store._source(db, cid, int(row[3]))
        return int(row[0]), str(row[1])

    @staticmethod
    async def _derivable(db: Transaction, cid: int, question: str, answer: str) -> bool:
        """Inside an operation: is ``question`` neither an active member of the scope (any answer)
        nor already an active negative of ``answer`` (both up to case and spacing)?"""
        async with db.execute("SELECT question FROM corrections WHERE channel_id = ? AND active = 1"
                              " AND person = ''", (cid,)) as cur:
            if any(question_key(r[0]) == question_key(question) for r in await cur.fetchall()):
                return False
        async with db.execute(f"SELECT {_NEGATIVE} WHERE n.channel_id = ? AND n.active = 1", (cid,)) as cur:
            return not any(question_key(r[1]) == question_key(question) and question_key(r[2]) == question_key(answer)
                           for r in await cur.fetchall())

    async def _add_negative(self, db: Transaction, cid: int, author_id: str, negative: Derived,
                            now: float) -> StoredCorrection | None:
        """Inside an operation: ``negative.question`` as a phrasing the answer of (the taught source of)
        ``negative.source_id`` does not apply to; None when that source is not active, or the phrasing
        is a member of the scope or already a negative of that answer."""
        source = await self._source(db, cid, negative.source_id)
        if source is None or not await self._derivable(db, cid, negative.question, source[1]):
            return None
        vector = np.asarray(negative.embedding, dtype=np.float32)
        negative_id = await _insert(
            db, "INSERT INTO negatives (channel_id, source_id, message_id, question, author_id, embedding, encoder,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (cid, source[0], negative.message_id, negative.question, author_id, vector.tobytes(), negative.encoder,
             now))
        await self._audit(db, cid, author_id, "negative", {"negative_id": negative_id, "source_id": source[0],
                                                           "question": negative.question, "answer": source[1]})
        return StoredCorrection(negative_id, negative.question, source[1], author_id, vector, negative.encoder, now,
                                "negative", source[0])

    async def _add_paraphrase(self, db: Transaction, cid: int, author_id: str, paraphrase: Derived,
                              now: float) -> StoredCorrection | None:
        """Inside an operation: ``paraphrase.question`` as a confirmed member of the answer of (the taught
        source of) ``paraphrase.source_id``; None when that source is not active, or the phrasing is a
        member of the scope already or a negative of that answer."""
        source = await self._source(db, cid, paraphrase.source_id)
        if source is None or not await self._derivable(db, cid, paraphrase.question, source[1]):
            return None
        vector = np.asarray(paraphrase.embedding, dtype=np.float32)
        paraphrase_id = await _insert(
            db, "INSERT INTO corrections (channel_id, message_id, question, answer, author_id, embedding, encoder,"
            " created_at, origin, source_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'confirmed', ?)",
            (cid, paraphrase.message_id, paraphrase.question, source[1], author_id, vector.tobytes(),
             paraphrase.encoder, now, source[0]))
        await self._audit(db, cid, author_id, "paraphrase", {"correction_id": paraphrase_id, "source_id": source[0],
                                                             "question": paraphrase.question, "answer": source[1]})
        return StoredCorrection(paraphrase_id, paraphrase.question, source[1], author_id, vector, paraphrase.encoder,
                                now, "confirmed", source[0])

    async def negatives(self, key: ChannelKey) -> list[StoredCorrection]:
        """The active negatives of ``key``'s learning scope, oldest first (``origin`` 'negative',
        ``answer``: the answer of their source, the one that does not apply to them)."""
        rows = await self._scope_rows(key, f"SELECT {_NEGATIVE} WHERE n.channel_id = ? AND n.active = 1 ORDER BY n.id")
        return [_correction(r) for r in rows]

    async def support_rows(self, key: ChannelKey) -> tuple[list[StoredCorrection], list[StoredCorrection]]:
        """(active corrections, active negatives) of ``key``'s scope, read together (one operation)."""
        async with self._read() as db:
            cid = await self._scope_id(db, key)
            if cid is None:
                return [], []
            corrections = await _rows(db, f"SELECT {_CORRECTION} FROM corrections WHERE channel_id = ? AND active = 1"
                                          " AND person = '' ORDER BY id", (cid,))
            negatives = await _rows(db, f"SELECT {_NEGATIVE} WHERE n.channel_id = ? AND n.active = 1 ORDER BY n.id",
                                    (cid,))
        return [_correction(r) for r in corrections], [_correction(r) for r in negatives]

    async def corrections(self, key: ChannelKey) -> list[StoredCorrection]:
        """The active corrections of ``key``'s learning scope, oldest first (the channel's: no
        personal ones)."""
        rows = await self._scope_rows(key, f"SELECT {_CORRECTION} FROM corrections WHERE channel_id = ? AND active = 1"
                                           " AND person = '' ORDER BY id")
        return [_correction(r) for r in rows]

    async def forget(self, key: ChannelKey, correction_ids: Sequence[int] | None = None, *,
                     author_id: str = "", event_id: str = "", by_author: str | None = None) -> list[int]:
        """Deactivate all (or the given, or ``by_author``'s) corrections of a scope; returns the ids.

        What was derived from them goes too (``_deactivate``: their confirmed paraphrases, among
        the ids returned, and their negatives; ``by_author``: also the negatives that author's
        corrections made). LoRA versions of the scope stop serving in the same transaction: they may remember
        what was forgotten (the next consolidation trains a new one without it).
        ``author_id``: who forgot (the audit log). ``event_id``: see ``_once``; raises
        ``AlreadyApplied``."""
        async with self._write() as db:
            cid = await self._new_scope_id(db, key) if event_id else await self._scope_id(db, key)
            if cid is None:
                return []
            await self._once(db, cid, event_id)
            if by_author is not None:
                async with db.execute("SELECT id FROM corrections WHERE channel_id = ? AND author_id = ?"
                                      " AND person = ''", (cid, by_author)) as cur:
                    correction_ids = [int(r[0]) for r in await cur.fetchall()]
            now = time.time()
            ids = await self._deactivate(db, cid, correction_ids, now)
            if by_author is not None:  # undo by author: the negatives their corrections made go too
                await db.execute("UPDATE negatives SET active = 0, forgotten_at = ? WHERE channel_id = ?"
                                 " AND author_id = ? AND active = 1", (now, cid, by_author))
            # A personal correction never trained the channel's LoRA: forgetting only those keeps it.
            channel_wide = bool(ids) and bool(await _rows(
                db, f"SELECT 1 FROM corrections WHERE id IN ({_marks(ids)}) AND person = '' LIMIT 1", ids))
            retired = await self._retire_lora_versions(db, cid) if channel_wide else []
            await self._applied(db, cid, event_id, {"forgotten": len(ids)})
            if ids:
                await self._audit(db, cid, author_id, "forget", {"correction_ids": ids, "lora_retired": retired,
                                                                  **({"of_author": by_author} if by_author else {})})
            return ids

    @staticmethod
    async def _retire_lora_versions(db: Transaction, cid: int) -> list[int]:
        """Inside an operation: the scope's active and fallback LoRA versions stop serving for good."""
        async with db.execute("SELECT version FROM lora_versions WHERE channel_id = ? AND status IN"
                              " ('active', 'retired')", (cid,)) as cur:
            versions = [int(r[0]) for r in await cur.fetchall()]
        await db.execute("UPDATE lora_versions SET status = 'rolled_back' WHERE channel_id = ? AND status IN"
                         " ('active', 'retired')", (cid,))
        return versions

    @staticmethod
    async def _deactivate(db: Transaction, cid: int, ids: Sequence[int] | None, now: float) -> list[int]:
        """Inside an operation: deactivate the scope's active corrections among ``ids`` (None: all
        the channel's, none of the personal ones), with what was derived from them (confirmed
        paraphrases, negatives); returns the corrections' ids, derived paraphrases included."""
        if ids is not None and not ids:
            return []
        async with db.execute("SELECT id, source_id, person FROM corrections WHERE channel_id = ? AND active = 1",
                              (cid,)) as cur:
            rows = await cur.fetchall()
        active = {int(r[0]): r[1] for r in rows}
        chosen = {int(r[0]) for r in rows if not r[2]} if ids is None else active.keys() & set(ids)
        chosen |= {i for i, source in active.items() if source in chosen}  # sources are taught: one level
        await db.executemany("UPDATE corrections SET active = 0, forgotten_at = ? WHERE id = ?",
                             [(now, i) for i in sorted(chosen)])
        await db.executemany("UPDATE negatives SET active = 0, forgotten_at = ? WHERE source_id = ? AND active = 1",
                             [(now, i) for i in sorted(chosen)])
        return sorted(chosen)

    # -- thumbs -----------------------------------------------------------------------

    async def add_thumb(self, key: ChannelKey, message_id: int, kind: str, author_id: str, *,
                        event_id: str = "", paraphrase: Derived | None = None) -> StoredCorrection | None:
        """Record a 👍 / 👎 on a reply. ``event_id``: see ``_once``; raises ``AlreadyApplied``.

        ``paraphrase`` (the asker's 👍 on an answer served from a correction): in the same
        transaction, their question becomes a confirmed member of that answer
        (``_add_paraphrase``); returns it, or None when none was added."""
        async with self._write() as db:
            cid = await self._new_scope_id(db, key)
            await self._once(db, cid, event_id)
            now = time.time()
            await db.execute(
                "INSERT INTO thumbs (channel_id, message_id, kind, author_id, created_at) VALUES (?, ?, ?, ?, ?)",
                (cid, message_id, kind, author_id, now),
            )
            added = None if paraphrase is None else await self._add_paraphrase(db, cid, author_id, paraphrase, now)
            await self._applied(db, cid, event_id, {"kind": kind, **({"paraphrase_id": added.id} if added else {})})
        return added

    async def rated_replies(self, key: ChannelKey, person: str, limit: int | None = None
                            ) -> list[tuple[StoredMessage, StoredMessage, bool, float]]:
        """(reply, its question, liked, when) for the bot's replies to ``person``'s questions in ``key``'s
        scope that ``person`` judged with 👍 / 👎: the newest judgement of each, oldest first; of the
        ``limit`` most recently judged only, when given. Nobody else's thumbs are read. One read."""
        async with self._read() as db:
            cid = await self._scope_id(db, key)
            return [] if cid is None else await self._rated(db, cid, person, limit)

    @staticmethod
    async def _rated(db: Transaction, cid: int, person: str, limit: int | None = None
                     ) -> list[tuple[StoredMessage, StoredMessage, bool, float]]:
        """Inside an operation: ``rated_replies`` of scope ``cid``."""
        thumbs = await _rows(db, "SELECT t.message_id, t.kind, t.created_at FROM thumbs t"
                                 " WHERE t.channel_id = ? AND t.author_id = ? ORDER BY t.id", (cid, person))
        newest: dict[int, tuple[bool, float]] = {}
        for message_id, kind, created_at in thumbs:
            newest.pop(int(message_id), None)
            newest[int(message_id)] = (kind == "up", float(created_at))
        chosen = list(newest.items())[-limit if limit else 0:]
        ids = [m for m, _ in chosen]
        rows = await _rows(db, f"SELECT * FROM messages WHERE id IN ({_marks(ids)}) AND role = 'assistant'"
                               " AND question_id IS NOT NULL", ids) if ids else []
        replies = {int(r["id"]): _message(r) for r in rows}
        asked_ids = sorted({r.question_id for r in replies.values() if r.question_id is not None})
        questions = {int(r["id"]): _message(r) for r in await _rows(
            db, f"SELECT * FROM messages WHERE id IN ({_marks(asked_ids)}) AND author_id = ?",
            [*asked_ids, person])} if asked_ids else {}
        rated = []
        for message_id, (liked, when) in chosen:
            reply = replies.get(message_id)
            if reply is None or not reply.text or reply.question_id not in questions:
                continue
            rated.append((reply, questions[reply.question_id], liked, when))
        return rated

    async def corrected_replies(self, key: ChannelKey, person: str, limit: int | None = None
                                ) -> list[tuple[StoredCorrection, StoredMessage, StoredMessage]]:
        """(correction, the reply it corrected, that reply's question) for the active corrections of
        ``key``'s scope that someone other than ``person`` taught on the bot's replies to ``person``'s
        questions there (the channel's, taught: no personal ones, paraphrases or pending ones), oldest
        first; the ``limit`` newest when given. One read."""
        async with self._read() as db:
            cid = await self._scope_id(db, key)
            return [] if cid is None else await self._corrected(db, cid, person, limit)

    @staticmethod
    async def _corrected(db: Transaction, cid: int, person: str, limit: int | None = None
                         ) -> list[tuple[StoredCorrection, StoredMessage, StoredMessage]]:
        """Inside an operation: ``corrected_replies`` of scope ``cid``."""
        columns = ", ".join(f"c.{name.strip()}" for name in _CORRECTION.split(","))
        rows = await _rows(db, f"SELECT {columns}, r.id, q.id FROM corrections c"
                               " JOIN messages r ON r.id = c.message_id JOIN messages q ON q.id = r.question_id"
                               " WHERE c.channel_id = ? AND c.active = 1 AND c.person = '' AND c.origin = 'taught'"
                               " AND q.author_id = ? AND c.author_id != ? ORDER BY c.id DESC"
                               + (" LIMIT ?" if limit else ""), (cid, person, person, *([limit] if limit else [])))
        ids = sorted({int(r[10]) for r in rows} | {int(r[11]) for r in rows})
        messages = {int(m["id"]): _message(m) for m in await _rows(
            db, f"SELECT * FROM messages WHERE id IN ({_marks(ids)})", ids)} if ids else {}
        return [(_correction(r), messages[int(r[10])], messages[int(r[11])]) for r in reversed(rows)]

    async def scrub_progress(self, key: ChannelKey, person: str) -> int:
        """The explanations of the replies to ``person`` in ``key``'s scope stop quoting their tutoring
        progress (their ``progress`` items); returns how many changed."""
        async with self._write() as db:
            cid = await self._scope_id(db, key)
            return 0 if cid is None else await self._scrub_progress(db, cid, person)

    async def _scrub_progress(self, db: Transaction, cid: int, person: str) -> int:
        """Inside an operation: ``scrub_progress`` in scope ``cid``."""
        rows = await _rows(db, "SELECT id, explanation FROM messages WHERE channel_id = ? AND explanation IS NOT"
                               f" NULL AND {self._database.json_text('explanation', 'person')} = ?", (cid, person))

        def drop_progress(explanation: dict[str, Any]) -> bool:
            if not explanation.get("progress"):
                return False
            explanation["progress"] = []
            return True

        return await _edit_explanations(db, rows, drop_progress)

    @staticmethod
    async def _annotate(db: Transaction, message_ids: Collection[int], notes: Mapping[str, Any]) -> int:
        """Inside an operation: add ``notes`` to the stored explanations of the replies ``message_ids``
        (other processes reload what they learned from them); returns how many were annotated."""
        if not message_ids or not notes:
            return 0
        ids = sorted(message_ids)
        rows = await _rows(db, f"SELECT id, explanation FROM messages WHERE id IN ({_marks(ids)})", ids)

        def annotate(explanation: dict[str, Any]) -> bool:
            explanation.update(notes)
            return True

        return await _edit_explanations(db, rows, annotate)

    # -- review, audit, authors ----------------------------------------------------------

    async def pending(self, key: ChannelKey) -> list[StoredCorrection]:
        """Corrections of ``key``'s scope waiting for a manager's review, oldest first."""
        rows = await self._scope_rows(key, f"SELECT {_CORRECTION} FROM corrections WHERE channel_id = ?"
                                           " AND review = 'pending' ORDER BY id")
        return [_correction(r) for r in rows]

    async def review(self, key: ChannelKey, correction_id: int, *, approve: bool,
                     author_id: str = "") -> StoredCorrection | None:
        """Approve (activate it, retiring the active answers to the same question) or reject a
        pending correction; None if none waits."""
        async with self._write() as db:
            cid = await self._scope_id(db, key)
            if cid is None:
                return None
            async with db.execute(
                f"SELECT {_CORRECTION} FROM corrections WHERE channel_id = ? AND id = ? AND review = 'pending'",
                (cid, correction_id),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                return None
            replaced: list[int] = []
            if approve:
                async with db.execute("SELECT id, question FROM corrections WHERE channel_id = ? AND active = 1"
                                      " AND person = ''", (cid,)) as cur:
                    same = [int(i) for i, q in await cur.fetchall() if question_key(q) == question_key(row[1])]
                replaced = await self._deactivate(db, cid, same, time.time())
            await db.execute("UPDATE corrections SET active = ?, review = ? WHERE id = ?",
                             (int(approve), "approved" if approve else "rejected", correction_id))
            await self._audit(db, cid, author_id, "approve" if approve else "reject",
                              {"correction_id": correction_id, "by": row[3], "replaces": replaced})
        return _correction(row)

    async def taught_since(self, platform: str, author_id: str, since: float) -> int:
        """Corrections (active, pending or not) ``author_id`` of ``platform`` taught since ``since``
        (a 👍 that confirmed a paraphrase is not teaching)."""
        async with self._read() as db, db.execute(
            "SELECT COUNT(*) FROM corrections c JOIN channels ch ON ch.id = c.channel_id"
            " WHERE c.author_id = ? AND ch.platform = ? AND c.created_at >= ? AND c.origin = 'taught'",
            (author_id, platform, since),
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def audit(self, key: ChannelKey | None = None, *, author_id: str | None = None, spaces: Spaces = None,
                    limit: int = 100) -> list[StoredAudit]:
        """The newest ``limit`` audit entries, of one scope and/or one author, newest first; with
        ``spaces``, only those of channels in them (None: every space, and entries of no channel too)."""
        if spaces is not None and key is not None and (key.platform, key.space) not in set(spaces):
            return []
        where: list[str] = []
        args: list[Any] = []
        async with self._read() as db:
            if key is not None:
                cid = await self._scope_id(db, key)
                if cid is None:
                    return []
                where.append("a.channel_id = ?")
                args.append(cid)
            if spaces is not None:
                in_spaces, space_args = _in_spaces(spaces)
                where.append(in_spaces)
                args += space_args
            if author_id is not None:
                where.append("a.author_id = ?")
                args.append(author_id)
            clause = f"WHERE {' AND '.join(where)}" if where else ""
            async with db.execute(
                "SELECT a.id, c.platform, c.space, c.channel, a.author_id, a.action, a.detail, a.created_at"
                f" FROM audit_log a LEFT JOIN channels c ON c.id = a.channel_id {clause} ORDER BY a.id DESC LIMIT ?",
                [*args, limit],
            ) as cur:
                rows = await cur.fetchall()
        return [StoredAudit(r[0], ChannelKey(r[1], r[3], space=r[2]) if r[1] is not None else None,
                            r[4], r[5], json.loads(r[6]), r[7]) for r in rows]

    @staticmethod
    async def _audit(db: Transaction, cid: int | None, author_id: str, action: str,
                     detail: dict[str, Any]) -> None:
        """Inside an operation: record who changed what, in the same transaction as the change."""
        await db.execute("INSERT INTO audit_log (channel_id, author_id, action, detail, created_at)"
                         " VALUES (?, ?, ?, ?, ?)", (cid, author_id, action, json.dumps(detail), time.time()))

    # -- people -------------------------------------------------------------------------

    async def user_data(self, platform: str, user_id: str) -> dict[str, Any]:
        """Everything stored about one person of ``platform``: what they taught (personal corrections
        marked ``personal``), told about themselves (``personal_facts``), said, rated and changed."""
        person = (platform, user_id)
        async with self._read() as db:
            corrections = await _rows(db, (
                "SELECT c.id, ch.platform, ch.space, ch.channel, c.question, c.answer, c.active, c.review,"
                " c.created_at, c.origin, c.source_id, c.person FROM corrections c"
                " JOIN channels ch ON ch.id = c.channel_id WHERE ch.platform = ? AND c.author_id = ? ORDER BY c.id"),
                person)
            facts = await _rows(db, (
                "SELECT f.id, ch.platform, ch.space, ch.channel, f.text, f.created_at FROM personal_facts f"
                " JOIN channels ch ON ch.id = f.channel_id WHERE ch.platform = ? AND f.person = ? ORDER BY f.id"),
                person)
            negatives = await _rows(db, (  # made by their correction, or their words (the question corrected)
                "SELECT n.id, ch.platform, ch.space, ch.channel, n.question, k.answer, n.source_id, n.active,"
                " n.created_at, n.author_id FROM negatives n JOIN channels ch ON ch.id = n.channel_id"
                " JOIN corrections k ON k.id = n.source_id LEFT JOIN messages r ON r.id = n.message_id"
                " LEFT JOIN messages q ON q.id = r.question_id"
                " WHERE ch.platform = ? AND (n.author_id = ? OR q.author_id = ?) ORDER BY n.id"), (*person, user_id))
            messages = await _rows(db, (
                "SELECT m.id, ch.platform, ch.space, ch.channel, m.thread, m.text, m.created_at FROM messages m"
                " JOIN channels ch ON ch.id = m.channel_id WHERE ch.platform = ? AND m.author_id = ? ORDER BY m.id"),
                person)
            thumbs = await _rows(db, (
                "SELECT t.message_id, ch.platform, ch.space, ch.channel, t.kind, t.created_at FROM thumbs t"
                " JOIN channels ch ON ch.id = t.channel_id WHERE ch.platform = ? AND t.author_id = ? ORDER BY t.id"),
                person)
            audit = await _rows(db, (
                "SELECT a.id, ch.platform, ch.space, ch.channel, a.action, a.detail, a.created_at FROM audit_log a"
                " JOIN channels ch ON ch.id = a.channel_id WHERE ch.platform = ? AND a.author_id = ? ORDER BY a.id"),
                person)

        def where(r: Sequence[Any]) -> str:
            return str(ChannelKey(r[1], r[3], space=r[2]))

        return {
            "user": f"{platform}:{user_id}",
            "corrections": [{"id": r[0], "channel": where(r), "question": r[4], "answer": r[5],
                             "active": bool(r[6]), "review": r[7], "created_at": r[8], "origin": r[9],
                             "source_id": r[10], "personal": bool(r[11])} for r in corrections],
            "personal_facts": [{"id": r[0], "channel": where(r), "text": r[4], "created_at": r[5]} for r in facts],
            "negatives": [{"id": r[0], "channel": where(r), "question": r[4], "answer": r[5], "source_id": r[6],
                           "active": bool(r[7]), "created_at": r[8], "author_id": r[9]} for r in negatives],
            "messages": [{"id": r[0], "channel": where(r), "thread": r[4], "text": r[5], "created_at": r[6]}
                         for r in messages],
            "thumbs": [{"message_id": r[0], "channel": where(r), "kind": r[4], "created_at": r[5]} for r in thumbs],
            "audit": [{"id": r[0], "channel": where(r), "action": r[4], "detail": json.loads(r[5]),
                       "created_at": r[6]} for r in audit],
        }

    async def delete_user(self, platform: str, user_id: str, *, author_id: str = "") -> dict[str, int]:
        """Remove one person of ``platform`` from the database file, not just from view.

        Their corrections (any status), messages and the bot's replies to them, thumbs and
        audit entries are deleted, with the paraphrases and negatives derived from their
        corrections and the negatives they made or that quote their words; explanations and
        audit entries of others no longer quote their corrections; LoRA versions of the scopes
        they taught are deleted (they were trained on their corrections: a consolidation is
        requested to train anew); then the
        file is vacuumed so that freed pages keep nothing.
        """
        person = (platform, user_id)
        async with self._write() as db:
            corrections = await _rows(db, (
                "SELECT c.id, c.channel_id, c.person FROM corrections c JOIN channels ch ON ch.id = c.channel_id"
                " WHERE ch.platform = ? AND c.author_id = ?"), person)
            if corrections:  # confirmed paraphrases of their corrections quote their answers
                corrections += await _rows(db, (
                    f"SELECT id, channel_id, person FROM corrections WHERE source_id IN ({_marks(corrections)})"),
                    [r[0] for r in corrections])
            gone = {int(r[0]) for r in corrections}
            scopes = {int(r[1]) for r in corrections if not r[2]}  # personal ones never trained a channel LoRA
            facts = await db.execute("DELETE FROM personal_facts WHERE person = ? AND channel_id IN"
                                     " (SELECT id FROM channels WHERE platform = ?)", (user_id, platform))
            said = [int(r[0]) for r in await _rows(db, (
                "SELECT m.id FROM messages m JOIN channels ch ON ch.id = m.channel_id"
                " WHERE ch.platform = ? AND m.author_id = ?"), person)]
            replies = [int(r[0]) for r in await _rows(db, (
                f"SELECT id FROM messages WHERE question_id IN ({_marks(said)})"), said)] if said else []
            messages = sorted(set(said) | set(replies))
            negatives = {int(r[0]) for r in await _rows(db, (
                "SELECT n.id FROM negatives n JOIN channels ch ON ch.id = n.channel_id WHERE ch.platform = ?"
                " AND n.author_id = ?"), person)}
            for start in range(0, max(len(gone), len(messages)), 400):  # SQLite's bound-parameter limit
                sources, quoted = sorted(gone)[start:start + 400], messages[start:start + 400]
                negatives |= {int(r[0]) for r in await _rows(db, (
                    f"SELECT id FROM negatives WHERE source_id IN ({_marks(sources) or 'NULL'})"  # PostgreSQL: no IN ()
                    f" OR message_id IN ({_marks(quoted) or 'NULL'})"), [*sources, *quoted])}
            if negatives:
                await db.execute(f"DELETE FROM negatives WHERE id IN ({_marks(sorted(negatives))})", sorted(negatives))
            await self._delete_messages(db, messages)
            thumbs = await db.execute("DELETE FROM thumbs WHERE author_id = ? AND channel_id IN"
                                      " (SELECT id FROM channels WHERE platform = ?)", (user_id, platform))
            if gone:
                marks = _marks(sorted(gone))
                await db.execute(f"DELETE FROM corrections WHERE id IN ({marks})", sorted(gone))
                applied = self._database.json_int("result", "correction_id")
                await db.execute(f"DELETE FROM applied_events WHERE {applied} IN ({marks})", sorted(gone))
                await self._scrub_explanations(db, gone)
            await db.execute("DELETE FROM audit_log WHERE author_id = ? AND channel_id IN"
                             " (SELECT id FROM channels WHERE platform = ?)", (user_id, platform))
            await self._scrub_audit(db, gone, user_id, negatives)
            versions = 0
            for cid in sorted(scopes):
                cur = await db.execute("DELETE FROM lora_versions WHERE channel_id = ?", (cid,))
                versions += cur.rowcount
                await db.execute("INSERT INTO consolidation_jobs (channel_id, requested_at) VALUES (?, ?)"
                                 " ON CONFLICT (channel_id) DO UPDATE SET requested_at = excluded.requested_at",
                                 (cid, time.time()))
            counts = {"corrections": len(gone), "messages": len(messages), "thumbs": thumbs.rowcount,
                      "lora_versions": versions, "negatives": len(negatives), "personal_facts": facts.rowcount}
            await self._audit(db, None, author_id, "delete_user", counts)  # who, not whose words
        async with self._lock:
            await self._database.purge(thorough=True)
        return counts

    async def prune_messages(self, before: float) -> int:
        """Delete the message history older than ``before`` (corrections stay); returns how many."""
        async with self._write() as db:
            old = [int(r[0]) for r in await _rows(db, "SELECT id FROM messages WHERE created_at < ?", (before,))]
            await self._delete_messages(db, old)
        return len(old)

    @staticmethod
    async def _delete_messages(db: Transaction, ids: Sequence[int]) -> None:
        """Inside an operation: delete messages with their links and thumbs; what pointed at them no longer does."""
        for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
            chunk = list(ids[start:start + 500])
            marks = _marks(chunk)
            await db.execute(f"DELETE FROM message_links WHERE message_id IN ({marks})", chunk)
            await db.execute(f"DELETE FROM thumbs WHERE message_id IN ({marks})", chunk)
            await db.execute(f"UPDATE corrections SET message_id = NULL WHERE message_id IN ({marks})", chunk)
            await db.execute(f"UPDATE negatives SET message_id = NULL WHERE message_id IN ({marks})", chunk)
            await db.execute(f"UPDATE messages SET question_id = NULL WHERE question_id IN ({marks})", chunk)
            await db.execute(f"DELETE FROM messages WHERE id IN ({marks})", chunk)

    @staticmethod
    async def _scrub_explanations(db: Transaction, gone: set[int]) -> None:
        """Inside an operation: explanations stop quoting the corrections ``gone``."""
        rows = await _rows(db, "SELECT id, explanation FROM messages WHERE explanation IS NOT NULL", ())

        def unquote(explanation: dict[str, Any]) -> bool:
            uses = explanation.get("corrections", [])
            kept = [u for u in uses if u.get("correction_id") not in gone]
            explanation["corrections"] = kept
            return len(kept) != len(uses)

        await _edit_explanations(db, rows, unquote)

    @staticmethod
    async def _scrub_audit(db: Transaction, gone: set[int], user_id: str,
                           negatives: set[int] | None = None) -> None:
        """Inside an operation: others' audit entries about the person's corrections (and the
        negatives ``negatives`` deleted with them) keep no text of them."""
        async with db.execute("SELECT id, detail FROM audit_log") as cur:
            rows = await cur.fetchall()
        for entry_id, text in rows:
            detail = json.loads(text)
            if detail.get("correction_id") in gone or detail.get("by") == user_id \
                    or detail.get("negative_id") in (negatives or set()):
                await db.execute("UPDATE audit_log SET detail = ? WHERE id = ?",
                                 (json.dumps({"redacted": "the author's data was deleted"}), entry_id))

    # -- the personal scope --------------------------------------------------------------

    async def add_fact(self, key: ChannelKey, person: str, text: str, embedding: np.ndarray, encoder: str, *,
                       limit: int) -> StoredFact:
        """Store what ``person`` told about themselves in ``key``'s scope. The same text again (up to
        case and spacing) replaces the older copy; past ``limit`` facts the oldest goes. The audit
        entry keeps no text (managers read the audit log; the text stays the person's)."""
        now = time.time()
        vector = np.asarray(embedding, dtype=np.float32)
        async with self._write() as db:
            cid = await self._new_scope_id(db, key)
            rows = await _rows(db, "SELECT id, text FROM personal_facts WHERE channel_id = ? AND person = ?"
                                   " ORDER BY id", (cid, person))
            drop = [int(r[0]) for r in rows if question_key(r[1]) == question_key(text)]
            kept = [int(r[0]) for r in rows if int(r[0]) not in drop]
            drop += kept[: max(0, len(kept) - limit + 1)]
            if drop:
                await db.execute(f"DELETE FROM personal_facts WHERE id IN ({_marks(drop)})", drop)
                await self._scrub_personal(db, cid, set(), set(drop))
            fact_id = await _insert(
                db, "INSERT INTO personal_facts (channel_id, person, text, embedding, encoder, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)", (cid, person, text, vector.tobytes(), encoder, now))
            await self._audit(db, cid, person, "personal_fact", {"fact_id": fact_id, "replaces": drop})
        return StoredFact(fact_id, person, text, vector, encoder, now)

    async def personal_rows(self, key: ChannelKey, person: str) -> tuple[list[StoredCorrection], list[StoredFact]]:
        """(active personal corrections, facts) of ``person`` in ``key``'s scope, oldest first."""
        profiles = await self.personal_profiles(key, person)
        return profiles.get(person, ([], []))

    async def personal_profiles(self, key: ChannelKey, person: str | None = None
                                ) -> dict[str, tuple[list[StoredCorrection], list[StoredFact]]]:
        """Per person with a personal scope in ``key``'s scope (or only ``person``): (active personal
        corrections, facts), oldest first. One read operation."""
        async with self._read() as db:
            cid = await self._scope_id(db, key)
            if cid is None:
                return {}
            who: tuple[str, ...] = () if person is None else (person,)
            corrections = await _rows(db, f"SELECT {_CORRECTION} FROM corrections WHERE channel_id = ? AND active = 1"
                                          f" AND {'person = ?' if who else _PERSONAL} ORDER BY id", (cid, *who))
            facts = await _rows(db, "SELECT id, person, text, embedding, encoder, created_at FROM personal_facts"
                                    f" WHERE channel_id = ? {'AND person = ?' if who else ''} ORDER BY id",
                                (cid, *who))
        found: dict[str, tuple[list[StoredCorrection], list[StoredFact]]] = {}
        for r in corrections:
            found.setdefault(r[9], ([], []))[0].append(_correction(r))
        for r in facts:
            found.setdefault(r[1], ([], []))[1].append(
                StoredFact(r[0], r[1], r[2], np.frombuffer(r[3], dtype=np.float32).copy(), r[4], r[5]))
        return found

    async def forget_person(self, key: ChannelKey, person: str, *, author_id: str = "",
                            judged_notes: Mapping[str, Any] | None = None,
                            corrected_notes: Mapping[str, Any] | None = None) -> dict[str, int]:
        """``/forget me`` in one transaction: delete ``person``'s personal scope in ``key``'s scope (their
        facts and their personal corrections, any state), not just from view (``secure_delete`` zeroes
        the rows; the WAL is checkpointed so that its old copies go too); the explanations of replies
        stop quoting them and their tutoring progress (``scrub_progress``); ``judged_notes`` are added
        to the explanations of the replies they judged with 👍 / 👎 (``rated_replies``) and
        ``corrected_notes`` to those of the replies to them that others corrected
        (``corrected_replies``): the learning modules mark there what stops reading them (taste,
        progress). Returns ``{"facts": n, "corrections": m}``. ``author_id``: who asked (the person,
        or a manager), for the audit log."""
        async with self._write() as db:
            cid = await self._scope_id(db, key)
            if cid is None:
                return {"facts": 0, "corrections": 0}
            facts = {int(r[0]) for r in await _rows(
                db, "SELECT id FROM personal_facts WHERE channel_id = ? AND person = ?", (cid, person))}
            gone = {int(r[0]) for r in await _rows(
                db, "SELECT id FROM corrections WHERE channel_id = ? AND person = ?", (cid, person))}
            if facts:
                await db.execute(f"DELETE FROM personal_facts WHERE id IN ({_marks(sorted(facts))})", sorted(facts))
            if gone:
                marks = _marks(sorted(gone))
                await db.execute(f"DELETE FROM applied_events WHERE channel_id = ? AND"
                                 f" {self._database.json_int('result', 'correction_id')} IN ({marks})",
                                 [cid, *sorted(gone)])
                await db.execute(f"DELETE FROM corrections WHERE id IN ({marks})", sorted(gone))
            await self._scrub_personal(db, cid, gone, facts)
            judged = {reply.id for reply, _, _, _ in await self._rated(db, cid, person)}
            corrected = {reply.id for _, reply, _ in await self._corrected(db, cid, person)}
            await self._annotate(db, judged, judged_notes or {})
            await self._annotate(db, corrected, corrected_notes or {})
            await self._scrub_progress(db, cid, person)
            counts = {"facts": len(facts), "corrections": len(gone)}
            if facts or gone:
                await self._audit(db, cid, author_id, "forget_person", {"person": person, **counts})
        if facts or gone:
            async with self._lock:  # not thorough: a chat command must not stall every channel on a big file
                await self._database.purge(thorough=False)
        return counts

    async def _scrub_personal(self, db: Transaction, cid: int, corrections: set[int], facts: set[int]) -> None:
        """Inside an operation: the explanations of the scope's replies stop quoting the personal
        ``corrections`` and ``facts`` deleted (only replies a personal scope shaped can)."""
        if not corrections and not facts:
            return
        rows = await _rows(db, "SELECT id, explanation FROM messages WHERE channel_id = ? AND explanation IS NOT NULL"
                               f" AND COALESCE({self._database.json_text('explanation', 'person')}, '') != ''", (cid,))

        def unquote(explanation: dict[str, Any]) -> bool:
            uses = [u for u in explanation.get("corrections", []) if u.get("correction_id") not in corrections]
            told = [f for f in explanation.get("facts", []) if f.get("fact_id") not in facts]
            if len(uses) == len(explanation.get("corrections", [])) and len(told) == len(explanation.get("facts", [])):
                return False
            explanation["corrections"], explanation["facts"] = uses, told
            return True

        await _edit_explanations(db, rows, unquote)

    # -- applied events ---------------------------------------------------------------

    @staticmethod
    async def _once(db: Transaction, cid: int, event_id: str) -> None:
        """Inside an operation: raise ``AlreadyApplied`` if ``event_id`` was applied in this scope.

        Operations are serialised (and ``BEGIN IMMEDIATE`` across processes), so checking
        here and recording with ``_applied`` in the same transaction cannot race.
        """
        if not event_id:
            return
        async with db.execute(
            "SELECT result FROM applied_events WHERE channel_id = ? AND event_id = ?", (cid, event_id)
        ) as cur:
            row = await cur.fetchone()
        if row is not None:
            raise AlreadyApplied(json.loads(row[0]))

    @staticmethod
    async def _applied(db: Transaction, cid: int, event_id: str, result: dict[str, Any]) -> None:
        if event_id:
            await db.execute(
                "INSERT INTO applied_events (channel_id, event_id, result, created_at) VALUES (?, ?, ?, ?)",
                (cid, event_id, json.dumps(result), time.time()),
            )

    async def thumbs(self, key: ChannelKey) -> dict[str, int]:
        rows = await self._scope_rows(key, "SELECT kind, COUNT(*) FROM thumbs WHERE channel_id = ? GROUP BY kind")
        return {r[0]: r[1] for r in rows}

    # -- LoRA versions and consolidation jobs ---------------------------------------

    async def add_lora_version(
        self, key: ChannelKey, weights: bytes | None, metrics: dict[str, Any], status: str
    ) -> int:
        """Record a new LoRA version of ``key``'s scope; returns its version number.

        An ``active`` one retires the version it replaces in the same transaction: a
        scope never has two active versions, nor none because of a crash in between.
        """
        async with self._write() as db:
            cid = await self._new_scope_id(db, key)
            async with db.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM lora_versions WHERE channel_id = ?", (cid,)
            ) as cur:
                row = await cur.fetchone()
            version = int(row[0]) if row else 1
            if status == "active":
                await db.execute(
                    "UPDATE lora_versions SET status = 'retired' WHERE channel_id = ? AND status = 'active'", (cid,)
                )
            await db.execute(
                "INSERT INTO lora_versions (channel_id, version, status, weights, metrics, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (cid, version, status, weights, json.dumps(metrics), time.time()),
            )
            await self._audit(db, cid, "", "lora_version", {"version": version, "status": status})
        return version

    async def lora_versions(self, key: ChannelKey, *, with_weights: bool = False) -> list[StoredLoraVersion]:
        """All LoRA versions of ``key``'s scope, newest first."""
        column = "weights" if with_weights else "NULL"
        rows = await self._scope_rows(key, f"SELECT version, status, {column}, metrics, created_at FROM lora_versions"
                                           " WHERE channel_id = ? ORDER BY version DESC")
        return [StoredLoraVersion(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

    async def active_lora_version(self, key: ChannelKey) -> StoredLoraVersion | None:
        async with self._read() as db:
            return await self._active_lora_version(db, key)

    async def _active_lora_version(self, db: Transaction, key: ChannelKey) -> StoredLoraVersion | None:
        cid = await self._scope_id(db, key)
        if cid is None:
            return None
        async with db.execute(
            "SELECT version, status, weights, metrics, created_at FROM lora_versions"
            " WHERE channel_id = ? AND status = 'active'",
            (cid,),
        ) as cur:
            row = await cur.fetchone()
        return StoredLoraVersion(row[0], row[1], row[2], json.loads(row[3]), row[4]) if row else None

    async def rollback_lora(self, key: ChannelKey, *, author_id: str = "") -> int | None:
        """Retire the active LoRA version and re-activate the one promoted before it.

        Returns the now-active version, or None when the channel is back on the base model.
        """
        async with self._write() as db:
            active = await self._active_lora_version(db, key)
            cid = await self._scope_id(db, key)
            if active is None or cid is None:
                return None
            await db.execute(
                "UPDATE lora_versions SET status = 'rolled_back' WHERE channel_id = ? AND version = ?",
                (cid, active.version),
            )
            async with db.execute(
                "SELECT MAX(version) FROM lora_versions WHERE channel_id = ? AND status = 'retired'", (cid,)
            ) as cur:
                row = await cur.fetchone()
            previous = int(row[0]) if row and row[0] is not None else None
            if previous is not None:
                await db.execute(
                    "UPDATE lora_versions SET status = 'active' WHERE channel_id = ? AND version = ?", (cid, previous)
                )
            await self._audit(db, cid, author_id, "rollback", {"from": active.version, "to": previous})
        return previous

    async def request_job(self, key: ChannelKey) -> None:
        """Ask for a consolidation of ``key``'s scope (durably; survives restarts)."""
        async with self._write(notify=False) as db:
            cid = await self._new_scope_id(db, key)
            await db.execute(
                "INSERT INTO consolidation_jobs (channel_id, requested_at) VALUES (?, ?)"
                " ON CONFLICT (channel_id) DO UPDATE SET requested_at = excluded.requested_at",
                (cid, time.time()),
            )

    async def pending_jobs(self) -> list[tuple[ChannelKey, float, int]]:
        """Every requested consolidation (claimed or not): (scope, requested at, failed attempts), oldest first."""
        async with self._read() as db, db.execute(
            "SELECT c.platform, c.space, c.channel, j.requested_at, j.attempts FROM consolidation_jobs j"
            " JOIN channels c ON c.id = j.channel_id ORDER BY j.requested_at"
        ) as cur:
            rows = await cur.fetchall()
        return [(ChannelKey(platform=r[0], space=r[1], channel=r[2]), r[3], r[4]) for r in rows]

    async def claimable_jobs(self, owner: str, settled_before: float) -> list[ChannelKey]:
        """Scopes whose job ``owner`` may claim now (unclaimed, its own, or the claim's lease ran
        out: the process that held it died) and that were last requested before ``settled_before``."""
        async with self._read() as db, db.execute(
            "SELECT c.platform, c.space, c.channel FROM consolidation_jobs j JOIN channels c ON c.id = j.channel_id"
            " WHERE (j.claimed_by = ? OR j.claimed_until < ?) AND j.requested_at < ? ORDER BY j.requested_at",
            (owner, time.time(), settled_before),
        ) as cur:
            rows = await cur.fetchall()
        return [ChannelKey(platform=r[0], space=r[1], channel=r[2]) for r in rows]

    async def claim_job(self, key: ChannelKey, owner: str, lease_s: float) -> float | None:
        """Claim ``key``'s job for ``owner`` (a process) for ``lease_s`` seconds, so that no other
        process trains it meanwhile; returns when it was requested, or None when there is no job or
        another process holds it (a row another transaction is claiming is skipped, not waited for)."""
        async with self._write(notify=False) as db:
            cid = await self._scope_id(db, key)
            if cid is None:
                return None
            now = time.time()
            rows = await _rows(db, "SELECT requested_at FROM consolidation_jobs WHERE channel_id = ?"
                                   f" AND (claimed_by = ? OR claimed_until < ?){self._database.skip_locked}",
                               (cid, owner, now))
            if not rows:
                return None
            await db.execute("UPDATE consolidation_jobs SET claimed_by = ?, claimed_until = ? WHERE channel_id = ?",
                             (owner, now + lease_s, cid))
        return float(rows[0][0])

    async def finish_job(self, key: ChannelKey, requested_at: float) -> bool:
        """Drop the job unless it was re-requested after ``requested_at`` (then release its claim, so
        that it is trained again); True when it was dropped or is gone."""
        async with self._write(notify=False) as db:
            cid = await self._scope_id(db, key)
            if cid is None:
                return True
            await db.execute(
                "DELETE FROM consolidation_jobs WHERE channel_id = ? AND requested_at <= ?", (cid, requested_at)
            )
            left = await _rows(db, "SELECT 1 FROM consolidation_jobs WHERE channel_id = ?", (cid,))
            if left:
                await db.execute("UPDATE consolidation_jobs SET claimed_by = '', claimed_until = 0"
                                 " WHERE channel_id = ?", (cid,))
        return not left

    async def fail_job(self, key: ChannelKey) -> int:
        """Count a failed attempt of ``key``'s job and release its claim; returns the attempts so far."""
        async with self._write(notify=False) as db:
            cid = await self._scope_id(db, key)
            if cid is None:
                return 0
            await db.execute("UPDATE consolidation_jobs SET attempts = attempts + 1, claimed_by = '',"
                             " claimed_until = 0 WHERE channel_id = ?", (cid,))
            async with db.execute("SELECT attempts FROM consolidation_jobs WHERE channel_id = ?", (cid,)) as cur:
                row = await cur.fetchone()
        return int(row[0]) if row else 0

    # -- admin console: tokens, sessions, and what its pages read -----------------------

    async def add_admin_token(self, name: str, scope: str, salt: bytes, digest: bytes) -> int:
        """Record a manager's sign-in token (its salted hash only); returns its id."""
        async with self._write() as db:
            token_id = await _insert(db, "INSERT INTO admin_tokens (name, scope, salt, digest, created_at)"
                                     " VALUES (?, ?, ?, ?, ?)", (name, scope, salt, digest, time.time()))
            await self._audit(db, None, "admin", "admin_token", {"token_id": token_id, "name": name,
                                                                 "scope": scope})
        return token_id

    async def admin_tokens(self) -> list[StoredAdminToken]:
        """Every sign-in token, revoked ones included, oldest first."""
        async with self._read() as db:
            rows = await _rows(db, f"SELECT {_TOKEN} FROM admin_tokens ORDER BY id", ())
        return [StoredAdminToken(*r) for r in rows]

    async def admin_token(self, token_id: int) -> StoredAdminToken | None:
        """A token that is not revoked, or None."""
        async with self._read() as db:
            rows = await _rows(db, f"SELECT {_TOKEN} FROM admin_tokens WHERE id = ? AND revoked_at IS NULL",
                               (token_id,))
        return StoredAdminToken(*rows[0]) if rows else None

    async def revoke_admin_token(self, token_id: int) -> bool:
        """Revoke a token and end its sessions; False when there was no such live token."""
        async with self._write() as db:
            cur = await db.execute("UPDATE admin_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                                   (time.time(), token_id))
            await db.execute("DELETE FROM admin_sessions WHERE token_id = ?", (token_id,))
            if cur.rowcount:
                await self._audit(db, None, "admin", "admin_token_revoked", {"token_id": token_id})
            return bool(cur.rowcount)

    async def add_admin_session(self, id_digest: bytes, token_id: int, csrf: str, expires_at: float) -> None:
        """Start a session (stored by the hash of its cookie value); expired ones are dropped here."""
        now = time.time()
        async with self._write() as db:
            await db.execute("DELETE FROM admin_sessions WHERE expires_at < ?", (now,))
            await db.execute("INSERT INTO admin_sessions (id_digest, token_id, csrf, created_at, expires_at)"
                             " VALUES (?, ?, ?, ?, ?)", (id_digest, token_id, csrf, now, expires_at))

    async def admin_session(self, id_digest: bytes) -> StoredAdminSession | None:
        """The live session with this id hash, with its (unrevoked) token; None otherwise."""
        async with self._read() as db:
            rows = await _rows(
                db, f"SELECT {', '.join('t.' + c for c in _TOKEN.split(', '))}, s.csrf, s.expires_at"
                " FROM admin_sessions s JOIN admin_tokens t ON t.id = s.token_id"
                " WHERE s.id_digest = ? AND s.expires_at > ? AND t.revoked_at IS NULL", (id_digest, time.time()))
        if not rows:
            return None
        r = rows[0]
        return StoredAdminSession(StoredAdminToken(*r[:7]), r[7], r[8])

    async def end_admin_session(self, id_digest: bytes) -> None:
        async with self._write() as db:
            await db.execute("DELETE FROM admin_sessions WHERE id_digest = ?", (id_digest,))

    async def channel_overview(self, spaces: Spaces = None) -> list[dict[str, Any]]:
        """Every learning scope in ``spaces`` with its activity: messages, the last one's time,
        active and pending corrections, the active LoRA version; most recently active first."""
        where, args = _in_spaces(spaces)
        async with self._read() as db:
            rows = await _rows(db, (
                "SELECT c.platform, c.space, c.channel,"
                " (SELECT COUNT(*) FROM messages m WHERE m.channel_id = c.id),"
                " (SELECT MAX(created_at) FROM messages m WHERE m.channel_id = c.id),"
                " (SELECT COUNT(*) FROM corrections k WHERE k.channel_id = c.id AND k.active = 1 AND k.person = ''),"
                " (SELECT COUNT(*) FROM corrections k WHERE k.channel_id = c.id AND k.review = 'pending'),"
                " (SELECT version FROM lora_versions v WHERE v.channel_id = c.id AND v.status = 'active')"
                f" FROM channels c WHERE {where}"), args)
        found = [{"channel": str(ChannelKey(r[0], r[2], space=r[1])), "platform": r[0], "space": r[1],
                  "name": r[2], "messages": r[3], "last_active": r[4], "corrections": r[5], "pending": r[6],
                  "lora_version": r[7]} for r in rows]
        return sorted(found, key=lambda c: -(c["last_active"] or 0.0))

    async def activity(self, since: float, spaces: Spaces = None, key: ChannelKey | None = None) -> dict[str, Any]:
        """Raw material of the learning report, for ``spaces`` (or one scope ``key``) since ``since``:
        corrections (all, with author, time, state), replies (time, route, corrections used,
        the question asked), thumbs on replies, and LoRA versions by status."""
        where, args = _in_spaces(spaces)
        used = self._database.json_int("j.value", "correction_id")  # a reply's use of one correction
        async with self._read() as db:
            if key is not None:
                cid = await self._scope_id(db, key)
                where, args = "c.id = ?", [cid if cid is not None else -1]
            corrections = await _rows(db, (
                "SELECT k.id, k.question, k.answer, k.author_id, k.created_at, k.active, k.review, k.forgotten_at"
                f" FROM corrections k JOIN channels c ON c.id = k.channel_id WHERE {where} AND k.person = ''"
                " ORDER BY k.id"), args)
            replies = await _rows(db, (
                "SELECT m.id, m.created_at, m.explanation, q.text FROM messages m"
                " JOIN channels c ON c.id = m.channel_id LEFT JOIN messages q ON q.id = m.question_id"
                f" WHERE {where} AND m.role = 'assistant' AND m.explanation IS NOT NULL AND m.created_at >= ?"
                " ORDER BY m.id"), [*args, since])
            thumbs = await _rows(db, (
                "SELECT t.message_id, t.kind, t.created_at FROM thumbs t JOIN channels c ON c.id = t.channel_id"
                f" WHERE {where} AND t.created_at >= ?"), [*args, since])
            usage = await _rows(db, (
                f"SELECT {used}, COUNT(*), MAX(m.created_at)"
                " FROM messages m JOIN channels c ON c.id = m.channel_id,"
                f" {self._database.json_elements('m.explanation', 'corrections', 'j')}"
                f" WHERE {where} AND m.role = 'assistant' AND m.explanation IS NOT NULL"
                f" GROUP BY {used}"), args)
            lora = await _rows(db, (
                "SELECT v.status, COUNT(*) FROM lora_versions v JOIN channels c ON c.id = v.channel_id"
                f" WHERE {where} GROUP BY v.status"), args)
        return {
            "corrections": [{"id": r[0], "question": r[1], "answer": r[2], "author_id": r[3], "created_at": r[4],
                             "active": bool(r[5]), "review": r[6], "forgotten_at": r[7]} for r in corrections],
            "replies": [{"id": r[0], "created_at": r[1], "explanation": json.loads(r[2]), "question": r[3] or ""}
                        for r in replies],
            "thumbs": [{"message_id": r[0], "kind": r[1], "created_at": r[2]} for r in thumbs],
            "usage": {int(r[0]): (int(r[1]), float(r[2])) for r in usage if r[0] is not None},
            "lora": {str(r[0]): int(r[1]) for r in lora},
        }

    async def promote_lora(self, key: ChannelKey, version: int, *, author_id: str = "") -> bool:
        """Serve ``version`` of ``key``'s scope (a manager overriding the gate); the active one is
        retired (``rollback`` returns to it). False when the scope has no such version with weights."""
        async with self._write() as db:
            cid = await self._scope_id(db, key)
            if cid is None:
                return False
            async with db.execute("SELECT status FROM lora_versions WHERE channel_id = ? AND version = ?"
                                  " AND weights IS NOT NULL", (cid, version)) as cur:
                row = await cur.fetchone()
            if row is None or row[0] == "active":
                return row is not None
            await db.execute("UPDATE lora_versions SET status = 'retired' WHERE channel_id = ? AND status = 'active'",
                             (cid,))
            await db.execute("UPDATE lora_versions SET status = 'active' WHERE channel_id = ? AND version = ?",
                             (cid, version))
            await self._audit(db, cid, author_id, "promote", {"version": version, "was": row[0]})
        return True


async def _insert(db: Transaction, query: str, args: Sequence[Any]) -> int:
    """Run an INSERT of one row; returns the new row's id."""
    async with db.execute(query + " RETURNING id", args) as cur:
        row = await cur.fetchone()
    return int(row[0])


async def _edit_explanations(db: Transaction, rows: Sequence[Any], edit: Callable[[dict[str, Any]], bool]) -> int:
    """Inside an operation: ``edit`` each (message id, explanation JSON) row's explanation in place and
    store those it says it changed, in one statement; returns how many changed."""
    changed = []
    for message_id, text in rows:
        explanation = json.loads(text) if text else {}
        if edit(explanation):
            changed.append((json.dumps(explanation), message_id))
    await db.executemany("UPDATE messages SET explanation = ? WHERE id = ?", changed)
    return len(changed)


async def _rows(db: Transaction, query: str, args: Sequence[Any]) -> list[Any]:
    async with db.execute(query, args) as cur:
        return list(await cur.fetchall())


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


_TOKEN = "id, name, scope, salt, digest, created_at, revoked_at"
"""The columns ``StoredAdminToken`` takes, in its order."""


def _in_spaces(spaces: Spaces) -> tuple[str, list[Any]]:
    """A WHERE clause on ``channels c`` limiting rows to ``spaces`` (None: every space)."""
    if spaces is None:
        return "1 = 1", []
    pairs = list(spaces)
    if not pairs:
        return "0 = 1", []
    return "(" + " OR ".join("(c.platform = ? AND c.space = ?)" for _ in pairs) + ")", [x for p in pairs for x in p]


_CORRECTION = "id, question, answer, author_id, embedding, encoder, created_at, origin, source_id, person"
"""The columns ``_correction`` reads, in its order."""

_PERSONAL = "person != ''"
"""A WHERE term: personal corrections (of anyone)."""

_NEGATIVE = ("n.id, n.question, k.answer, n.author_id, n.embedding, n.encoder, n.created_at, 'negative',"
             " n.source_id, '' FROM negatives n JOIN corrections k ON k.id = n.source_id")
"""A negative as ``_correction`` reads it (its answer: the source's, the one that does not apply)."""


def _correction(r: Any) -> StoredCorrection:
    return StoredCorrection(r[0], r[1], r[2], r[3], np.frombuffer(r[4], dtype=np.float32).copy(), r[5], r[6],
                            r[7], r[8], r[9])


def _message(row: Any) -> StoredMessage:
    return StoredMessage(
        id=row["id"],
        thread=row["thread"],
        role=row["role"],
        reply_id=row["reply_id"],
        text=row["text"],
        question_id=row["question_id"],
        explanation=json.loads(row["explanation"]) if row["explanation"] else None,
        author_id=row["author_id"],
    )
