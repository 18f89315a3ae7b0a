"""The model worker: continuous batching is exact, cancellation and slow readers are harmless."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import torch

from engine import EngineClosed, GenerationError, Overloaded
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


from engine.nn.lora import LoraConfig, inject_lora, random_weights  # noqa: E402


@pytest.fixture(scope="module")
def tiny_lora(models_dir: Path) -> LoadedModel:
    loaded = load_model(ModelSettings(id="tiny:0"), models_dir)
    inject_lora(loaded.model, LoraConfig(rank=4, top_layers=1))
    return loaded


def strong_adapter(loaded: LoadedModel, seed: int) -> dict:
    import torch

    adapter = random_weights(loaded.model, torch.Generator().manual_seed(seed))
    return {k: (torch.randn(v.shape, generator=torch.Generator().manual_seed(seed + 1)) if k.endswith("lora_B")
                else v) for k, v in adapter.items()}


async def test_mixed_adapter_batch_equals_each_row_alone(tiny_lora: LoadedModel) -> None:
    w = ModelWorker(tiny_lora, ModelSettings(id="tiny:0", max_new_tokens=12, max_batch=8))
    w.start()
    try:
        adapters = {"a@1": strong_adapter(tiny_lora, 1), "b@1": strong_adapter(tiny_lora, 7)}
        plan = [(p, key) for p in PROMPTS[:2] for key in (None, "a@1", "b@1")]

        async def one(prompt: str, key: str | None, delay: float = 0.0) -> str:
            await asyncio.sleep(delay)
            chosen = (key, adapters[key]) if key else None
            return "".join([d async for d in w.submit(ids(tiny_lora, prompt), lora=chosen)])

        alone = [await one(p, k) for p, k in plan]
        together = await asyncio.gather(*(one(p, k, 0.005 * i) for i, (p, k) in enumerate(plan)))
        assert list(together) == alone
        assert alone[0] != alone[1] or alone[0] != alone[2]  # the adapters really change the output
    finally:
        await w.stop()


async def test_background_job_interleaves_and_its_failure_is_contained(worker: ModelWorker, tiny: LoadedModel) -> None:
    progress: list[int] = []

    def job():  # type: ignore[no-untyped-def]
        for i in range(50):
            progress.append(i)
            yield
        return "done"

    future = worker.run_job(job)
    text = await generate(worker, ids(tiny, PROMPTS[0]))
    assert await future == "done" and len(progress) == 50 and text

    def broken():  # type: ignore[no-untyped-def]
        yield
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await worker.run_job(broken)
    assert await generate(worker, ids(tiny, PROMPTS[0])) == text  # still serving


async def test_a_bad_request_fails_alone_and_running_rows_carry_on(tiny: LoadedModel) -> None:
    """A request the model cannot prefill (token ids beyond its vocabulary) joins a running batch."""
    w = ModelWorker(tiny, ModelSettings(id="tiny:0", max_new_tokens=40, max_batch=8))
    w.start()
    try:
        expected = "".join([d async for d in w.submit(ids(tiny, PROMPTS[1]))])
        running = w.submit(ids(tiny, PROMPTS[3]))
        first = await anext(aiter(running))  # decoding: the next requests join a running batch
        good, bad = w.submit(ids(tiny, PROMPTS[1])), w.submit([len(tiny.tokenizer) + 10_000])  # same step
        with pytest.raises(GenerationError, match="generation failed"):
            _ = [d async for d in bad]
        assert "".join([d async for d in good]) == expected
        assert first + "".join([d async for d in running])
        assert w.health()["failed_rows"] == 1 and w.health()["alive"]
    finally:
        await w.stop()


async def test_a_hung_model_fails_the_stream_and_health_says_so(tiny: LoadedModel) -> None:
    """Streams do not wait forever on a model that stops answering."""
    release = threading.Event()
    hung = LoadedModel(model=_Hanging(tiny.model, release), tokenizer=tiny.tokenizer, name="hung",
                       device=tiny.device, context_length=tiny.context_length)
    w = ModelWorker(hung, ModelSettings(id="tiny:0", max_new_tokens=5, stall_timeout_s=0.3))
    w.start()
    try:
        with pytest.raises(GenerationError, match="produced nothing"):
            _ = [d async for d in w.submit(ids(tiny, PROMPTS[0]))]
        await asyncio.sleep(0.1)
        assert w.health()["stalled"] and w.health()["busy_s"] > 0.3
    finally:
        release.set()
        await w.stop()
    assert not w.health()["stalled"]


class _Hanging(torch.nn.Module):
    """The tiny model, but its forward waits until released: a model that hangs."""

    def __init__(self, model: torch.nn.Module, release: threading.Event) -> None:
        super().__init__()
        self.inner, self.release = model, release
        self.generation_config = getattr(model, "generation_config", None)

    def forward(self, *args: object, **kwargs: object) -> object:
        self.release.wait(30)
        return self.inner(*args, **kwargs)


async def test_rows_match_sequential_past_the_cache_headroom(tiny: LoadedModel) -> None:
    """Replies longer than the KV buffers' headroom (they grow in place) stay exact when rows join and leave."""
    w = ModelWorker(tiny, ModelSettings(id="tiny:0", max_new_tokens=150, max_batch=8))
    w._stop_ids = set()  # every row decodes all 150 tokens: the buffers must grow at least once
    w.start()
    try:
        alone = [await generate(w, ids(tiny, p)) for p in PROMPTS]
        together = await asyncio.gather(*(generate(w, ids(tiny, p), delay=0.05 * i) for i, p in enumerate(PROMPTS)))
        assert list(together) == alone
    finally:
        await w.stop()


def test_growing_cache_layer_equals_concatenation() -> None:
    from engine.generation.kv_cache import from_layers, layers_of, new_cache

    torch.manual_seed(0)
    cache: Any = new_cache()
    chunks = [torch.randn(2, 3, n, 4) for n in (5, 1, 70, 1, 1)]  # the third overflows the headroom
    for chunk in chunks:
        keys, values = cache.update(chunk, -chunk, 0)
    assert torch.equal(keys, torch.cat(chunks, dim=2)) and torch.equal(values, -torch.cat(chunks, dim=2))
    assert cache.get_seq_length() == 78
    rebuilt: Any = from_layers(layers_of(cache))
    more = torch.randn(2, 3, 1, 4)
    keys, _ = rebuilt.update(more, more, 0)
    assert torch.equal(keys, torch.cat([*chunks, more], dim=2))


def test_bfloat16_linears_stay_within_tolerance_of_float32(models_dir: Path) -> None:
    """Packed bfloat16 linear layers (chosen on CPUs with AMX / AVX-512 BF16): logits within a stated
    tolerance of float32, training (gradients) still in float32, and float32 stays available."""
    from engine.generation.model_loader import decoding, pack_linears, pick_matmul_dtype

    assert pick_matmul_dtype("float32", torch.device("cpu"), torch.float32) == torch.float32
    assert pick_matmul_dtype("auto", torch.device("cpu"), torch.bfloat16) == torch.bfloat16  # loaded as is
    exact = load_model(ModelSettings(id="tiny:0", matmul_dtype="float32"), models_dir)
    assert exact.matmul_dtype == "float32"
    fast = load_model(ModelSettings(id="tiny:0", matmul_dtype="float32"), models_dir)
    try:
        pack_linears(fast.model)
    except RuntimeError:
        pytest.skip("this torch build lacks the oneDNN bfloat16 ops")
    x = torch.tensor([ids(exact, p)[:6] + [0] * (6 - len(ids(exact, p)[:6])) for p in PROMPTS])
    with torch.no_grad():
        ref, outside = exact.model(input_ids=x).logits, fast.model(input_ids=x).logits
        with decoding():  # the worker's steps
            low = fast.model(input_ids=x).logits
    assert torch.equal(outside, ref)  # outside decoding (training, its cached activations): float32 as before
    # Tolerance: bfloat16 keeps 8 significant bits; the worst logit error stays under 5 % of the logits'
    # spread, the mean under 1 %, and nine greedy choices in ten are the float32 ones.
    assert ((low - ref).abs().max() / ref.std()).item() < 0.05
    assert ((low - ref).abs().mean() / ref.std()).item() < 0.01
    assert (low.argmax(-1) == ref.argmax(-1)).float().mean().item() >= 0.9
    with torch.enable_grad():  # gradients take the float32 path: identical to the unpacked model
        assert torch.equal(fast.model(input_ids=x).logits, exact.model(input_ids=x).logits)


async def test_copy_bias_steers_its_row_only(tiny: LoadedModel) -> None:
    """A row given a copy source (engine/generation/copy_bias.py) that its reply starts to repeat
    completes it; the rows decoding beside it without one are exactly what they are alone."""
    from engine.generation.copy_bias import CopySource

    w = ModelWorker(tiny, ModelSettings(id="tiny:0", max_new_tokens=12, max_batch=8, copy_bias=20.0))
    w.start()
    try:
        async def one(prompt: str, copy: tuple[CopySource, ...] = (), delay: float = 0.0) -> tuple[str, list[int]]:
            await asyncio.sleep(delay)
            stream = w.submit(ids(tiny, prompt), copy=copy)
            return "".join([d async for d in stream]), stream._request.generated

        alone = [await one(p) for p in PROMPTS]
        value = tuple(ids(tiny, " purple elephant dances"))
        source = CopySource(spans=((alone[0][1][0], *value),), keys=((value,),))  # the fact starts as the reply does
        copied, *together = await asyncio.gather(one(PROMPTS[0], (source,)),
                                                 *(one(p, delay=0.005 * (i + 1)) for i, p in enumerate(PROMPTS)))
        assert together == alone
        assert copied[1][: 1 + len(value)] == [alone[0][1][0], *value]
        assert copied[0] != alone[0][0]
    finally:
        await w.stop()
