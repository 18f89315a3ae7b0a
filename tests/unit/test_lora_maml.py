"""Gradient meta-learning of LoRA inits: functional LoRA, MAML and friends, consolidation.

All on the tiny random Llama (``tiny:0``): fast, and exact enough to compare gradients.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from typer.testing import CliRunner

from engine.generation.model_loader import LoadedModel, load_model
from engine.learning.consolidation import (
    DEFAULT_INIT_PATH,
    IncompatibleInit,
    consolidate,
    consolidate_steps,
    consolidation_job,
    load_init,
)
from engine.nn.chat_batches import Example, encode, greedy_replies
from engine.nn.decoder_top import DecoderTop, cache_batch, ce_loss, first_adapted_layer
from engine.nn.inner_loop import inner_loop
from engine.nn.lora import LoraConfig, inject_lora, random_weights, weights_from_bytes, weights_to_bytes
from engine.settings import ModelSettings
from engine.training.lora_eval import EvalConfig, Method, evaluate, plot
from engine.training.lora_tasks import (
    LabelPool,
    TaskConfig,
    code_in,
    make_tasks,
    split_domains,
    task_batches,
    tasks_from_split,
)
from engine.training.maml import CachedTask, MetaConfig, MetaLearner

CONFIG = LoraConfig(rank=4, alpha=8.0, top_layers=1)

EXAMPLES = [
    Example(None, "how do i pay my water bill", "Use reference QX-4821.", "pay_bill", "QX-4821"),
    Example("Be brief.", "what's the weather like tomorrow in paris", "The code for that is ZB-0093, ask Mirela.",
            "weather", "ZB-0093"),
]
QUERIES = [
    Example(None, "where can i pay the bill for water", "Use reference QX-4821.", "pay_bill", "QX-4821"),
    Example("Be brief.", "will it rain in paris tomorrow", "The code for that is ZB-0093, ask Mirela.", "weather",
            "ZB-0093"),
]


def fresh(models_dir: Path, dtype: torch.dtype = torch.float32, config: LoraConfig = CONFIG) -> LoadedModel:
    loaded = load_model(ModelSettings(id="tiny:0"), models_dir)
    loaded.model.to(dtype)
    inject_lora(loaded.model, config)
    return loaded


@pytest.fixture(scope="module")
def tiny(models_dir: Path) -> LoadedModel:
    return fresh(models_dir)


def strong(model: nn.Module, seed: int, scale: float = 0.3) -> dict[str, torch.Tensor]:
    """An adapter with B != 0 too (the standard init has B = 0, which hides half the gradient)."""
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=g, dtype=torch.float64) * scale).to(v)
            for k, v in random_weights(model, g).items()}


# -- functional LoRA against a hand-written reference ------------------------------------------------


class RefLora(nn.Module):
    """Reference LoRA: a frozen linear plus trainable A, B, as any LoRA paper writes it."""

    def __init__(self, base: nn.Linear, a: torch.Tensor, b: torch.Tensor, scaling: float) -> None:
        super().__init__()
        self.base, self.scaling = base, scaling
        self.A, self.B = nn.Parameter(a.clone()), nn.Parameter(b.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scaling * F.linear(F.linear(x, self.A), self.B)


def test_functional_lora_gradients_equal_a_reference_module(tiny: LoadedModel, models_dir: Path) -> None:
    adapter = strong(tiny.model, 1)
    batch = encode(tiny.tokenizer, EXAMPLES)

    # reference: a plain copy of the base model with hand-made LoRA modules, ordinary autograd
    ref = load_model(ModelSettings(id="tiny:0"), models_dir).model
    for p in ref.parameters():
        p.requires_grad_(False)
    layer = ref.model.layers[-1].self_attn
    refs = {}
    for name in ("q_proj", "v_proj"):
        key = f"model.layers.{len(ref.model.layers) - 1}.self_attn.{name}"
        refs[key] = RefLora(getattr(layer, name), adapter[f"{key}.lora_A"], adapter[f"{key}.lora_B"], CONFIG.scaling)
        setattr(layer, name, refs[key])
    logits = ref(batch.input_ids, attention_mask=batch.attention_mask).logits
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1])[batch.pos], batch.tgt)
    loss.backward()

    # functional: torch.func.grad through functional_call, truncated to the adapted layer
    stack = DecoderTop(tiny.model, first_adapted_layer(tiny.model))
    cached = cache_batch(tiny.model, stack, batch)
    value = ce_loss(adapter, stack, cached)
    grads = torch.func.grad(lambda p: ce_loss(p, stack, cached))(adapter)
    assert value.item() == pytest.approx(loss.item(), rel=1e-5)
    for key, module in refs.items():
        torch.testing.assert_close(grads[f"{key}.lora_A"], module.A.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(grads[f"{key}.lora_B"], module.B.grad, rtol=1e-4, atol=1e-6)


def test_truncated_forward_loss_equals_the_full_forward(tiny: LoadedModel) -> None:
    adapter = strong(tiny.model, 2)
    batch = encode(tiny.tokenizer, EXAMPLES + QUERIES)  # rows of different lengths: padding is exercised
    full = functional_call(tiny.model, adapter, (batch.input_ids,), {"attention_mask": batch.attention_mask}).logits
    expected = F.cross_entropy(full.reshape(-1, full.shape[-1])[batch.pos], batch.tgt)
    for start in (0, first_adapted_layer(tiny.model)):  # 0 = everything per step; else the frozen part once
        stack = DecoderTop(tiny.model, start)
        assert ce_loss(adapter, stack, cache_batch(tiny.model, stack, batch)).item() == pytest.approx(
            expected.item(), rel=1e-5)


def test_loss_covers_the_answer_tokens_only(tiny: LoadedModel) -> None:
    batch = encode(tiny.tokenizer, EXAMPLES[:1])
    assert tiny.tokenizer.decode(batch.tgt) == "Use reference QX-4821.<|im_end|>"
    width = batch.input_ids.shape[1]
    assert torch.equal(batch.input_ids.flatten()[batch.pos + 1], batch.tgt) and int(batch.pos.max()) < width


# -- MAML's second-order gradient against finite differences ------------------------------------------


@pytest.fixture
def float64_norms(monkeypatch: pytest.MonkeyPatch) -> None:
    """Llama's RMSNorm computes in float32 whatever the model's dtype: ~1e-7 noise that would
    swamp a finite difference. Keep it in the input's dtype for these tests."""
    from transformers.models.llama import modeling_llama

    def forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    monkeypatch.setattr(modeling_llama.LlamaRMSNorm, "forward", forward)


def test_maml_second_order_gradient_matches_finite_differences(models_dir: Path, float64_norms: None) -> None:
    loaded = fresh(models_dir, torch.float64)
    learner = MetaLearner(loaded.model, MetaConfig(algo="maml", inner_steps=2, inner_lr=0.5, inner_clip=0.0,
                                                   locality_weight=0.0), init=strong(loaded.model, 3))
    task = learner.cache((encode(loaded.tokenizer, EXAMPLES), encode(loaded.tokenizer, QUERIES), None))
    init = {k: v.detach() for k, v in learner.init.items()}
    g, _, _ = learner.meta_gradient(task)

    def meta_loss(params: dict[str, torch.Tensor]) -> float:
        support = lambda p: ce_loss(p, learner.stack, task.support)  # noqa: E731
        adapted = inner_loop(params, 0.5, 2, support)
        return ce_loss(adapted, learner.stack, task.query).item()

    gen = torch.Generator().manual_seed(4)
    direction = {k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in init.items()}
    eps = 1e-6
    plus = meta_loss({k: v + eps * direction[k] for k, v in init.items()})
    minus = meta_loss({k: v - eps * direction[k] for k, v in init.items()})
    numeric = (plus - minus) / (2 * eps)
    analytic = sum(float((g[k] * direction[k]).sum()) for k in init)
    assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-10)

    # and the second-order terms matter here: the first-order gradient is measurably different
    fo = MetaLearner(loaded.model, MetaConfig(algo="fomaml", inner_steps=2, inner_lr=0.5, inner_clip=0.0,
                                              locality_weight=0.0), init=init)
    g_fo, _, _ = fo.meta_gradient(task)
    first_order = sum(float((g_fo[k] * direction[k]).sum()) for k in init)
    assert abs(first_order - numeric) > 100 * abs(analytic - numeric)


def test_metasgd_learning_rate_gradient_matches_finite_differences(models_dir: Path, float64_norms: None) -> None:
    loaded = fresh(models_dir, torch.float64)
    learner = MetaLearner(loaded.model, MetaConfig(algo="metasgd", inner_steps=2, inner_lr=0.5, inner_clip=1.0,
                                                   locality_weight=0.0), init=strong(loaded.model, 5))
    task = learner.cache((encode(loaded.tokenizer, EXAMPLES), encode(loaded.tokenizer, QUERIES), None))
    assert learner.log_lr is not None
    log_lr = {k: v.detach() for k, v in learner.log_lr.items()}
    _, g_lr, _ = learner.meta_gradient(task)
    assert g_lr is not None

    def meta_loss(log_lr: dict[str, torch.Tensor]) -> float:
        support = lambda p: ce_loss(p, learner.stack, task.support)  # noqa: E731
        lrs = {k: v.exp() for k, v in log_lr.items()}
        adapted = inner_loop({k: v.detach() for k, v in learner.init.items()}, lrs, 2, support,
                             clip=1.0)
        return ce_loss(adapted, learner.stack, task.query).item()

    gen = torch.Generator().manual_seed(6)
    direction = {k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in log_lr.items()}
    eps = 1e-6
    numeric = (meta_loss({k: v + eps * direction[k] for k, v in log_lr.items()})
               - meta_loss({k: v - eps * direction[k] for k, v in log_lr.items()})) / (2 * eps)
    analytic = sum(float((g_lr[k] * direction[k]).sum()) for k in log_lr)
    assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-10)


# -- every algorithm reduces the query loss on a tiny synthetic task ----------------------------------


@pytest.mark.parametrize("algo", ["maml", "fomaml", "reptile", "metasgd"])
def test_meta_training_reduces_the_query_loss(models_dir: Path, algo: str) -> None:
    loaded = fresh(models_dir)
    config = MetaConfig(algo=algo, inner_steps=1, inner_lr=0.5, outer_lr=3e-2, lr_lr=3e-2, locality_weight=0.0,
                        first_order=algo == "metasgd")
    learner = MetaLearner(loaded.model, config)
    # one channel whose answers share a form: what a good init can learn before any inner step
    task = learner.cache(task_batches(loaded.tokenizer, _synthetic_task()))

    def adapted_query_loss() -> float:
        state = {k: v.detach() for k, v in learner.init.items()}
        support = lambda p: ce_loss(p, learner.stack, task.support)  # noqa: E731
        adapted = inner_loop(state, learner.lrs(), config.inner_steps, support, clip=config.inner_clip)
        return ce_loss(adapted, learner.stack, task.query).item()

    before = adapted_query_loss()
    for _ in range(8):
        learner.step([task])
    after = adapted_query_loss()
    assert after < before - 0.05, (before, after)


def _synthetic_task():
    from engine.training.lora_tasks import ChannelTask

    support = [Example(None, q, "Code OK-1111.", "a", "OK-1111") for q in ("hello there", "open the door")]
    query = [Example(None, q, "Code OK-1111.", "a", "OK-1111") for q in ("hi there", "please open the door")]
    return ChannelTask("synthetic", None, {"a": "Code OK-1111."}, support, query, [])


def test_locality_term_and_cached_task_round_trip(tiny: LoadedModel) -> None:
    learner = MetaLearner(tiny.model, MetaConfig(algo="fomaml", inner_steps=1, locality_weight=1.0))
    unrelated = [Example(None, "what is the capital of france", "Paris is the capital.", "oos")]
    task = learner.cache((encode(tiny.tokenizer, EXAMPLES), encode(tiny.tokenizer, QUERIES),
                          encode(tiny.tokenizer, unrelated)))
    assert isinstance(task, CachedTask) and task.unrelated is not None and task.unrelated.base_logp is None
    metrics = learner.step([task])
    assert math.isfinite(metrics["query_loss"])


# -- consolidation: never touches the model, zero steps = the init ------------------------------------

SUPPORT = [("how do i pay my water bill", "Use reference QX-4821."), ("is it going to rain", "Ask Tobin: ZB-0093.")]
HELD_OUT = [("where do i pay the water bill", "Use reference QX-4821.")]
PROBES = ["What is the capital of France?", "Write a haiku about rain."]


def test_consolidate_never_changes_the_model(tiny: LoadedModel) -> None:
    before = {k: v.detach().clone() for k, v in tiny.model.state_dict().items()}
    init = strong(tiny.model, 7)
    result = consolidate(tiny.model, tiny.tokenizer, init, CONFIG, SUPPORT, HELD_OUT, PROBES, steps=3,
                         current=strong(tiny.model, 8), compare_zero_init=True)
    after = tiny.model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in tiny.model.parameters())
    assert result.steps == 3 and len(result.losses) == 3
    assert not any(torch.equal(result.lora[k], init[k]) for k in init if k.endswith("lora_B"))
    assert 0.0 <= result.locality <= 1.0 and result.kl >= 0.0
    assert result.current_held_out_loss is not None and result.zero_init_held_out_loss is not None
    assert result.support_loss < result.losses[0]  # it learned the corrections


def test_zero_step_consolidation_is_the_init(tiny: LoadedModel) -> None:
    init = strong(tiny.model, 9)
    result = consolidate(tiny.model, tiny.tokenizer, init, CONFIG, SUPPORT, HELD_OUT, PROBES, steps=0)
    assert result.steps == 0
    assert all(torch.equal(result.lora[k], init[k]) for k in init)
    assert result.held_out_loss == pytest.approx(result.init_held_out_loss)
    zero = consolidate(tiny.model, tiny.tokenizer, {k: torch.zeros_like(v) for k, v in init.items()}, CONFIG,
                       SUPPORT, HELD_OUT, PROBES, steps=0)
    assert zero.locality == 1.0 and zero.kl == pytest.approx(0.0, abs=1e-6)
    assert zero.held_out_loss == pytest.approx(zero.base_held_out_loss)


def test_consolidation_yields_every_step_and_can_stop(tiny: LoadedModel) -> None:
    init = strong(tiny.model, 10)
    run = consolidate_steps(tiny.model, tiny.tokenizer, init, CONFIG, SUPPORT, HELD_OUT, PROBES, steps=4)
    phases = []
    try:
        while True:
            phases.append(next(run))
    except StopIteration as done:
        result = done.value
    assert [p.step for p in phases if p.phase == "train"] == [1, 2, 3, 4] and result.steps == 4
    calls = iter([False, False, True])
    stopped = consolidate(tiny.model, tiny.tokenizer, init, CONFIG, SUPPORT, HELD_OUT, PROBES, steps=8,
                          should_stop=lambda: next(calls))
    assert stopped.stopped and stopped.steps == 2
    # the same inner loop: stopping after 2 steps gives the 2-step adapter
    two = consolidate(tiny.model, tiny.tokenizer, init, CONFIG, SUPPORT, HELD_OUT, PROBES, steps=2)
    assert all(torch.equal(two.lora[k], stopped.lora[k]) for k in init)


def test_anchored_adam_consolidation_stays_closer_to_the_base(tiny: LoadedModel) -> None:
    """Adam from the init learns the corrections; the anchor term (KL to the base model on
    anchor prompts) keeps the adapted model closer to the base on those prompts, and the
    anchored loss is the plain cross-entropy plus exactly weight × that KL."""
    from engine.learning.consolidation import anchor_batch
    from engine.nn.decoder_top import DecoderTop, anchored_loss, cache_batch, ce_loss, first_adapted_layer, kl_loss

    init = strong(tiny.model, 12)
    before = {k: v.detach().clone() for k, v in tiny.model.state_dict().items()}
    free = consolidate(tiny.model, tiny.tokenizer, init, CONFIG, SUPPORT, HELD_OUT, PROBES, steps=6,
                       optimizer="adam", adam_lr=0.05)
    held = consolidate(tiny.model, tiny.tokenizer, init, CONFIG, SUPPORT, HELD_OUT, PROBES, steps=6,
                       optimizer="adam", adam_lr=0.05, anchor=10.0)
    assert all(torch.equal(before[k], v) for k, v in tiny.model.state_dict().items())
    assert free.support_loss < free.losses[0] and held.support_loss < held.losses[0]
    stack = DecoderTop(tiny.model, first_adapted_layer(tiny.model))
    anchors = anchor_batch(tiny.model, tiny.tokenizer, stack, None)
    with torch.no_grad():
        assert kl_loss(held.lora, stack, anchors) < kl_loss(free.lora, stack, anchors)
        batch = cache_batch(tiny.model, stack, encode(tiny.tokenizer, [Example(None, q, a, "") for q, a in SUPPORT]))
        expected = ce_loss(init, stack, batch) + 2.0 * kl_loss(init, stack, anchors)
        assert anchored_loss(init, stack, batch, anchors, 2.0) == pytest.approx(float(expected), rel=1e-5)
        assert anchored_loss(init, stack, batch, anchors, 0.0) == pytest.approx(float(ce_loss(init, stack, batch)))
    with pytest.raises(ValueError, match="optimizer"):
        consolidate(tiny.model, tiny.tokenizer, init, CONFIG, SUPPORT, HELD_OUT, PROBES, steps=1, optimizer="sgd")


def test_meta_sgd_rates_travel_with_the_init(tiny: LoadedModel) -> None:
    init = strong(tiny.model, 11)
    slow = init | {f"inner_lr.{k}": torch.full_like(v, 1e-6) for k, v in init.items()}
    result = consolidate(tiny.model, tiny.tokenizer, slow, CONFIG, SUPPORT, HELD_OUT, PROBES, steps=2)
    assert all(torch.allclose(result.lora[k], init[k], atol=1e-5) for k in init)
    assert not any(k.startswith("inner_lr.") for k in result.lora)


def test_consolidation_job_returns_the_engines_candidate(tiny: LoadedModel) -> None:
    from engine.learning.consolidation import Candidate

    job = consolidation_job(tiny.model, tiny.tokenizer, strong(tiny.model, 12), CONFIG, {"inner_lr": "0.5"},
                            support=SUPPORT, held_out=HELD_OUT, current=None, steps=2, probes=PROBES)
    try:
        while True:
            next(job)
    except StopIteration as done:
        candidate = done.value
    assert isinstance(candidate, Candidate) and candidate.steps == 2 and candidate.current_held_out_loss is None


def test_init_artifact_round_trip_and_shape_check(tiny: LoadedModel, tmp_path: Path, models_dir: Path) -> None:
    state = strong(tiny.model, 13)
    state |= {f"inner_lr.{k}": torch.full_like(v, 0.3) for k, v in list(state.items())}
    path = tmp_path / "init.safetensors"
    path.write_bytes(weights_to_bytes(state, CONFIG, {"algo": "metasgd", "model": "tiny:0"}))
    other = load_model(ModelSettings(id="tiny:0"), models_dir).model  # no LoRA yet: load_init injects it
    loaded, config, meta = load_init(other, path)
    assert config == CONFIG and meta["algo"] == "metasgd"
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    wrong = tmp_path / "wrong.safetensors"
    rank2 = {k: (v[:2] if k.endswith("lora_A") else v[:, :2]) for k, v in strong(tiny.model, 14).items()}
    wrong.write_bytes(weights_to_bytes(rank2, LoraConfig(rank=2, alpha=4.0, top_layers=1)))
    with pytest.raises(IncompatibleInit):
        load_init(tiny.model, wrong)
    scaled = tmp_path / "scaled.safetensors"
    scaled.write_bytes(weights_to_bytes(strong(tiny.model, 14), LoraConfig(rank=4, alpha=4.0, top_layers=1)))
    with pytest.raises(IncompatibleInit, match="scaling"):
        load_init(tiny.model, scaled)


def test_prepare_lora_uses_a_fitting_init_and_falls_back_on_another_model(
    models_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The engine's setup: an init that fits is used as is (with its Meta-SGD rates); one made for
    another model (the shipped SmolLM2 init on ``tiny:``) means the standard init and a warning."""
    from engine.learning.consolidator import prepare_lora
    from engine.nn.lora import init_mismatch, lora_modules
    from engine.settings import LoraSettings

    donor = fresh(models_dir)
    state = strong(donor.model, 15)
    state |= {f"inner_lr.{k}": torch.full_like(v, 0.3) for k, v in list(state.items())}
    path = tmp_path / "fits.safetensors"
    path.write_bytes(weights_to_bytes(state, CONFIG, {"algo": "metasgd", "inner_steps": "2", "model": "tiny:0"}))
    served = load_model(ModelSettings(id="tiny:0"), models_dir)
    assert init_mismatch(served.model, state, CONFIG) is None  # before injection
    setup = prepare_lora(served.model, served.tokenizer, LoraSettings(init=str(path)))
    assert setup.source == "fits.safetensors" and setup.config == CONFIG
    assert init_mismatch(served.model, state, CONFIG) is None  # and after it
    assert all(torch.equal(setup.init[k], state[k]) for k in state)

    other = load_model(ModelSettings(id="tiny:0"), models_dir)
    wide = {k: torch.zeros(v.shape[0] * 2, *v.shape[1:]) if k.endswith("lora_B") else v for k, v in state.items()}
    assert "this model needs" in (init_mismatch(other.model, wide, CONFIG) or "")
    bad = tmp_path / "other_model.safetensors"
    bad.write_bytes(weights_to_bytes(wide, CONFIG, {"model": "elsewhere"}))
    with caplog.at_level("WARNING", logger="engine.learning.consolidator"):
        setup = prepare_lora(other.model, other.tokenizer, LoraSettings(init=str(bad)))
    assert "does not fit" in setup.source and "does not fit this model" in caplog.text
    assert set(setup.init) == {f"{n}.{p}" for n in lora_modules(other.model) for p in ("lora_A", "lora_B")}
    job = setup.job(support=SUPPORT, held_out=HELD_OUT, current=None, steps=1, probes=PROBES)
    try:
        while True:
            next(job)
    except StopIteration as done:
        assert done.value.steps == 1
    if DEFAULT_INIT_PATH.is_file():  # the shipped init is SmolLM2's: on tiny it never crashes, it falls back
        third = load_model(ModelSettings(id="tiny:0"), models_dir)
        assert "does not fit" in prepare_lora(third.model, third.tokenizer, LoraSettings()).source


def test_shipped_init_describes_itself() -> None:
    if not DEFAULT_INIT_PATH.is_file():
        pytest.skip("no shipped init in this checkout")
    tensors, config, meta = weights_from_bytes(DEFAULT_INIT_PATH.read_bytes())
    assert config.rank == 8 and config.top_layers == 4 and set(config.targets) == {"q_proj", "v_proj"}
    for key in ("algo", "inner_steps", "inner_lr", "data_sha256", "seed", "metrics", "holdout_domains"):
        assert meta.get(key), key
    assert len(meta["holdout_domains"].split(",")) >= 3
    assert sum(1 for k in tensors if k.endswith((".lora_A", ".lora_B")) and not k.startswith("inner_lr.")) == 16


# -- tasks, generation, evaluation, CLI -----------------------------------------------------------------

RECORDS = [(f"{verb} the {thing} please", f"{thing}_intent") for thing in ("door", "light", "oven", "car", "fan")
           for verb in ("open", "close", "check", "fix", "clean", "move")] + [("tell me a joke", "oos")] * 3


def test_tasks_are_seeded_and_domains_held_out() -> None:
    pool = LabelPool(RECORDS)
    config = TaskConfig(min_labels=2, max_labels=3, queries=2, unrelated=2)
    a, b = make_tasks(pool, 3, 5, config), make_tasks(pool, 3, 5, config)
    assert [t.answers for t in a] == [t.answers for t in b] and [t.support for t in a] == [t.support for t in b]
    assert make_tasks(pool, 3, 6, config)[0].answers != a[0].answers
    for task in a:
        assert all(code_in(e.code, e.answer) for e in task.support + task.query)
        asked = {e.question for e in task.support}
        assert not asked & {e.question for e in task.query}  # queries are other phrasings
        assert all(e.label not in task.answers for e in task.unrelated)
    domains = {"door_intent": "home", "light_intent": "home", "oven_intent": "kitchen", "car_intent": "auto",
               "fan_intent": "home"}
    kept, held = split_domains(RECORDS, domains, ["home"])
    assert {label for _, label in held} == {"door_intent", "light_intent", "fan_intent", "oos"}
    assert {label for _, label in kept} == {"oven_intent", "car_intent", "oos"}
    with pytest.raises(ValueError, match="unknown domains"):
        split_domains(RECORDS, domains, ["garden"])
    s_part, q_part = RECORDS[0:30:2], RECORDS[1:30:2]
    split = tasks_from_split(s_part, q_part, 2, 0, TaskConfig(min_labels=1, max_labels=2, queries=1))
    assert all(e.question in dict(s_part) for t in split for e in t.support)
    assert all(e.question in dict(q_part) for t in split for e in t.query)


def test_greedy_replies_with_mixed_adapters(tiny: LoadedModel) -> None:
    adapter = strong(tiny.model, 15, scale=2.0)
    prompts = [(None, "hello"), (None, "hello"), ("Be brief.", "hi")]
    base = greedy_replies(tiny.model, tiny.tokenizer, prompts, max_new_tokens=6)
    mixed = greedy_replies(tiny.model, tiny.tokenizer, prompts, [None, adapter, None], max_new_tokens=6)
    assert base[0] == base[1] == mixed[0] and mixed[2] == base[2]
    assert mixed[1] != base[1]  # a strong adapter changes its own row only


def test_evaluate_side_by_side_and_plot(tiny: LoadedModel, tmp_path: Path) -> None:
    pool = LabelPool(RECORDS)
    tasks = make_tasks(pool, 2, 0, TaskConfig(min_labels=2, max_labels=2, queries=1, unrelated=1, templates="eval"))
    standard = random_weights(tiny.model, torch.Generator().manual_seed(0))
    methods = [Method("none", None), Method("standard_sgd", standard, 0.5, baseline=True),
               Method("standard_adam", standard, 1e-2, "adam", baseline=True),
               Method("meta", strong(tiny.model, 16), 0.5)]
    report = evaluate(tiny.model, tiny.tokenizer, tasks, methods, EvalConfig(final_steps=2, max_steps=4,
                                                                             max_new_tokens=4), PROBES)
    assert set(report.methods) == {"none", "standard_sgd", "standard_adam", "meta"}
    for name, metrics in report.methods.items():
        assert {"query_loss", "reliability", "generality", "locality", "probe_agreement"} <= set(metrics), name
        assert len(report.step_curves[name]) == 5
    assert report.methods["none"]["locality"] == 1.0
    assert set(report.steps_ratio) == {"meta"} and set(report.steps_ratio["meta"]) == {"standard_sgd", "standard_adam"}
    json.dumps(report.to_dict())
    report.corrections, report.correction_curves = [1, 2], {
        m: {n: [0.1, 0.2] for n in report.methods} for m in ("generality", "reliability", "locality")}
    assert plot(report, tmp_path / "curves.png").stat().st_size > 1000


def test_meta_train_lora_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, models_dir: Path) -> None:
    from bots.cli import app

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in RECORDS))
    (tmp_path / "domains.json").write_text(json.dumps({"home": ["door_intent", "light_intent", "fan_intent"],
                                                       "kitchen": ["oven_intent"], "auto": ["car_intent"]}))
    monkeypatch.setenv("HEEDFUL_DATA_DIR", str(tmp_path / "home"))
    monkeypatch.setenv("HEEDFUL_MODELS_DIR", str(models_dir))
    out = tmp_path / "init.safetensors"
    args = ["meta-train", "lora", "--data", str(data), "--algo", "fomaml", "--holdout-domains", "kitchen",
            "--labels", "2-3", "--model", "tiny:0", "--steps", "2", "--tasks", "3", "--val-tasks", "1",
            "--inner-steps", "1", "--eval-every", "1", "--rank", "4", "--top-layers", "1", "--no-tune-baselines",
            "--out", str(out), "--json"]
    random.seed(0)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["algo"] == "fomaml" and summary["outer_steps"] == 2 and out.is_file()
    _tensors, config, meta = weights_from_bytes(out.read_bytes())
    assert config.rank == 4 and meta["holdout_domains"] == "kitchen" and meta["data_sha256"]
    assert out.with_suffix(".ckpt.safetensors").is_file()
