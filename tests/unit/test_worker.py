"""The model worker: continuous batching is exact, cancellation and slow readers are harmless."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine import EngineClosed, Overloaded
from engine.generation.model_loader import LoadedModel, load_model
from engine.generation.worker import ModelWorker
from engine.settings import ModelSettings

PROMPTS = ["hello there", "what is the capital of France?", "a", "tell me a long story about a dragon and a knight"]


@pytest.fixture(scope="module")
def tiny(models_dir: Path) -> LoadedModel:
    return load_model(ModelSettings(id="tiny:0"), models_dir)


def ids(tiny: LoadedModel, text: str) -> list[int]:
    return list(tiny.tokenizer(text)["input_ids"])


@pytest.fixture
async def worker(tiny: LoadedModel) -> AsyncIterator[ModelWorker]:
    w = ModelWorker(tiny, ModelSettings(id="tiny:0", max_new_tokens=20, max_batch=8, max_pending=4))
    w.start()
    yield w
    await w.stop()


async def generate(worker: ModelWorker, prompt: list[int], delay: float = 0.0) -> str:
    await asyncio.sleep(delay)
    return "".join([d async for d in worker.submit(prompt)])


async def test_batched_rows_match_sequential_generation(worker: ModelWorker, tiny: LoadedModel) -> None:
    alone = [await generate(worker, ids(tiny, p)) for p in PROMPTS]
    # Staggered starts make later requests join a batch that is already decoding.
    together = await asyncio.gather(*(generate(worker, ids(tiny, p), delay=0.01 * i) for i, p in enumerate(PROMPTS)))
    assert list(together) == alone
    assert all(alone)


async def test_cancelled_and_slow_consumers_do_not_stall_others(worker: ModelWorker, tiny: LoadedModel) -> None:
    expected = await generate(worker, ids(tiny, PROMPTS[1]))
    abandoned = worker.submit(ids(tiny, PROMPTS[3]))
    async for _ in abandoned:
        break  # leaving early cancels the request
    slow = worker.submit(ids(tiny, PROMPTS[0]))  # never read until the end
    assert await generate(worker, ids(tiny, PROMPTS[1])) == expected
    assert "".join([d async for d in slow])


async def test_full_queue_is_overloaded_not_blocking(tiny: LoadedModel) -> None:
    w = ModelWorker(tiny, ModelSettings(id="tiny:0", max_pending=1))
    with pytest.raises(EngineClosed):
        w.submit([1, 2, 3])
    w._thread = type("Alive", (), {"is_alive": lambda self: True})()  # accept submits without decoding
    w.submit([1, 2, 3])
    with pytest.raises(Overloaded):
        w.submit([1, 2, 3])
