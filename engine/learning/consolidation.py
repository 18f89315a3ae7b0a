"""Consolidation: a channel's corrections become candidate LoRA weights, in a few inner steps.

The engine's model worker calls this between decode steps (it is blocking work):

- ``consolidate_steps(...)`` is a generator that yields after each unit of work (caching
  the frozen layers' output, each inner SGD step, each evaluation) and returns a
  ``ConsolidationResult``; ``consolidate(...)`` runs it to the end, or until
  ``should_stop()`` says so;
- ``consolidation_job(...)`` adapts it to the engine's ``Consolidator`` (returns its
  ``Candidate``);
- ``load_default_init(model)`` loads the shipped meta-learned initialisation.

It starts from the meta-learned init (with Meta-SGD's per-parameter inner learning rates
when the init has them), runs the same inner loop as meta-training on the support set
(the corrections), and measures the candidate on the held-back corrections against the
base model (and the current LoRA version), plus locality: on unrelated probe prompts, how
often the adapted model still predicts the base model's own greedy reply token by token
(teacher-forced agreement in [0, 1]) and the mean KL(base ‖ adapted).

It never changes the model: every forward substitutes the LoRA with
``torch.func.functional_call`` and base weights and the ``LoraLinear`` parameters are
left as they were.
"""

from __future__ import annotations

import functools
import math
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..nn.chat_batches import Example, chat_prompt_ids, encode, encode_ids, greedy_replies
from ..nn.decoder_top import (
    Cached,
    DecoderTop,
    anchored_loss,
    cache_batch,
    ce_loss,
    first_adapted_layer,
    wide,
    with_base_logp,
)
from ..nn.inner_loop import inner_loop, optimizer_step, split_state
from ..nn.lora import LoraConfig, LoraWeights, inject_lora, lora_modules, random_weights, weights_from_bytes

__all__ = [
    "Candidate",
    "DEFAULT_INIT_PATH",
    "DEFAULT_PROBES",
    "DEFAULT_ANCHORS",
    "anchor_batch",
    "ConsolidationResult",
    "IncompatibleInit",
    "baseline_rate",
    "StepInfo",
    "consolidate",
    "consolidate_steps",
    "consolidation_job",
    "load_default_init",
    "load_init",
    "locality",
]

DEFAULT_INIT_PATH = Path(__file__).resolve().parent / "artifacts" / "lora_init.safetensors"

# Unrelated prompts whose replies LoRA weights must leave as the base model gave them.
DEFAULT_PROBES: tuple[str, ...] = (
    "What is the capital of France?",
    "Write a haiku about autumn rain.",
    "How many legs does a spider have?",
    "Explain photosynthesis in one sentence.",
    "What is 12 times 7?",
    "Give me a synonym for happy.",
    "Who wrote Romeo and Juliet?",
    "What is the boiling point of water in Celsius?",
    "Suggest a name for a pet goldfish.",
    "Translate 'good morning' into Spanish.",
    "Why is the sky blue?",
    "List three primary colours.",
)


# Other unrelated prompts, never the probes above: an anchored inner loop keeps the adapted
# model's next-token distributions on these close to the base model's (``anchor_batch``), and the
# promotion gate then judges locality on prompts the training never saw.
DEFAULT_ANCHORS: tuple[str, ...] = (
    "What year did the first person walk on the moon?",
    "Write two lines about the sea at night.",
    "How many days are there in a leap year?",
    "Describe a rainbow to a child.",
    "What is the square root of 81?",
    "Give me an antonym for cold.",
    "Who painted the Mona Lisa?",
    "What gas do plants take in from the air?",
    "Suggest a name for a friendly robot.",
    "How do you say thank you in French?",
    "Why do leaves change colour in autumn?",
    "Name three musical instruments.",
)


class IncompatibleInit(ValueError):
    """The init artifact does not fit this model (another model, or other LoRA layers)."""


@dataclass
class StepInfo:
    """What ``consolidate_steps`` yields: the phase, and the step's support loss when training."""

    phase: str  # "prepare" | "train" | "evaluate"
    step: int = 0
    loss: float = float("nan")


@dataclass
class ConsolidationResult:
    lora: LoraWeights  # the candidate (detached, on the model's device and dtype)
    support_loss: float  # after training (nan when there was nothing to train on)
    held_out_loss: float  # the candidate on the held-back corrections (nan when none)
    base_held_out_loss: float  # the base model (no LoRA) there
    init_held_out_loss: float  # the init itself, before any step
    zero_init_held_out_loss: float | None  # standard LoRA init trained the same steps (when asked)
    current_held_out_loss: float | None  # the channel's current LoRA (when given)
    locality: float  # teacher-forced agreement with the base model's greedy probe replies, in [0, 1]
    kl: float  # mean KL(base ‖ candidate) of next-token distributions on the probe replies
    steps: int
    seconds: float
    stopped: bool = False  # ``should_stop`` ended the training early
    losses: list[float] = field(default_factory=list)  # support loss before each step

    def metrics(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("lora", "losses")}
        out["losses"] = [round(x, 4) for x in self.losses]
        return out


# -- the init ------------------------------------------------------------------------------


def load_init(model: nn.Module, path: str | Path) -> tuple[LoraWeights, LoraConfig, dict[str, str]]:
    """An init artifact, checked against ``model`` (LoRA layers injected when the model has none).

    The returned dict holds the LoRA tensors and, for Meta-SGD inits, the per-parameter
    inner learning rates under ``inner_lr.<key>`` (``maml.split_state`` separates them).
    Raises ``FileNotFoundError``, or ``IncompatibleInit`` when the shapes do not fit.
    """
    tensors, config, metadata = weights_from_bytes(Path(path).read_bytes())
    if not lora_modules(model):
        inject_lora(model, config)
    lora, _lrs = split_state(tensors)
    reference = {f"{n}.{p}": getattr(m, p) for n, m in lora_modules(model).items() for p in ("lora_A", "lora_B")}
    if set(lora) != set(reference):
        missing, extra = sorted(set(reference) - set(lora))[:3], sorted(set(lora) - set(reference))[:3]
        raise IncompatibleInit(f"init {Path(path).name} does not fit this model's LoRA layers "
                               f"(missing {missing}, unexpected {extra}); was it trained for {metadata.get('model')}?")
    for k, v in lora.items():
        if v.shape != reference[k].shape:
            raise IncompatibleInit(f"{k}: init has {tuple(v.shape)}, the model {tuple(reference[k].shape)}")
    scalings = {m.scaling for m in lora_modules(model).values()}
    if scalings != {config.scaling}:
        raise IncompatibleInit(f"init scaling {config.scaling} (alpha / rank) differs from the model's {scalings}")
    like = next(iter(reference.values()))
    out = {k: v.to(device=like.device, dtype=like.dtype) for k, v in tensors.items()}
    return out, config, metadata


def load_default_init(model: nn.Module) -> tuple[LoraWeights, LoraConfig, dict[str, str]]:
    """The shipped meta-learned init for the embedded SmolLM2 (see ``load_init``)."""
    return load_init(model, DEFAULT_INIT_PATH)


def baseline_rate(metadata: dict[str, str], key: str = "baseline_inner_lr") -> float:
    """A float rate from an init's metadata: ``key``, else its scalar ``inner_lr``, else 1.0."""
    for k in (key, "inner_lr"):
        try:
            return float(metadata[k])
        except (KeyError, ValueError):
            continue
    return 1.0


def _inner_settings(init: LoraWeights, metadata: dict[str, str], inner_lr: float | LoraWeights | None,
                    clip: float | None) -> tuple[LoraWeights, float | LoraWeights, float]:
    lora, lrs = split_state(init)
    lr: float | LoraWeights = inner_lr if inner_lr is not None else (
        lrs if lrs is not None else baseline_rate(metadata, "inner_lr"))
    return lora, lr, clip if clip is not None else float(metadata.get("inner_clip", "1.0"))


# -- locality probes (their frozen-layer pass and base replies are computed once per model) ----

_probe_cache: weakref.WeakKeyDictionary[nn.Module, OrderedDict[Any, Cached]] = weakref.WeakKeyDictionary()
_PROBE_CACHE_ENTRIES = 8  # per model: one per (probes, system prompt); each holds (tokens, vocab) log-probs


def probe_batch(model: nn.Module, tokenizer: Any, stack: DecoderTop, probes: Sequence[str], system: str | None,
                 max_new_tokens: int) -> Cached:
    key = (tuple(probes), system, max_new_tokens, stack.start)
    per_model = _probe_cache.setdefault(model, OrderedDict())
    if key in per_model:
        per_model.move_to_end(key)
    else:
        zero = {k: torch.zeros_like(v) for k, v in lora_state(model).items()}
        prompts = [(system, p) for p in probes]
        replies = greedy_replies(model, tokenizer, prompts, [zero] * len(probes), max_new_tokens=max_new_tokens,
                                 return_ids=True)
        # the generated ids themselves (re-tokenising decoded text need not give the same tokens)
        pairs = [(chat_prompt_ids(tokenizer, s, q), r or [tokenizer.eos_token_id])
                 for (s, q), r in zip(prompts, replies, strict=True)]
        per_model[key] = with_base_logp(model, stack, cache_batch(model, stack, encode_ids(tokenizer, pairs)))
        while len(per_model) > _PROBE_CACHE_ENTRIES:
            per_model.popitem(last=False)
    return per_model[key]


def anchor_batch(model: nn.Module, tokenizer: Any, stack: DecoderTop, system: str | None,
                 max_new_tokens: int = 16, anchors: Sequence[str] = DEFAULT_ANCHORS) -> Cached:
    """The anchors' base replies, cached with the base log-probs (what ``maml.anchored_loss`` holds to)."""
    return probe_batch(model, tokenizer, stack, anchors, system, max_new_tokens)


def lora_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{n}.{p}": getattr(m, p) for n, m in lora_modules(model).items() for p in ("lora_A", "lora_B")}


@torch.no_grad()
def locality(lora: LoraWeights, stack: DecoderTop, probes: Cached) -> tuple[float, float]:
    """(agreement, KL): how often the adapted model's top token is the base reply's token, and
    the mean KL(base ‖ adapted), over every token of the base model's greedy probe replies."""
    assert probes.base_logp is not None
    logp = F.log_softmax(wide(functional_call(stack, lora, probes.args())), dim=-1)  # (N, V)
    agree = (logp.argmax(-1) == probes.tgt).float().mean()
    kl = (probes.base_logp.exp() * (probes.base_logp - logp)).sum(-1).mean()
    return float(agree), float(kl)


# -- the consolidation -------------------------------------------------------------------------


def _chunks(model: nn.Module, tokenizer: Any, stack: DecoderTop, pairs: Sequence[tuple[str, str]],
            system: str | None, size: int) -> Generator[StepInfo, None, list[Cached]]:
    out = []
    for lo in range(0, len(pairs), size):
        examples = [Example(system, q, a, "") for q, a in pairs[lo : lo + size]]
        out.append(cache_batch(model, stack, encode(tokenizer, examples)))
        yield StepInfo("prepare")
    return out


def _mean_loss(lora: LoraWeights, stack: DecoderTop, batches: Sequence[Cached]) -> float:
    """Token-weighted mean cross-entropy over several cached batches."""
    if not batches:
        return float("nan")
    with torch.no_grad():
        total = sum(float(ce_loss(lora, stack, b)) * len(b.tgt) for b in batches)
    return total / sum(len(b.tgt) for b in batches)


@dataclass
class Candidate:
    """What one consolidation produced, and how it measured."""

    lora: LoraWeights
    held_out_loss: float
    base_held_out_loss: float
    current_held_out_loss: float | None
    locality: float
    steps: int
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)

    def beats(self, min_locality: float) -> tuple[bool, str]:
        reference = min(self.base_held_out_loss, self.current_held_out_loss or float("inf"))
        if self.locality < min_locality:
            return False, f"locality {self.locality:.3f} < {min_locality:.2f}"
        if not self.held_out_loss < reference:
            return False, f"held-out loss {self.held_out_loss:.3f} does not beat {reference:.3f}"
        return True, f"held-out loss {self.held_out_loss:.3f} < {reference:.3f}, locality {self.locality:.3f}"


def consolidate_steps(
    model: nn.Module,
    tokenizer: Any,
    init: LoraWeights,
    config: LoraConfig,
    support: Sequence[tuple[str, str]],
    held_out: Sequence[tuple[str, str]],
    probes: Sequence[str] = DEFAULT_PROBES,
    steps: int = 8,
    *,
    metadata: dict[str, str] | None = None,
    inner_lr: float | LoraWeights | None = None,
    clip: float | None = None,
    system: str | None = None,
    current: LoraWeights | None = None,
    compare_zero_init: bool = False,
    batch_size: int = 16,
    probe_tokens: int = 16,
    should_stop: Callable[[], bool] | None = None,
    optimizer: str = "meta",
    adam_lr: float = 0.03,
    anchor: float = 0.0,
) -> Generator[StepInfo, None, ConsolidationResult]:
    """Train a candidate from ``init`` on ``support`` and measure it; yields after each unit of work.

    ``support`` / ``held_out``: (question, answer) corrections; ``system``: the channel's
    system prompt (persona) as the engine renders it (None: the template's default).
    ``init`` may carry Meta-SGD rates as ``inner_lr.<key>`` entries; ``inner_lr`` and
    ``clip`` override them and the ``metadata`` (the artifact's ``inner_lr`` /
    ``inner_clip``). With more than ``batch_size`` corrections each step takes the next
    chunk of them. ``optimizer``: ``"meta"`` is the init's own inner loop (its Meta-SGD rates,
    clipped SGD), ``"adam"`` Adam at ``adam_lr`` from the init; ``anchor`` > 0 adds that
    weight × KL to the base model on the anchor prompts (``maml.anchored_loss``), which are
    not the probes that judge locality. When ``should_stop()`` turns true, training ends after the current step
    and the result (``stopped=True``) is measured as usual. Blocking (torch); call it from
    the model worker thread. Raises
    ``RuntimeError`` if a per-row LoRA batch is active on the model.
    """
    t0 = time.perf_counter()
    if optimizer not in ("meta", "adam"):
        raise ValueError(f"optimizer must be 'meta' or 'adam', not {optimizer!r}")
    if any(m.rows is not None for m in lora_modules(model).values()):
        raise RuntimeError("a mixed-LoRA batch is active on the model; consolidate between batches")
    del config  # the LoRA layers are already in the model; kept in the signature for callers' clarity
    like = next(iter(lora_modules(model).values())).lora_A  # LoRA weights live where the model's LoRA layers do
    init = {k: v.to(device=like.device, dtype=like.dtype) for k, v in init.items()}
    if current is not None:
        current = {k: v.to(device=like.device, dtype=like.dtype) for k, v in current.items()}
    if isinstance(inner_lr, dict):
        inner_lr = {k: v.to(device=like.device, dtype=like.dtype) for k, v in inner_lr.items()}
    lora, lrs, clip = _inner_settings(init, metadata or {}, inner_lr, clip)
    stack = DecoderTop(model, first_adapted_layer(model))
    with torch.no_grad():
        train = yield from _chunks(model, tokenizer, stack, support, system, batch_size)
        test = yield from _chunks(model, tokenizer, stack, held_out, system, batch_size)
        probe = probe_batch(model, tokenizer, stack, probes, system, probe_tokens) if probes else None
    yield StepInfo("prepare")

    anchors = anchor_batch(model, tokenizer, stack, system, probe_tokens) if anchor else None

    def loss_at(batch: Cached) -> Callable[[LoraWeights], torch.Tensor]:
        return lambda p: anchored_loss(p, stack, batch, anchors, anchor)

    losses: list[float] = []
    stopped = False
    params = {k: v.detach() for k, v in lora.items()}
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()} if optimizer == "adam" else {}
    opt = torch.optim.Adam(list(leaves.values()), lr=adam_lr) if leaves else None
    for step in range(steps if train else 0):  # the inner loop, one yield per step
        if should_stop is not None and should_stop():
            stopped = True
            break
        batch = train[step % len(train)]
        if opt is not None:
            losses.append(optimizer_step(opt, leaves, loss_at(batch)))
        else:
            params = inner_loop(params, lrs, 1, loss_at(batch), clip=clip,
                                on_step=lambda _i, loss, _p: losses.append(loss))
        yield StepInfo("train", step + 1, losses[-1])
    params = {k: v.detach().clone() for k, v in (leaves or params).items()}

    zero = {k: torch.zeros_like(v) for k, v in params.items()}
    held = _mean_loss(params, stack, test)
    base_held = _mean_loss(zero, stack, test)
    init_held = _mean_loss(lora, stack, test)
    current_held = _mean_loss(current, stack, test) if current is not None else None
    yield StepInfo("evaluate")
    agree, kl = locality(params, stack, probe) if probe is not None else (1.0, 0.0)  # no probe it would serve
    zero_init_held = None
    if compare_zero_init:
        std = random_weights(model, torch.Generator().manual_seed(0))
        std_lr = baseline_rate(metadata or {})
        for step in range(steps if train else 0):
            batch = train[step % len(train)]
            std = inner_loop(std, std_lr, 1, functools.partial(ce_loss, stack=stack, c=batch), clip=clip)
            yield StepInfo("evaluate", step + 1)
        zero_init_held = _mean_loss({k: v.detach() for k, v in std.items()}, stack, test)
    support_loss = _mean_loss(params, stack, train) if train else float("nan")
    return ConsolidationResult(
        lora=params, support_loss=support_loss, held_out_loss=held, base_held_out_loss=base_held,
        init_held_out_loss=init_held, zero_init_held_out_loss=zero_init_held, current_held_out_loss=current_held,
        locality=agree, kl=kl, steps=len(losses), seconds=time.perf_counter() - t0, stopped=stopped,
        losses=losses,
    )


def consolidate(
    model: nn.Module,
    tokenizer: Any,
    init: LoraWeights,
    config: LoraConfig,
    support: Sequence[tuple[str, str]],
    held_out: Sequence[tuple[str, str]],
    probes: Sequence[str] = DEFAULT_PROBES,
    steps: int = 8,
    **kwargs: Any,
) -> ConsolidationResult:
    """``consolidate_steps`` run to the end (blocking); same arguments, ``should_stop`` included."""
    run = consolidate_steps(model, tokenizer, init, config, support, held_out, probes, steps, **kwargs)
    while True:
        try:
            next(run)
        except StopIteration as done:
            result: ConsolidationResult = done.value
            return result


def consolidation_job(
    model: nn.Module,
    tokenizer: Any,
    init: LoraWeights,
    config: LoraConfig,
    metadata: dict[str, str],
    *,
    support: list[tuple[str, str]],
    held_out: list[tuple[str, str]],
    current: LoraWeights | None,
    steps: int,
    system: str | None = None,
    probes: Sequence[str] | None = None,
    optimizer: str = "meta",
    adam_lr: float = 0.03,
    anchor: float = 0.0,
) -> Generator[StepInfo, None, Candidate]:
    """The engine's job (``Consolidator``): a generator returning a ``Candidate``."""

    result = yield from consolidate_steps(
        model, tokenizer, init, config, support, held_out, DEFAULT_PROBES if probes is None else probes, steps,
        metadata=metadata, system=system, current=current, optimizer=optimizer, adam_lr=adam_lr, anchor=anchor,
    )
    base = result.base_held_out_loss
    return Candidate(
        lora=result.lora,
        held_out_loss=result.held_out_loss,
        base_held_out_loss=base,
        current_held_out_loss=result.current_held_out_loss,
        locality=result.locality,
        steps=result.steps,
        seconds=result.seconds,
        metrics={"support_loss": result.support_loss, "init_held_out_loss": result.init_held_out_loss,
                 "kl": result.kl, "held_out_ppl": math.exp(min(result.held_out_loss, 50.0))
                 if result.held_out_loss == result.held_out_loss else None},
    )
