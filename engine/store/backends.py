"""Which database a store location names."""

from __future__ import annotations

from pathlib import Path

from .database import Database, is_postgres_url

__all__ = ["connect"]


def connect(location: Path | str) -> Database:
    """The database at ``location``: a ``postgresql://`` URL, else a SQLite file's path."""
    if is_postgres_url(location):
        from .postgres import PostgresDatabase

        return PostgresDatabase(str(location))
    from .sqlite import SqliteDatabase

    return SqliteDatabase(Path(location))

