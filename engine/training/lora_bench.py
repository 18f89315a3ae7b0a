"""The gradient path measured on files: meta-learned inits side by side with plain fine-tuning.

- ``side_by_side``: no adaptation vs standard-init fine-tuning (SGD, Adam) vs each
  meta-learned init, on channel-tasks drawn from a support file (the corrections) and a
  query file (their paraphrases), usually of domains meta-training never saw
  (``python -m bots.lora_cli side-by-side``);
- ``eval_corrections_lora``: the same with one init, summarised in the corrections
  benchmark's names (``heedful eval corrections --mode lora|both``);
- ``truncation``: what truncated backprop costs and saves (``python -m bots.lora_cli truncation``).

The machinery (methods, step curves, judged replies, plots) is ``lora_eval``'s; this
module loads the model and the files, draws the tasks and shapes the reports.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..generation.model_loader import load_model
from ..learning.consolidation import DEFAULT_INIT_PATH, load_init
from ..nn.inner_loop import split_state
from ..nn.lora import LoraConfig, inject_lora
from ..settings import ModelSettings
from .lora_eval import (
    EvalConfig,
    Method,
    baseline_rate,
    correction_curve,
    evaluate,
    plot,
    standard_methods,
    truncation_cost,
)
from .lora_tasks import ChannelTask, TaskConfig, load_domains, load_labelled, split_domains, tasks_from_split
from .runs import Log, RunError, silent_log

__all__ = ["BASELINES", "SideBySideConfig", "TruncationConfig", "eval_corrections_lora", "side_by_side",
           "truncation"]

BASELINES = ("none", "standard_sgd", "standard_adam")
"""No adaptation, and plain fine-tuning from the standard init with SGD and with Adam."""

_DEFAULT_MODELS_DIR = Path(".cache/models")


@dataclass(frozen=True)
class SideBySideConfig:
    """What ``side_by_side`` measures, on which files, and how long each method trains."""

    inits: tuple[Path, ...]              # meta-learned init artifacts (``eval_corrections_lora``: empty = the shipped)
    support: Path                        # the corrections (JSON lines {text, label})
    query: Path                          # other phrasings of them
    oos: Path | None = None              # out-of-scope questions (unrelated prompts, for locality)
    domains: Path | None = None          # {domain: [labels]}; default: domains.json beside ``support``
    eval_domains: tuple[str, ...] = ()   # keep only these domains' labels (empty: all)
    tasks: int = 24                      # channel-tasks
    seed: int = 7
    final_steps: int = 5                 # inner steps every method trains
    max_steps: int = 20                  # steps drawn in the query-loss curve
    corrections: tuple[int, ...] = ()    # corrections per channel for the curve (empty: no curve)
    per_point: int = 6                   # tasks per curve point
    adam: bool = True                    # also the standard init with Adam
    generate: bool = True                # judge freely generated replies (else losses only)
    model: ModelSettings = dataclasses.field(default_factory=ModelSettings)
    models_dir: Path = _DEFAULT_MODELS_DIR
    plot: Path | None = None             # draw the curves into this PNG
    anchor: float = 0.0                  # > 0: every adapting method also runs anchored (KL to the base model)
    systems: tuple[str | None, ...] = (None,)  # system prompts (personas) a channel may use


def side_by_side(config: SideBySideConfig, log: Log = silent_log) -> dict[str, Any]:
    """No adaptation vs standard-init fine-tuning (SGD, Adam) vs each meta-learned init, on
    channel-tasks drawn from ``support`` (corrections) and ``query`` (paraphrases) of
    ``eval_domains``; answers use the evaluation templates that meta-training never saw. Rates
    come from the first init's metadata. With ``anchor`` > 0, every adapting method also runs
    anchored (``<name>+anchor``: its inner loss plus ``anchor`` × KL to the base model on
    unrelated anchor prompts).

    Raises ``FileNotFoundError`` for a missing init and ``IncompatibleInit`` (a ``ValueError``)
    for an init trained for another model.
    """
    started = time.perf_counter()
    loaded = load_model(config.model, config.models_dir)
    lm, tokenizer = loaded.model, loaded.tokenizer
    s_records, q_records = load_labelled(config.support), load_labelled(config.query)
    o_records = load_labelled(config.oos) if config.oos else []
    eval_domains = list(config.eval_domains)
    if eval_domains:
        label_domains = load_domains(config.domains or config.support.parent / "domains.json")
        s_records = split_domains(s_records, label_domains, eval_domains)[1]
        q_records = split_domains(q_records, label_domains, eval_domains)[1]
    methods: list[Method] = []
    first_meta: dict[str, str] = {}
    for i, path in enumerate(config.inits):
        state, _, meta = load_init(lm, path)
        if i == 0:
            methods = [m for m in standard_methods(lm, state, meta, adam=config.adam) if m.name != "meta"]
            first_meta = meta
        lora, lrs = split_state(state)
        name = path.stem if len(config.inits) > 1 else "meta"  # file names tell the runs apart
        methods.append(Method(name, lora, lrs if lrs is not None else baseline_rate(meta, "inner_lr"),
                              clip=float(meta.get("inner_clip", "1.0"))))
    if config.anchor:
        methods += [dataclasses.replace(m, name=f"{m.name}+anchor", anchor=config.anchor, baseline=False)
                    for m in methods if m.init is not None]
    base = TaskConfig(templates="eval", systems=config.systems, unrelated=3, queries=2)
    drawn = tasks_from_split(s_records, q_records, config.tasks, config.seed, base, oos=o_records)
    eval_config = EvalConfig(final_steps=config.final_steps, max_steps=config.max_steps)

    def task_news(i: int, n: int) -> None:
        if i % 4 == 0 or i == n:
            log(f"  task {i}/{n}")

    report = evaluate(lm, tokenizer, drawn, methods, eval_config, generate=config.generate, progress=task_news)
    if config.corrections:
        def make(task_config: TaskConfig, n: int) -> list[ChannelTask]:
            return tasks_from_split(s_records, q_records, n, config.seed + 1, task_config, oos=o_records)

        report.corrections, report.correction_curves = correction_curve(
            lm, tokenizer, make, methods, list(config.corrections), config.per_point, eval_config, base,
            progress=lambda i, n: log(f"  corrections point {i}/{n}"))
    report.seconds = time.perf_counter() - started
    result: dict[str, Any] = report.to_dict() | {
        "inits": [str(p) for p in config.inits], "eval_domains": eval_domains, "seed": config.seed,
        "rates": {m.name: (m.lr if isinstance(m.lr, float) else "per-parameter") for m in methods},
        "baseline_rates_tuned_on": first_meta.get("val_domains", ""), "threads": torch.get_num_threads(),
    }
    if config.plot is not None:
        unseen = set(first_meta.get("holdout_domains", "").split(","))
        kind = "held-out domains" if eval_domains and set(eval_domains) <= unseen else "domains"
        plot(report, config.plot, title=f"{kind} {','.join(eval_domains)}: {config.tasks} channels")
    return result


def eval_corrections_lora(config: SideBySideConfig, mode: str = "lora", log: Log = silent_log) -> dict[str, Any]:
    """``heedful eval corrections --mode lora|both``: the gradient path, side by side with its baselines.

    Runs ``side_by_side`` with one meta-learned init (``config.inits[0]``; none: the shipped
    ``DEFAULT_INIT_PATH``) on ``config.tasks`` channel-tasks drawn from ``support``
    (corrections) and ``query`` (paraphrases) of ``eval_domains`` (use domains meta-training
    never saw; the init's metadata names them), each method trained ``final_steps`` inner
    steps on the channel's corrections. Returns, at top level, the metric mode's names for
    the meta-learned init: ``reliability`` (a corrected question asked again: the channel's
    code is in the greedy reply), ``generality`` (other phrasings), ``locality`` (unrelated
    and out-of-scope prompts: the reply is exactly the base model's, a stricter test than
    the metric mode's "no taught code"), plus ``query_loss`` / ``query_ppl`` (teacher-forced,
    corrected answers on paraphrases), ``probe_agreement`` / ``probe_kl`` (token locality,
    the promotion test), ``steps_to_equal_loss_ratio`` (baseline -> steps it needs to reach
    the meta init's query loss at ``final_steps``, divided by ``final_steps``; None: not
    within ``max_steps``), ``baselines`` (``none``, ``standard_sgd``, ``standard_adam``: the
    same metrics, same steps) and the full report under ``side_by_side``. ``corrections``
    (e.g. ``(1, 2, 4, 8)``) adds the per-correction-count curves (and their panels in ``plot``).

    Cost on 2 CPU cores with the embedded SmolLM2: about 10 s of setup plus ~15-25 s per task
    (generation included); ``tasks=16`` stays around 6-8 minutes. ``mode="both"``: the same
    dict; the caller adds the metric path's numbers beside it. Raises ``RunError`` for a
    missing init, ``IncompatibleInit`` (a ``ValueError``) for an init of another model.
    """
    if mode not in ("lora", "both"):
        raise ValueError(f"mode must be 'lora' or 'both', not {mode!r}")
    init_path = config.inits[0] if config.inits else DEFAULT_INIT_PATH
    if not init_path.is_file():
        raise RunError(f"no LoRA init at {init_path} (train one with `heedful meta-train lora`)")
    report = side_by_side(dataclasses.replace(config, inits=(init_path,)), log)
    methods: dict[str, dict[str, float]] = report["methods"]
    keys = ("reliability", "generality", "locality", "query_loss", "query_ppl", "probe_agreement", "probe_kl")

    def pick(metrics: dict[str, float]) -> dict[str, float | None]:
        return {k: (round(metrics[k], 4) if k in metrics else None) for k in keys}

    ratios: dict[str, float | None] = report["steps_ratio"].get("meta", {})
    return {
        "mode": mode,
        "path": "lora",
        "init": str(init_path),
        **pick(methods["meta"]),
        "locality_definition": "reply to unrelated / out-of-scope prompts identical to the base model's",
        "inner_steps": config.final_steps,
        "steps_to_equal_loss_ratio": {b: (round(r, 3) if r is not None else None) for b, r in ratios.items()},
        "baselines": {name: pick(m) for name, m in methods.items() if name in BASELINES},
        "variants": {name: pick(m) for name, m in methods.items() if name not in BASELINES and name != "meta"},
        "tasks": report["tasks"],
        "eval_domains": list(config.eval_domains),
        "seed": config.seed,
        "seconds": round(report["seconds"], 1),
        **({"plot": str(config.plot)} if config.plot is not None else {}),
        "side_by_side": report,
    }


@dataclass(frozen=True)
class TruncationConfig:
    """What ``truncation`` measures: channel-tasks of ``eval_domains`` from the two files."""

    support: Path
    query: Path
    domains: Path | None = None          # default: domains.json beside ``support``
    eval_domains: tuple[str, ...] = ()
    tasks: int = 8
    seed: int = 7
    steps: int = 5
    models_dir: Path = _DEFAULT_MODELS_DIR
    adam_lr: float = 0.03
    sgd_lr: float = 1.0
    systems: tuple[str | None, ...] = (None,)


def truncation(config: TruncationConfig) -> dict[str, dict[str, float]]:
    """Truncated backprop vs full forward vs LoRA on every layer (see ``lora_eval.truncation_cost``).

    Each configuration's LoRA size is under ``lora_params`` (and, for one release, under
    its old name ``adapter_params``)."""
    top, every = (load_model(ModelSettings(), config.models_dir) for _ in range(2))
    inject_lora(top.model, LoraConfig())
    inject_lora(every.model, LoraConfig(top_layers=0))
    label_domains = load_domains(config.domains or config.support.parent / "domains.json")
    eval_domains = list(config.eval_domains)
    s_records = split_domains(load_labelled(config.support), label_domains, eval_domains)[1]
    q_records = split_domains(load_labelled(config.query), label_domains, eval_domains)[1]
    drawn = tasks_from_split(s_records, q_records, config.tasks, config.seed,
                             TaskConfig(templates="eval", systems=config.systems, unrelated=0))
    cost = truncation_cost(top.model, every.model, top.tokenizer, drawn, config.steps, config.adam_lr, config.sgd_lr)
    return {name: {**row, "lora_params": row["adapter_params"]} for name, row in cost.items()}
