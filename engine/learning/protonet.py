"""Prototypical-network loss (Snell et al., 2017) over unit-length embeddings.

A channel's distinct answers are classes; each class is represented by its prototype,
the normalised mean of its support embeddings. A query is classified by a softmax over
negative distances to all prototypes at once::

    c_n      = normalize(mean_k s_{n,k})                  (N, D) prototypes
    D(q, c)  = 1 − cos(q, c)                              cosine distance, in [0, 2]
    p(n | q) = softmax_n(−scale · D(q, c_n))
    L        = mean_q −log p(y_q | q)

Distances are cosine distances because the engine scores by cosine similarity: the
metric is trained in the geometry it is used in (on unit vectors −D and cos differ by a
constant, which the softmax ignores).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["ProtoConfig", "prototypes", "cosine_distance", "prototypical_loss"]


@dataclass(frozen=True, slots=True)
class ProtoConfig:
    scale: float = 20.0          # inverse temperature of the softmax over −distance


def prototypes(support: torch.Tensor) -> torch.Tensor:
    """(N, K, D) support embeddings -> (N, D) unit prototypes (normalised class means)."""
    assert support.dim() == 3, f"support must be (N, K, D), got {tuple(support.shape)}"
    return F.normalize(support.mean(dim=1), dim=-1)


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(Q, D), (M, D) -> (Q, M) cosine distances 1 − cos."""
    return 1.0 - F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def prototypical_loss(
    support: torch.Tensor, query: torch.Tensor, query_labels: torch.Tensor, scale: float = ProtoConfig.scale
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of queries against prototypes, and the accuracy (no grad).

    ``support`` (N, K, D), ``query`` (Q, D), ``query_labels`` (Q,) integers in [0, N).
    """
    assert query.dim() == 2 and query_labels.shape == query.shape[:1], "query (Q, D) with labels (Q,)"
    logits = -scale * cosine_distance(query, prototypes(support))        # (Q, N)
    loss = F.cross_entropy(logits, query_labels)
    with torch.no_grad():
        accuracy = (logits.argmax(dim=1) == query_labels).float().mean()
    return loss, accuracy
