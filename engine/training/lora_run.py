"""A whole meta-training run of the LoRA initialisation (``heedful meta-train lora``).

``run_lora_training`` reads labelled utterances, keeps the held-out domains out entirely,
draws a pool of channel-tasks from the rest (``lora_tasks``), runs the frozen layers once
per task (truncated backprop) and meta-trains with MAML, first-order MAML, Reptile or
Meta-SGD (``maml``), keeping the outer step that did best on tasks of separate validation
domains. It writes a safetensors artifact whose metadata names the algorithm, the LoRA
config, the inner learning rates, the data hash, the seed, the validation metrics and the
wall time, and the standard init's tuned SGD / Adam rates that the side-by-side
evaluation uses for its baselines.

Two things make reruns cheap: a checkpoint beside the artifact (every validation), from
which ``resume`` continues, and, with a ``cache_dir``, the drawn tasks' cached tensors and
the tuned baseline rates, keyed by everything they depend on.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..generation.model_loader import load_model
from ..nn.decoder_top import ce_loss
from ..nn.digests import file_digest
from ..nn.inner_loop import adapt, split_state
from ..nn.lora import LoraConfig, LoraWeights, inject_lora, random_weights, weights_from_bytes, weights_to_bytes
from ..settings import ModelSettings
from .lora_eval import Method, train_curve
from .lora_tasks import (
    LabelPool,
    TaskConfig,
    fill_unrelated,
    load_domains,
    load_labelled,
    make_tasks,
    split_domains,
    task_batches,
)
from .maml import CachedTask, MetaConfig, MetaLearner
from .runs import Bars, Log, RunError, silent_bars, silent_log

__all__ = ["LoraRunConfig", "run_lora_training", "tune_baselines"]


@dataclass(frozen=True)
class LoraRunConfig:
    """One LoRA-init meta-training run: the data and its split, the meta-learning, the task pool,
    and where the artifact, its checkpoint and the caches go."""

    data: Path                           # JSON lines {text, label}, or CLINC150's data_full.json (train split)
    meta: MetaConfig = field(default_factory=MetaConfig)  # algorithm, inner loop, outer steps (meta_steps), seed
    lora: LoraConfig = field(default_factory=LoraConfig)
    task: TaskConfig = field(default_factory=TaskConfig)  # how channel-tasks are drawn (systems: the personas)
    domains: Path | None = None          # {domain: [labels]}; default: domains.json beside ``data``
    holdout_domains: tuple[str, ...] = ()  # never used for training
    val_domains: tuple[str, ...] = ()    # model selection and baseline-rate tuning only
    tasks: int = 192                     # training task pool (each task cached once)
    val_tasks: int = 8
    minutes: float = 0.0                 # stop meta-training after this long (0: no limit)
    tune_baselines: bool = True          # tune the standard init's SGD / Adam rates on validation tasks
    eval_every: int = 10                 # validate (and checkpoint) every N outer steps
    out: Path = Path("lora_init.safetensors")
    cache_dir: Path | None = None        # keep cached task tensors and tuned rates here across runs
    resume: bool = False                 # continue from the checkpoint beside ``out``
    threads: int = 0                     # torch CPU threads (0: torch's default)

    @property
    def checkpoint(self) -> Path:
        """Where the run checkpoints, beside ``out``."""
        return self.out.with_suffix(".ckpt.safetensors")


def run_lora_training(run: LoraRunConfig, model: ModelSettings, models_dir: Path, *, bars: Bars = silent_bars,
                      log: Log = silent_log) -> dict[str, Any]:
    """Meta-train the LoRA initialisation of ``model`` on channel-tasks of ``run.data`` and write
    it to ``run.out``. Returns the run's summary (validation query loss before and after, the
    selected step, timings, tuned baseline rates). Raises ``RunError`` when the domain map
    the split needs is missing."""
    started = time.perf_counter()
    meta, lora_config = run.meta, run.lora
    if run.threads:
        torch.set_num_threads(run.threads)
    loaded = load_model(model, models_dir)
    lm, tokenizer = loaded.model, loaded.tokenizer
    inject_lora(lm, lora_config)

    # Held-out domains never enter; validation domains only select the step and tune rates.
    records = load_labelled(run.data)
    holdout, val_names = list(run.holdout_domains), list(run.val_domains)
    val_records: list[tuple[str, str]] = []
    train_records = records
    if holdout or val_names:
        domain_file = run.domains or run.data.parent / "domains.json"
        if not domain_file.is_file():
            raise RunError(f"domain map {domain_file} not found (pass --domains)")
        label_domains = load_domains(domain_file)
        if holdout:
            train_records, _ = split_domains(records, label_domains, holdout)
        if val_names:
            train_records, val_records = split_domains(train_records, label_domains, val_names)
    train_pool = LabelPool(train_records)
    val_pool = LabelPool(val_records) if val_records else None

    init = log_lr = None
    done = 0
    if run.resume and run.checkpoint.is_file():
        tensors, _, saved = weights_from_bytes(run.checkpoint.read_bytes())
        init, lrs = split_state(tensors)
        log_lr = {k: v.log() for k, v in lrs.items()} if lrs else None
        done = int(saved.get("step", "0"))
        log(f"resuming from {run.checkpoint} at step {done}")
    learner = MetaLearner(lm, meta, init=init, log_lr=log_lr)

    # Tasks are drawn, their unrelated prompts get the base model's replies, and their frozen
    # layers run once: the expensive part of a run, hence the cache.
    def cached(pool: LabelPool, n: int, task_seed: int, tag: str) -> list[CachedTask]:
        key = hashlib.sha256(json.dumps([file_digest(run.data), holdout, val_names, n, task_seed, repr(run.task),
                                         loaded.name, learner.stack.start, lora_config.to_json(), tag]).encode())
        path = run.cache_dir / f"tasks-{key.hexdigest()[:16]}.pt" if run.cache_dir else None
        if path is not None and path.is_file():
            found: list[CachedTask] = torch.load(path, weights_only=False)
            return found
        drawn = make_tasks(pool, n, task_seed, run.task)
        log(f"{tag}: {n} tasks; base replies for unrelated prompts ...")
        fill_unrelated(lm, tokenizer, drawn)
        result = []
        with bars(total=len(drawn), desc=f"caching {tag} tasks", mininterval=10) as bar:
            for task in drawn:
                result.append(learner.cache(task_batches(tokenizer, task)))
                bar.update(1)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(result, path)
        return result

    t_cache = time.perf_counter()
    train_tasks = cached(train_pool, run.tasks, meta.seed, "train")
    val_set = cached(val_pool, run.val_tasks, meta.seed + 1, "val") if val_pool else train_tasks[:run.val_tasks]
    cache_seconds = time.perf_counter() - t_cache

    def val_loss(state: LoraWeights, lrs: LoraWeights | float) -> float:
        return statistics.fmean(
            float(ce_loss(adapt(learner.stack, state, lrs, t.support, meta.inner_steps, clip=meta.inner_clip),
                          learner.stack, t.query)) for t in val_set)

    # The baselines' rates are tuned on validation tasks, never on held-out domains.
    metadata: dict[str, str] = {}
    if run.tune_baselines:
        tuned = None
        if run.cache_dir is not None:
            tuned_key = hashlib.sha256(json.dumps([file_digest(run.data), val_names, run.val_tasks, meta.seed,
                                                   meta.inner_steps, meta.inner_clip, loaded.name,
                                                   lora_config.to_json()]).encode())
            tuned = run.cache_dir / f"baselines-{tuned_key.hexdigest()[:16]}.json"
        if tuned is not None and tuned.is_file():
            metadata.update(json.loads(tuned.read_text()))
        else:
            metadata.update(tune_baselines(lm, learner, val_set, meta.inner_steps, meta.inner_clip, log))
            if tuned is not None:
                tuned.write_text(json.dumps(metadata))

    rng = random.Random(meta.seed)
    steps = meta.meta_steps

    def current() -> tuple[LoraWeights, LoraWeights | float]:  # (init, inner rates) as a consolidation would use them
        return split_state(learner.state())[0], learner.lrs()

    start_val = val_loss(*current())
    best = (start_val, done, current())
    history: list[dict[str, float]] = []
    t_train = time.perf_counter()
    with bars(total=max(0, steps - done), desc=f"meta-train {meta.algo}", mininterval=10) as bar:
        for step in range(done, steps):
            batch = rng.sample(train_tasks, min(meta.meta_batch, len(train_tasks)))
            metrics = learner.step(batch)
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['query_loss']:.3f}")
            row = {"step": step + 1, **metrics}
            if (step + 1) % run.eval_every == 0 or step + 1 == steps:
                row["val_query_loss"] = val_loss(*current())
                if row["val_query_loss"] < best[0]:
                    best = (row["val_query_loss"], step + 1, current())
                run.checkpoint.parent.mkdir(parents=True, exist_ok=True)
                run.checkpoint.write_bytes(weights_to_bytes(learner.state(), lora_config,
                                                            {"step": str(step + 1), "algo": meta.algo}))
            history.append(row)
            if run.minutes and time.perf_counter() - t_train > run.minutes * 60:
                log(f"time budget of {run.minutes} min reached after {step + 1} outer steps")
                break
    train_seconds = time.perf_counter() - t_train
    if history and "val_query_loss" not in history[-1]:
        history[-1]["val_query_loss"] = val_loss(*current())
        if history[-1]["val_query_loss"] < best[0]:
            best = (history[-1]["val_query_loss"], int(history[-1]["step"]), current())

    best_loss, best_step, (best_init, rates) = best
    best_lrs = rates if isinstance(rates, dict) else None
    state = dict(best_init)
    seconds = time.perf_counter() - started
    result: dict[str, Any] = {
        "algo": meta.algo,
        "out": str(run.out),
        "outer_steps": len(history) + done,
        "best_step": best_step,
        "val_query_loss_start": round(start_val, 4),
        "val_query_loss_best": round(best_loss, 4),
        "seconds": round(seconds, 1),
        "cache_seconds": round(cache_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "seconds_per_outer_step": round(train_seconds / max(1, len(history)), 2),
        "train_tasks": len(train_tasks),
        "val_tasks": len(val_set),
        "inner_steps": meta.inner_steps,
        **{k: float(v) for k, v in metadata.items()},
    }
    metadata |= {
        "algo": meta.algo,
        "meta_config": json.dumps(meta.to_dict()),
        "task_config": json.dumps({**asdict(run.task), "systems": len(run.task.systems)}),
        "inner_steps": str(meta.inner_steps),
        "inner_lr": str(meta.inner_lr) if not best_lrs else "per-parameter",
        "inner_lr_mean": str(float(torch.cat([v.flatten() for v in best_lrs.values()]).mean()) if best_lrs
                             else meta.inner_lr),
        "inner_clip": str(meta.inner_clip),
        "data": run.data.name,
        "data_sha256": file_digest(run.data),
        "holdout_domains": ",".join(holdout),
        "val_domains": ",".join(val_names),
        "seed": str(meta.seed),
        "model": loaded.name,
        "metrics": json.dumps(result),
        "history": json.dumps(history[-200:]),
        "wall_seconds": f"{seconds:.1f}",
        "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if best_lrs:  # Meta-SGD's rates travel in the same file, in half precision (they are rates, not weights)
        state = dict(best_init) | {f"inner_lr.{k}": v.half().float() for k, v in best_lrs.items()}
    run.out.parent.mkdir(parents=True, exist_ok=True)
    run.out.write_bytes(weights_to_bytes(state, lora_config, metadata))
    result["bytes"] = run.out.stat().st_size
    log(f"{meta.algo}: validation query loss {start_val:.3f} -> {best_loss:.3f} (step {best_step}); "
        f"wrote {run.out} ({result['bytes'] / 1024:.0f} KB) in {seconds / 60:.1f} min")
    return result


def tune_baselines(lm: nn.Module, learner: MetaLearner, val_set: list[CachedTask], steps: int, clip: float,
                   log: Log = silent_log) -> dict[str, str]:
    """The standard init's best SGD and Adam rates at ``steps`` steps on the validation tasks,
    as artifact metadata (the side-by-side evaluation's baselines use them)."""
    standard = random_weights(lm, torch.Generator().manual_seed(0))

    def score(method: Method) -> float:
        losses = [train_curve(learner.stack, method, t.support, t.query, steps)[0][-1] for t in val_set]
        return statistics.fmean(x if math.isfinite(x) else 1e9 for x in losses)

    sgd = {lr: score(Method("sgd", standard, lr, "sgd", clip)) for lr in (0.25, 0.5, 1.0, 2.0, 4.0)}
    adam = {lr: score(Method("adam", standard, lr, "adam")) for lr in (3e-3, 1e-2, 3e-2, 1e-1)}
    best_sgd, best_adam = min(sgd, key=sgd.__getitem__), min(adam, key=adam.__getitem__)
    log(f"baseline rates on validation tasks: SGD {sgd} -> {best_sgd}; Adam {adam} -> {best_adam}")
    return {"baseline_inner_lr": str(best_sgd), "baseline_adam_lr": str(best_adam),
            "baseline_val_sgd_loss": f"{sgd[best_sgd]:.4f}", "baseline_val_adam_loss": f"{adam[best_adam]:.4f}"}
