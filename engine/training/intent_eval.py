"""The few-shot understanding benchmark (``heedful eval intents``).

Prototypes come from the support file only (K examples per label); every query is
classified among *all* labels at once, scored exactly as the engine scores a channel's
answers (``prototypes.answer_scores``). With out-of-scope queries, the threshold (the
calibrated radius from meta-training, never tuned on these files) decides acceptance::

    accuracy         = share of in-scope queries whose best label is right
    in_scope_recall  = share of in-scope queries scoring ≥ threshold
    oos_recall       = share of out-of-scope queries scoring < threshold
    ms_per_query     = (embedding + scoring of all queries) / their number, batched
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from ..learning.support_set import answer_scores
from .episodes import OOS, Utterance

__all__ = ["label_prototypes", "classify", "evaluate_intents"]

Embed = Callable[[list[str]], np.ndarray]  # texts -> (n, D) unit vectors


def label_prototypes(vectors: np.ndarray, labels: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(label names (A,), answer slot of each support row (n,), unit prototypes (A, D))."""
    names = sorted(set(labels))
    slot = {name: i for i, name in enumerate(names)}
    rows = np.asarray([slot[label] for label in labels], dtype=np.int64)
    protos = np.stack([vectors[rows == i].mean(0) for i in range(len(names))])
    return names, rows, protos / np.linalg.norm(protos, axis=1, keepdims=True)


def classify(support: np.ndarray, rows: np.ndarray, protos: np.ndarray, queries: np.ndarray,
             batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(Q, D) queries -> best answer slot (Q,) and its score (Q,)."""
    best, score = [], []
    for start in range(0, len(queries), batch):
        q = queries[start:start + batch]
        s = answer_scores(q @ support.T, rows, q @ protos.T)                  # (B, A)
        best.append(s.argmax(1))
        score.append(s.max(1))
    return np.concatenate(best), np.concatenate(score)


def evaluate_intents(embed: Embed, support: Sequence[Utterance], query: Sequence[Utterance],
                     oos: Sequence[Utterance] = (), threshold: float | None = None) -> dict[str, float | int | None]:
    """Run the benchmark with one embedding function; ``threshold`` is needed for the recalls."""
    support = [u for u in support if u.label != OOS]
    if not support:
        raise ValueError("the support file has no in-scope lines")
    in_scope = [u for u in query if u.label != OOS]
    outside = [u for u in oos] + [u for u in query if u.label == OOS]
    support_vectors = embed([u.text for u in support])
    names, rows, protos = label_prototypes(support_vectors, [u.label for u in support])
    known = set(names)
    unknown = sorted({u.label for u in in_scope} - known)
    if unknown:
        raise ValueError(f"query labels missing from the support file: {unknown[:5]}")
    started = time.perf_counter()
    q_vectors = embed([u.text for u in in_scope + outside])
    pred, best = classify(support_vectors, rows, protos, q_vectors)
    seconds = time.perf_counter() - started
    n_in = len(in_scope)
    truth = np.asarray([names.index(u.label) for u in in_scope], dtype=np.int64)
    result: dict[str, float | int | None] = {
        "accuracy": round(float((pred[:n_in] == truth).mean()), 4) if n_in else None,
        "n_labels": len(names),
        "n_support": len(support),
        "n_query": n_in,
        "ms_per_query": round(1000.0 * seconds / max(1, len(q_vectors)), 2),
    }
    if outside:
        result["n_oos"] = len(outside)
    if threshold is not None:
        result["threshold"] = round(float(threshold), 4)
        result["in_scope_recall"] = round(float((best[:n_in] >= threshold).mean()), 4) if n_in else None
        result["accuracy_accepted"] = round(float(((best[:n_in] >= threshold) & (pred[:n_in] == truth)).mean()), 4) \
            if n_in else None
        if outside:
            result["oos_recall"] = round(float((best[n_in:] < threshold).mean()), 4)
    return result
