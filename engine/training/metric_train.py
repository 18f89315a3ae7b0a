"""Meta-training the metric: the outer loop over episodes, then the scope radius.

The layers below the adapted ones never change, so their output is computed once per
utterance and cached on disk (``hidden_states``); every step then runs only the top
``top_layers`` layers (the CPU budget: minutes, not hours). One step::

    episode  = N labels × K support + N × n_query queries        (episodes.EpisodeSampler)
    z        = EncoderTop(cached states of those utterances)        (N·K + Q, 384)
    loss     = prototypical_loss(z_support, z_query)              (nn/protonet.py), or
               siamese_loss(z_support, z_query)                   (siamese.py)
    AdamW step on the LoRA weights only

With validation domains, the LoRA weights of the step that did best on their episodes are
kept (model selection never sees held-out data): by 5-shot accuracy, or (``select =
"generality"``) by open-set generality — the share of paraphrases answered right from
1, 2 and 5 corrections at the radius that turns away 95 % of the validation episodes'
near misses, which is what a channel experiences. Afterwards the radius is calibrated on
fresh episodes of the *training* pool, whose out-of-scope queries are the ``oos`` lines
and labels the episode did not draw: the answer threshold is the similarity that
``oos_target`` of those queries stay below; the example threshold likewise for
``example_oos``. The scope threshold (intent out-of-scope detection, ``eval intents``)
is the equal-error point between in-scope queries and the ``oos`` lines alone. The plain
encoder is calibrated on the same episodes, for baselines.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from ..learning.metric import MetricArtifact
from ..learning.support_set import answer_scores
from ..nn.encoder_top import EncoderTop, MetricConfig, States, collate, embed, hidden_states, load_encoder, lower_layers
from ..nn.protonet import open_prototypical_loss, prototypical_loss
from .episodes import EpisodeConfig, EpisodeSampler, UtterancePool
from .siamese import SiameseConfig, siamese_loss

__all__ = [
    "MetaTrainConfig",
    "load_encoder",
    "lower_layers",
    "hidden_states",
    "collate",
    "embed",
    "meta_train",
    "episode_accuracy",
    "open_set_generality",
    "calibrate",
    "make_artifact",
]


@dataclass(frozen=True, slots=True)
class MetaTrainConfig:
    loss: str = "proto"          # proto | open | contrastive
    steps: int = 300             # outer steps (one episode each)
    lr: float = 1e-3             # AdamW on the LoRA weights
    weight_decay: float = 0.01
    n_way: int = 10              # labels per training episode: uniform in [n_way, n_way_max]
    n_way_max: int = 30
    k_shot: int = 5
    k_shot_min: int = 0          # > 0: shots per training episode uniform in [k_shot_min, k_shot]
    n_query: int = 3             # queries per label
    n_oos: int = 20              # out-of-scope queries per training episode (the "open" loss)
    boundary: float = 0.5        # "open": initial similarity boundary of the none class (learned)
    select: str = "accuracy"     # validation criterion: accuracy | generality
    scale: float = 20.0          # protonet: softmax inverse temperature
    margin: float = 0.5          # contrastive: margin on the cosine distance
    top_layers: int = 2          # adapted layers, from the top
    rank: int = 16               # LoRA rank
    eval_every: int = 50         # validation every N steps (with validation domains)
    seed: int = 0
    # radius calibration, on training-pool episodes (never on test data)
    calib_episodes: int = 300
    calib_n_way: int = 5         # channels of 5 .. 60 answers
    calib_n_way_max: int = 60
    oos_target: float = 0.95     # share of out-of-scope queries the answer threshold must turn away
    example_oos: float = 0.80    # the same for the (lower) example threshold
    calib_shots: tuple[int, ...] = (1, 2, 3, 5, 10)  # answer thresholds per corrections behind an answer


def meta_train(
    bert: torch.nn.Module,
    pool: UtterancePool,
    states: States,
    config: MetaTrainConfig,
    validate: Callable[[EncoderTop], float] | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[EncoderTop, list[dict[str, float]]]:
    """The outer loop. Returns the LoRA weights (the best validated step's, when ``validate``) and a log."""
    torch.manual_seed(config.seed)
    top = EncoderTop(bert, MetricConfig(top_layers=config.top_layers, rank=config.rank))
    open_set = config.loss == "open"
    sampler = EpisodeSampler(pool, EpisodeConfig(n_way=config.n_way, n_way_max=config.n_way_max,
                                                 k_shot=config.k_shot, k_shot_min=config.k_shot_min,
                                                 n_query=config.n_query, n_oos=config.n_oos if open_set else 0),
                             seed=config.seed)
    boundary = torch.nn.Parameter(torch.tensor(config.boundary))
    params = [p for p in top.parameters() if p.requires_grad] + ([boundary] if open_set else [])
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    history: list[dict[str, float]] = []
    best = (validate(top), 0, top.lora_tensors()) if validate else None
    if best is not None:
        history.append({"step": 0, "val_accuracy": best[0]})
    for step in range(1, config.steps + 1):
        top.train()
        episode = sampler.sample()
        n, k = episode.support.shape
        ix = np.concatenate([episode.support.reshape(-1), episode.query, episode.oos if open_set else []])
        z = top(*collate([states[int(i)] for i in ix]))                              # (N·K + Q + O, D)
        q = len(episode.query)
        support, query = z[: n * k].reshape(n, k, -1), z[n * k:n * k + q]             # (N, K, D), (Q, D)
        labels = torch.as_tensor(episode.query_labels)
        if config.loss == "proto":
            loss, accuracy = prototypical_loss(support, query, labels, config.scale)
        elif open_set:
            loss, accuracy = open_prototypical_loss(support, query, labels, z[n * k + q:], boundary, config.scale)
        elif config.loss == "contrastive":
            loss = siamese_loss(support, query, labels, SiameseConfig(margin=config.margin))
            with torch.no_grad():
                _, accuracy = prototypical_loss(support, query, labels, config.scale)
        else:
            raise ValueError(f"unknown loss {config.loss!r}: proto | open | contrastive")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        record = {"step": step, "loss": loss.item(), "accuracy": accuracy.item()}
        if open_set:
            record["boundary"] = boundary.item()
        if validate and (step % config.eval_every == 0 or step == config.steps):
            record["val_accuracy"] = validate(top)
            assert best is not None
            if record["val_accuracy"] > best[0]:
                best = (record["val_accuracy"], step, top.lora_tensors())
        history.append(record)
        if on_step:
            on_step(step, record)
    if best is not None:
        top.load_lora_tensors(best[2])
        history.append({"step": best[1], "selected": 1.0, "val_accuracy": best[0]})
    return top, history


def episode_accuracy(vectors: np.ndarray, pool: UtterancePool, episodes: int, n_way: int, k_shot: int = 5,
                     n_query: int = 5, seed: int = 0) -> float:
    """Mean prototype accuracy over seeded episodes (for validation-domain model selection)."""
    sampler = EpisodeSampler(pool, EpisodeConfig(n_way=n_way, k_shot=k_shot, n_query=n_query, n_oos=0), seed=seed)
    hits = []
    for episode in sampler.take(episodes):
        protos = vectors[episode.support].mean(axis=1)                                  # (N, D)
        protos /= np.linalg.norm(protos, axis=1, keepdims=True)
        hits.append(((vectors[episode.query] @ protos.T).argmax(1) == episode.query_labels).mean())
    return float(np.mean(hits))


def open_set_generality(vectors: np.ndarray, pool: UtterancePool, episodes: int, n_way: int,
                        shots: Sequence[int] = (1, 2, 5), n_query: int = 5, oos_target: float = 0.95,
                        seed: int = 0) -> float:
    """Mean over ``shots`` of the share of in-scope queries answered right and inside the radius
    that turns away ``oos_target`` of the episodes' out-of-scope queries (near misses from
    undrawn labels, and ``oos`` lines when the pool has them).

    The radius is set on the same episodes it is measured on: this is a model-selection
    score (how well the space separates paraphrases from near misses), not a calibration.
    """
    config = MetaTrainConfig(calib_episodes=episodes, calib_n_way=n_way, calib_n_way_max=n_way, k_shot=max(shots))
    rates = []
    for k in shots:
        ins, hit, outs, _ = _episode_scores(vectors, pool, config, k, seed + k, n_query=n_query)
        radius = float(np.quantile(outs, oos_target))
        rates.append(float(((ins >= radius) & hit).mean()))
    return float(np.mean(rates))


def _episode_scores(vectors: np.ndarray, pool: UtterancePool, config: MetaTrainConfig, k_shot: int,
                    seed: int, n_query: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Best answer scores of in-scope queries (with whether the best was right) and of
    out-of-scope ones (with whether each is an ``oos`` line), over calibration episodes."""
    top = min(config.calib_n_way_max, len(pool.label_names(k_shot + 5)))
    sampler = EpisodeSampler(pool, EpisodeConfig(n_way=min(config.calib_n_way, top), n_way_max=top,
                                                 k_shot=k_shot, n_query=n_query, n_oos=40), seed=seed)
    inside: list[np.ndarray] = []   # per episode: (Q,) best score of each in-scope query
    correct: list[np.ndarray] = []  # (Q,) was that best answer the right one
    outside: list[np.ndarray] = []  # (O,) best score of each out-of-scope query
    is_line: list[np.ndarray] = []  # (O,) which of those are ``oos`` lines (not undrawn labels)
    for episode in sampler.take(config.calib_episodes):
        n, k = episode.support.shape
        members = vectors[episode.support.reshape(-1)]                                  # (N·K, D)
        rows = np.repeat(np.arange(n), k)                                               # (N·K,)
        protos = vectors[episode.support].mean(axis=1)
        protos /= np.linalg.norm(protos, axis=1, keepdims=True)                         # (N, D)
        for ix, is_in in ((episode.query, True), (episode.oos, False)):
            q = vectors[ix]
            s = answer_scores(q @ members.T, rows, q @ protos.T)                        # (Q, N)
            (inside if is_in else outside).append(s.max(axis=1))
            if is_in:
                correct.append(s.argmax(axis=1) == episode.query_labels)
        is_line.append(np.isin(episode.oos, pool.oos))
    return np.concatenate(inside), np.concatenate(correct), np.concatenate(outside), np.concatenate(is_line)


def calibrate(vectors: np.ndarray, pool: UtterancePool, config: MetaTrainConfig, seed: int | None = None
              ) -> dict[str, Any]:
    """Answer and example thresholds from training-pool episodes, and what they achieve there.

    ``vectors`` (len(pool), D) unit embeddings of the pool in the space being calibrated.
    Each episode is scored exactly as the engine scores a channel (``answer_scores``).
    The answer threshold is also calibrated per number of corrections behind an answer
    (``calib_shots``): a prototype of one correction sits farther from its paraphrases
    than one of ten, so one radius for all would be too strict for the first correction
    of an answer and too loose for a well-taught one.
    """
    seed = config.seed + 1000 if seed is None else seed
    ins, hit, outs, lines_mask = _episode_scores(vectors, pool, config, config.k_shot, seed)
    lines = outs[lines_mask]
    answer = float(np.quantile(outs, config.oos_target))
    example = float(np.quantile(outs, config.example_oos))
    scope = equal_error_threshold(ins, lines) if len(lines) else answer
    per_shot: dict[str, float] = {}
    for k in config.calib_shots:
        if k == config.k_shot:
            per_shot[str(k)] = round(answer, 4)
        elif len(pool.label_names(k + 5)) >= 2:
            _, _, outs_k, _ = _episode_scores(vectors, pool, config, k, seed + k)
            per_shot[str(k)] = round(float(np.quantile(outs_k, config.oos_target)), 4)
    return {
        "answer_threshold": round(answer, 4),
        "answer_thresholds": per_shot,
        "example_threshold": round(min(example, answer, *per_shot.values()), 4),
        "scope_threshold": round(scope, 4),
        "calib_scope_in_scope_recall": round(float((ins >= scope).mean()), 4),
        "calib_scope_oos_recall": round(float((lines < scope).mean()), 4) if len(lines) else None,
        "calib_accuracy": round(float(hit.mean()), 4),
        "calib_in_scope_recall": round(float((ins >= answer).mean()), 4),
        "calib_oos_recall": round(float((outs < answer).mean()), 4),
        "calib_generality": round(float(((ins >= answer) & hit).mean()), 4),
        "calib_episodes": config.calib_episodes,
        "calib_queries": len(ins),
        "calib_oos_queries": len(outs),
    }


def equal_error_threshold(inside: np.ndarray, outside: np.ndarray) -> float:
    """The score where the share of ``inside`` scores below it equals the share of ``outside`` above it."""
    grid = np.unique(np.concatenate([inside, outside]))
    miss = np.searchsorted(np.sort(inside), grid, side="left") / len(inside)           # in-scope turned away
    false = 1.0 - np.searchsorted(np.sort(outside), grid, side="left") / len(outside)   # out-of-scope let in
    return float(grid[np.argmin(np.abs(miss - false))])


def _shots(table: dict[str, float] | None) -> dict[int, float] | None:
    return {int(k): float(v) for k, v in table.items()} if table else None


def make_artifact(top: EncoderTop, metric: dict[str, Any], cosine: dict[str, Any], config: MetaTrainConfig,
                  meta: dict[str, Any]) -> MetricArtifact:
    return MetricArtifact(
        config=top.config,
        tensors=top.lora_tensors(),
        answer_threshold=metric["answer_threshold"],
        example_threshold=metric["example_threshold"],
        cosine_answer_threshold=cosine["answer_threshold"],
        cosine_example_threshold=cosine["example_threshold"],
        scope_threshold=metric.get("scope_threshold"),
        answer_thresholds=_shots(metric.get("answer_thresholds")),
        cosine_answer_thresholds=_shots(cosine.get("answer_thresholds")),
        cosine_scope_threshold=cosine.get("scope_threshold"),
        meta={"hyperparameters": asdict(config), "calibration": metric, "cosine_calibration": cosine,
              "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())} | meta,
    )
