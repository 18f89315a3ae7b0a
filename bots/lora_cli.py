"""``heedful meta-train lora``: meta-learn the LoRA initialisation consolidation starts from.

Reads labelled utterances (JSON lines), keeps the held-out domains out entirely, draws a
pool of channel-tasks from the rest (``engine.training.lora_tasks``), runs the frozen
layers once per task (truncated backprop), and meta-trains with MAML, first-order MAML,
Reptile or Meta-SGD (``engine.training.maml``), choosing the best outer step on tasks of
a separate validation domain. Writes a safetensors artifact whose metadata names the
algorithm, the LoRA config, the inner learning rates, the data hash, the seed, the
validation metrics and the wall time; a checkpoint beside it lets a run resume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from .learning_cli import meta_train_app

__all__ = ["eval_corrections_lora", "lora", "side_by_side", "truncation"]


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@meta_train_app.command("lora")
def lora(
    data: Annotated[Path, typer.Option("--data", help="labelled utterances: JSON lines {text, label}, or CLINC150's "
                                                     "data_full.json (its train split)")],
    algo: Annotated[str, typer.Option("--algo", help="maml | fomaml | reptile | metasgd")] = "metasgd",
    domains: Annotated[Path | None, typer.Option(help="JSON {domain: [labels]} (default: domains.json beside --data)")] = None,
    holdout_domains: Annotated[str, typer.Option(help="comma-separated domains never used for training")] = "",
    val_domains: Annotated[str, typer.Option(help="comma-separated domains for model selection and rate tuning")] = "",
    steps: Annotated[int, typer.Option("--steps", help="outer (meta) steps")] = 100,
    minutes: Annotated[float, typer.Option(help="stop meta-training after this many minutes (0: no limit)")] = 0.0,
    tasks: Annotated[int, typer.Option(help="size of the training task pool (each task cached once)")] = 192,
    labels: Annotated[str, typer.Option(help="labels (corrections) per channel-task, MIN-MAX")] = "3-6",
    val_tasks: Annotated[int, typer.Option(help="validation tasks")] = 8,
    inner_steps: Annotated[int, typer.Option(help="inner-loop steps per task")] = 5,
    inner_lr: Annotated[float, typer.Option(help="inner SGD rate (Meta-SGD: starting value)")] = 1.0,
    inner_clip: Annotated[float, typer.Option(help="inner gradient norm clip (0: off)")] = 1.0,
    outer_lr: Annotated[float, typer.Option(help="Adam rate on the initialisation")] = 1e-3,
    lr_lr: Annotated[float, typer.Option(help="Meta-SGD: Adam rate on log inner rates")] = 1e-2,
    first_order: Annotated[bool, typer.Option(help="Meta-SGD without second-order terms")] = False,
    meta_batch: Annotated[int, typer.Option(help="tasks per outer step")] = 4,
    locality_weight: Annotated[float, typer.Option(help="weight of KL to the base model on unrelated prompts")] = 1.0,
    rank: Annotated[int, typer.Option(help="LoRA rank")] = 8,
    top_layers: Annotated[int, typer.Option(help="adapted decoder layers, from the top (0: all)")] = 4,
    targets: Annotated[str, typer.Option(help="comma-separated target modules")] = "q_proj,v_proj",
    truncate: Annotated[bool, typer.Option(help="run frozen layers once per task (exact; faster)")] = True,
    tune_baselines: Annotated[bool, typer.Option(help="tune the standard-init SGD / Adam rates on validation tasks")] = True,
    eval_every: Annotated[int, typer.Option(help="validate every N outer steps")] = 10,
    seed: Annotated[int, typer.Option(help="seed for tasks and the init")] = 0,
    model: Annotated[str, typer.Option(help="model id (default: the configured one)")] = "",
    out: Annotated[Path, typer.Option("--out", help="artifact path")] = Path("lora_init.safetensors"),
    cache_dir: Annotated[Path | None, typer.Option(help="keep cached task tensors here across runs")] = None,
    resume: Annotated[bool, typer.Option(help="continue from the checkpoint beside --out")] = False,
    threads: Annotated[int, typer.Option(help="torch CPU threads (0: torch's default)")] = 0,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object as the last line")] = False,
) -> None:
    """Meta-train the LoRA initialisation on channel-tasks from labelled utterances."""
    import torch
    from tqdm import tqdm

    from engine.generation.model_loader import load_model
    from engine.nn.decoder_top import ce_loss
    from engine.nn.digests import file_digest
    from engine.nn.inner_loop import adapt, split_state
    from engine.nn.lora import LoraConfig, inject_lora, weights_from_bytes, weights_to_bytes
    from engine.training.lora_tasks import (
        LabelPool,
        TaskConfig,
        fill_unrelated,
        load_domains,
        load_labelled,
        make_tasks,
        split_domains,
        task_batches,
    )
    from engine.training.maml import ALGOS, MetaConfig, MetaLearner

    from .cli import _settings
    from .presets import PRESETS

    if algo not in ALGOS:
        raise typer.BadParameter(f"--algo must be one of {', '.join(ALGOS)}")
    if not data.is_file():
        raise typer.BadParameter(f"--data {data} not found")
    started = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    settings = _settings(config)
    model_settings = settings.model.model_copy(update={"id": model}) if model else settings.model
    loaded = load_model(model_settings, settings.engine_settings().model_cache_dir)
    lm, tokenizer = loaded.model, loaded.tokenizer
    lora_config = LoraConfig(rank=rank, alpha=2.0 * rank, targets=tuple(_csv(targets)), top_layers=top_layers)
    inject_lora(lm, lora_config)
    say = (lambda *a: print(*a, file=sys.stderr)) if as_json else print  # noqa: E731

    # -- data: held-out domains never enter; validation domains only select and tune ------------
    records = load_labelled(data)
    holdout, val_names = _csv(holdout_domains), _csv(val_domains)
    if holdout or val_names:
        domain_file = domains or data.parent / "domains.json"
        if not domain_file.is_file():
            raise typer.BadParameter(f"domain map {domain_file} not found (pass --domains)")
        label_domains = load_domains(domain_file)
        train_records, _ = split_domains(records, label_domains, holdout) if holdout else (records, [])
        train_records, val_records = split_domains(train_records, label_domains, val_names) if val_names else (
            train_records, [])
    else:
        train_records, val_records = records, []
    train_pool = LabelPool(train_records)
    val_pool = LabelPool(val_records) if val_records else None
    systems = (None, *PRESETS.values())
    low, _, high = labels.partition("-")
    task_config = TaskConfig(systems=systems, unrelated=2, min_labels=int(low), max_labels=int(high or low))
    meta_config = MetaConfig(
        algo=algo, inner_steps=inner_steps, inner_lr=inner_lr, inner_clip=inner_clip, outer_lr=outer_lr,
        lr_lr=lr_lr, first_order=first_order, meta_batch=meta_batch, meta_steps=steps,
        locality_weight=locality_weight, truncate=truncate, seed=seed,
    )
    ckpt = out.with_suffix(".ckpt.safetensors")
    init = log_lr = None
    done = 0
    if resume and ckpt.is_file():
        tensors, _, meta = weights_from_bytes(ckpt.read_bytes())
        adapter, lrs = split_state(tensors)
        init, log_lr = adapter, ({k: v.log() for k, v in lrs.items()} if lrs else None)
        done = int(meta.get("step", "0"))
        say(f"resuming from {ckpt} at step {done}")
    learner = MetaLearner(lm, meta_config, init=init, log_lr=log_lr)

    # -- tasks: drawn, base replies for unrelated prompts, frozen layers run once per task -------
    def cached(pool: LabelPool, n: int, task_seed: int, tag: str, config: TaskConfig) -> list[Any]:
        key = hashlib.sha256(json.dumps([file_digest(data), holdout, val_names, n, task_seed, repr(config),
                                         loaded.name, learner.stack.start, lora_config.to_json(), tag]).encode())
        path = cache_dir / f"tasks-{key.hexdigest()[:16]}.pt" if cache_dir else None
        if path is not None and path.is_file():
            return torch.load(path, weights_only=False)
        drawn = make_tasks(pool, n, task_seed, config)
        say(f"{tag}: {n} tasks; base replies for unrelated prompts ...")
        fill_unrelated(lm, tokenizer, drawn)
        result = [learner.cache(task_batches(tokenizer, t)) for t in tqdm(drawn, desc=f"caching {tag} tasks",
                                                                          file=sys.stderr, mininterval=10)]
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(result, path)
        return result

    t_cache = time.perf_counter()
    train_tasks = cached(train_pool, tasks, seed, "train", task_config)
    val_set = cached(val_pool, val_tasks, seed + 1, "val", task_config) if val_pool else train_tasks[:val_tasks]
    cache_seconds = time.perf_counter() - t_cache

    def val_loss(state: dict[str, Any], lrs: Any, steps_: int = inner_steps) -> float:
        losses = [float(ce_loss(adapt(learner.stack, state, lrs, t.support, steps_, clip=inner_clip),
                                learner.stack, t.query)) for t in val_set]
        return statistics.fmean(losses)

    # -- baselines' rates, tuned on validation tasks (never on held-out domains) ----------------
    metadata: dict[str, str] = {}
    if tune_baselines:
        tuned = None
        if cache_dir is not None:
            tuned_key = hashlib.sha256(json.dumps([file_digest(data), val_names, val_tasks, seed, inner_steps,
                                                   inner_clip, loaded.name, lora_config.to_json()]).encode())
            tuned = cache_dir / f"baselines-{tuned_key.hexdigest()[:16]}.json"
        if tuned is not None and tuned.is_file():
            metadata.update(json.loads(tuned.read_text()))
        else:
            metadata.update(_tune_baselines(lm, learner, val_set, inner_steps, inner_clip, say))
            if tuned is not None:
                tuned.write_text(json.dumps(metadata))

    # -- the meta-training loop ---------------------------------------------------------------
    rng = random.Random(seed)
    def current() -> tuple[dict[str, Any], Any]:  # (init, inner rates) as a consolidation would use them
        return split_state(learner.state())[0], learner.lrs()

    start_val = val_loss(*current())
    best = (start_val, done, current())
    history: list[dict[str, float]] = []
    t_train = time.perf_counter()
    bar = tqdm(range(done, steps), desc=f"meta-train {algo}", file=sys.stderr, mininterval=10)
    for step in bar:
        batch = rng.sample(train_tasks, min(meta_batch, len(train_tasks)))
        metrics = learner.step(batch)
        bar.set_postfix(loss=f"{metrics['query_loss']:.3f}")
        row = {"step": step + 1, **metrics}
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            row["val_query_loss"] = val_loss(*current())
            if row["val_query_loss"] < best[0]:
                best = (row["val_query_loss"], step + 1, current())
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            ckpt.write_bytes(weights_to_bytes(learner.state(), lora_config, {"step": str(step + 1), "algo": algo}))
        history.append(row)
        if minutes and time.perf_counter() - t_train > minutes * 60:
            say(f"time budget of {minutes} min reached after {step + 1} outer steps")
            break
    train_seconds = time.perf_counter() - t_train
    if history and "val_query_loss" not in history[-1]:
        history[-1]["val_query_loss"] = val_loss(*current())
        if history[-1]["val_query_loss"] < best[0]:
            best = (history[-1]["val_query_loss"], int(history[-1]["step"]), current())

    best_loss, best_step, (best_init, best_lrs) = best
    best_lrs = best_lrs if isinstance(best_lrs, dict) else None
    state = dict(best_init)
    seconds = time.perf_counter() - started
    result = {
        "algo": algo,
        "out": str(out),
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
        "inner_steps": inner_steps,
        **{k: float(v) for k, v in metadata.items()},
    }
    metadata |= {
        "algo": algo,
        "meta_config": json.dumps(meta_config.to_dict()),
        "task_config": json.dumps({**task_config.__dict__, "systems": len(systems)}),
        "inner_steps": str(inner_steps),
        "inner_lr": str(inner_lr) if not best_lrs else "per-parameter",
        "inner_lr_mean": str(float(torch.cat([v.flatten() for v in best_lrs.values()]).mean()) if best_lrs
                             else inner_lr),
        "inner_clip": str(inner_clip),
        "data": data.name,
        "data_sha256": file_digest(data),
        "holdout_domains": ",".join(holdout),
        "val_domains": ",".join(val_names),
        "seed": str(seed),
        "model": loaded.name,
        "metrics": json.dumps(result),
        "history": json.dumps(history[-200:]),
        "wall_seconds": f"{seconds:.1f}",
        "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if best_lrs:  # Meta-SGD's rates travel in the same file, in half precision (they are rates, not weights)
        state = dict(best_init) | {f"inner_lr.{k}": v.half().float() for k, v in best_lrs.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(weights_to_bytes(state, lora_config, metadata))
    result["bytes"] = out.stat().st_size
    say(f"{algo}: validation query loss {start_val:.3f} -> {best_loss:.3f} (step {best_step}); "
        f"wrote {out} ({result['bytes'] / 1024:.0f} KB) in {seconds / 60:.1f} min")
    if as_json:
        print(json.dumps(result))


def _tune_baselines(lm: Any, learner: Any, val_set: list[Any], steps: int, clip: float, say: Any) -> dict[str, str]:
    """The standard init's best SGD and Adam rates at ``steps`` steps on the validation tasks."""
    import torch

    from engine.nn.lora import random_weights
    from engine.training.lora_eval import Method, train_curve

    standard = random_weights(lm, torch.Generator().manual_seed(0))

    def score(method: Method) -> float:
        losses = [train_curve(learner.stack, method, t.support, t.query, steps)[0][-1] for t in val_set]
        return statistics.fmean(x if math.isfinite(x) else 1e9 for x in losses)

    sgd = {lr: score(Method("sgd", standard, lr, "sgd", clip)) for lr in (0.25, 0.5, 1.0, 2.0, 4.0)}
    adam = {lr: score(Method("adam", standard, lr, "adam")) for lr in (3e-3, 1e-2, 3e-2, 1e-1)}
    best_sgd, best_adam = min(sgd, key=sgd.__getitem__), min(adam, key=adam.__getitem__)
    say(f"baseline rates on validation tasks: SGD {sgd} -> {best_sgd}; Adam {adam} -> {best_adam}")
    return {"baseline_inner_lr": str(best_sgd), "baseline_adam_lr": str(best_adam),
            "baseline_val_sgd_loss": f"{sgd[best_sgd]:.4f}", "baseline_val_adam_loss": f"{adam[best_adam]:.4f}"}


# -- side-by-side evaluation on held-out domains (``python -m bots.lora_cli --help``) -------------------


def side_by_side(
    inits: list[Path],
    support: Path,
    query: Path,
    oos: Path | None = None,
    domains: Path | None = None,
    eval_domains: list[str] | None = None,
    tasks: int = 24,
    seed: int = 7,
    final_steps: int = 5,
    max_steps: int = 20,
    corrections: list[int] | None = None,
    per_point: int = 6,
    adam: bool = True,
    generate: bool = True,
    model_id: str = "",
    models_dir: Path | None = None,
    plot_path: Path | None = None,
    log: Any = print,
    anchor: float = 0.0,
) -> dict[str, Any]:
    """No adaptation vs standard-init fine-tuning (SGD, Adam) vs each meta-learned init, on channel-tasks
    drawn from ``support`` (corrections) and ``query`` (paraphrases) of ``eval_domains``; answers use the
    evaluation templates that meta-training never saw. Rates come from the first init's metadata.
    With ``anchor`` > 0, every adapting method also runs anchored (``<name>+anchor``: its inner
    loss plus ``anchor`` × KL to the base model on unrelated anchor prompts)."""
    import torch

    from engine.generation.model_loader import load_model
    from engine.learning.consolidation import load_init
    from engine.nn.inner_loop import split_state
    from engine.settings import ModelSettings
    from engine.training.lora_eval import (
        EvalConfig,
        Method,
        baseline_rate,
        correction_curve,
        evaluate,
        plot,
        standard_methods,
    )
    from engine.training.lora_tasks import TaskConfig, load_domains, load_labelled, split_domains, tasks_from_split

    from .presets import PRESETS

    started = time.perf_counter()
    settings = ModelSettings(id=model_id) if model_id else ModelSettings()
    loaded = load_model(settings, models_dir or Path(".cache/models"))
    lm, tokenizer = loaded.model, loaded.tokenizer
    s_records, q_records = load_labelled(support), load_labelled(query)
    o_records = load_labelled(oos) if oos else []
    if eval_domains:
        label_domains = load_domains(domains or support.parent / "domains.json")
        s_records = split_domains(s_records, label_domains, eval_domains)[1]
        q_records = split_domains(q_records, label_domains, eval_domains)[1]
    methods: list[Method] = []
    first_meta: dict[str, str] = {}
    for i, path in enumerate(inits):
        state, _, meta = load_init(lm, path)
        if i == 0:
            methods = [m for m in standard_methods(lm, state, meta, adam=adam) if m.name != "meta"]
            first_meta = meta
        adapter, lrs = split_state(state)
        name = path.stem if len(inits) > 1 else "meta"  # file names tell the runs apart
        methods.append(Method(name, adapter, lrs if lrs is not None else baseline_rate(meta, "inner_lr"),
                              clip=float(meta.get("inner_clip", "1.0"))))
    if anchor:
        methods += [dataclasses.replace(m, name=f"{m.name}+anchor", anchor=anchor, baseline=False)
                    for m in methods if m.init is not None]
    base = TaskConfig(templates="eval", systems=(None, *PRESETS.values()), unrelated=3, queries=2)
    drawn = tasks_from_split(s_records, q_records, tasks, seed, base, oos=o_records)
    config = EvalConfig(final_steps=final_steps, max_steps=max_steps)
    report = evaluate(lm, tokenizer, drawn, methods, config, generate=generate,
                      progress=lambda i, n: log(f"  task {i}/{n}") if i % 4 == 0 or i == n else None)
    if corrections:
        def make(task_config: TaskConfig, n: int) -> list[Any]:
            return tasks_from_split(s_records, q_records, n, seed + 1, task_config, oos=o_records)

        report.corrections, report.correction_curves = correction_curve(
            lm, tokenizer, make, methods, corrections, per_point, config, base,
            progress=lambda i, n: log(f"  corrections point {i}/{n}"))
    report.seconds = time.perf_counter() - started
    result = report.to_dict() | {
        "inits": [str(p) for p in inits], "eval_domains": eval_domains or [], "seed": seed,
        "rates": {m.name: (m.lr if isinstance(m.lr, float) else "per-parameter") for m in methods},
        "baseline_rates_tuned_on": first_meta.get("val_domains", ""), "threads": torch.get_num_threads(),
    }
    if plot_path is not None:
        unseen = set(first_meta.get("holdout_domains", "").split(","))
        kind = "held-out domains" if eval_domains and set(eval_domains) <= unseen else "domains"
        plot(report, plot_path, title=f"{kind} {','.join(eval_domains or [])}: {tasks} channels")
    return result


BASELINES = ("none", "standard_sgd", "standard_adam")  # no adaptation; plain fine-tuning from the standard init


def eval_corrections_lora(
    support: Path,
    query: Path,
    oos: Path | None,
    eval_domains: list[str],
    tasks: int,
    seed: int,
    plot: Path | None,
    mode: str,
    log: Any = print,
    *,
    init: Path | None = None,
    domains: Path | None = None,
    final_steps: int = 5,
    max_steps: int = 20,
    corrections: list[int] | None = None,
    per_point: int = 3,
    adam: bool = True,
    generate: bool = True,
    model_id: str = "",
    models_dir: Path | None = None,
) -> dict[str, Any]:
    """``heedful eval corrections --mode lora|both``: the gradient path, side by side with its baselines.

    Runs ``side_by_side`` with the shipped meta-learned init (``DEFAULT_INIT_PATH``, or ``init``) on
    ``tasks`` channel-tasks drawn from ``support`` (corrections) and ``query`` (paraphrases) of
    ``eval_domains`` (use domains meta-training never saw; the init's metadata names them), each
    method trained ``final_steps`` inner steps on the channel's corrections. Returns, at top level,
    the metric mode's names for the meta-learned init: ``reliability`` (a corrected question asked
    again: the channel's code is in the greedy reply), ``generality`` (other phrasings),
    ``locality`` (unrelated and out-of-scope prompts: the reply is exactly the base model's, a
    stricter test than the metric mode's "no taught code"), plus ``query_loss`` / ``query_ppl``
    (teacher-forced, corrected answers on paraphrases), ``probe_agreement`` / ``probe_kl`` (token
    locality, the promotion test), ``steps_to_equal_loss_ratio`` (baseline -> steps it needs to
    reach the meta init's query loss at ``final_steps``, divided by ``final_steps``; None: not
    within ``max_steps``), ``baselines`` (``none``, ``standard_sgd``, ``standard_adam``: the same
    metrics, same steps) and the full report under ``side_by_side``. ``corrections`` (e.g.
    ``[1, 2, 4, 8]``) adds the per-correction-count curves (and their panels in ``plot``).

    Cost on 2 CPU cores with the embedded SmolLM2: about 10 s of setup plus ~15-25 s per task
    (generation included); the defaults with ``tasks=16`` stay around 6-8 minutes.
    ``mode="both"``: the same dict; the caller adds the metric path's numbers beside it.
    """
    from engine.learning.consolidation import DEFAULT_INIT_PATH

    if mode not in ("lora", "both"):
        raise ValueError(f"mode must be 'lora' or 'both', not {mode!r}")
    init_path = init or DEFAULT_INIT_PATH
    if not init_path.is_file():
        raise FileNotFoundError(f"no LoRA init at {init_path} (train one with `heedful meta-train lora`)")
    report = side_by_side(
        [init_path], support, query, oos, domains, eval_domains, tasks, seed, final_steps, max_steps,
        corrections, per_point, adam, generate, model_id, models_dir, plot, log,
    )
    methods: dict[str, dict[str, float]] = report["methods"]
    keys = ("reliability", "generality", "locality", "query_loss", "query_ppl", "probe_agreement", "probe_kl")

    def pick(metrics: dict[str, float]) -> dict[str, float | None]:
        return {k: (round(metrics[k], 4) if k in metrics else None) for k in keys}

    meta = methods["meta"]
    ratios = report["steps_ratio"].get("meta", {})
    return {
        "mode": mode,
        "path": "lora",
        "init": str(init_path),
        **pick(meta),
        "locality_definition": "reply to unrelated / out-of-scope prompts identical to the base model's",
        "inner_steps": final_steps,
        "steps_to_equal_loss_ratio": {b: (round(r, 3) if r is not None else None) for b, r in ratios.items()},
        "baselines": {name: pick(m) for name, m in methods.items() if name in BASELINES},
        "variants": {name: pick(m) for name, m in methods.items() if name not in BASELINES and name != "meta"},
        "tasks": report["tasks"],
        "eval_domains": eval_domains,
        "seed": seed,
        "seconds": round(report["seconds"], 1),
        **({"plot": str(plot)} if plot is not None else {}),
        "side_by_side": report,
    }


def truncation(
    support: Path, query: Path, domains: Path | None, eval_domains: list[str], tasks: int = 8, seed: int = 7,
    steps: int = 5, models_dir: Path | None = None, adam_lr: float = 0.03, sgd_lr: float = 1.0,
) -> dict[str, Any]:
    """Truncated backprop vs full forward vs adapters on every layer (see ``lora_eval.truncation_cost``)."""
    from engine.generation.model_loader import load_model
    from engine.nn.lora import LoraConfig, inject_lora
    from engine.settings import ModelSettings
    from engine.training.lora_eval import truncation_cost
    from engine.training.lora_tasks import TaskConfig, load_domains, load_labelled, split_domains, tasks_from_split

    from .presets import PRESETS

    top, every = (load_model(ModelSettings(), models_dir or Path(".cache/models")) for _ in range(2))
    inject_lora(top.model, LoraConfig())
    inject_lora(every.model, LoraConfig(top_layers=0))
    label_domains = load_domains(domains or support.parent / "domains.json")
    s_records = split_domains(load_labelled(support), label_domains, eval_domains)[1]
    q_records = split_domains(load_labelled(query), label_domains, eval_domains)[1]
    drawn = tasks_from_split(s_records, q_records, tasks, seed,
                             TaskConfig(templates="eval", systems=(None, *PRESETS.values()), unrelated=0))
    return truncation_cost(top.model, every.model, top.tokenizer, drawn, steps, adam_lr, sgd_lr)


def _main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m bots.lora_cli", description="LoRA meta-learning measurements")
    sub = p.add_subparsers(dest="what", required=True)
    a_ = sub.add_parser("side-by-side", help=side_by_side.__doc__)
    a_.add_argument("--init", type=Path, action="append", required=True, help="init artifact (repeatable)")
    t_ = sub.add_parser("truncation", help=truncation.__doc__)
    for q in (a_, t_):
        q.add_argument("--support", type=Path, required=True)
        q.add_argument("--query", type=Path, required=True)
        q.add_argument("--domains", type=Path)
        q.add_argument("--eval-domains", default="")
        q.add_argument("--tasks", type=int, default=24)
        q.add_argument("--seed", type=int, default=7)
        q.add_argument("--models-dir", type=Path)
        q.add_argument("--out", type=Path, help="also write the JSON report here")
    t_.add_argument("--steps", type=int, default=5)
    a_.add_argument("--oos", type=Path)
    a_.add_argument("--final-steps", type=int, default=5)
    a_.add_argument("--max-steps", type=int, default=20)
    a_.add_argument("--corrections", default="", help="e.g. 1,2,4,8,16")
    a_.add_argument("--per-point", type=int, default=6)
    a_.add_argument("--no-adam", action="store_true")
    a_.add_argument("--no-generate", action="store_true")
    a_.add_argument("--model", default="")
    a_.add_argument("--plot", type=Path)
    a_.add_argument("--anchor", type=float, default=0.0, help="also run each method anchored, with this KL weight")
    a = p.parse_args(argv)
    log = lambda *x: print(*x, file=sys.stderr, flush=True)  # noqa: E731
    if a.what == "truncation":
        result = truncation(a.support, a.query, a.domains, _csv(a.eval_domains), a.tasks, a.seed, a.steps,
                            a.models_dir)
    else:
        result = side_by_side(
            a.init, a.support, a.query, a.oos, a.domains, _csv(a.eval_domains), a.tasks, a.seed, a.final_steps,
            a.max_steps, [int(x) for x in _csv(a.corrections)], a.per_point, not a.no_adam, not a.no_generate,
            a.model, a.models_dir, a.plot, log, a.anchor,
        )
    if a.out:
        a.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    _main()
