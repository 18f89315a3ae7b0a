"""One LoRA version's stored weights, read from heedful's store without heedful.

The store is where ``HEEDFUL_STORE_URL`` says (a ``postgresql://`` URL, or a SQLite file's
path), else the SQLite file ``heedful.sqlite3`` in ``HEEDFUL_DATA_DIR`` (heedful's default
data directory when unset: ``$XDG_DATA_HOME/heedful`` or ``~/.local/share/heedful``). Reads
only: one ``SELECT`` of the ``lora_versions`` and ``channels`` tables (heedful's schema, the
same on both databases). SQLite through ``sqlite3``; PostgreSQL through ``asyncpg``, imported
only for a PostgreSQL store.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path

__all__ = ["store_location", "is_postgres", "read_version"]

_QUERY = ("SELECT v.weights FROM lora_versions v JOIN channels c ON c.id = v.channel_id"
          " WHERE c.platform = {0} AND c.space = {1} AND c.channel = {2} AND v.version = {3}")


def store_location(env: Mapping[str, str] = os.environ) -> str:
    """Where heedful's store is, by heedful's own environment variables."""
    url = env.get("HEEDFUL_STORE_URL", "")
    if url:
        return url
    data_dir = env.get("HEEDFUL_DATA_DIR") or str(
        Path(env.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "heedful")
    return str(Path(data_dir) / "heedful.sqlite3")


def is_postgres(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


async def read_version(location: str, platform: str, space: str, channel: str, version: int) -> bytes | None:
    """The weights of ``version`` of the scope ``platform:space:channel`` (None: no such version, or
    one stored without weights)."""
    if is_postgres(location):
        return await _read_postgres(location, (platform, space, channel, version))
    return await asyncio.to_thread(_read_sqlite, location, (platform, space, channel, version))


def _read_sqlite(path: str, args: tuple[str, str, str, int]) -> bytes | None:
    if not Path(path).is_file():
        raise FileNotFoundError(f"heedful's store {path} does not exist (HEEDFUL_STORE_URL / HEEDFUL_DATA_DIR)")
    # mode=rw: never create an empty database where the store was meant to be (WAL readers need
    # to write the -shm index, so not mode=ro); only a SELECT runs on it.
    db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=rw", uri=True, timeout=10.0)
    try:
        row = db.execute(_QUERY.format("?", "?", "?", "?"), args).fetchone()
    finally:
        db.close()
    return bytes(row[0]) if row is not None and row[0] is not None else None


async def _read_postgres(url: str, args: tuple[str, str, str, int]) -> bytes | None:
    try:
        import asyncpg
    except ImportError as err:
        raise RuntimeError("a PostgreSQL store needs asyncpg in vLLM's environment (pip install asyncpg)") from err
    conn = await asyncpg.connect(url)
    try:
        value = await conn.fetchval(_QUERY.format("$1", "$2", "$3", "$4"), *args)
    finally:
        await conn.close()
    return bytes(value) if value is not None else None
