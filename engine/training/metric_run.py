"""A whole meta-training run of the metric (``heedful meta-train metric``), from file to artifact.

``run_metric_training`` reads labelled utterances, keeps held-out domains out entirely and
validation domains for model selection only, computes the frozen lower layers once per
utterance (cached on disk), runs ``metric_train.meta_train``, calibrates the radius for
the metric and for the plain encoder (baselines), and writes the ``MetricArtifact``. Its
result is what the command prints: the artifact's path, digest and size, the run's
summary (also stored in the artifact), both calibrations and the wall time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..nn.digests import file_digest
from ..nn.encoder_top import EncoderTop, embed, hidden_states, load_encoder
from .episodes import UtterancePool, load_domains, load_utterances, split_by_domain
from .metric_train import (
    MetaTrainConfig,
    calibrate,
    episode_accuracy,
    make_artifact,
    meta_train,
    open_set_generality,
)
from .runs import Bars, RunError, silent_bars

__all__ = ["MetricRunConfig", "run_metric_training"]


@dataclass(frozen=True, slots=True)
class MetricRunConfig:
    """One metric meta-training run: the data, how it is split, the training, and where things go."""

    data: Path                              # JSON lines {text, label}; 'oos' lines calibrate the radius
    holdout_domains: tuple[str, ...] = ()   # never seen by training
    val_domains: tuple[str, ...] = ()       # only select the best step
    domains: Path | None = None             # {domain: [labels]}; default: domains.json beside ``data``
    train: MetaTrainConfig = field(default_factory=MetaTrainConfig)
    out: Path = Path("metric.safetensors")
    cache_dir: Path = Path(".cache/metric")  # frozen hidden states, keyed by text and layer
    threads: int = 0                        # torch CPU threads (0: torch's default)


def run_metric_training(run: MetricRunConfig, bars: Bars = silent_bars) -> dict[str, Any]:
    """Meta-train the metric on channel-tasks (episodes) of ``run.data``, calibrate its radius and
    write the artifact to ``run.out``. Raises ``RunError`` for missing files, unknown domains
    and too little data."""
    config = run.train
    if run.threads:
        torch.set_num_threads(run.threads)
    started = time.perf_counter()
    if not run.data.is_file():
        raise RunError(f"--data: no such file {run.data}")
    records = load_utterances(run.data)
    holdout, val_names = list(run.holdout_domains), list(run.val_domains)
    val_records: list[Any] = []
    if holdout or val_names:
        domains = run.domains or run.data.parent / "domains.json"
        if not domains.is_file():
            raise RunError(f"--domains: no such file {domains} (needed for --holdout-domains / --val-domains)")
        label_domains = load_domains(domains)
        try:
            records, _ = split_by_domain(records, label_domains, holdout)
            records, val_records = split_by_domain(records, label_domains, val_names)
        except ValueError as err:
            raise RunError(str(err)) from None
    pool, val_pool = UtterancePool(records), UtterancePool(val_records)
    enough = len(pool.label_names(config.k_shot + config.n_query))
    if enough < config.n_way_max:
        raise RunError(f"the training data has {enough} labels with enough utterances; "
                       f"--n-way-max {config.n_way_max} needs more")

    model = load_encoder()
    bert = model[0].auto_model
    first = len(bert.encoder.layer) - config.top_layers
    texts = pool.texts + val_pool.texts
    with bars(total=len(texts), desc="frozen layers", unit="utt") as bar:
        states = hidden_states(model, texts, first, run.cache_dir, progress=bar.update)
    train_states, val_states = states[: len(pool)], states[len(pool):]

    val_labels = len(val_pool.label_names(10))
    select = config.select

    def score(top: EncoderTop) -> float:
        vectors = embed(top, val_states)
        if select == "generality":  # near misses come from undrawn labels: leave a third undrawn
            return open_set_generality(vectors, val_pool, episodes=40, n_way=max(2, (2 * val_labels) // 3),
                                       seed=config.seed)
        return episode_accuracy(vectors, val_pool, episodes=20, n_way=min(30, val_labels), seed=config.seed)

    validate = score if val_labels >= (4 if select == "generality" else 2) else None

    with bars(total=config.steps, desc=f"meta-train ({config.loss})", unit="step") as bar:
        def on_step(step: int, record: dict[str, float]) -> None:
            bar.update(1)
            bar.set_postfix({k: round(v, 3) for k, v in record.items() if k != "step"})

        top, history = meta_train(bert, pool, train_states, config, validate, on_step)
    train_seconds = time.perf_counter() - started

    # Both spaces are calibrated on the same training-pool episodes, so the plain encoder's
    # radius is a fair baseline for the metric's.
    with bars(total=2, desc="calibrate") as bar:
        calib = calibrate(embed(top, train_states), pool, config)
        bar.update(1)
        torch.manual_seed(config.seed)
        frozen_vectors = embed(EncoderTop(bert, top.config), train_states)  # zero LoRA weights: the plain encoder
        cosine_calib = calibrate(frozen_vectors, pool, config)
        bar.update(1)
    summary: dict[str, Any] = {
        "data": str(run.data), "data_sha256": file_digest(run.data), "holdout_domains": holdout,
        "val_domains": val_names, "n_utterances": len(pool), "n_labels": len(pool.by_label),
        "n_oos_lines": len(pool.oos), "train_seconds": round(train_seconds, 1), "torch": torch.__version__,
    }
    selected = [h for h in history if h.get("selected")]
    if selected:
        summary["selected_step"] = int(selected[0]["step"])
        # val_accuracy, or val_generality with select = "generality" (the criterion that picked the step)
        summary[f"val_{select}"] = round(selected[0]["val_accuracy"], 4)
        summary[f"val_{select}_cosine"] = round(history[0]["val_accuracy"], 4)
    losses = [h["loss"] for h in history if "loss" in h][-20:]
    summary["final_train_loss"] = round(sum(losses) / max(1, len(losses)), 4)
    artifact = make_artifact(top, calib, cosine_calib, config, summary)
    path = artifact.save(run.out)
    return {"out": str(path), "digest": artifact.digest, "bytes": path.stat().st_size, **summary,
            "calibration": calib, "cosine_calibration": cosine_calib,
            "seconds": round(time.perf_counter() - started, 1)}
