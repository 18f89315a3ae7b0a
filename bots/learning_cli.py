"""``heedful meta-train`` and ``heedful eval``: the learning commands (see docs/LEARNING.md).

- ``meta-train metric``: episodic meta-training of the metric and its calibrated radius.
- ``eval intents``: few-shot intent classification with prototypes, optionally side by
  side with the plain encoder (``--baseline``).
- ``eval corrections``: learning from corrections through the whole engine.

With ``--json`` the last line of stdout is one JSON object; progress bars go to stderr.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

meta_train_app = typer.Typer(help="Meta-train the learned artifacts (metric, LoRA initialisation).", no_args_is_help=True)
eval_app = typer.Typer(help="The two benchmarks: few-shot intents and learning from corrections.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="print one JSON object as the last line of stdout")]
ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file")]
MetricOption = Annotated[str, typer.Option("--metric", help="'default' (shipped), 'none' (plain cosine) or a path")]
EvalDomainsOption = Annotated[str, typer.Option(
    "--eval-domains", help="comma-separated domains: keep only their labels in --support/--query (not --oos)")]
DomainsOption = Annotated[Path | None, typer.Option(
    "--domains", help="JSON {domain: [labels]} (default: domains.json beside --support)")]


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _offline() -> None:
    """The learning commands never download: everything they need is installed."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _print(data: dict[str, Any], as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False) if as_json else text)


def _load_sets(files: dict[str, Path | None], eval_domains: str, domains: Path | None,
               unfiltered: tuple[str, ...] = ("--oos",)) -> dict[str, list[Any]]:
    """Load the benchmark files; with ``--eval-domains``, keep only those domains' labels."""
    from engine.training.episodes import load_domains, load_utterances, split_by_domain

    for name, path in files.items():
        if path is not None and not path.is_file():
            raise _fail(f"{name}: no such file {path}")
    try:
        sets = {name: load_utterances(path) if path else [] for name, path in files.items()}
    except (ValueError, UnicodeDecodeError) as err:
        raise _fail(str(err)) from None
    wanted = _csv(eval_domains)
    if wanted:
        first = next(path for path in files.values() if path is not None)
        domains = domains or first.parent / "domains.json"
        if not domains.is_file():
            raise _fail(f"--domains: no such file {domains} (needed for --eval-domains)")
        label_domains = load_domains(domains)
        try:
            for name in sets:
                if name not in unfiltered:
                    sets[name] = split_by_domain(sets[name], label_domains, wanted)[1]
        except ValueError as err:
            raise _fail(str(err)) from None
    return sets


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
    lr: Annotated[float, typer.Option(help="AdamW learning rate on the adapters")] = 1e-3,
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
    seed: Annotated[int, typer.Option(help="seed of episodes and adapters")] = 0,
    out: Annotated[Path, typer.Option("--out", help="artifact path")] = Path("metric.safetensors"),
    cache_dir: Annotated[Path, typer.Option(help="cache of frozen hidden states")] = Path(".cache/metric"),
    threads: Annotated[int, typer.Option(help="torch CPU threads (0: torch's default)")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Meta-train the metric on channel-tasks (episodes) and calibrate its radius."""
    _offline()
    import torch
    from tqdm import tqdm

    from engine.nn.digests import file_digest
    from engine.nn.encoder_top import EncoderTop, embed, hidden_states, load_encoder
    from engine.training.episodes import UtterancePool, load_domains, load_utterances, split_by_domain
    from engine.training.metric_train import (
        MetaTrainConfig,
        calibrate,
        episode_accuracy,
        make_artifact,
        meta_train,
        open_set_generality,
    )

    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    if loss not in ("proto", "open", "contrastive"):
        raise _fail(f"--loss must be proto, open or contrastive, not {loss!r}")
    if select not in ("accuracy", "generality"):
        raise _fail(f"--select must be accuracy or generality, not {select!r}")
    if not 0 <= k_shot_min <= k_shot:
        raise _fail("--k-shot-min must be between 0 and --k-shot")
    if not data.is_file():
        raise _fail(f"--data: no such file {data}")
    records = load_utterances(data)
    holdout, val_names = _csv(holdout_domains), _csv(val_domains)
    val_records: list[Any] = []
    if holdout or val_names:
        domains = domains or data.parent / "domains.json"
        if not domains.is_file():
            raise _fail(f"--domains: no such file {domains} (needed for --holdout-domains / --val-domains)")
        label_domains = load_domains(domains)
        try:
            records, _ = split_by_domain(records, label_domains, holdout)
            records, val_records = split_by_domain(records, label_domains, val_names)
        except ValueError as err:
            raise _fail(str(err)) from None
    config = MetaTrainConfig(
        loss=loss, steps=steps, lr=lr, rank=rank, top_layers=top_layers, n_way=n_way, n_way_max=n_way_max,
        k_shot=k_shot, k_shot_min=k_shot_min, n_query=n_query, n_oos=n_oos, select=select, scale=scale,
        margin=margin, eval_every=eval_every, seed=seed,
        calib_episodes=calib_episodes, oos_target=oos_target, example_oos=example_oos,
    )
    pool, val_pool = UtterancePool(records), UtterancePool(val_records)
    if len(pool.label_names(k_shot + n_query)) < n_way_max:
        raise _fail(f"the training data has {len(pool.label_names(k_shot + n_query))} labels with enough "
                    f"utterances; --n-way-max {n_way_max} needs more")

    model = load_encoder()
    bert = model[0].auto_model
    first = len(bert.encoder.layer) - top_layers
    texts = pool.texts + val_pool.texts
    with tqdm(total=len(texts), desc="frozen layers", unit="utt", file=sys.stderr) as bar:
        states = hidden_states(model, texts, first, cache_dir, progress=bar.update)
    train_states, val_states = states[: len(pool)], states[len(pool):]

    val_labels = len(val_pool.label_names(10))

    def score(top: EncoderTop) -> float:
        vectors = embed(top, val_states)
        if select == "generality":  # near misses come from undrawn labels: leave a third undrawn
            return open_set_generality(vectors, val_pool, episodes=40, n_way=max(2, (2 * val_labels) // 3), seed=seed)
        return episode_accuracy(vectors, val_pool, episodes=20, n_way=min(30, val_labels), seed=seed)

    validate = score if val_labels >= (4 if select == "generality" else 2) else None

    with tqdm(total=steps, desc=f"meta-train ({loss})", unit="step", file=sys.stderr) as bar:
        def on_step(step: int, record: dict[str, float]) -> None:
            bar.update(1)
            bar.set_postfix({k: round(v, 3) for k, v in record.items() if k != "step"})

        top, history = meta_train(bert, pool, train_states, config, validate, on_step)
    train_seconds = time.perf_counter() - started

    # calibrate the radius on training-pool episodes, for the metric and for the plain encoder
    with tqdm(total=2, desc="calibrate", file=sys.stderr) as bar:
        metric_vectors = embed(top, train_states)
        calib = calibrate(metric_vectors, pool, config)
        bar.update(1)
        torch.manual_seed(seed)
        frozen_vectors = embed(EncoderTop(bert, top.config), train_states)  # zero adapters: the plain encoder
        cosine_calib = calibrate(frozen_vectors, pool, config)
        bar.update(1)
    summary: dict[str, Any] = {
        "data": str(data), "data_sha256": file_digest(data), "holdout_domains": holdout, "val_domains": val_names,
        "n_utterances": len(pool), "n_labels": len(pool.by_label), "n_oos_lines": len(pool.oos),
        "train_seconds": round(train_seconds, 1), "torch": torch.__version__,
    }
    selected = [h for h in history if h.get("selected")]
    if selected:
        summary["selected_step"] = int(selected[0]["step"])
        # val_accuracy, or val_generality with --select generality (the criterion that picked the step)
        summary[f"val_{select}"] = round(selected[0]["val_accuracy"], 4)
        summary[f"val_{select}_cosine"] = round(history[0]["val_accuracy"], 4)
    losses = [h["loss"] for h in history if "loss" in h][-20:]
    summary["final_train_loss"] = round(sum(losses) / max(1, len(losses)), 4)
    artifact = make_artifact(top, calib, cosine_calib, config, summary)
    path = artifact.save(out)
    result = {"out": str(path), "digest": artifact.digest, "bytes": path.stat().st_size, **summary,
              "calibration": calib, "cosine_calibration": cosine_calib,
              "seconds": round(time.perf_counter() - started, 1)}
    _print(result, as_json, json.dumps(result, indent=2))


# -- eval intents ------------------------------------------------------------------------------


def _metric_encoder(spec: str) -> tuple[Any, Any]:
    """(encoder, artifact) for --metric; the artifact may be None (plain cosine)."""
    from engine.learning.metric import MetricArtifact, MetricEncoder, resolve_artifact
    from engine.settings import EncoderSettings
    from engine.understanding.encoder import Encoder

    try:
        path = resolve_artifact(spec)
    except FileNotFoundError as err:
        raise _fail(str(err)) from None
    artifact = MetricArtifact.load(path) if path else None
    settings = EncoderSettings()
    return (MetricEncoder(settings, artifact) if artifact else Encoder(settings)), artifact


def _embedder(encoder: Any, desc: str) -> Any:
    from tqdm import tqdm

    def embed(texts: list[str]) -> Any:
        import numpy as np

        out = []
        with tqdm(total=len(texts), desc=desc, unit="utt", file=sys.stderr, leave=False) as bar:
            for start in range(0, len(texts), 256):
                out.append(encoder.encode_blocking(texts[start:start + 256]))
                bar.update(len(out[-1]))
        return np.concatenate(out) if out else np.zeros((0, encoder.dimension), dtype=np.float32)

    return embed


def _scope(artifact: Any, cosine: bool) -> float | None:
    """The intent-scope threshold calibrated on training episodes (older artifacts: the answer one)."""
    if artifact is None:
        return None
    if cosine:
        return artifact.cosine_scope_threshold if artifact.cosine_scope_threshold is not None \
            else artifact.cosine_answer_threshold
    return artifact.scope_threshold if artifact.scope_threshold is not None else artifact.answer_threshold


@eval_app.command("intents")
def intents(
    support: Annotated[Path, typer.Option("--support", help="JSON lines: K examples per label (prototypes)")],
    query: Annotated[Path, typer.Option("--query", help="JSON lines: in-scope queries to classify")],
    oos: Annotated[Path | None, typer.Option("--oos", help="JSON lines: out-of-scope queries")] = None,
    metric_spec: MetricOption = "default",
    baseline: Annotated[bool, typer.Option("--baseline", help="also run the plain encoder, side by side")] = False,
    adapt: Annotated[bool, typer.Option("--adapt/--no-adapt", help="adapt to the support set as the engine adapts "
                                        "a channel with these corrections (learning.adapt: gated inner loop)")] = True,
    adapt_steps: Annotated[str, typer.Option(help="also sweep the inner loop, ungated, over these step counts, "
                                             "e.g. 50,100,150")] = "",
    adapt_lr: Annotated[float, typer.Option(help="its Adam learning rate")] = 1e-4,
    eval_domains: EvalDomainsOption = "",
    domains: DomainsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Few-shot intent classification: prototypes from --support, all labels at once.

    The support set is treated as one channel's corrections, and the numbers at top level are
    what the engine serves such a channel: with ``--adapt`` (default, as ``learning.adapt``),
    after its background inner loop on the support set alone — if the candidate passes the
    engine's gate — with the instant path's numbers under ``instant``. ``--baseline`` is the
    frozen encoder, no meta-learning, no adaptation. ``--adapt-steps`` adds an ungated sweep
    of the inner loop under ``adaptation``.
    """
    _offline()
    from engine.training.intent_eval import evaluate_intents

    sets = _load_sets({"--support": support, "--query": query, "--oos": oos}, eval_domains, domains)
    s, q, o = sets["--support"], sets["--query"], sets["--oos"]
    if not s or not q:
        raise _fail("--support and --query need at least one utterance each (after --eval-domains)")
    encoder, artifact = _metric_encoder(metric_spec)
    default_artifact = artifact
    if artifact is None:  # plain cosine still uses a calibrated radius: the shipped one's cosine calibration
        from engine.learning.metric import MetricArtifact, resolve_artifact

        shipped = resolve_artifact("default")
        default_artifact = MetricArtifact.load(shipped) if shipped else None
    threshold = _scope(artifact, cosine=False) if artifact else _scope(default_artifact, cosine=True)
    try:
        steps_list = [int(x) for x in _csv(adapt_steps)]
    except ValueError:
        raise _fail(f"--adapt-steps: comma-separated integers, not {adapt_steps!r}") from None
    if steps_list and artifact is None:
        raise _fail("--adapt-steps continues the metric's adapters: it needs a metric (not --metric none)")
    encoder.load()
    result: dict[str, Any] = {"metric": f"metric:{artifact.digest}" if artifact else "cosine"}
    embed = _embedder(encoder, "embed")
    instant = evaluate_intents(embed, s, q, o, threshold)
    result |= instant
    if artifact is not None and (adapt or steps_list):
        from engine.learning.channel_encoder import ChannelEncoder

        channel = ChannelEncoder(encoder)  # one copy of the top layers for both measurements
        if adapt:
            adapted, report = _channel_adapted_intents(channel, s, q, o, threshold)
            result["channel_adaptation"] = report
            if adapted is not None:
                result |= adapted
                result["instant"] = instant
        if steps_list:
            result["adaptation"] = _adapted_intents(channel, s, q, o, threshold, steps_list, adapt_lr)
    if baseline:
        from engine.settings import EncoderSettings
        from engine.understanding.encoder import Encoder

        plain = Encoder(EncoderSettings())
        plain.load()
        cos_threshold = _scope(default_artifact, cosine=True)
        base = {"metric": "cosine"} | evaluate_intents(_embedder(plain, "embed (baseline)"), s, q, o, cos_threshold)
        result["baseline"] = base
        if result.get("accuracy") is not None and base.get("accuracy"):
            result["accuracy_gain"] = round(result["accuracy"] - base["accuracy"], 4)
            result["accuracy_ratio"] = round(result["accuracy"] / base["accuracy"], 4)
    lines = [f"{k}: {v}" for k, v in result.items() if k not in ("baseline", "adaptation", "instant")]
    lines += [f"instant {k}: {v}" for k, v in result.get("instant", {}).items()]
    lines += [f"adapted {a['steps']} steps: {a}" for a in result.get("adaptation", [])]
    if baseline:
        lines += [f"baseline {k}: {v}" for k, v in result["baseline"].items()]
    _print(result, as_json, "\n".join(lines))


def _support_rows(s: list[Any]) -> tuple[list[Any], Any]:
    """The support set as one channel's corrections: its in-scope lines and each one's answer slot."""
    import numpy as np

    from engine.training.episodes import OOS

    in_scope = [u for u in s if u.label != OOS]
    names = sorted({u.label for u in in_scope})
    return in_scope, np.asarray([names.index(u.label) for u in in_scope], dtype=np.int64)


def _channel_adapted_intents(channel: Any, s: list[Any], q: list[Any], o: list[Any], threshold: float | None
                             ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The engine's gated adaptation (``Adaptation.adapt``) of one channel taught ``s``: the
    benchmark in the adapted space (None when the gate rejects the candidate) and the job's report."""
    from engine.learning.adaptation import Adaptation, AdaptConfig, eligible
    from engine.training.intent_eval import evaluate_intents

    in_scope, rows = _support_rows(s)
    config = AdaptConfig()
    if not eligible(rows, config):
        return None, {"installed": False, "why": f"fewer than {config.min_corrections} corrections over "
                                                  f"{config.min_answers} answers"}
    typer.echo(f"adapting to the support set ({config.inner.steps} inner steps, gated) ...", err=True)
    manager = Adaptation(config, channel)
    outcome = asyncio.run(manager.adapt([u.text for u in in_scope], rows))
    if outcome is None:
        return None, {"installed": False, **manager.reports[-1]}
    tensors, _, report = outcome
    found = evaluate_intents(lambda batch: channel.embed_blocking(batch, tensors), s, q, o, threshold)
    return found, {"installed": True, "steps": config.inner.steps, "lr": config.inner.lr, **report}


def _adapted_intents(channel: Any, s: list[Any], q: list[Any], o: list[Any], threshold: float | None,
                     steps_list: list[int], lr: float) -> list[dict[str, Any]]:
    """The intents benchmark after the per-channel inner loop (``learning.adapt``) on the support
    set alone, per step count: the engine's ``ChannelEncoder``, as one channel would adapt."""
    from tqdm import tqdm

    from engine.learning.channel_encoder import EncoderAdaptConfig, nbytes
    from engine.training.intent_eval import evaluate_intents

    in_scope, rows = _support_rows(s)
    texts = list(dict.fromkeys([u.text for u in s] + [u.text for u in q] + [u.text for u in o]))
    with tqdm(total=len(texts), desc="frozen layers", unit="utt", file=sys.stderr, leave=False) as bar:
        states = dict(zip(texts, channel.hidden_states_blocking(texts), strict=True))
        bar.update(len(texts))
    out = []
    for steps in steps_list:
        started = time.perf_counter()
        tensors = channel.train_blocking([states[u.text] for u in in_scope], rows,
                                         EncoderAdaptConfig(steps=steps, lr=lr)) if steps else channel.meta_tensors()
        train_s = time.perf_counter() - started
        found = evaluate_intents(
            lambda batch, t=tensors: channel.embed_states_blocking([states[x] for x in batch], t), s, q, o, threshold)
        out.append({"steps": steps, "lr": lr, "train_seconds": round(train_s, 2), "adapter_bytes": nbytes(tensors),
                    **{k: found.get(k) for k in ("accuracy", "in_scope_recall", "oos_recall")}})
    return out


# -- eval corrections --------------------------------------------------------------------------


@eval_app.command("corrections")
def corrections(
    support: Annotated[Path, typer.Option("--support", help="JSON lines: the corrections to teach")],
    query: Annotated[Path, typer.Option("--query", help="JSON lines: other phrasings (generality)")],
    oos: Annotated[Path | None, typer.Option("--oos", help="JSON lines: out-of-scope questions (locality)")] = None,
    mode: Annotated[str, typer.Option("--mode", help="metric (recall by the learned metric), lora (per-channel "
                                      "adapters from the meta-learned init, with baselines) or both")] = "metric",
    metric_spec: MetricOption = "default",
    model: Annotated[str, typer.Option("--model", help="LLM id (default: the configured one)")] = "",
    lora_init: Annotated[Path | None, typer.Option("--lora-init", help="LoRA init artifact (default: the shipped "
                                                   "one)")] = None,
    tasks: Annotated[int, typer.Option(help="lora: channel-tasks (imaginary channels) to adapt")] = 16,
    inner_steps: Annotated[int, typer.Option(help="lora: inner-loop steps per channel (every method)")] = 5,
    max_steps: Annotated[int, typer.Option(help="lora: steps drawn in the query-loss curve")] = 20,
    lora_curve: Annotated[str, typer.Option(help="lora: corrections per channel for the curve (empty: none)")] = "1,2,4,8",
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
    plot: Annotated[Path | None, typer.Option("--plot", help="draw the curve into this PNG")] = None,
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
    radius, each channel's promoted adapter generates the rest) at top level, with the metric
    path alone under ``metric_path`` and the LoRA side-by-side under ``lora_path``.
    """
    _offline()
    from .config import ConfigError, load_settings
    from .correction_bench import BenchConfig

    if mode not in ("metric", "lora", "both"):
        raise _fail(f"--mode must be metric, lora or both, not {mode!r}")
    try:
        settings = load_settings(config)
        points = tuple(int(p) for p in _csv(curve))
        lora_points = [int(p) for p in _csv(lora_curve)]
    except (ConfigError, ValueError) as err:
        raise _fail(str(err)) from None
    if lora_init is not None and not lora_init.is_file():
        raise _fail(f"--lora-init: no such file {lora_init}")
    sets = _load_sets({"--support": support, "--query": query, "--oos": oos, "--curve-support": curve_support},
                      eval_domains, domains)
    s, q, o = sets["--support"], sets["--query"], sets["--oos"]
    c = sets["--curve-support"] if curve_support else s
    if not s or not q:
        raise _fail("--support and --query need at least one utterance each (after --eval-domains)")
    plots = {"metric": plot, "lora": plot, "both": plot}
    if plot is not None and mode == "both":
        plots = {p: plot.with_name(f"{plot.stem}-{p}{plot.suffix or '.png'}") for p in plots}
    result: dict[str, Any] = {"mode": mode}
    if mode in ("metric", "both"):
        bench = BenchConfig(channels=channels, limit=limit, uncorrected=uncorrected, curve=points,
                            curve_queries=curve_queries, concurrency=concurrency, seed=seed)
        metric_result = _metric_corrections(settings.engine_settings(), s, q, o, c, bench, metric_spec, model,
                                            max_new_tokens, plots["metric"])
        if mode == "metric":
            result |= metric_result
        else:  # the engine as it serves: the metric answers within its radius, channel adapters generate
            result |= _metric_corrections(settings.engine_settings(), s, q, o, c, bench, metric_spec, model,
                                          max_new_tokens, plots["both"], lora=True)
            result["metric_path"] = metric_result
    if mode in ("lora", "both"):
        from .lora_cli import eval_corrections_lora

        started = time.perf_counter()
        try:
            lora_result = eval_corrections_lora(
                support, query, oos, _csv(eval_domains), tasks, seed, plots["lora"], mode,
                log=lambda *x: print(*x, file=sys.stderr, flush=True), init=lora_init, domains=domains,
                final_steps=inner_steps, max_steps=max(max_steps, inner_steps), corrections=lora_points,
                model_id=model, models_dir=settings.engine_settings().model_cache_dir)
        except (FileNotFoundError, ValueError) as err:
            raise _fail(str(err)) from None
        lora_result["seconds"] = round(time.perf_counter() - started, 1)
        result |= lora_result if mode == "lora" else {"lora_path": lora_result}
    text = "\n".join(f"{k}: {v}" for k, v in result.items() if k != "side_by_side")
    _print(result, as_json, text)


def _metric_corrections(engine_settings: Any, s: list[Any], q: list[Any], o: list[Any], c: list[Any], bench: Any,
                        metric_spec: str, model: str, max_new_tokens: int, plot: Path | None,
                        lora: bool = False) -> dict[str, Any]:
    """``correction_bench.run_benchmark``'s numbers from a throw-away engine: the metric path
    alone, or (``lora``) with per-channel LoRA consolidation on, as the engine serves by default."""
    from tqdm import tqdm

    from engine import Engine

    from .correction_bench import planned_questions, run_benchmark

    with tempfile.TemporaryDirectory(prefix="heedful-eval-") as tmp:
        engine_settings = engine_settings.model_copy(update={
            "data_dir": Path(tmp),
            "models_dir": engine_settings.model_cache_dir,  # reuse the converted model
            "model": engine_settings.model.model_copy(update={"max_new_tokens": max_new_tokens,
                                                               **({"id": model} if model else {})}),
            "learning": engine_settings.learning.model_copy(update={"metric": metric_spec}),
            # Consolidate as soon as a channel has been taught (the benchmark teaches in one burst).
            "lora": engine_settings.lora.model_copy(update={"enabled": lora, "debounce_s": 0.2}),
        })

        async def go() -> dict[str, Any]:
            async with Engine(engine_settings) as engine:
                total = planned_questions(s, q, o, c, bench)
                with tqdm(total=total, desc="corrections benchmark", unit="reply", file=sys.stderr) as bar:
                    out = await run_benchmark(engine, s, q, o, c, bench, progress=bar.update)
                return {"metric": engine.matching.metric_name, "model": engine.model_name, "lora": lora,
                        "answer_threshold": round(engine.matching.answer_threshold, 4),
                        "example_threshold": round(engine.matching.example_threshold, 4), **out}

        started = time.perf_counter()
        try:
            result = asyncio.run(go())
        except FileNotFoundError as err:
            raise _fail(str(err)) from None
    result["seconds"] = round(time.perf_counter() - started, 1)
    if plot is not None and result["curve"]:
        _plot_curve(result["curve"], plot, result["metric"] + (" + LoRA" if lora else ""))
        result["plot"] = str(plot)
    return result


def _plot_curve(curve: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [p["corrections"] for p in curve]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, style in (("generality", "o-"), ("reliability", "s--"), ("locality", "^:")):
        ax.plot(xs, [p[key] for p in curve], style, label=key)
    save_curve_plot(fig, ax, path, ylabel="share of replies", title=f"learning from corrections ({title})",
                    legend="lower left")


def save_curve_plot(fig: Any, ax: Any, path: Path, *, ylabel: str, title: str, legend: str,
                    legend_size: float | None = None) -> None:
    """Finish a plot along sequential corrections (log x, shares on y) and write it to ``path``."""
    import matplotlib.pyplot as plt

    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("sequential corrections in one channel")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc=legend, fontsize=legend_size)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
