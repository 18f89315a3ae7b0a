"""The few-shot understanding benchmark run on files (``heedful eval intents``).

The support file is treated as one channel's corrections; the numbers at top level are
what the engine serves such a channel. With ``adapt`` (as ``learning.adapt``), that is
after the channel encoder's gated background inner loop on the support set alone, if the
candidate passes the engine's gate, with the instant path's numbers under ``instant``.
``baseline`` adds the frozen encoder (no meta-learning, no adaptation) under ``baseline``;
``adapt_steps`` adds an ungated sweep of the channel encoder's inner loop under
``adaptation``. The scoring itself is ``intent_eval.evaluate_intents``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..learning.adaptation import Adaptation, AdaptConfig, eligible
from ..learning.channel_encoder import ChannelEncoder, EncoderAdaptConfig, Tensors, nbytes
from ..learning.matching import Matching, applying
from ..learning.metric import MetricArtifact, MetricEncoder, resolve_artifact
from ..learning.verifier import resolve_verifier
from ..settings import EncoderSettings, LearningSettings
from ..store import StoredCorrection
from ..understanding.encoder import Encoder
from .episodes import OOS, BadLine, Utterance
from .eval_sets import load_eval_sets, skipped_report
from .intent_eval import Embed, evaluate_intents
from .runs import Bars, Log, RunError, silent_bars, silent_log

__all__ = ["IntentsRunConfig", "run_intents_eval"]


@dataclass(frozen=True, slots=True)
class IntentsRunConfig:
    """One run of the intents benchmark: the files, the space, and what runs beside it."""

    support: Path                        # K examples per label (the prototypes)
    query: Path                          # in-scope queries to classify
    oos: Path | None = None              # out-of-scope queries
    metric: str = "default"              # 'default' (shipped), 'none' (plain cosine) or an artifact path
    baseline: bool = False               # also the plain encoder, side by side
    adapt: bool = True                   # the engine's gated channel-encoder adaptation to the support set
    adapt_steps: tuple[int, ...] = ()    # also sweep the inner loop, ungated, over these step counts
    adapt_lr: float = 1e-4               # the sweep's Adam rate
    eval_domains: tuple[str, ...] = ()   # keep only these domains' labels in support and query
    domains: Path | None = None          # {domain: [labels]}; default: domains.json beside ``support``
    rerank: bool = False                 # also the verifier over the metric's best labels, side by side
    verifier: str = "default"            # 'default' (shipped) or a verifier artifact path
    learning: LearningSettings = field(default_factory=LearningSettings)  # verify_*, slot_check as served


def run_intents_eval(run: IntentsRunConfig, *, bars: Bars = silent_bars, log: Log = silent_log) -> dict[str, Any]:
    """Few-shot intent classification, prototypes from ``run.support``, all labels at once.
    Raises ``RunError`` for missing or malformed files, unknown domains and a missing metric."""
    skipped: dict[str, list[BadLine]] = {}
    sets = load_eval_sets({"--support": run.support, "--query": run.query, "--oos": run.oos},
                          run.eval_domains, run.domains, skipped=skipped)
    bad_lines = skipped_report(skipped, log)
    s, q, o = sets["--support"], sets["--query"], sets["--oos"]
    if not s or not q:
        raise RunError("--support and --query need at least one utterance each (after --eval-domains)")
    encoder, artifact = _metric_encoder(run.metric)
    default_artifact = artifact
    if artifact is None:  # plain cosine still uses a calibrated radius: the shipped one's cosine calibration
        shipped = resolve_artifact("default")
        default_artifact = MetricArtifact.load(shipped) if shipped else None
    threshold = _scope(artifact, cosine=False) if artifact else _scope(default_artifact, cosine=True)
    if run.adapt_steps and artifact is None:
        raise RunError("--adapt-steps trains a channel encoder from the metric: it needs a metric (not --metric none)")
    encoder.load()
    result: dict[str, Any] = {"metric": f"metric:{artifact.digest}" if artifact else "cosine",
                              "skipped_lines": bad_lines}
    instant = evaluate_intents(_embedder(encoder, "embed", bars), s, q, o, threshold)
    result |= instant
    if isinstance(encoder, MetricEncoder) and (run.adapt or run.adapt_steps):
        channel = ChannelEncoder(encoder)  # one copy of the top layers for both measurements
        if run.adapt:
            adapted, report = _gated_adaptation(channel, s, q, o, threshold, log)
            result["channel_adaptation"] = report
            if adapted is not None:
                result |= adapted
                result["instant"] = instant
        if run.adapt_steps:
            result["adaptation"] = _adaptation_sweep(channel, s, q, o, threshold, run.adapt_steps, run.adapt_lr,
                                                     bars)
    if run.rerank:
        result["rerank"] = _reranked(run, s, q, o, bars)
        if result["rerank"].get("accuracy") is not None and instant.get("accuracy") is not None:
            result["rerank_gain"] = round(result["rerank"]["accuracy"] - instant["accuracy"], 4)
    if run.baseline:
        plain = Encoder(EncoderSettings())
        plain.load()
        cos_threshold = _scope(default_artifact, cosine=True)
        base = {"metric": "cosine"} | evaluate_intents(_embedder(plain, "embed (baseline)", bars), s, q, o,
                                                       cos_threshold)
        result["baseline"] = base
        if result.get("accuracy") is not None and base.get("accuracy"):
            result["accuracy_gain"] = round(result["accuracy"] - base["accuracy"], 4)
            result["accuracy_ratio"] = round(result["accuracy"] / base["accuracy"], 4)
    return result


def _reranked(run: IntentsRunConfig, s: Sequence[Utterance], q: Sequence[Utterance], o: Sequence[Utterance],
              bars: Bars) -> dict[str, Any]:
    """The benchmark as the engine serves the support set taught as one channel's corrections: the
    engine's own ``Matching.check`` (its radius per support size, the verifier over the metric's best
    answers, the slot and swap checks, a near copy's veto) and its rule for which candidate answers
    (``matching.applying``), query by query; beside it, the same radius without the verifier."""
    learning = run.learning.model_copy(update={"metric": run.metric, "verifier": run.verifier, "adapt": False})
    try:
        if resolve_verifier(run.verifier) is None:
            raise RunError("--rerank needs a verifier artifact (none is shipped in this checkout: run "
                           "`heedful meta-train verifier`, then pass --verifier PATH)")
        matching = Matching(learning, EncoderSettings())
    except FileNotFoundError as err:
        raise RunError(str(err)) from None
    if matching.verifier is None:
        raise RunError(f"the verifier {run.verifier} was not trained beside this encoder")

    async def served() -> dict[str, Any]:
        await matching.start()
        try:
            return await _served(matching, s, q, o, bars)
        finally:
            await matching.stop()
            await matching.encoder.stop()

    return asyncio.run(served())


async def _served(matching: Matching, s: Sequence[Utterance], q: Sequence[Utterance], o: Sequence[Utterance],
                  bars: Bars) -> dict[str, Any]:
    assert matching.verifier is not None
    support = [u for u in s if u.label != OOS]
    in_scope = [u for u in q if u.label != OOS]
    outside = [*o, *(u for u in q if u.label == OOS)]
    vectors = await matching.encoder.embed([u.text for u in support])
    channel = await matching.support_set([StoredCorrection(i, u.text, u.label, "eval", vectors[i],
                                                           matching.encoder.name, 0.0)
                                          for i, u in enumerate(support)])
    served: list[str | None] = []   # the answer that applies, as the engine serves
    best: list[str | None] = []     # the metric's best answer
    inside: list[bool] = []         # its score clears the radius (the engine without a verifier answers)
    started = time.perf_counter()
    with bars(total=len(in_scope) + len(outside), desc="as served", unit="query", leave=False) as bar:
        for u in [*in_scope, *outside]:
            matches, checks = await matching.check(channel, u.text)
            first = applying(matches, checks)
            served.append(first[0][0].correction.answer if first else None)
            top = matches[0] if matches else None
            best.append(top.correction.answer if top else None)
            inside.append(top is not None and matching.within_radius(top))
            bar.update(1)
    seconds = time.perf_counter() - started
    n = len(in_scope)
    truth = [u.label for u in in_scope]

    def share(flags: Sequence[bool]) -> float | None:
        return round(float(np.mean(flags)), 4) if len(flags) else None

    sizes = Counter(u.label for u in support)
    artifact = matching.verifier.artifact
    result: dict[str, Any] = {
        "verifier": matching.verifier.name, "metric": matching.metric_name, "answers": matching.verify_answers,
        "members": matching.verify_members, "floor": round(matching.floor, 4), "slot_check": matching.slot_check,
        "swap_check": matching.swap_check, "near_copy_veto": matching.near_copy_veto, "pair_veto": matching.pair_veto,
        "apply_threshold": round(artifact.apply_threshold, 4),
        "related_threshold": round(artifact.related_threshold, 4),
        # the radius for the most common number of support lines per label
        "radius": round(matching.answer_threshold_for(sizes.most_common(1)[0][1]), 4),
        "accuracy": share([(sv or b) == t for sv, b, t in zip(served, best, truth, strict=False)]),
        "n_labels": len(sizes), "n_support": len(support), "n_query": n,
        "in_scope_recall": share([sv is not None for sv in served[:n]]),
        "accuracy_accepted": share([sv == t for sv, t in zip(served, truth, strict=False)]),
        "ms_per_query": round(1000.0 * seconds / max(1, len(served)), 2),
        "without_verifier": {"in_scope_recall": share(inside[:n]),
                             "accuracy_accepted": share([i and b == t for i, b, t in zip(inside, best, truth,
                                                                                         strict=False)])},
    }
    if outside:
        result["n_oos"] = len(outside)
        result["oos_recall"] = share([sv is None for sv in served[n:]])
        result["without_verifier"]["oos_recall"] = share([not i for i in inside[n:]])
    return result | {"seconds": round(seconds, 1)}


def _metric_encoder(spec: str) -> tuple[Encoder, MetricArtifact | None]:
    """(encoder, artifact) for a metric spec; without an artifact (``none``) the plain cosine encoder."""
    try:
        path = resolve_artifact(spec)
    except FileNotFoundError as err:
        raise RunError(str(err)) from None
    artifact = MetricArtifact.load(path) if path else None
    settings = EncoderSettings()
    return (MetricEncoder(settings, artifact) if artifact else Encoder(settings)), artifact


def _embedder(encoder: Encoder, desc: str, bars: Bars) -> Embed:
    def embed(texts: list[str]) -> np.ndarray:
        out = []
        with bars(total=len(texts), desc=desc, unit="utt", leave=False) as bar:
            for start in range(0, len(texts), 256):
                out.append(encoder.encode_blocking(texts[start:start + 256]))
                bar.update(len(out[-1]))
        return np.concatenate(out) if out else np.zeros((0, encoder.dimension), dtype=np.float32)

    return embed


def _scope(artifact: MetricArtifact | None, cosine: bool) -> float | None:
    """The intent-scope threshold calibrated on training episodes (older artifacts: the answer one)."""
    if artifact is None:
        return None
    if cosine:
        return artifact.cosine_scope_threshold if artifact.cosine_scope_threshold is not None \
            else artifact.cosine_answer_threshold
    return artifact.scope_threshold if artifact.scope_threshold is not None else artifact.answer_threshold


def _support_rows(s: Sequence[Utterance]) -> tuple[list[Utterance], np.ndarray]:
    """The support set as one channel's corrections: its in-scope lines and each one's answer slot."""
    in_scope = [u for u in s if u.label != OOS]
    names = sorted({u.label for u in in_scope})
    return in_scope, np.asarray([names.index(u.label) for u in in_scope], dtype=np.int64)


def _gated_adaptation(channel: ChannelEncoder, s: Sequence[Utterance], q: Sequence[Utterance],
                      o: Sequence[Utterance], threshold: float | None, log: Log
                      ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The engine's gated adaptation (``Adaptation.adapt``) of one channel taught ``s``: the
    benchmark in the adapted space (None when the gate rejects the candidate) and the job's report."""
    in_scope, rows = _support_rows(s)
    config = AdaptConfig()
    if not eligible(rows, config):
        return None, {"installed": False, "why": f"fewer than {config.min_corrections} corrections over "
                                                  f"{config.min_answers} answers"}
    log(f"adapting to the support set ({config.inner.steps} inner steps, gated) ...")
    manager = Adaptation(config, channel)
    outcome = asyncio.run(manager.adapt([u.text for u in in_scope], rows))
    if outcome is None:
        return None, {"installed": False, **manager.reports[-1]}
    tensors, _, report = outcome
    found = evaluate_intents(lambda batch: channel.embed_blocking(batch, tensors), s, q, o, threshold)
    return dict(found), {"installed": True, "steps": config.inner.steps, "lr": config.inner.lr, **report}


def _embed_states(channel: ChannelEncoder, states: dict[str, torch.Tensor], tensors: Tensors,
                  texts: list[str]) -> np.ndarray:
    return channel.embed_states_blocking([states[x] for x in texts], tensors)


def _adaptation_sweep(channel: ChannelEncoder, s: Sequence[Utterance], q: Sequence[Utterance],
                      o: Sequence[Utterance], threshold: float | None, steps_list: Sequence[int], lr: float,
                      bars: Bars) -> list[dict[str, Any]]:
    """The intents benchmark after the channel encoder's inner loop on the support set alone,
    per step count, ungated: as one channel would adapt."""
    in_scope, rows = _support_rows(s)
    texts = list(dict.fromkeys([u.text for u in s] + [u.text for u in q] + [u.text for u in o]))
    with bars(total=len(texts), desc="frozen layers", unit="utt", leave=False) as bar:
        states = dict(zip(texts, channel.hidden_states_blocking(texts), strict=True))
        bar.update(len(texts))
    out = []
    for steps in steps_list:
        started = time.perf_counter()
        tensors = channel.train_blocking([states[u.text] for u in in_scope], rows,
                                         EncoderAdaptConfig(steps=steps, lr=lr)) if steps else channel.meta_tensors()
        train_s = time.perf_counter() - started
        found = evaluate_intents(partial(_embed_states, channel, states, tensors), s, q, o, threshold)
        size = nbytes(tensors)
        out.append({"steps": steps, "lr": lr, "train_seconds": round(train_s, 2), "bytes": size,
                    "adapter_bytes": size,  # the old name of "bytes", kept for one release
                    **{k: found.get(k) for k in ("accuracy", "in_scope_recall", "oos_recall")}})
    return out
