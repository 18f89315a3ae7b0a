"""Side by side: no adaptation, plain LoRA fine-tuning from the standard init, the meta-learned init.

For held-out channel-tasks (``lora_tasks``), every method trains on the task's support
set (its corrections) with the same number of steps and is measured on:

- ``query_loss`` / ``query_ppl``: cross-entropy of the corrected answers' tokens on other
  phrasings of the corrected questions (teacher-forced), after every step up to
  ``max_steps`` (the step curves);
- ``reliability`` / ``generality``: freely generated greedy replies, with the LoRA weights,
  to the corrected questions themselves / to their paraphrases; a reply counts when the
  channel's invented code appears in it;
- ``locality``: unrelated prompts (uncorrected labels, out-of-scope questions) whose
  greedy reply is exactly the base model's; ``probe_agreement`` / ``probe_kl``: the
  token-level locality measure that consolidation uses, on the default probe prompts;
- ``steps_ratio``: steps a baseline needs to reach the meta-learned init's query loss
  at ``final_steps``, divided by ``final_steps`` (> 1: the meta init is that much faster).

``correction_curve`` repeats the measurement for channels with 1, 2, 4, ... corrections.
``plot`` draws both curves. The engine-side ``heedful eval corrections --mode lora|both``
calls ``evaluate`` (and ``plot``) with tasks from ``lora_tasks.tasks_from_split``.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..learning.consolidation import DEFAULT_PROBES, anchor_batch, baseline_rate, locality, lora_state, probe_batch
from ..nn.chat_batches import encode, greedy_replies
from ..nn.decoder_top import Cached, DecoderTop, anchored_loss, cache_batch, ce_loss, first_adapted_layer
from ..nn.inner_loop import clip_norm, optimizer_step, split_state
from ..nn.lora import LoraWeights, random_weights
from .lora_tasks import ChannelTask, TaskConfig, code_in, fill_unrelated, tasks_from_split

__all__ = ["baseline_rate", "Method", "EvalConfig", "EvalReport", "standard_methods", "train_curve", "evaluate",
           "correction_curve", "plot", "truncation_cost", "tasks_from_split"]


@dataclass
class Method:
    """One way of producing a channel LoRA from its corrections."""

    name: str
    init: LoraWeights | None  # None: no adaptation at all
    lr: float | LoraWeights = 1.0  # SGD: a rate or per-parameter rates (Meta-SGD); Adam: its rate
    optimizer: str = "sgd"  # "sgd" (the meta-learning inner loop) | "adam"
    clip: float = 1.0  # SGD gradient norm clip, as in the inner loop
    baseline: bool = False  # a plain fine-tuning baseline (steps ratios are taken against these)
    anchor: float = 0.0  # weight of the KL-to-base term on anchor prompts (maml.anchored_loss); 0: off


@dataclass
class EvalConfig:
    final_steps: int = 8  # where generation metrics are taken (what a consolidation runs)
    max_steps: int = 24  # the step curve runs this far (for the steps ratio)
    max_new_tokens: int = 24
    batch_size: int = 16  # generation batch


def standard_methods(
    model: nn.Module, init: LoraWeights, metadata: dict[str, str], *, adam: bool = True
) -> list[Method]:
    """none / standard init with SGD (and with Adam) / the meta-learned init with its own inner loop
    (and with Adam: ``meta_adam``), with the rates recorded in the init's metadata (tuned on
    meta-training's validation domain, never on the test)."""
    lora, lrs = split_state(init)
    standard = random_weights(model, torch.Generator().manual_seed(0))
    clip = float(metadata.get("inner_clip", "1.0"))
    methods = [
        Method("none", None),
        Method("standard_sgd", standard, baseline_rate(metadata), clip=clip, baseline=True),
    ]
    if adam:
        methods.append(Method("standard_adam", standard, float(metadata.get("baseline_adam_lr", "0.01")), "adam",
                              baseline=True))
    methods.append(Method("meta", lora, lrs if lrs is not None else baseline_rate(metadata, "inner_lr"),
                          clip=clip))
    if adam:  # the meta-learned init under the baseline's optimiser: is the init itself worth having?
        methods.append(Method("meta_adam", lora, float(metadata.get("baseline_adam_lr", "0.01")), "adam"))
    return methods


def train_curve(stack: DecoderTop, method: Method, support: Cached, query: Cached | None, steps: int,
                keep: Sequence[int] = (), anchor: Cached | None = None) -> tuple[list[float], dict[int, LoraWeights]]:
    """Query loss before and after each of ``steps`` steps, and the LoRA weights at steps ``keep``."""
    assert method.init is not None
    assert not method.anchor or anchor is not None, "an anchored method needs the anchor batch"

    def loss_fn(p: LoraWeights) -> torch.Tensor:
        return anchored_loss(p, stack, support, anchor, method.anchor)

    params = {k: v.detach().clone() for k, v in method.init.items()}
    curve: list[float] = []
    kept: dict[int, LoraWeights] = {}

    def record(step: int) -> None:
        if query is not None:
            with torch.no_grad():
                curve.append(float(ce_loss(params, stack, query)))
        if step in keep:
            kept[step] = {k: v.detach().clone() for k, v in params.items()}

    record(0)
    if method.optimizer == "adam":
        leaves = {k: v.requires_grad_(True) for k, v in params.items()}
        opt = torch.optim.Adam(list(leaves.values()), lr=float(method.lr))  # type: ignore[arg-type]
        for step in range(1, steps + 1):
            optimizer_step(opt, leaves, loss_fn)
            record(step)
    else:
        for step in range(1, steps + 1):  # the inner loop (see maml.inner_loop)
            g = clip_norm(torch.func.grad(loss_fn)(params), method.clip)
            lr = method.lr
            params = {k: p - (lr if isinstance(lr, float) else lr[k]) * g[k] for k, p in params.items()}
            record(step)
    return curve, kept


@dataclass
class EvalReport:
    config: dict[str, Any]
    tasks: int
    methods: dict[str, dict[str, float]]  # name -> summary metrics at final_steps
    step_curves: dict[str, list[float]]  # name -> mean query loss after 0..max_steps steps
    # method -> baseline -> (steps the baseline needs to reach the method's query loss at final_steps)
    # / final_steps; None: not within max_steps
    steps_ratio: dict[str, dict[str, float | None]]
    correction_curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # metric -> name -> values
    corrections: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _steps_to_reach(curve: Sequence[float], target: float) -> int | None:
    return next((i for i, loss in enumerate(curve) if loss <= target), None)


def evaluate(
    model: nn.Module,
    tokenizer: Any,
    tasks: Sequence[ChannelTask],
    methods: Sequence[Method],
    config: EvalConfig | None = None,
    probes: Sequence[str] = DEFAULT_PROBES,
    progress: Callable[[int, int], None] | None = None,
    generate: bool = True,
) -> EvalReport:
    """Run every method on every task (same steps), with generated replies judged per task."""
    config = config or EvalConfig()
    t0 = time.perf_counter()
    stack = DecoderTop(model, first_adapted_layer(model))
    fill_unrelated(model, tokenizer, tasks)
    names = [m.name for m in methods]
    per: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    curves: dict[str, list[list[float]]] = {n: [] for n in names}

    def add(name: str, key: str, value: float) -> None:
        per[name].setdefault(key, []).append(value)

    for i, task in enumerate(tasks):
        with torch.no_grad():
            support = cache_batch(model, stack, encode(tokenizer, task.support))
            query = cache_batch(model, stack, encode(tokenizer, task.query))
            probe = probe_batch(model, tokenizer, stack, probes, task.system, 16)
            anchor = anchor_batch(model, tokenizer, stack, task.system) if any(m.anchor for m in methods) else None
        finals: dict[str, LoraWeights | None] = {}
        for method in methods:
            if method.init is None:
                zero = {k: torch.zeros_like(v) for k, v in lora_state(model).items()}
                with torch.no_grad():
                    loss = float(ce_loss(zero, stack, query))
                curves[method.name].append([loss] * (config.max_steps + 1))
                finals[method.name] = None
                agree, kl = 1.0, 0.0
            else:
                curve, kept = train_curve(stack, method, support, query, config.max_steps, keep=(config.final_steps,),
                                          anchor=anchor)
                curves[method.name].append(curve)
                finals[method.name] = kept[config.final_steps]
                agree, kl = locality(kept[config.final_steps], stack, probe)
            add(method.name, "query_loss", curves[method.name][-1][config.final_steps])
            add(method.name, "probe_agreement", agree)
            add(method.name, "probe_kl", kl)
        if generate:
            _judge_replies(model, tokenizer, task, finals, config, add)
        if progress is not None:
            progress(i + 1, len(tasks))

    step_curves = {n: [statistics.fmean(c[s] for c in curves[n]) for s in range(config.max_steps + 1)] for n in names}
    summary = {n: {k: statistics.fmean(v) for k, v in per[n].items()} for n in names}
    for n in names:
        summary[n]["query_ppl"] = math.exp(min(summary[n]["query_loss"], 50.0))
    ratio: dict[str, dict[str, float | None]] = {}
    for m in methods:
        if m.init is None or m.baseline:
            continue
        target = step_curves[m.name][config.final_steps]
        ratio[m.name] = {}
        for b in methods:
            if b.baseline:
                reached = _steps_to_reach(step_curves[b.name], target)
                ratio[m.name][b.name] = None if reached is None else reached / config.final_steps
    return EvalReport(config=dict(config.__dict__), tasks=len(tasks), methods=summary, step_curves=step_curves,
                      steps_ratio=ratio, seconds=time.perf_counter() - t0)


def _judge_replies(model: nn.Module, tokenizer: Any, task: ChannelTask, finals: dict[str, LoraWeights | None],
                   config: EvalConfig, add: Callable[[str, str, float], None]) -> None:
    """Generate, in one mixed-LoRA batch, every method's replies to the task's questions."""
    groups = [("reliability", task.support), ("generality", task.query), ("locality", task.unrelated)]
    prompts, loras, where = [], [], []
    for name, lora in {"none": None, **finals}.items():  # the base model's replies are the locality reference
        for metric, examples in groups:
            for ex in examples:
                prompts.append((ex.system, ex.question))
                loras.append(lora)
                where.append((name, metric, ex))
    replies = greedy_replies(model, tokenizer, prompts, loras, config.max_new_tokens, config.batch_size)
    answered = list(zip(where, replies, strict=True))
    base = {(ex.system, ex.question): r for (name, _, ex), r in answered if name == "none"}
    scores: dict[tuple[str, str], list[float]] = {}
    for (name, metric, ex), reply in answered:
        if name not in finals:
            continue
        # locality: exactly the base model's reply (unrelated questions are left alone)
        ok = reply == base[ex.system, ex.question] if metric == "locality" else code_in(ex.code, reply)
        scores.setdefault((name, metric), []).append(float(ok))
    for (name, metric), values in scores.items():
        add(name, metric, statistics.fmean(values))


def correction_curve(
    model: nn.Module,
    tokenizer: Any,
    make: Callable[[TaskConfig, int], list[ChannelTask]],
    methods: Sequence[Method],
    counts: Sequence[int] = (1, 2, 4, 8, 16),
    tasks_per_point: int = 6,
    config: EvalConfig | None = None,
    base: TaskConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[int], dict[str, dict[str, list[float]]]]:
    """metric -> method -> values for channels with ``counts`` corrections (one per label).

    ``make(task_config, n)`` builds ``n`` tasks (e.g. ``lambda c, n: make_tasks(pool, n, seed, c)``).
    """
    config = config or EvalConfig()
    base = base or TaskConfig(templates="eval")
    short = EvalConfig(final_steps=config.final_steps, max_steps=config.final_steps,
                       max_new_tokens=config.max_new_tokens, batch_size=config.batch_size)
    out: dict[str, dict[str, list[float]]] = {}
    for j, count in enumerate(counts):
        task_config = TaskConfig(**{**base.__dict__, "min_labels": count, "max_labels": count, "shots": 1})
        report = evaluate(model, tokenizer, make(task_config, tasks_per_point), methods, short)
        for name, metrics in report.methods.items():
            for metric, value in metrics.items():
                out.setdefault(metric, {}).setdefault(name, []).append(value)
        if progress is not None:
            progress(j + 1, len(counts))
    return list(counts), out


def plot(report: EvalReport, path: str | Path, title: str = "") -> Path:
    """Query loss against inner steps, and generality / reliability / locality against corrections."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 1 + (3 if report.correction_curves else 0)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.6), squeeze=False)
    ax = axes[0][0]
    for name, curve in report.step_curves.items():
        ax.plot(range(len(curve)), curve, label=name)
    final = report.config.get("final_steps")
    if final is not None:
        ax.axvline(final, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("inner steps")
    ax.set_ylabel("query loss (nats/token)")
    ax.set_title("held-out query loss")
    ax.legend(fontsize=7)
    for k, metric in enumerate(("generality", "reliability", "locality")):
        if not report.correction_curves:
            break
        ax = axes[0][k + 1]
        for name, values in report.correction_curves.get(metric, {}).items():
            ax.plot(report.corrections, values, marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("corrections in the channel")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(metric)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def truncation_cost(
    model_top: nn.Module,
    model_all: nn.Module,
    tokenizer: Any,
    tasks: Sequence[ChannelTask],
    steps: int = 5,
    adam_lr: float = 0.03,
    sgd_lr: float = 1.0,
    clip: float = 1.0,
) -> dict[str, dict[str, float]]:
    """What truncated backprop costs and saves, with the standard init (plain fine-tuning).

    - ``top_truncated``: LoRA on the top layers of ``model_top``; frozen layers run once per task;
    - ``top_full``: the same LoRA, but every step runs the whole stack (must give the same losses);
    - ``all_layers``: ``model_all`` carries LoRA on every layer: full backprop, every step.

    Per configuration: seconds for the one-time frozen pass per task, seconds per inner step
    (Adam), and the query loss after ``steps`` steps of Adam and of clipped SGD.
    """
    configs = [("top_truncated", model_top, first_adapted_layer(model_top)), ("top_full", model_top, 0),
               ("all_layers", model_all, 0)]
    out: dict[str, dict[str, float]] = {}
    for name, model, start in configs:
        stack = DecoderTop(model, start)
        standard = random_weights(model, torch.Generator().manual_seed(0))
        prefix_s, step_s, adam_losses, sgd_losses = [], [], [], []
        for task in tasks:
            t0 = time.perf_counter()
            support = cache_batch(model, stack, encode(tokenizer, task.support))
            prefix_s.append(time.perf_counter() - t0)
            query = cache_batch(model, stack, encode(tokenizer, task.query))
            t0 = time.perf_counter()
            kept = train_curve(stack, Method("adam", standard, adam_lr, "adam"), support, None, steps, keep=(steps,))[1]
            step_s.append((time.perf_counter() - t0) / steps)
            with torch.no_grad():
                adam_losses.append(float(ce_loss(kept[steps], stack, query)))
            sgd = train_curve(stack, Method("sgd", standard, sgd_lr, clip=clip), support, None, steps, keep=(steps,))[1]
            with torch.no_grad():
                sgd_losses.append(float(ce_loss(sgd[steps], stack, query)))
        out[name] = {
            "frozen_pass_s_per_task": statistics.fmean(prefix_s),
            "s_per_inner_step": statistics.fmean(step_s),
            "query_loss_adam": statistics.fmean(adam_losses),
            "query_loss_sgd": statistics.fmean(sgd_losses),
            "adapter_params": float(sum(v.numel() for v in standard.values())),
        }
    return out
