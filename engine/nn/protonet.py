"""Prototypical-network loss (Snell et al., 2017) over unit-length embeddings.

A channel's distinct answers are classes; each class is represented by its prototype,
the normalised mean of its support embeddings. A query is classified by a softmax over
negative distances to all prototypes at once::

    c_n      = normalize(mean_k s_{n,k})                  (N, D) prototypes
    D(q, c)  = 1 − cos(q, c)                              cosine distance, in [0, 2]
    p(n | q) = softmax_n(−scale · D(q, c_n))
    L        = mean_q −log p(y_q | q)

The open-set variant (``open_prototypical_loss``) adds the decision the engine actually
makes after classifying: does the best answer apply at all? Out-of-scope queries (``oos``
lines, labels the episode did not draw) join the softmax with a "none of these" class
whose logit is a similarity boundary ``b`` (learned with the LoRA)::

    logits(q) = [scale · cos(q, c_1), …, scale · cos(q, c_N), scale · b]
    L         = mean over in-scope q of −log p(y_q | q)  +  mean over out-of-scope q of −log p(none | q)

so training pulls paraphrases inside the boundary and pushes near misses outside it,
instead of only ordering the prototypes. (``b`` is not used at run time: the radius is
calibrated afterwards, per number of shots, as for the plain loss.)

Distances are cosine distances because the engine scores by cosine similarity: the
metric is trained in the geometry it is used in (on unit vectors −D and cos differ by a
constant, which the softmax ignores).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["ProtoConfig", "prototypes", "cosine_distance", "prototypical_loss", "open_prototypical_loss"]


@dataclass(frozen=True)  # no slots: its defaults are read as ProtoConfig.scale
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


def open_prototypical_loss(
    support: torch.Tensor, query: torch.Tensor, query_labels: torch.Tensor, oos: torch.Tensor,
    boundary: torch.Tensor, scale: float = ProtoConfig.scale,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prototypical loss with a "none" class for out-of-scope queries, and the open-set accuracy (no grad).

    ``support`` (N, K, D), ``query`` (Q, D) with ``query_labels`` (Q,) in [0, N), ``oos``
    (O, D) out-of-scope queries, ``boundary`` a scalar similarity: the "none" logit is
    ``scale · boundary``. In-scope and out-of-scope terms are averaged separately and
    added, so neither drowns the other whatever the episode's mix. Accuracy counts an
    in-scope query right when its label wins, an out-of-scope one when "none" wins.
    """
    assert oos.dim() == 2 and oos.shape[1] == query.shape[1], "oos (O, D) in the query's space"
    protos = prototypes(support)                                               # (N, D)
    everything = torch.cat([query, oos])                                       # (Q + O, D)
    sims = F.normalize(everything, dim=-1) @ protos.T                          # (Q + O, N)
    none = boundary.reshape(1, 1).expand(len(everything), 1)
    logits = scale * torch.cat([sims, none], dim=1)                            # (Q + O, N + 1)
    targets = torch.cat([query_labels, torch.full((len(oos),), protos.shape[0], dtype=query_labels.dtype)])
    per_query = F.cross_entropy(logits, targets, reduction="none")
    q = len(query)
    loss = per_query[:q].mean() + (per_query[q:].mean() if len(oos) else per_query.new_zeros(()))
    with torch.no_grad():
        accuracy = (logits.argmax(dim=1) == targets).float().mean()
    return loss, accuracy
