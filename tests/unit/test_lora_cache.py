"""The two-level cache of channels' LoRA versions: device LRU (worker) and host LRU (consolidator) over the store."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
import torch

from engine.contract import ChannelKey
from engine.generation.model_loader import LoadedModel, load_model
from engine.generation.worker import ModelWorker
from engine.learning.consolidation import Candidate
from engine.learning.consolidator import Consolidator
from engine.nn.lora import LoraConfig, LoraWeights, inject_lora, random_weights, weights_to_bytes
from engine.settings import LoraSettings, ModelSettings
from engine.store import Store

CONFIG = LoraConfig(rank=4, top_layers=1)


@pytest.fixture(scope="module")
def tiny_lora(models_dir: Path) -> LoadedModel:
    loaded = load_model(ModelSettings(id="tiny:0"), models_dir)
    inject_lora(loaded.model, CONFIG)
    return loaded


def strong_version(loaded: LoadedModel, seed: int) -> LoraWeights:
    """LoRA weights that visibly change the tiny model's replies (B not near zero)."""
    weights = random_weights(loaded.model, torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    return {k: torch.randn(v.shape, generator=g) if k.endswith("lora_B") else v for k, v in weights.items()}


def no_job(**_: Any) -> Generator[object, None, Candidate]:
    raise AssertionError("no consolidation runs in this test")


async def test_a_version_evicted_from_both_caches_is_read_back_from_the_store(
    tiny_lora: LoadedModel, tmp_path: Path
) -> None:
    store = Store(tmp_path / "heedful.db")
    await store.open()
    a, b = ChannelKey(platform="test", channel="A"), ChannelKey(platform="test", channel="B")
    weights_a = strong_version(tiny_lora, 1)
    for key, weights in ((a, weights_a), (b, strong_version(tiny_lora, 7))):
        await store.add_lora_version(key, weights_to_bytes(weights, CONFIG), {}, "active")
    reads: list[ChannelKey] = []
    read = store.active_lora_version

    async def counted(key: ChannelKey) -> Any:
        reads.append(key)
        return await read(key)

    store.active_lora_version = counted  # type: ignore[method-assign]
    # One version fits on the device and one in host memory: the next channel evicts the previous.
    worker = ModelWorker(tiny_lora, ModelSettings(id="tiny:0", max_new_tokens=12, max_resident_loras=1))
    worker.start()
    consolidator = Consolidator(store, worker, LoraSettings(cached_loras=1), CONFIG, no_job)
    prompt = list(tiny_lora.tokenizer("tell me a long story about a dragon")["input_ids"])

    async def reply(lora: tuple[str, LoraWeights] | None) -> str:
        return "".join([d async for d in worker.submit(prompt, lora=lora)])

    try:
        base = await reply(None)
        direct = await reply(("direct@1", weights_a))  # the weights as trained, never stored
        first = await reply(await consolidator.lora_for(a))
        assert reads == [a] and first == direct != base

        other = await reply(await consolidator.lora_for(b))
        assert other != first
        assert consolidator.cached() == {b: 1} and list(worker._resident) == ["test::B@1"]

        again = await reply(await consolidator.lora_for(a))  # in neither cache: from the store
        assert reads == [a, b, a] and again == first
        assert consolidator.cached() == {a: 1} and list(worker._resident) == ["test::A@1"]
        assert await reply(await consolidator.lora_for(a)) == first and reads == [a, b, a]  # now a host hit
    finally:
        await worker.stop()
        await store.close()
