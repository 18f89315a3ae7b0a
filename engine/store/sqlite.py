"""The store's default database: one SQLite file (via aiosqlite).

WAL mode with ``synchronous=FULL``: once a write operation returns, its rows are on disk and
survive ``kill -9`` (and a power cut). Writes start with ``BEGIN IMMEDIATE``: the file's write
lock is taken at once, so no two processes can deadlock upgrading a read. The schema version
is ``PRAGMA user_version``; another process's commits show in ``PRAGMA data_version``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from ..errors import EngineClosed
from .database import Transaction

__all__ = ["SqliteDatabase"]


class _Transaction:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._db.execute(sql, params)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._db.executemany(sql, rows)

    async def lock(self, key: int) -> None:
        return None  # BEGIN IMMEDIATE holds the whole file's write lock already


class SqliteDatabase:
    """One SQLite file."""

    name = "sqlite"
    skip_locked = ""  # one writer at a time: nothing to skip

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise EngineClosed("store is not open")
        return self._db

    async def open(self, migrations: Sequence[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: no statement opens a transaction behind an operation's back.
        db = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            db.row_factory = aiosqlite.Row
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute("PRAGMA busy_timeout=5000")
            await db.execute("PRAGMA secure_delete=ON")  # deleted rows are zeroed, not left in free pages
            await _migrate(db, migrations)
        except BaseException:
            await db.close()
            raise
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @asynccontextmanager
    async def transaction(self, *, write: bool, notify: bool = True) -> AsyncIterator[Transaction]:
        db = self.db
        if not write:  # the store runs one operation at a time: a read needs no transaction of its own
            yield _Transaction(db)
            return
        await db.execute("BEGIN IMMEDIATE")
        try:
            yield _Transaction(db)
        except BaseException:
            await db.rollback()
            raise
        await db.commit()

    async def schema_version(self) -> int:
        return await _pragma(self.db, "user_version")

    async def data_version(self) -> int:
        return await _pragma(self.db, "data_version")

    async def purge(self, *, thorough: bool) -> None:
        if thorough:
            await self.db.execute("VACUUM")
        await self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # old pages leave the WAL file too

    def json_int(self, expr: str, key: str) -> str:
        return f"json_extract({expr}, '$.{key}')"

    def json_text(self, expr: str, key: str) -> str:
        return f"json_extract({expr}, '$.{key}')"

    def json_elements(self, expr: str, key: str, alias: str) -> str:
        return f"json_each({expr}, '$.{key}') {alias}"


async def _pragma(db: aiosqlite.Connection, name: str) -> int:
    async with db.execute(f"PRAGMA {name}") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _migrate(db: aiosqlite.Connection, migrations: Sequence[str]) -> None:
    current = await _pragma(db, "user_version")
    if current > len(migrations):
        raise RuntimeError(
            f"database schema version {current} is newer than this heedful ({len(migrations)}); upgrade heedful"
        )
    for version, script in enumerate(migrations[current:], start=current + 1):
        # One script: each migration and its version bump land together.
        await db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {version};\nCOMMIT;")
