"""``heedful meta-train`` and ``heedful eval``: the learning commands (docs/LEARNING.md, docs/LORA.md).

- ``meta-train metric``: episodic meta-training of the metric and its calibrated radius;
- ``meta-train lora``: meta-learning the LoRA initialisation consolidation starts from;
- ``eval intents``: few-shot intent classification with prototypes, optionally side by
  side with the plain encoder (``--baseline``);
- ``eval corrections``: learning from corrections through the whole engine;
- ``meta-train preference``: meta-learning the taste prior across simulated people
  (``engine.training.preference_train``);
- ``eval personal``: the personal scope: recall and isolation of what people tell about
  themselves, taste learned from 👍/👎 (``preference_match``), and their cost
  (``engine.training.personal_eval``, ``engine.training.preference_eval``).

Each command parses its options and makes one call into ``engine.training`` (``metric_run``,
``lora_run``, ``intents_run``, ``corrections_run``), then prints the result. With
``--json`` the last line of stdout is one JSON object; progress bars go to stderr.
``bots.cli`` registers the two apps.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from engine.offline import offline_environment
from engine.training.runs import RunError, stderr_bars, stderr_log

from .cli_common import ConfigOption, JsonOption, csv, emit, fail
from .config import settings_or_exit
from .presets import PRESETS

__all__ = ["eval_app", "meta_train_app"]

meta_train_app = typer.Typer(help="Meta-train the learned artifacts (metric, verifier, LoRA initialisation, "
                             "taste prior).",
                             no_args_is_help=True)
eval_app = typer.Typer(help="The benchmarks: few-shot intents, learning from corrections, the personal scope.",
                       no_args_is_help=True)

MetricOption = Annotated[str, typer.Option("--metric", help="'default' (shipped), 'none' (plain cosine) or a path")]
EvalDomainsOption = Annotated[str, typer.Option(
    "--eval-domains", help="comma-separated domains: keep only their labels in --support/--query (not --oos)")]
DomainsOption = Annotated[Path | None, typer.Option(
    "--domains", help="JSON {domain: [labels]} (default: domains.json beside --support)")]

SYSTEMS: tuple[str | None, ...] = (None, *PRESETS.values())
"""The system prompts a drawn channel-task may use: none, or one of the persona presets."""

T = TypeVar("T")


def _offline() -> None:
    """The learning commands never download: everything they need is installed (an
    operator's own setting wins)."""
    offline_environment(force=False)


def _or_exit(call: Callable[[], T]) -> T:
    """``call()``, with a run's ``RunError`` reported as the command's error (exit status 2)."""
    try:
        return call()
    except RunError as err:
        raise fail(str(err)) from None


# -- meta-train metric -----------------------------------------------------------------------


@meta_train_app.command("metric")
def metric(
    data: Annotated[Path, typer.Option("--data", help="labelled utterances, JSON lines {text, label}; 'oos' lines "
                                       "calibrate the radius")],
    holdout_domains: Annotated[str, typer.Option(help="comma-separated domains never seen by training")] = "",
    val_domains: Annotated[str, typer.Option(help="comma-separated domains that only select the best step")] = "",
    domains: Annotated[Path | None, typer.Option(help="JSON {domain: [labels]} (default: domains.json beside "
                                                 "--data)")] = None,
    loss: Annotated[str, typer.Option(help="proto | open (proto with a none class for out-of-scope "
                                      "queries) | contrastive")] = "proto",
    steps: Annotated[int, typer.Option(help="outer steps, one episode each")] = 300,
    lr: Annotated[float, typer.Option(help="AdamW learning rate on the LoRA weights")] = 1e-3,
    rank: Annotated[int, typer.Option(help="LoRA rank")] = 16,
    top_layers: Annotated[int, typer.Option(help="adapted encoder layers, from the top")] = 2,
    n_way: Annotated[int, typer.Option(help="fewest labels per training episode")] = 10,
    n_way_max: Annotated[int, typer.Option(help="most labels per training episode")] = 30,
    k_shot: Annotated[int, typer.Option(help="support utterances per label")] = 5,
    k_shot_min: Annotated[int, typer.Option(help="> 0: shots per episode drawn from [k-shot-min, k-shot]")] = 0,
    n_query: Annotated[int, typer.Option(help="queries per label")] = 3,
    n_oos: Annotated[int, typer.Option(help="out-of-scope queries per episode (--loss open)")] = 20,
    select: Annotated[str, typer.Option(help="keep the step with the best validation accuracy | generality "
                                        "(open-set, 1/2/5 shots)")] = "accuracy",
    scale: Annotated[float, typer.Option(help="protonet softmax inverse temperature")] = 20.0,
    margin: Annotated[float, typer.Option(help="contrastive margin on the cosine distance")] = 0.5,
    eval_every: Annotated[int, typer.Option(help="validate every N steps")] = 50,
    oos_target: Annotated[float, typer.Option(help="share of training out-of-scope queries the radius turns "
                                              "away")] = 0.95,
    example_oos: Annotated[float, typer.Option(help="the same for the example threshold")] = 0.80,
    calib_episodes: Annotated[int, typer.Option(help="calibration episodes")] = 300,
    seed: Annotated[int, typer.Option(help="seed of episodes and LoRA weights")] = 0,
    out: Annotated[Path, typer.Option("--out", help="artifact path")] = Path("metric.safetensors"),
    cache_dir: Annotated[Path, typer.Option(help="cache of frozen hidden states")] = Path(".cache/metric"),
    threads: Annotated[int, typer.Option(help="torch CPU threads (0: torch's default)")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Meta-train the metric on channel-tasks (episodes) and calibrate its radius."""
    _offline()
    if loss not in ("proto", "open", "contrastive"):
        raise fail(f"--loss must be proto, open or contrastive, not {loss!r}")
    if select not in ("accuracy", "generality"):
        raise fail(f"--select must be accuracy or generality, not {select!r}")
    if not 0 <= k_shot_min <= k_shot:
        raise fail("--k-shot-min must be between 0 and --k-shot")
    from engine.training.metric_run import MetricRunConfig, run_metric_training
    from engine.training.metric_train import MetaTrainConfig

    run = MetricRunConfig(
        data=data, holdout_domains=tuple(csv(holdout_domains)), val_domains=tuple(csv(val_domains)), domains=domains,
        train=MetaTrainConfig(
            loss=loss, steps=steps, lr=lr, rank=rank, top_layers=top_layers, n_way=n_way, n_way_max=n_way_max,
            k_shot=k_shot, k_shot_min=k_shot_min, n_query=n_query, n_oos=n_oos, select=select, scale=scale,
            margin=margin, eval_every=eval_every, seed=seed, calib_episodes=calib_episodes, oos_target=oos_target,
            example_oos=example_oos),
        out=out, cache_dir=cache_dir, threads=threads)
    result = _or_exit(lambda: run_metric_training(run, stderr_bars))
    emit(result, as_json, json.dumps(result, indent=2))


# -- meta-train verifier ---------------------------------------------------------------------


@meta_train_app.command("verifier")
def verifier(
    data: Annotated[Path, typer.Option("--data", help="labelled utterances, JSON lines {text, label} with "
                                       "domains (--domains)")],
    holdout_domains: Annotated[str, typer.Option(help="comma-separated domains never seen")] = "",
    val_domains: Annotated[str, typer.Option(help="comma-separated domains that select the step and calibrate "
                                             "the thresholds")] = "",
    domains: Annotated[Path | None, typer.Option(help="JSON {domain: [labels]} (default: domains.json beside "
                                                 "--data)")] = None,
    metric: Annotated[str, typer.Option(help="the metric whose space retrieves candidates: default | none | "
                                        "a path")] = "default",
    steps: Annotated[int, typer.Option(help="training steps")] = 1200,
    batch: Annotated[int, typer.Option(help="pairs per step")] = 64,
    lr: Annotated[float, typer.Option(help="AdamW learning rate on LoRA and head")] = 5e-4,
    rank: Annotated[int, typer.Option(help="LoRA rank on every linear map")] = 16,
    top_layers: Annotated[int, typer.Option(help="layers carrying LoRA, from the top")] = 6,
    apply_rejection: Annotated[float, typer.Option(help="share of validation negatives below the apply "
                                                   "threshold")] = 0.95,
    related_rejection: Annotated[float, typer.Option(help="the same for the related threshold")] = 0.80,
    eval_every: Annotated[int, typer.Option(help="validate every N steps")] = 100,
    calib_episodes: Annotated[int, typer.Option(help="calibration episodes")] = 200,
    minutes: Annotated[float, typer.Option(help="stop training after this many minutes (0: no limit)")] = 0.0,
    seed: Annotated[int, typer.Option(help="seed of episodes and weights")] = 0,
    out: Annotated[Path, typer.Option("--out", help="artifact path")] = Path("verifier.safetensors"),
    cache_dir: Annotated[Path, typer.Option(help="cache of the metric's embeddings")] = Path(".cache/verifier"),
    threads: Annotated[int, typer.Option(help="torch CPU threads (0: torch's default)")] = 0,
    slot_check: Annotated[bool, typer.Option(help="calibrate on the negatives the engine's slot check leaves to "
                                             "the verifier (HEEDFUL_LEARNING_SLOT_CHECK)")] = True,
    swap_check: Annotated[bool, typer.Option(help="... and the swap check (HEEDFUL_LEARNING_SWAP_CHECK)")] = True,
    sense_share: Annotated[float, typer.Option(help="share of phrasings (and queries) that get a word-sense "
                                               "sibling swap as a negative")] = 0.4,
    synonym_share: Annotated[float, typer.Option(help="share of phrasings that get a synonym swap as a "
                                                 "positive")] = 0.2,
    other_negative: Annotated[bool, typer.Option(help="the data's paraphrases that the slot and swap checks "
                                                 "turn away train as negatives")] = False,
    init: Annotated[Path | None, typer.Option(help="start from this trained verifier's weights (fine-tune)")] = None,
    select: Annotated[str, typer.Option(help="keep the step with the best validation generality | the last "
                                        "(generality | last)")] = "generality",
    recalibrate: Annotated[Path | None, typer.Option(help="no training: calibrate this trained verifier again "
                                                     "(same data split and seeds) and write it to --out")] = None,
    as_json: JsonOption = False,
) -> None:
    """Meta-train the verifier (a pair model that tells near misses from paraphrases) and calibrate it."""
    _offline()
    if select not in ("generality", "last"):
        raise fail(f"--select must be generality or last, not {select!r}")
    from engine.nn.pair_encoder import PairConfig
    from engine.training.verifier_run import VerifierRunConfig, recalibrate_verifier, run_verifier_training
    from engine.training.verifier_train import VerifierTrainConfig

    run = VerifierRunConfig(
        data=data, holdout_domains=tuple(csv(holdout_domains)), val_domains=tuple(csv(val_domains)), domains=domains,
        metric=metric, pair=PairConfig(rank=rank, top_layers=top_layers),
        train=VerifierTrainConfig(steps=steps, batch=batch, lr=lr, eval_every=eval_every, seed=seed,
                                  apply_rejection=apply_rejection, related_rejection=related_rejection,
                                  slot_check=slot_check, swap_check=swap_check, sense_share=sense_share,
                                  synonym_share=synonym_share, other_negative=other_negative, select=select),
        calib_episodes=calib_episodes, minutes=minutes, out=out, cache_dir=cache_dir, threads=threads, init=init)
    if recalibrate is not None:
        trained = recalibrate
        result = _or_exit(lambda: recalibrate_verifier(run, trained, stderr_bars))
    else:
        result = _or_exit(lambda: run_verifier_training(run, stderr_bars))
    emit(result, as_json, json.dumps(result, indent=2))


# -- meta-train preference -------------------------------------------------------------------


@meta_train_app.command("preference")
def preference(
    steps: Annotated[int, typer.Option(help="outer steps")] = 2000,
    batch: Annotated[int, typer.Option(help="simulated people per step")] = 64,
    turns: Annotated[int, typer.Option(help="on-policy signals per person's episode")] = 10,
    lr: Annotated[float, typer.Option(help="Adam learning rate on the prior")] = 0.02,
    explore: Annotated[float, typer.Option(help="random pick rate of the episodes' policy (half the people)")] = 0.3,
    eval_every: Annotated[int, typer.Option(help="validate every N steps")] = 100,
    val_people: Annotated[int, typer.Option(help="validation people (validation combinations)")] = 400,
    minutes: Annotated[float, typer.Option(help="stop after this many minutes (0: no limit)")] = 0.0,
    split_seed: Annotated[int, typer.Option(help="which preference combinations are held out (the benchmark "
                                            "must use the same)")] = 0,
    seed: Annotated[int, typer.Option(help="seed of people, renderings and the episodes")] = 0,
    out: Annotated[Path, typer.Option("--out", help="artifact path")] = Path("preference.safetensors"),
    threads: Annotated[int, typer.Option(help="torch CPU threads (0: torch's default)")] = 1,
    as_json: JsonOption = False,
) -> None:
    """Meta-train the taste prior across simulated people (docs/LEARNING.md, "Taste")."""
    _offline()
    from engine.training.preference_train import PreferenceTrainConfig, run_preference_training

    run = PreferenceTrainConfig(steps=steps, batch=batch, turns=turns, lr=lr, explore=explore, eval_every=eval_every,
                                val_people=val_people, minutes=minutes, split_seed=split_seed, seed=seed, out=out,
                                threads=threads)
    result = _or_exit(lambda: run_preference_training(run, stderr_bars, stderr_log))
    emit(result, as_json, json.dumps(result, indent=2, ensure_ascii=False))


# -- meta-train lora -------------------------------------------------------------------------


@meta_train_app.command("lora")
def lora(
    data: Annotated[Path, typer.Option("--data", help="labelled utterances: JSON lines {text, label}, or CLINC150's "
                                                     "data_full.json (its train split)")],
    algo: Annotated[str, typer.Option("--algo", help="maml | fomaml | reptile | metasgd")] = "metasgd",
    domains: Annotated[Path | None, typer.Option(help="JSON {domain: [labels]} (default: domains.json beside "
                                                 "--data)")] = None,
    holdout_domains: Annotated[str, typer.Option(help="comma-separated domains never used for training")] = "",
    val_domains: Annotated[str, typer.Option(help="comma-separated domains for model selection and rate "
                                             "tuning")] = "",
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
    locality_weight: Annotated[float, typer.Option(help="weight of KL to the base model on unrelated "
                                                   "prompts")] = 1.0,
    rank: Annotated[int, typer.Option(help="LoRA rank")] = 8,
    top_layers: Annotated[int, typer.Option(help="adapted decoder layers, from the top (0: all)")] = 4,
    targets: Annotated[str, typer.Option(help="comma-separated target modules")] = "q_proj,v_proj",
    truncate: Annotated[bool, typer.Option(help="run frozen layers once per task (exact; faster)")] = True,
    tune_baselines: Annotated[bool, typer.Option(help="tune the standard-init SGD / Adam rates on validation "
                                                 "tasks")] = True,
    eval_every: Annotated[int, typer.Option(help="validate every N outer steps")] = 10,
    seed: Annotated[int, typer.Option(help="seed for tasks and the init")] = 0,
    model: Annotated[str, typer.Option(help="model id (default: the configured one)")] = "",
    out: Annotated[Path, typer.Option("--out", help="artifact path")] = Path("lora_init.safetensors"),
    cache_dir: Annotated[Path | None, typer.Option(help="keep cached task tensors here across runs")] = None,
    resume: Annotated[bool, typer.Option(help="continue from the checkpoint beside --out")] = False,
    threads: Annotated[int, typer.Option(help="torch CPU threads (0: torch's default)")] = 0,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Meta-train the LoRA initialisation on channel-tasks from labelled utterances."""
    from engine.nn.lora import LoraConfig
    from engine.training.lora_run import LoraRunConfig, run_lora_training
    from engine.training.lora_tasks import TaskConfig
    from engine.training.maml import ALGOS, MetaConfig

    if algo not in ALGOS:
        raise typer.BadParameter(f"--algo must be one of {', '.join(ALGOS)}")
    if not data.is_file():
        raise typer.BadParameter(f"--data {data} not found")
    settings = settings_or_exit(config)
    model_settings = settings.model.model_copy(update={"id": model}) if model else settings.model
    low, _, high = labels.partition("-")
    run = LoraRunConfig(
        data=data,
        meta=MetaConfig(algo=algo, inner_steps=inner_steps, inner_lr=inner_lr, inner_clip=inner_clip,
                        outer_lr=outer_lr, lr_lr=lr_lr, first_order=first_order, meta_batch=meta_batch,
                        meta_steps=steps, locality_weight=locality_weight, truncate=truncate, seed=seed),
        lora=LoraConfig(rank=rank, alpha=2.0 * rank, targets=tuple(csv(targets)), top_layers=top_layers),
        task=TaskConfig(systems=SYSTEMS, unrelated=2, min_labels=int(low), max_labels=int(high or low)),
        domains=domains, holdout_domains=tuple(csv(holdout_domains)), val_domains=tuple(csv(val_domains)),
        tasks=tasks, val_tasks=val_tasks, minutes=minutes, tune_baselines=tune_baselines, eval_every=eval_every,
        out=out, cache_dir=cache_dir, resume=resume, threads=threads)
    say = stderr_log if as_json else typer.echo  # with --json, stdout keeps only the result
    try:
        result = run_lora_training(run, model_settings, settings.engine_settings().model_cache_dir,
                                   bars=stderr_bars, log=say)
    except RunError as err:
        raise typer.BadParameter(str(err)) from None
    if as_json:
        typer.echo(json.dumps(result))


# -- eval intents ------------------------------------------------------------------------------


@eval_app.command("intents")
def intents(
    support: Annotated[Path, typer.Option("--support", help="JSON lines: K examples per label (prototypes)")],
    query: Annotated[Path, typer.Option("--query", help="JSON lines: in-scope queries to classify")],
    oos: Annotated[Path | None, typer.Option("--oos", help="JSON lines: out-of-scope queries")] = None,
    metric_spec: MetricOption = "default",
    baseline: Annotated[bool, typer.Option("--baseline", help="also run the plain encoder, side by side")] = False,
    adapt: Annotated[bool, typer.Option("--adapt/--no-adapt", help="train a channel encoder on the support set as "
                                        "the engine does for a channel with these corrections (learning.adapt: "
                                        "gated inner loop)")] = True,
    adapt_steps: Annotated[str, typer.Option(help="also sweep the channel encoder's inner loop, ungated, over these "
                                             "step counts, e.g. 50,100,150")] = "",
    adapt_lr: Annotated[float, typer.Option(help="its Adam learning rate")] = 1e-4,
    rerank: Annotated[bool, typer.Option("--rerank", help="also what the engine serves: its radius, the verifier "
                                         "over the metric's best labels, its checks; side by side")] = False,
    verifier: Annotated[str, typer.Option(help="the verifier for --rerank: default | a path")] = "default",
    eval_domains: EvalDomainsOption = "",
    domains: DomainsOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Few-shot intent classification: prototypes from --support, all labels at once.

    The support set is treated as one channel's corrections, and the numbers at top level are
    what the engine serves such a channel: with ``--adapt`` (default, as ``learning.adapt``),
    after its channel encoder's background inner loop on the support set alone — if the
    candidate passes the engine's gate — with the instant path's numbers under ``instant``.
    ``--baseline`` is the frozen encoder, no meta-learning, no adaptation. ``--adapt-steps``
    adds an ungated sweep of the inner loop under ``adaptation``. ``--rerank`` adds what the
    engine serves (its answer radius, the verifier over the metric's best labels, the slot and
    swap checks, as ``Matching.check`` decides) under ``rerank``, and ``rerank_gain``.
    """
    _offline()
    try:
        steps_list = tuple(int(x) for x in csv(adapt_steps))
    except ValueError:
        raise fail(f"--adapt-steps: comma-separated integers, not {adapt_steps!r}") from None
    from engine.training.intents_run import IntentsRunConfig, run_intents_eval

    run = IntentsRunConfig(support=support, query=query, oos=oos, metric=metric_spec, baseline=baseline, adapt=adapt,
                           adapt_steps=steps_list, adapt_lr=adapt_lr, eval_domains=tuple(csv(eval_domains)),
                           domains=domains, rerank=rerank, verifier=verifier,
                           learning=settings_or_exit(config).engine_settings().learning)
    result = _or_exit(lambda: run_intents_eval(run, bars=stderr_bars, log=stderr_log))
    lines = [f"{k}: {v}" for k, v in result.items() if k not in ("baseline", "adaptation", "instant", "rerank")]
    lines += [f"rerank {k}: {v}" for k, v in result.get("rerank", {}).items()]
    lines += [f"instant {k}: {v}" for k, v in result.get("instant", {}).items()]
    lines += [f"adapted {a['steps']} steps: {a}" for a in result.get("adaptation", [])]
    if baseline:
        lines += [f"baseline {k}: {v}" for k, v in result["baseline"].items()]
    emit(result, as_json, "\n".join(lines))


# -- eval corrections --------------------------------------------------------------------------


@eval_app.command("corrections")
def corrections(
    support: Annotated[Path, typer.Option("--support", help="JSON lines: the corrections to teach")],
    query: Annotated[Path, typer.Option("--query", help="JSON lines: other phrasings (generality)")],
    oos: Annotated[Path | None, typer.Option("--oos", help="JSON lines: out-of-scope questions (locality)")] = None,
    mode: Annotated[str, typer.Option("--mode", help="metric (recall by the learned metric), lora (per-channel "
                                      "LoRA weights from the meta-learned init, with baselines) or "
                                      "both")] = "metric",
    metric_spec: MetricOption = "default",
    verifier: Annotated[str, typer.Option(help="the verification stage: default (shipped) | none (the metric's "
                                          "radius alone) | a path")] = "default",
    model: Annotated[str, typer.Option("--model", help="LLM id (default: the configured one)")] = "",
    lora_init: Annotated[Path | None, typer.Option("--lora-init", help="LoRA init artifact (default: the shipped "
                                                   "one)")] = None,
    tasks: Annotated[int, typer.Option(help="lora: channel-tasks (imaginary channels) to adapt")] = 16,
    inner_steps: Annotated[int, typer.Option(help="lora: inner-loop steps per channel (every method)")] = 5,
    max_steps: Annotated[int, typer.Option(help="lora: steps drawn in the query-loss curve")] = 20,
    lora_curve: Annotated[str, typer.Option(help="lora: corrections per channel for the curve (empty: "
                                            "none)")] = "1,2,4,8",
    channels: Annotated[int, typer.Option(help="channels teaching different answers")] = 2,
    limit: Annotated[int, typer.Option(help="questions per measured set and channel (0: all)")] = 0,
    uncorrected: Annotated[float, typer.Option(help="share of labels never taught (locality)")] = 0.2,
    curve: Annotated[str, typer.Option(help="sequential-correction checkpoints")] = "1,10,100,1000",
    curve_support: Annotated[Path | None, typer.Option(help="JSON lines fed one by one for the curve "
                                                       "(default: --support)")] = None,
    curve_queries: Annotated[int, typer.Option(help="questions per set at each curve point")] = 100,
    concurrency: Annotated[int, typer.Option(help="replies in flight")] = 16,
    max_new_tokens: Annotated[int, typer.Option(help="reply length cap for generated replies")] = 32,
    seed: Annotated[int, typer.Option(help="seed of answers and samples")] = 0,
    feedback_sim: Annotated[bool, typer.Option("--feedback-sim", help="then simulate askers: 👍 on right answers "
                                               "from corrections, a correction on wrong codes; generality and "
                                               "locality per round under feedback_sim")] = False,
    feedback_rounds: Annotated[int, typer.Option(help="--feedback-sim: rounds of asking the feedback "
                                                 "paraphrases")] = 2,
    plot: Annotated[Path | None, typer.Option("--plot", help="draw the curve into this PNG")] = None,
    near_miss: Annotated[Path | None, typer.Option("--near-miss", help="JSON lines: questions one word away from "
                                                   "a taught one (label: the one they mimic) that must not get its "
                                                   "answer (near_miss_locality)")] = None,
    eval_domains: EvalDomainsOption = "",
    domains: DomainsOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Learning from corrections: reliability, generality, locality (and isolation, for the metric path).

    ``--mode metric`` teaches corrections to a throw-away engine and asks again; ``--mode lora``
    adapts per-channel LoRA weights from the meta-learned init on channel-tasks of the same
    files, side by side with no adaptation and with plain fine-tuning from the standard init;
    ``--mode both`` measures the engine as it serves by default (metric answers within its
    radius, each channel's promoted LoRA version generates the rest) at top level, with the
    metric path alone under ``metric_path`` and the LoRA side-by-side under ``lora_path``.
    """
    _offline()
    settings = settings_or_exit(config)
    try:
        points = tuple(int(p) for p in csv(curve))
        lora_points = tuple(int(p) for p in csv(lora_curve))
    except ValueError as err:
        raise fail(str(err)) from None
    from engine.training.correction_bench import BenchConfig
    from engine.training.corrections_run import CorrectionsRunConfig, run_corrections_eval

    run = CorrectionsRunConfig(
        support=support, query=query, oos=oos, mode=mode, metric=metric_spec, verifier=verifier, model=model,
        bench=BenchConfig(channels=channels, limit=limit, uncorrected=uncorrected, curve=points,
                          curve_queries=curve_queries, concurrency=concurrency, seed=seed,
                          feedback_sim=max(0, feedback_rounds) if feedback_sim else 0),
        curve_support=curve_support, max_new_tokens=max_new_tokens, plot=plot, lora_init=lora_init, tasks=tasks,
        inner_steps=inner_steps, max_steps=max_steps, lora_curve=lora_points, eval_domains=tuple(csv(eval_domains)),
        domains=domains, systems=SYSTEMS, near_miss=near_miss)
    result = _or_exit(lambda: run_corrections_eval(run, settings.engine_settings(), bars=stderr_bars,
                                                   log=stderr_log))
    emit(result, as_json, "\n".join(f"{k}: {v}" for k, v in result.items() if k != "side_by_side"))


# -- eval personal ---------------------------------------------------------------------------


@eval_app.command("personal")
def personal(
    model: Annotated[str, typer.Option("--model", help="LLM id (default: the configured one)")] = "",
    channels: Annotated[int, typer.Option(help="shared channels")] = 4,
    people: Annotated[int, typer.Option(help="people per channel")] = 4,
    facts: Annotated[int, typer.Option(help="facts each person tells about themselves")] = 2,
    others: Annotated[int, typer.Option(help="other people of the channel who ask each question too")] = 2,
    latency_turns: Annotated[int, typer.Option(help="turns timed one at a time, with and without facts each")] = 20,
    max_new_tokens: Annotated[int, typer.Option(help="reply length cap")] = 32,
    seed: Annotated[int, typer.Option(help="seed of codes and who asks what")] = 0,
    preference_people: Annotated[int, typer.Option(help="simulated people of the taste benchmark "
                                                   "(preference_match; 0: skip it)")] = 1000,
    preference_prior: Annotated[str, typer.Option(help="the taste prior: default (shipped) | a path")] = "default",
    preference_only: Annotated[bool, typer.Option("--preference-only", help="only the taste benchmark (no LLM: "
                                                  "seconds)")] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """The personal scope: simulated people tell facts with invented codes (``Engine.remember``), then
    ask about them through the engine; ``personal_recall`` (their replies carrying the code),
    ``personal_leaks`` (other people's replies in the same channel carrying it: must be 0), the
    latency it adds and the memory per person. Then taste: ``preference_match`` after 0, 1, 3, 5, 10
    👍/👎 of simulated people with hidden preferences, against a scorer learned from zero and the base
    model (``engine.training.preference_eval``), and what the candidates cost through the engine."""
    _offline()
    settings = settings_or_exit(config)
    from engine.training.personal_eval import PersonalEvalConfig, run_personal_eval

    run = PersonalEvalConfig(channels=channels, people=people, facts=facts, others=others,
                             latency_turns=latency_turns, max_new_tokens=max_new_tokens, seed=seed, model=model,
                             preference_people=preference_people, preference_prior=preference_prior,
                             preference_only=preference_only)
    result = _or_exit(lambda: run_personal_eval(run, settings.engine_settings(), bars=stderr_bars))
    emit(result, as_json, "\n".join(f"{k}: {v}" for k, v in result.items()))
