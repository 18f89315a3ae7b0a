"""A whole verifier training run (``heedful meta-train verifier``), from file to artifact.

Held-out domains are removed before anything is sampled; validation domains select the
step and calibrate the thresholds (and the metric's retrieval floor); training domains
train. Utterances are embedded once by the metric (cached on disk) so that every pair is
the one the engine would verify: the message against its nearest taught phrasing.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..learning.metric import MetricArtifact, resolve_artifact
from ..learning.verifier import VerifierArtifact
from ..nn.digests import file_digest, text_digest
from ..nn.encoder_top import load_encoder, merge_into
from ..nn.pair_encoder import PairConfig, PairModel, load_bert
from .episodes import UtterancePool, load_domains, load_utterances, split_by_domain
from .runs import Bars, RunError, silent_bars
from .verifier_train import (
    Pair,
    PairSampler,
    VerifierTrainConfig,
    calibrate_verifier,
    kind_rates,
    pair_probabilities,
    train_verifier,
)

__all__ = ["VerifierRunConfig", "run_verifier_training", "recalibrate_verifier", "metric_vectors"]


@dataclass(frozen=True, slots=True)
class VerifierRunConfig:
    data: Path                              # JSON lines {text, label} (or CLINC150's data_full.json)
    holdout_domains: tuple[str, ...] = ()   # never seen
    val_domains: tuple[str, ...] = ()       # select the step and calibrate
    domains: Path | None = None             # {domain: [labels]}; default: domains.json beside ``data``
    metric: str = "default"                 # the metric whose space retrieves ('none': plain encoder)
    pair: PairConfig = field(default_factory=PairConfig)
    train: VerifierTrainConfig = field(default_factory=VerifierTrainConfig)
    calib_episodes: int = 200
    minutes: float = 0.0                    # stop training after this long (0: no limit)
    init: Path | None = None                # start from this trained verifier's weights (its pair config too)
    out: Path = Path("verifier.safetensors")
    cache_dir: Path = Path(".cache/verifier")
    threads: int = 0


def metric_vectors(texts: list[str], metric: str, cache_dir: Path | None = None) -> tuple[np.ndarray, str]:
    """(n, 384) unit embeddings of ``texts`` in the metric's space, and the metric's digest ('' = plain)."""
    path = resolve_artifact(metric)
    artifact = MetricArtifact.load(path) if path else None
    digest = artifact.digest if artifact else ""
    key = text_digest("\n".join([digest, *texts]))[:16]
    cached = cache_dir / f"vectors-{key}.npy" if cache_dir else None
    if cached is not None and cached.exists():
        return np.load(cached), digest
    model = load_encoder()
    if artifact is not None:
        merge_into(model[0].auto_model, artifact.config, artifact.tensors)
    vectors = np.asarray(model.encode(texts, normalize_embeddings=True, batch_size=128), dtype=np.float32)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.save(cached, vectors)
    return vectors, digest


@dataclass
class _Data:
    """The run's utterances split and embedded: training pool, validation pool, their vectors."""

    pool: UtterancePool
    val_pool: UtterancePool
    train_vectors: np.ndarray
    val_vectors: np.ndarray
    label_domains: dict[str, str]
    metric_digest: str


def _data(run: VerifierRunConfig, bars: Bars) -> _Data:
    if not run.data.is_file():
        raise RunError(f"--data: no such file {run.data}")
    domains_file = run.domains or run.data.parent / "domains.json"
    if not domains_file.is_file():
        raise RunError(f"--domains: no such file {domains_file} (the verifier samples one domain per episode)")
    label_domains = load_domains(domains_file)
    records = load_utterances(run.data)
    try:
        records, _ = split_by_domain(records, label_domains, list(run.holdout_domains))
        records, val_records = split_by_domain(records, label_domains, list(run.val_domains))
    except ValueError as err:
        raise RunError(str(err)) from None
    # Out-of-scope lines have no domain: half train, the other half validates and calibrates.
    oos = [r for r in records if r.label == "oos"]
    records = [r for r in records if r.label != "oos"] + oos[::2]
    pool, val_pool = UtterancePool(records), UtterancePool(val_records + oos[1::2])
    with bars(total=1, desc="embed (metric)") as bar:
        vectors, metric_digest = metric_vectors(pool.texts + val_pool.texts, run.metric, run.cache_dir)
        bar.update(1)
    return _Data(pool, val_pool, vectors[:len(pool)], vectors[len(pool):], label_domains, metric_digest)


def _sampler(data: _Data, config: VerifierTrainConfig, which: str) -> PairSampler:
    """The seeded sampler of the run's training, validation or calibration episodes."""
    pool, vectors = (data.pool, data.train_vectors) if which == "train" else (data.val_pool, data.val_vectors)
    offset = {"train": 0, "val": 1, "calib": 2}[which]
    try:
        return PairSampler(pool, data.label_domains, vectors, config, seed=config.seed + offset)
    except ValueError as err:
        raise RunError(str(err)) from None


def _calibrated(run: VerifierRunConfig, data: _Data, model: PairModel, tokenizer: Any, bars: Bars
                ) -> tuple[dict[str, float], float, dict[str, Any]]:
    """(thresholds and generality, retrieval floor, per-kind rates) on fresh validation episodes."""
    with bars(total=1, desc="calibrate") as bar:
        calib_pairs = _sampler(data, run.train, "calib").pairs(run.calib_episodes)
        probs = pair_probabilities(model, tokenizer, calib_pairs)
        bar.update(1)
    calib = calibrate_verifier(probs, calib_pairs, run.train)
    floor = _floor(calib_pairs, data.val_pool, data.val_vectors, run.train.floor_recall)
    rates = {"calibration_pairs": len(calib_pairs), "by_kind": kind_rates(probs, calib_pairs, calib["apply_threshold"])}
    return calib, floor, rates


def run_verifier_training(run: VerifierRunConfig, bars: Bars = silent_bars) -> dict[str, Any]:
    """Train the pair model on episodes of ``run.data``, calibrate it and write the artifact."""
    if run.threads:
        torch.set_num_threads(run.threads)
    started = time.perf_counter()
    start = _trained(run.init, "--init") if run.init is not None else None
    data = _data(run, bars)
    if start is not None:
        _same_space(run.init, start, data.metric_digest)
    config = run.train
    sampler, val_sampler = _sampler(data, config, "train"), _sampler(data, config, "val")
    val_pairs = val_sampler.pairs(config.val_episodes)

    torch.manual_seed(config.seed)
    pair_config = start.config if start else run.pair
    bert, tokenizer = load_bert(pair_config.encoder)
    model = PairModel(bert, pair_config)
    if start is not None:
        model.load_tensors(start.tensors)
    deadline = started + 60 * run.minutes if run.minutes > 0 else float("inf")
    with bars(total=config.steps, desc="meta-train (verifier)", unit="step") as bar:
        def on_step(step: int, record: dict[str, float]) -> None:
            bar.update(1)
            bar.set_postfix({k: round(v, 3) for k, v in record.items() if k != "step"})

        history = train_verifier(model, tokenizer, sampler, config, val_pairs, on_step,
                                 should_stop=lambda: time.perf_counter() > deadline)
    train_seconds = time.perf_counter() - started

    calib, floor, rates = _calibrated(run, data, model, tokenizer, bars)
    selected = [h for h in history if h.get("selected")]
    summary: dict[str, Any] = {
        "data": str(run.data), "data_sha256": file_digest(run.data), "holdout_domains": list(run.holdout_domains),
        "val_domains": list(run.val_domains), "n_utterances": len(data.pool), "n_labels": len(data.pool.by_label),
        "steps_run": sum(1 for h in history if "loss" in h), "train_seconds": round(train_seconds, 1),
        "selected_step": int(selected[0]["step"]) if selected else None,
        "val_generality": round(selected[0]["val_generality"], 4) if selected else None,
        "hyperparameters": asdict(config), **rates, "torch": torch.__version__,
    }
    if start is not None:
        summary["init"] = {"from": str(run.init), "digest": start.digest}
    artifact = VerifierArtifact(config=pair_config, tensors=model.tensors(), apply_threshold=calib["apply_threshold"],
                                related_threshold=calib["related_threshold"], floor=floor, metric=data.metric_digest,
                                meta={**summary, "calibration": calib})
    path = artifact.save(run.out)
    return {"out": str(path), "digest": artifact.digest, "bytes": path.stat().st_size, **summary,
            "calibration": calib, "floor": floor, "metric": data.metric_digest,
            "seconds": round(time.perf_counter() - started, 1)}


def _trained(path: Path, option: str) -> VerifierArtifact:
    """The trained verifier at ``path`` (named by ``option``), or a clear error."""
    if not path.is_file():
        raise RunError(f"{option}: no such verifier artifact {path}")
    return VerifierArtifact.load(path)


def _same_space(path: Path | None, artifact: VerifierArtifact, digest: str) -> None:
    """A verifier continues or is re-calibrated only in the metric space it was calibrated in."""
    if artifact.metric != digest:
        raise RunError(f"--metric: {path} was calibrated in metric space {artifact.metric or 'plain'!r}, "
                       f"not {digest or 'plain'!r}")


def recalibrate_verifier(run: VerifierRunConfig, trained: Path, bars: Bars = silent_bars) -> dict[str, Any]:
    """Calibrate an already trained verifier again (same validation domains and seeds as its run,
    ``run.train``'s rejection shares and slot check) and write it to ``run.out``: the pair model's
    weights are unchanged, only its thresholds and floor are new."""
    if run.threads:
        torch.set_num_threads(run.threads)
    started = time.perf_counter()
    old = _trained(trained, "--recalibrate")
    data = _data(run, bars)
    _same_space(trained, old, data.metric_digest)
    bert, tokenizer = load_bert(old.config.encoder)
    model = PairModel(bert, old.config)
    model.load_tensors(old.tensors)
    calib, floor, rates = _calibrated(run, data, model, tokenizer, bars)
    before = {"apply_threshold": old.apply_threshold, "related_threshold": old.related_threshold, "floor": old.floor}
    recalibration = {"from": str(trained), "before": before, "slot_check": run.train.slot_check,
                     "swap_check": run.train.swap_check,
                     "val_domains": list(run.val_domains), "calib_episodes": run.calib_episodes,
                     "apply_rejection": run.train.apply_rejection, "related_rejection": run.train.related_rejection}
    artifact = VerifierArtifact(config=old.config, tensors=old.tensors, apply_threshold=calib["apply_threshold"],
                                related_threshold=calib["related_threshold"], floor=floor, metric=old.metric,
                                meta={**old.meta, **rates, "calibration": calib, "recalibration": recalibration})
    path = artifact.save(run.out)
    return {"out": str(path), "digest": artifact.digest, **rates, "calibration": calib, "floor": floor,
            "before": before, "seconds": round(time.perf_counter() - started, 1)}


def _floor(pairs: list[Pair], pool: UtterancePool, vectors: np.ndarray, recall: float) -> float:
    """The metric score above which ``recall`` of the calibration paraphrases lie (to their nearest phrasing)."""
    index = {text: i for i, text in enumerate(pool.texts)}
    scores = [float(vectors[index[p.message]] @ vectors[index[p.question]])
              for p in pairs if p.kind == "paraphrase" and p.message in index and p.question in index]
    return round(float(np.quantile(scores, 1 - recall)), 4) if scores else 0.0
