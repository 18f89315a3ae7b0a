"""The compiled decode step (engine/generation/compiled_decode.py): torch.compile of the direct forward's
one-token step, within a stated tolerance of it (one row, and left-padded rows; across the cache's
growth), never compiling again at serving time, and used by the worker once ready (not for LoRA rows).

Real compiles on the real inductor: each test that warms a step spends seconds (tiny model) to a minute
or more (the embedded model) of CPU compiling it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from engine.generation.compiled_decode import CompiledDecode, RecompileNeeded, compiler_available, forced_steps
from engine.generation.direct_forward import DirectForward
from engine.generation.kv_cache import new_cache
from engine.generation.model_loader import LoadedModel, load_model
from engine.generation.worker import ModelWorker
from engine.nn.lora import LoraConfig, inject_lora, random_weights
from engine.settings import ModelSettings
from tests.batches import left_padded

PROMPTS = ["hello there", "what is the capital of France?", "a", "tell me a long story about a dragon and a knight"]

needs_compiler = pytest.mark.skipif(not compiler_available(), reason="no C++ compiler for torch.compile here")


def _bf16(models_dir: Path, model: str = "tiny:0") -> tuple[LoadedModel, DirectForward]:
    loaded = load_model(ModelSettings(id=model, compile_decode=False), models_dir)
    if loaded.matmul_dtype != "bfloat16":
        pytest.skip("this CPU or torch build decodes in float32: the compiled step multiplies packed bfloat16")
    direct = DirectForward.build(loaded.model, bf16=True)
    assert direct is not None
    return loaded, direct


def _forced(direct: DirectForward, compiled: CompiledDecode, loaded: LoadedModel, texts: list[str],
            steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return forced_steps(direct, compiled, *left_padded(loaded, texts), steps=steps)


def _within_tolerance(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    # Tolerance: the compiled step fuses the float32 work around the same bfloat16 products, so an
    # activation now and then rounds to the neighbouring bfloat16 value before a product; the keys and
    # values cached from it carry that on, so differences grow with the reply. Measured on SmolLM2
    # (/tmp script, 60 forced steps, 6 rows): the first steps bit-identical, then logits within 0.125
    # of their spread at worst and 0.053 on average per step; one greedy choice in 360 differed, at an
    # exact tie. Bound: a quarter of the spread at worst, a tenth on average; greedy choices equal
    # wherever the direct forward's best two differ by more than 0.3 of the spread.
    for a, b in pairs:
        spread = a.std().item()
        assert (a - b).abs().max().item() < 0.25 * spread
        assert (a - b).abs().mean().item() < 0.1 * spread
        top = a.topk(2, dim=-1).values
        clear = (top[:, 0] - top[:, 1]) > 0.3 * spread
        assert torch.equal(a.argmax(-1)[clear], b.argmax(-1)[clear])


@needs_compiler
def test_one_row_and_padded_rows_stay_within_tolerance_without_compiling_again(models_dir: Path) -> None:
    loaded, direct = _bf16(models_dir)
    compiled = CompiledDecode(direct)
    assert compiled.state == "waiting" and not compiled.ready
    compiled.warm()
    assert compiled.state == "compiled" and compiled.ready and compiled.compile_s is not None
    # 70 steps: the cache's buffers (64 steps of headroom) grow on the way; 4 rows of other lengths
    # (left padding) and then 3: the row count is symbolic beyond one.
    _within_tolerance(_forced(direct, compiled, loaded, PROMPTS[1:2], steps=70))
    _within_tolerance(_forced(direct, compiled, loaded, PROMPTS, steps=70))
    _within_tolerance(_forced(direct, compiled, loaded, PROMPTS[:3], steps=8))
    assert compiled.state == "compiled"  # fail_on_recompile: any new compile would have raised


@needs_compiler
def test_a_batch_it_was_not_compiled_for_raises_and_leaves_the_cache_to_the_eager_step(models_dir: Path) -> None:
    loaded, direct = _bf16(models_dir)
    compiled = CompiledDecode(direct)
    compiled.warm()
    ids, mask, positions = left_padded(loaded, PROMPTS[1:2])
    cache = new_cache()
    with torch.no_grad():
        direct(ids, mask, positions, cache)
        filled = [layer.keys.shape[2] for layer in cache.layers]  # type: ignore[attr-defined]
        mask = torch.cat([mask, torch.ones((1, 1), dtype=torch.long)], dim=1)
        with pytest.raises(RecompileNeeded):  # int32 ids: a graph of its own would have to be compiled
            compiled(ids[:, -1:].int(), mask, positions[:, -1:] + 1, cache)
        assert [layer.keys.shape[2] for layer in cache.layers] == filled  # type: ignore[attr-defined]
        assert compiled.state.startswith("eager") and not compiled.ready
        direct(ids[:, -1:], mask, positions[:, -1:] + 1, cache)  # the eager step goes on from there
    assert not compiled.covers([object()], mask)


@needs_compiler
def test_every_model_in_a_process_gets_graphs_of_its_own(models_dir: Path) -> None:
    """Dynamo keeps at most 8 graphs per code object: five models' steps (ten graphs) in one process
    all compile, since each step compiles a code object of its own."""
    loaded, _ = _bf16(models_dir)
    steps = []
    for _ in range(5):
        direct = DirectForward.build(loaded.model, bf16=True)
        assert direct is not None
        steps.append(CompiledDecode(direct))
        steps[-1].warm()
    assert [c.state for c in steps] == ["compiled"] * 5
    _within_tolerance(_forced(direct, steps[-1], loaded, PROMPTS[:2], steps=4))


@needs_compiler
def test_the_worker_decodes_through_it_once_ready_but_not_lora_rows(models_dir: Path) -> None:
    settings = ModelSettings(id="tiny:0", max_new_tokens=16, compile_decode=True, compile_delay_s=0.0)
    loaded = load_model(settings, models_dir)
    if loaded.matmul_dtype != "bfloat16":
        pytest.skip("this CPU or torch build decodes in float32")
    inject_lora(loaded.model, LoraConfig(rank=4, top_layers=1))
    lora = ("test:lora@1", random_weights(loaded.model, torch.Generator().manual_seed(1)))

    async def go() -> tuple[list[str], dict[str, object], int, int]:
        worker = ModelWorker(loaded, settings)
        compiled = worker.compiled
        assert compiled is not None
        calls = {"n": 0}
        original = compiled._call

        def counting(*args: object) -> torch.Tensor:
            calls["n"] += 1
            return original(*args)  # type: ignore[arg-type]

        compiled._call = counting  # type: ignore[method-assign]
        worker.start()
        try:
            assert await asyncio.to_thread(compiled.wait, 600.0), compiled.state
            warm_calls = calls["n"]
            texts = list(await asyncio.gather(*(_reply(worker, loaded, t) for t in PROMPTS)))
            served = calls["n"] - warm_calls
            await _reply(worker, loaded, PROMPTS[0], lora)
            return texts, worker.health(), served, calls["n"] - warm_calls - served
        finally:
            await worker.stop()

    texts, health, served, with_lora = asyncio.run(go())
    assert all(texts) and health["decode_step"] == "compiled"
    assert served > 0 and with_lora == 0


async def _reply(worker: ModelWorker, loaded: LoadedModel, text: str,
                 lora: tuple[str, object] | None = None) -> str:
    stream = worker.submit(list(loaded.tokenizer(text)["input_ids"]), lora=lora)  # type: ignore[arg-type]
    return "".join([d async for d in stream])


@pytest.mark.real_model
@needs_compiler
def test_real_model_within_tolerance(models_dir: Path) -> None:
    """The embedded SmolLM2 as served: one row, and two left-padded rows, over 40 steps."""
    loaded, direct = _bf16(models_dir, ModelSettings().id)
    compiled = CompiledDecode(direct)
    compiled.warm()
    assert compiled.ready, compiled.state
    chat = ["<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
            "<|im_start|>user\nhow do I reset my password<|im_end|>\n<|im_start|>assistant\n"]
    _within_tolerance(_forced(direct, compiled, loaded, chat[:1], steps=40))
    _within_tolerance(_forced(direct, compiled, loaded, chat, steps=40))
