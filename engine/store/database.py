"""What the store needs from a database, so that one ``Store`` runs on SQLite and PostgreSQL.

The store's SQL is written once, with ``?`` placeholders and the portable subset both speak
(``INSERT ... ON CONFLICT``, ``RETURNING``); a backend translates what differs (placeholders,
JSON access, locking) and owns its connection, transactions, migrations and change feed.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol

__all__ = ["Cursor", "Result", "Transaction", "Database", "is_postgres_url", "redact_url"]


class Cursor(Protocol):
    """The rows of one statement. Rows are addressable by index and by column name."""

    @property
    def rowcount(self) -> int: ...

    async def fetchone(self) -> Any: ...

    async def fetchall(self) -> Sequence[Any]: ...


class Result(Protocol):
    """``execute``'s result: await it, or use it as ``async with ... as cursor``."""

    def __await__(self) -> Generator[Any, None, Cursor]: ...

    async def __aenter__(self) -> Cursor: ...

    async def __aexit__(self, *exc: object) -> None: ...


class Transaction(Protocol):
    """The statements of one store operation (see ``Database.transaction``)."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result: ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    async def lock(self, key: int) -> None:
        """Serialise writers of one learning scope (``key``: its row id) across processes until
        the transaction ends (SQLite: every write already holds the file's write lock)."""
        ...


class Database(Protocol):
    """A connection to one database, shared by the coroutines of one process (the ``Store``
    runs one operation at a time on it)."""

    name: str
    """``sqlite`` or ``postgresql``."""

    skip_locked: str
    """Appended to a ``SELECT`` of rows to claim: rows another transaction holds are skipped."""

    async def open(self, migrations: Sequence[str]) -> None:
        """Connect, and apply the ``migrations`` not applied yet (raise if the database is newer)."""
        ...

    async def close(self) -> None: ...

    def transaction(self, *, write: bool, notify: bool = True) -> AbstractAsyncContextManager[Transaction]:
        """One operation: a write commits whole or not at all (and, with ``notify``, tells other
        processes that learned state changed); a read sees no other operation half done."""
        ...

    async def schema_version(self) -> int: ...

    async def data_version(self) -> int:
        """A number that changes when *another* process commits a (notifying) change."""
        ...

    async def purge(self, *, thorough: bool) -> None:
        """After deletes: old copies of deleted rows leave the files (``thorough``: all of them,
        even if it takes a while on a big database; else only what is quick)."""
        ...

    def json_int(self, expr: str, key: str) -> str:
        """SQL for the integer at ``key`` of the JSON object in text column ``expr``."""
        ...

    def json_text(self, expr: str, key: str) -> str:
        """SQL for the text at ``key`` of the JSON object in text column ``expr`` (NULL if absent)."""
        ...

    def json_elements(self, expr: str, key: str, alias: str) -> str:
        """A FROM item: the elements of the JSON array at ``key`` of ``expr``, each as ``alias.value``."""
        ...


def is_postgres_url(location: Path | str) -> bool:
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def redact_url(location: Path | str) -> str:
    """``location`` fit for logs and ``heedful config``: a URL's password replaced by ``***``."""
    text = str(location)
    if not is_postgres_url(location) or "@" not in text:
        return text
    scheme, rest = text.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in credentials else ''}@{host}"
