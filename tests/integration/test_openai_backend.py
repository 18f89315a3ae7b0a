"""model.backend = "openai": replies from an OpenAI-compatible server, behaving like the local worker."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from engine import ChannelKey, Engine, Feedback, FeedbackKind, GenerationError, Route, Turn
from engine.settings import ModelSettings
from tests.conftest import engine_settings
from tests.fakes.openai import FakeOpenAI

KEY = "sk-test-do-not-log-4411"


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(key=KEY) as fake:
        yield fake


@pytest.fixture
def remote(tmp_path: Path, models_dir: Path) -> Callable[..., AbstractAsyncContextManager[Engine]]:
    @asynccontextmanager
    async def start(base_url: str, **fields: object) -> AsyncIterator[Engine]:
        settings = engine_settings(tmp_path / "d", models_dir)
        model = ModelSettings(backend="openai", base_url=base_url, api_key=KEY, served_model="fake-7b-instruct",
                              max_retries=2, retry_backoff_s=0.01, **fields)  # type: ignore[arg-type]
        async with Engine(settings.model_copy(update={"model": model})) as engine:
            yield engine

    return start


async def test_replies_stream_from_the_server_with_the_prompt_as_messages(
    server: FakeOpenAI, remote: Callable[..., AbstractAsyncContextManager[Engine]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with remote(server.base_url) as engine:
        key = ChannelKey("test", "remote")
        reply = engine.reply(Turn(key, "hello there, how are you?"))
        chunks = [c async for c in reply]
        assert "".join(chunks) == "Echo: hello there, how are you?" and len(chunks) > 2  # streamed, not at once
        assert reply.explanation is not None and reply.explanation.model == "fake-7b-instruct"
        assert any("LoRA is off with the openai backend" in n for n in reply.explanation.notes)
        sent = server.requests[-1]
        assert sent["stream"] and sent["messages"][0]["role"] == "system"
        assert server.headers[-1]["Authorization"] == f"Bearer {KEY}"
        assert engine.health()["healthy"] and await engine.lora_versions(key) == []
    assert KEY not in caplog.text


async def test_failures_before_any_text_are_retried(
    server: FakeOpenAI, remote: Callable[..., AbstractAsyncContextManager[Engine]]
) -> None:
    async with remote(server.base_url) as engine:
        server.fail(503, times=1)
        server.fail(429, times=1, retry_after="0")
        text = await engine.reply(Turn(ChannelKey("test", "retry"), "still there?")).collect()
        assert text == "Echo: still there?" and len(server.requests) == 3


async def test_a_server_that_is_down_is_a_clear_error_and_learned_answers_still_come(
    remote: Callable[..., AbstractAsyncContextManager[Engine]]
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once the probe closes
    async with remote(f"http://127.0.0.1:{port}/v1") as engine:
        key = ChannelKey("test", "down")
        with pytest.raises(GenerationError, match="unreachable"):
            await engine.reply(Turn(key, "What is the wifi password?")).collect()
        receipt = await engine.feedback(Feedback(key, FeedbackKind.CORRECTION, author_id="u", reply_id="",
                                                 question="What is the wifi password?", text="It is pelican-4417."))
        assert receipt.accepted
        learned = engine.reply(Turn(key, "What is the wifi password?"))
        assert "pelican-4417" in await learned.collect()
        assert learned.explanation is not None and learned.explanation.route is Route.CORRECTION


async def test_a_server_that_goes_away_mid_reply_ends_it_with_an_error(
    server: FakeOpenAI, remote: Callable[..., AbstractAsyncContextManager[Engine]]
) -> None:
    async with remote(server.base_url) as engine:
        server.drop_after(2)
        reply = engine.reply(Turn(ChannelKey("test", "drop"), "tell me a long story please"))
        with pytest.raises(GenerationError, match="mid-reply"):
            await reply.collect()
        assert len(server.requests) == 1  # not retried: the user already saw the beginning


async def test_an_error_answer_is_not_retried_and_says_what_the_server_said(
    server: FakeOpenAI, remote: Callable[..., AbstractAsyncContextManager[Engine]]
) -> None:
    async with remote(server.base_url) as engine:
        server.fail(400, times=1)
        with pytest.raises(GenerationError, match="answered 400"):
            await engine.reply(Turn(ChannelKey("test", "bad"), "hi")).collect()
        assert len(server.requests) == 1
