"""The compiled decode step (engine/generation/compiled_decode.py): torch.compile of the direct forward's
one-token step, within a stated tolerance of it (one row, and left-padded rows; across the cache's
growth), rows under channels' LoRA versions too, never compiling again at serving time, used by the
worker once ready, and cancelled cleanly when its worker stops or the process exits mid-compile.

Real compiles on the real inductor: each test that warms a step spends seconds (tiny model) to a minute
or more (the embedded model) of CPU compiling it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.generation.compiled_decode import CompiledDecode, RecompileNeeded, compiler_available, forced_steps
from engine.generation.direct_forward import DirectForward
from engine.generation.kv_cache import new_cache
from engine.generation.model_loader import LoadedModel, load_model
from engine.generation.worker import ModelWorker
from engine.nn.lora import LoraConfig, gather_rows, inject_lora, random_weights, stack_weights, use_rows
from engine.nn.packed_linear import cpu_has_bf16
from engine.settings import ModelSettings
from tests.batches import left_padded

PROMPTS = ["hello there", "what is the capital of France?", "a", "tell me a long story about a dragon and a knight"]

needs_compiler = pytest.mark.skipif(not compiler_available(), reason="no C++ compiler for torch.compile here")


def _built(models_dir: Path, model: str = "tiny:0", lora: LoraConfig | None = None,
           matmul: str = "auto") -> tuple[LoadedModel, DirectForward]:
    """The model as the engine loads it (``matmul``: its linear layers' precision) and its direct forward."""
    loaded = load_model(ModelSettings(id=model, compile_decode=False, matmul_dtype=matmul), models_dir)
    if lora is not None:
        inject_lora(loaded.model, lora)
    direct = DirectForward.build(loaded.model, bf16=loaded.matmul_dtype == "bfloat16")
    assert direct is not None
    return loaded, direct


# The precisions the step compiles for here: the engine's choice, and float32 too where that is bfloat16.
PRECISIONS = ["auto", *(["float32"] if cpu_has_bf16() else [])]


def _forced(direct: DirectForward, compiled: CompiledDecode, loaded: LoadedModel, texts: list[str],
            steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return forced_steps(direct, compiled, *left_padded(loaded, texts), steps=steps)


def _within_tolerance(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    # Tolerance: the compiled step fuses the float32 work around the same products, which changes the
    # order of float rounding; in bfloat16 an activation now and then rounds to the neighbouring value
    # before a product. The keys and values cached from it carry that on, so differences grow with the
    # reply. Measured on SmolLM2
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
@pytest.mark.parametrize("matmul", PRECISIONS)
def test_one_row_and_padded_rows_stay_within_tolerance_without_compiling_again(models_dir: Path, matmul: str) -> None:
    loaded, direct = _built(models_dir, matmul=matmul)
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
    loaded, direct = _built(models_dir)
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
def test_rows_under_lora_versions_stay_within_tolerance_of_the_eager_step(models_dir: Path) -> None:
    """Three left-padded rows: two channels' versions and a row without one, through the same graphs
    that serve plain batches (one row with a version, too), and the versions really change the logits."""
    loaded, direct = _built(models_dir, lora=LoraConfig(rank=4, top_layers=2))
    versions = [_version(loaded.model, seed) for seed in (1, 2)]
    stacks = stack_weights(loaded.model, versions)  # slot 0: no version; 1 and 2: the versions
    compiled = CompiledDecode(direct)
    compiled.warm()
    plain = _forced(direct, compiled, loaded, PROMPTS[:3], steps=12)
    with use_rows(loaded.model, gather_rows(stacks, torch.tensor([1, 0, 2]))):
        mixed = _forced(direct, compiled, loaded, PROMPTS[:3], steps=12)
    with use_rows(loaded.model, gather_rows(stacks, torch.tensor([2]))):
        single = _forced(direct, compiled, loaded, PROMPTS[1:2], steps=12)
    _within_tolerance(mixed)
    _within_tolerance(single)
    assert compiled.state == "compiled"
    first_plain, first_mixed = plain[0][0], mixed[0][0]  # the eager step's logits after the same prompt
    changed = (first_plain - first_mixed).abs().amax(-1) / first_plain.std()
    assert changed[0] > 0.05 and changed[2] > 0.05 and changed[1] == 0  # the row without a version: untouched


def _version(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A channel's LoRA version that changes the output (``random_weights`` leaves B at zero)."""
    generator = torch.Generator().manual_seed(seed)
    weights = random_weights(model, generator)
    for name, value in weights.items():
        if name.endswith("lora_B"):
            weights[name] = torch.randn(value.shape, generator=generator) * 0.05
    return weights


@needs_compiler
def test_a_compile_cancelled_mid_way_ends_its_thread_and_the_next_compiles(models_dir: Path) -> None:
    loaded, direct = _built(models_dir)
    compiled = CompiledDecode(direct)
    thread = compiled.warm_in_background(0.0)
    deadline = time.monotonic() + 120
    while compiled.state != "compiling" and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # well inside dynamo's tracing
    assert compiled.state == "compiling"
    compiled.cancel(join_s=60)
    assert not thread.is_alive()
    assert compiled.state.startswith("eager: the compile was cancelled") and not compiled.wait(0)
    again = CompiledDecode(DirectForward.build(loaded.model, bf16=loaded.matmul_dtype == "bfloat16"))  # type: ignore[arg-type]
    again.warm()
    assert again.ready, again.state
    _within_tolerance(_forced(direct, again, loaded, PROMPTS[:2], steps=4))


EXITS_MID_COMPILE = """
import sys, time
from pathlib import Path
from engine.generation.compiled_decode import CompiledDecode
from engine.generation.direct_forward import DirectForward
from engine.generation.model_loader import load_model
from engine.settings import ModelSettings
loaded = load_model(ModelSettings(id="tiny:0", compile_decode=False), Path(sys.argv[1]))
compiled = CompiledDecode(DirectForward.build(loaded.model, bf16=loaded.matmul_dtype == "bfloat16"))
compiled.warm_in_background(0.0)
while compiled.state != "compiling":
    time.sleep(0.05)
time.sleep(1.5)
print(compiled.state)
"""


@needs_compiler
def test_a_process_that_exits_mid_compile_exits_cleanly(models_dir: Path) -> None:
    """Before the exit hook, Python 3.11 unwound the still-running compile thread at finalisation through
    torch's noexcept C++ and the process aborted ("terminate called without an active exception")."""
    done = subprocess.run([sys.executable, "-c", EXITS_MID_COMPILE, str(models_dir)], capture_output=True,
                          text=True, timeout=300)
    assert done.stdout.strip() == "compiling"
    assert done.returncode == 0, done.stderr[-2000:]
    assert "terminate called" not in done.stderr


@needs_compiler
def test_every_model_in_a_process_gets_graphs_of_its_own(models_dir: Path) -> None:
    """Dynamo keeps at most 8 graphs per code object: five models' steps (ten graphs) in one process
    all compile, since each step compiles a code object of its own."""
    loaded, _ = _built(models_dir)
    steps = []
    for _ in range(5):
        direct = DirectForward.build(loaded.model, bf16=loaded.matmul_dtype == "bfloat16")
        assert direct is not None
        steps.append(CompiledDecode(direct))
        steps[-1].warm()
    assert [c.state for c in steps] == ["compiled"] * 5
    _within_tolerance(_forced(direct, steps[-1], loaded, PROMPTS[:2], steps=4))


@needs_compiler
def test_the_worker_decodes_through_it_once_ready_lora_rows_too(models_dir: Path) -> None:
    settings = ModelSettings(id="tiny:0", max_new_tokens=16, compile_decode=True, compile_delay_s=0.0)
    loaded = load_model(settings, models_dir)
    inject_lora(loaded.model, LoraConfig(rank=4, top_layers=1))
    lora = ("test:lora@1", _version(loaded.model, 1))

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
    assert served > 0 and with_lora > 0


async def _reply(worker: ModelWorker, loaded: LoadedModel, text: str,
                 lora: tuple[str, object] | None = None) -> str:
    stream = worker.submit(list(loaded.tokenizer(text)["input_ids"]), lora=lora)  # type: ignore[arg-type]
    return "".join([d async for d in stream])


@pytest.mark.real_model
@needs_compiler
def test_real_model_within_tolerance(models_dir: Path) -> None:
    """The embedded SmolLM2 as served: one row, and two left-padded rows, over 40 steps."""
    loaded, direct = _built(models_dir, ModelSettings().id)
    compiled = CompiledDecode(direct)
    compiled.warm()
    assert compiled.ready, compiled.state
    chat = ["<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
            "<|im_start|>user\nhow do I reset my password<|im_end|>\n<|im_start|>assistant\n"]
    _within_tolerance(_forced(direct, compiled, loaded, chat[:1], steps=40))
    _within_tolerance(_forced(direct, compiled, loaded, chat, steps=40))
