"""Shared fixtures: an offline guard, the model cache, and engines to test against.

- ``tiny_engine`` (session): the real engine, real MiniLM, real SQLite, with a tiny
  randomly initialised LLM (``tiny:0``), for fast tests. Use a distinct channel per test.
- ``real_engine`` (session): the embedded SmolLM2 end to end; mark tests ``real_model``.
- ``make_engine``: a factory for tests that need their own data directory or settings.
- ``postgres_server`` (session) / ``postgres_url``: a real PostgreSQL started by the tests, and
  a fresh database on it per test; ``store_location``: each store backend in turn (the store's
  contract tests run against both).
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from engine.offline import offline_environment  # imports no model library: safe before them

offline_environment()
for _proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_proxy, None)  # slack_sdk honours proxies and ignores NO_PROXY
# Workers decode eagerly unless a test asks for the compiled step (compile_decode=True): a compile costs
# a minute of CPU per worker, and would switch a long-lived worker's decoding mid-suite.
os.environ.setdefault("HEEDFUL_MODEL_COMPILE_DECODE", "false")

from engine import Engine, EngineSettings  # noqa: E402
from engine.settings import ModelSettings  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The real model is slow by nature: ``real_model`` tests need not say ``slow`` as well."""
    for item in items:
        if item.get_closest_marker("real_model") is not None:
            item.add_marker(pytest.mark.slow)
SHARED_DATA = REPO.parent / "shared" / "data"
MODELS_DIR = Path(os.environ.get("HEEDFUL_TEST_MODELS_DIR", REPO / ".cache" / "models"))

_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_real_connect = socket.socket.connect


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        if host not in _LOOPBACK:
            raise RuntimeError(f"test tried to reach the network: {address!r}")
    return _real_connect(self, address)


@pytest.fixture(autouse=True, scope="session")
def offline_guard() -> Any:
    """Fail any test that reaches beyond loopback: runtime must need no network."""
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """Where the converted embedded model is cached across test runs."""
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    return MODELS_DIR


_POSTGRES_DATABASES: dict[Path, str] = {}

sqlite_only = pytest.mark.skipif(os.environ.get("HEEDFUL_TEST_STORE") == "postgresql",
                                 reason="about the SQLite file itself (HEEDFUL_TEST_STORE=postgresql)")


def engine_settings(
    data_dir: Path, models_dir: Path, model: str = "tiny:0", lora: dict[str, Any] | None = None,
    learning: dict[str, Any] | None = None, **model_fields: Any
) -> EngineSettings:
    from bots.presets import PRESETS
    from engine.settings import LearningSettings, LoraSettings

    fields: dict[str, Any] = {"max_new_tokens": 24} | model_fields
    settings = EngineSettings(
        data_dir=data_dir, models_dir=models_dir, model=ModelSettings(id=model, **fields),
        lora=LoraSettings(**(lora or {})), learning=LearningSettings(**(learning or {})),
    )
    settings.dialog.personas.update(PRESETS)
    if os.environ.get("HEEDFUL_TEST_STORE") == "postgresql":  # the whole suite on PostgreSQL
        from pydantic import SecretStr

        from tests.postgres import create_database_sync, shared_server

        if data_dir not in _POSTGRES_DATABASES:  # the same data directory: the same database (restarts)
            _POSTGRES_DATABASES[data_dir] = create_database_sync(shared_server())
        settings.store = settings.store.model_copy(update={"url": SecretStr(_POSTGRES_DATABASES[data_dir])})
    return settings


@pytest.fixture
def make_engine(tmp_path: Path, models_dir: Path) -> Callable[..., AbstractAsyncContextManager[Engine]]:
    """``async with make_engine(model="tiny:0", data_dir=..., lora={...}, learning={...}, **model_fields)``."""

    @asynccontextmanager
    async def factory(
        model: str = "tiny:0", data_dir: Path | None = None, lora: dict[str, Any] | None = None,
        learning: dict[str, Any] | None = None, **model_fields: Any
    ) -> AsyncIterator[Engine]:
        settings = engine_settings(data_dir or tmp_path / "data", models_dir, model, lora, learning, **model_fields)
        async with Engine(settings) as engine:
            yield engine

    return factory


@pytest.fixture(scope="session")
async def tiny_engine(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> AsyncIterator[Engine]:
    async with Engine(engine_settings(tmp_path_factory.mktemp("tiny"), models_dir)) as engine:
        yield engine


@pytest.fixture(scope="session")
async def real_engine(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> AsyncIterator[Engine]:
    from engine.settings import EMBEDDED_MODEL

    settings = engine_settings(tmp_path_factory.mktemp("real"), models_dir, EMBEDDED_MODEL, max_new_tokens=48)
    async with Engine(settings) as engine:
        yield engine


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of a PostgreSQL server the tests started (``tests/postgres.py``)."""
    from tests.postgres import shared_server

    return shared_server()


@pytest.fixture
async def postgres_url(postgres_server: str) -> AsyncIterator[str]:
    """A fresh, empty database for one test."""
    from tests.postgres import create_database, drop_database

    url = await create_database(postgres_server)
    yield url
    await drop_database(postgres_server, url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a test's store lives: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "db.sqlite3"
    return str(request.getfixturevalue("postgres_url"))
