"""The worker's direct forward pass computes what transformers' forward computes.

Compared on the same model object, the same inputs and the same cache class: logits of
prefill (left-padded rows, causal) and of the decode steps after it, with per-row LoRA
slots, in float32 and in packed bfloat16; greedy text through the worker with and
without it; the real embedded model's greedy text; and the architectures it declines.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from engine.generation.direct_forward import DirectForward, transposed_product
from engine.generation.kv_cache import new_cache
from engine.generation.model_loader import LoadedModel, decoding, load_model, packed_weight
from engine.generation.worker import ModelWorker
from engine.nn.lora import LoraConfig, gather_rows, inject_lora, random_weights, stack_weights, use_rows
from engine.nn.packed_linear import onednn_available, packed_product
from engine.settings import ModelSettings
from tests.batches import left_padded

PROMPTS = ["hello there", "what is the capital of France?", "a", "tell me a long story about a dragon and a knight"]


def _transformers(loaded: LoadedModel):  # type: ignore[no-untyped-def]
    def forward(ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: object) -> torch.Tensor:
        with torch.no_grad(), decoding():
            out = loaded.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)
        return out.logits[:, -1].float()
    return forward


def _run(forward, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, steps: int) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    """Prefill, then ``steps`` greedy decode steps; the logits of each."""
    cache = new_cache()
    logits = [forward(ids, mask, positions, cache)]
    pos = positions[:, -1:]
    for _ in range(steps):
        token = logits[-1].argmax(-1, keepdim=True)
        mask = torch.cat([mask, torch.ones_like(token)], dim=1)
        pos = pos + 1
        logits.append(forward(token, mask, pos, cache))
    return logits


def _compare(loaded: LoadedModel, direct: DirectForward, atol: float) -> None:
    ids, mask, positions = left_padded(loaded, PROMPTS)
    ref = _run(_transformers(loaded), ids, mask, positions, steps=12)
    got = _run(direct, ids, mask, positions, steps=12)
    for a, b in zip(ref, got, strict=True):
        assert torch.allclose(a, b, atol=atol, rtol=0), (a - b).abs().max()
        assert torch.equal(a.argmax(-1), b.argmax(-1))


def test_float32_matches_transformers_with_padding(models_dir: Path) -> None:
    loaded = load_model(ModelSettings(id="tiny:0", matmul_dtype="float32"), models_dir)
    direct = DirectForward.build(loaded.model, bf16=False)
    assert direct is not None
    _compare(loaded, direct, atol=1e-5)


@pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN")
def test_onednn_float32_products_match_torchs_product(models_dir: Path) -> None:
    """oneDNN's float32 product (the default here) against torch's own, prefill and decode, one row and
    several: the same greedy tokens, logits within float rounding; a single row goes to oneDNN only
    through the LM head."""
    blas = load_model(ModelSettings(id="tiny:0", matmul_dtype="float32", matmul_kernel="blas"), models_dir)
    onednn = load_model(ModelSettings(id="tiny:0", matmul_dtype="float32", matmul_kernel="onednn"), models_dir)
    assert (blas.matmul_kernel, onednn.matmul_kernel) == ("blas", "onednn")
    ref, ours = DirectForward.build(blas.model, bf16=False), DirectForward.build(onednn.model, bf16=False)
    assert ref is not None and ours is not None
    for rows in (1, 2, 4, 16, 200):
        assert ref.head.times(rows) is F.linear and ref.layers[0].qkv.times(rows) is F.linear
    # The fastest product at each row count, as measured (direct_forward.HEAD_TRANSPOSED_UP_TO); the runs below
    # decode 1 and 4 rows, so that both the transposed product and oneDNN's are compared with torch's.
    layer, head = ours.layers[0].qkv, ours.head
    assert [layer.times(r) for r in (1, 2, 16, 720)] == [F.linear] + [transposed_product] * 3
    assert [head.times(r) for r in (1, 2, 4, 5)] == [packed_product, transposed_product, transposed_product,
                                                      packed_product]
    for prompts in (PROMPTS, PROMPTS[:1]):
        ids, mask, positions = left_padded(blas, prompts)
        for a, b in zip(_run(ref, ids, mask, positions, steps=12), _run(ours, ids, mask, positions, steps=12),
                        strict=True):
            assert torch.allclose(a, b, atol=1e-5, rtol=0), (a - b).abs().max()
            assert torch.equal(a.argmax(-1), b.argmax(-1))


def test_transposed_product_is_the_product() -> None:
    """``(w @ xᵀ)ᵀ`` is ``x @ wᵀ`` for any leading shape, and a LoRA update added in place lands in its rows."""
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(48, 16, generator=generator)
    for shape in ((3, 16), (3, 1, 16), (2, 5, 16)):
        x = torch.randn(shape, generator=generator)
        y = transposed_product(x, w)
        assert y.shape == (*shape[:-1], 48)
        assert torch.allclose(y, F.linear(x, w), atol=1e-5, rtol=0)
    y[..., 4:8] += 1.0
    assert torch.allclose(y[..., 4:8], F.linear(x, w)[..., 4:8] + 1.0, atol=1e-5, rtol=0)


def test_per_row_lora_slots_match_transformers(models_dir: Path) -> None:
    loaded = load_model(ModelSettings(id="tiny:1", matmul_dtype="float32"), models_dir)
    inject_lora(loaded.model, LoraConfig(rank=4, targets=("q_proj", "v_proj", "down_proj"), top_layers=0))
    generator = torch.Generator().manual_seed(0)
    loras = []
    for _ in range(3):
        w = random_weights(loaded.model, generator)
        loras.append({k: (torch.randn(v.shape, generator=generator) * 0.5 if k.endswith("lora_B") else v)
                      for k, v in w.items()})
    direct = DirectForward.build(loaded.model, bf16=False)
    assert direct is not None
    stacks = stack_weights(loaded.model, loras)
    index = torch.tensor([2, 0, 3, 1])  # row 1: no LoRA; the others each their own
    with use_rows(loaded.model, gather_rows(stacks, index)):
        _compare(loaded, direct, atol=1e-5)
        ids, mask, positions = left_padded(loaded, PROMPTS)
        with_lora = direct(ids, mask, positions, new_cache())
    base = direct(ids, mask, positions, new_cache())
    assert torch.equal(with_lora[1], base[1])  # slot 0 is the base model
    assert not torch.allclose(with_lora[0], base[0])  # a LoRA slot changes its row


def test_bfloat16_fuses_without_growing_memory(models_dir: Path) -> None:
    loaded = load_model(ModelSettings(id="tiny:2"), models_dir)
    if loaded.matmul_dtype != "bfloat16":
        pytest.skip("this CPU or torch build decodes in float32")
    attn = loaded.model.model.layers[0].self_attn
    assert packed_weight(attn.q_proj) is not None and packed_weight(attn.o_proj) is not None
    direct = DirectForward.build(loaded.model, bf16=True)
    assert direct is not None
    # q/k/v (and gate/up) are packed once, fused; their separate copies are gone; o_proj keeps its own.
    assert packed_weight(attn.q_proj) is None and packed_weight(attn.o_proj) is not None
    # The same bfloat16 products as transformers' packed layers: equal up to rounding of a fused product.
    reference = load_model(ModelSettings(id="tiny:2"), models_dir)
    ids, mask, positions = left_padded(loaded, PROMPTS)
    ref = _run(_transformers(reference), ids, mask, positions, steps=12)
    got = _run(direct, ids, mask, positions, steps=12)
    for a, b in zip(ref, got, strict=True):
        assert ((a - b).abs().max() / a.std()).item() < 1e-3


def _text(loaded: LoadedModel, settings: ModelSettings) -> list[str]:
    async def go() -> list[str]:
        worker = ModelWorker(loaded, settings)
        worker.start()
        try:
            async def one(text: str, delay: float) -> str:
                await asyncio.sleep(delay)
                return "".join([d async for d in worker.submit(list(loaded.tokenizer(text)["input_ids"]))])
            # Staggered: later rows join a batch that is already decoding (cache merge, padding).
            return list(await asyncio.gather(*(one(t, 0.01 * i) for i, t in enumerate(PROMPTS))))
        finally:
            await worker.stop()
    return asyncio.run(go())


def test_worker_text_is_the_same_with_or_without_it(models_dir: Path) -> None:
    settings = ModelSettings(id="tiny:0", matmul_dtype="float32", max_new_tokens=24)
    plain = _text(load_model(settings, models_dir), settings.model_copy(update={"direct_forward": False}))
    direct = _text(load_model(settings, models_dir), settings)
    assert direct == plain and all(direct)


def test_declines_what_it_does_not_cover(models_dir: Path) -> None:
    loaded = load_model(ModelSettings(id="tiny:3", matmul_dtype="float32"), models_dir)
    loaded.model.config.attention_bias = True
    assert DirectForward.build(loaded.model, bf16=False) is None
    loaded.model.config.attention_bias = False
    loaded.model.config.rope_parameters = {"rope_type": "llama3", "rope_theta": 10000.0}
    assert DirectForward.build(loaded.model, bf16=False) is None


@pytest.mark.real_model
def test_real_model_greedy_text_is_unchanged(models_dir: Path) -> None:
    """The embedded SmolLM2 in the precision the engine chooses: the same greedy tokens either way."""
    settings = ModelSettings(max_new_tokens=32)
    loaded = load_model(settings, models_dir)
    ids, mask, positions = left_padded(loaded, PROMPTS[:2])
    ref = _run(_transformers(loaded), ids, mask, positions, steps=32)
    direct = DirectForward.build(loaded.model, bf16=loaded.matmul_dtype == "bfloat16")
    assert direct is not None
    got = _run(direct, ids, mask, positions, steps=32)
    assert [int(t) for a in ref for t in a.argmax(-1)] == [int(t) for b in got for t in b.argmax(-1)]
