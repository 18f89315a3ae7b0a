"""model.backend = "vllm" against a fake vLLM (tests/fakes/openai.py): the channel's LoRA version chosen as
for the local worker is the ``model`` of the request, loaded on the server before its first use."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
import torch

from engine import ChannelKey, Engine, GenerationError, Turn
from engine.nn.lora import random_weights, weights_to_bytes
from engine.settings import EngineSettings, ModelSettings
from tests.conftest import engine_settings
from tests.fakes.openai import FakeOpenAI

SERVED = "fake-7b-instruct"


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def vllm(tmp_path: Path, models_dir: Path) -> Callable[..., AbstractAsyncContextManager[Engine]]:
    @asynccontextmanager
    async def start(base_url: str, scope: str = "all", **fields: object) -> AsyncIterator[Engine]:
        settings = engine_settings(tmp_path / "d", models_dir, lora={"scope": scope})
        model = ModelSettings(id="tiny:0", backend="vllm", base_url=base_url, served_model=SERVED, max_retries=1,
                              retry_backoff_s=0.01, max_new_tokens=24, **fields)  # type: ignore[arg-type]
        async with Engine(settings.model_copy(update={"model": model})) as engine:
            yield engine

    return start


async def _store_version(engine: Engine, key: ChannelKey) -> int:
    """An active LoRA version of ``key``, as a promoted consolidation stores one."""
    assert engine.consolidator is not None and engine._loaded is not None
    start = random_weights(engine._loaded.model, torch.Generator().manual_seed(1))
    weights = {k: v * 3 + 0.01 for k, v in start.items()}
    blob = weights_to_bytes(weights, engine.consolidator.config)
    version = await engine.store.add_lora_version(key, blob, {}, "active")
    engine.consolidator.drop_cached(key.scope)
    return version


async def test_a_channel_with_a_lora_version_is_served_by_its_name_and_others_by_the_base_model(
    server: FakeOpenAI, vllm: Callable[..., AbstractAsyncContextManager[Engine]], tmp_path: Path
) -> None:
    async with vllm(server.base_url) as engine:
        assert engine.consolidator is not None, "LoRA training stays on with the vllm backend"
        key, other = ChannelKey("slack", "C1", space="T1"), ChannelKey("slack", "C2", space="T1")
        assert await _store_version(engine, key) == 1

        reply = engine.reply(Turn(key, "hello there"))
        assert await reply.collect() == "Echo: hello there"
        assert server.requests[-1]["model"] == "slack:T1:C1@v1"
        assert server.requests[-1]["repetition_penalty"] == engine.settings.model.repetition_penalty
        assert [load["lora_name"] for load in server.lora_loads] == ["slack:T1:C1@v1"]
        written = Path(server.lora_loads[0]["lora_path"])
        assert written == tmp_path / "d" / "lora-exports" / "slack:T1:C1@v1"  # model.lora_dir's default
        config = json.loads((written / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == SERVED and config["r"] == engine.consolidator.config.rank
        explanation = reply.explanation
        assert explanation is not None and explanation.lora_version == "1" and explanation.model == SERVED
        assert "served by vLLM as 'slack:T1:C1@v1'" in explanation.summary()
        assert not any("LoRA is off" in n for n in explanation.notes)

        assert await engine.reply(Turn(ChannelKey("slack", "C1", space="T1", thread="t9"), "again")).collect()
        assert server.requests[-1]["model"] == "slack:T1:C1@v1" and len(server.lora_loads) == 1  # loaded once

        plain = engine.reply(Turn(other, "hi"))
        assert await plain.collect() == "Echo: hi" and server.requests[-1]["model"] == SERVED
        assert plain.explanation is not None and plain.explanation.lora_version is None
        assert not any("vLLM" in n for n in plain.explanation.notes)

        # A new version is a new name (vLLM caches adapters by name).
        assert await _store_version(engine, key) == 2
        await engine.reply(Turn(key, "and now?")).collect()
        assert server.requests[-1]["model"] == "slack:T1:C1@v2"
        assert [load["lora_name"] for load in server.lora_loads][-1] == "slack:T1:C1@v2"
        assert engine.health()["healthy"] and engine.health()["model"]["backend"] == "vllm"


async def test_a_restarted_server_gets_the_version_loaded_again(
    server: FakeOpenAI, vllm: Callable[..., AbstractAsyncContextManager[Engine]]
) -> None:
    async with vllm(server.base_url) as engine:
        key = ChannelKey("console", "restart")
        await _store_version(engine, key)
        await engine.reply(Turn(key, "one")).collect()
        server.restart()
        assert await engine.reply(Turn(key, "two")).collect() == "Echo: two"
        assert [load["lora_name"] for load in server.lora_loads] == ["console::restart@v1"] * 2


async def test_with_scoped_serving_unrelated_messages_get_the_base_model(
    server: FakeOpenAI, vllm: Callable[..., AbstractAsyncContextManager[Engine]]
) -> None:
    async with vllm(server.base_url, scope="related") as engine:
        key = ChannelKey("console", "scoped")
        await _store_version(engine, key)
        reply = engine.reply(Turn(key, "what is the weather like?"))
        await reply.collect()
        assert server.requests[-1]["model"] == SERVED and server.lora_loads == []
        assert reply.explanation is not None and reply.explanation.lora_version is None


async def test_with_the_resolver_nothing_is_loaded_ahead_and_an_unknown_name_is_a_clear_error(
    server: FakeOpenAI, vllm: Callable[..., AbstractAsyncContextManager[Engine]]
) -> None:
    async with vllm(server.base_url, lora_loading="resolver") as engine:
        key = ChannelKey("console", "resolved")
        await _store_version(engine, key)
        with pytest.raises(GenerationError, match="heedful_lora_resolver"):
            await engine.reply(Turn(key, "hello")).collect()  # the fake has no resolver plugin
        assert server.requests[-1]["model"] == "console::resolved@v1" and server.lora_loads == []
        server.loras["console::resolved@v1"] = "(resolved by the server)"
        assert await engine.reply(Turn(key, "hello")).collect() == "Echo: hello"
        assert server.lora_loads == []


async def test_a_server_that_cannot_load_the_version_says_why(
    server: FakeOpenAI, vllm: Callable[..., AbstractAsyncContextManager[Engine]]
) -> None:
    async with vllm(server.base_url) as engine:
        key = ChannelKey("console", "refused")
        await _store_version(engine, key)
        server.refuse_loras = "LoRA rank 8 is greater than max_lora_rank 4"
        with pytest.raises(GenerationError, match=r"could not load LoRA 'console::refused@v1'.*max_lora_rank"):
            await engine.reply(Turn(key, "hello")).collect()
        assert "max_lora_rank" in (engine.health()["model"]["last_error"] or "")


def test_settings_for_the_vllm_backend() -> None:
    with pytest.raises(ValueError, match="base_url"):
        ModelSettings(backend="vllm")
    settings = EngineSettings(model=ModelSettings(backend="vllm", base_url="http://127.0.0.1:8000/v1"))
    assert settings.lora_note() == ""  # per-channel LoRA is on
    assert EngineSettings(model=ModelSettings(backend="openai", base_url="http://x/v1")).lora_note()
    assert settings.model.lora_loading == "load" and settings.model.lora_dir is None
