"""Siamese contrastive loss (Hadsell, Chopra & LeCun, 2006) over support/query pairs.

Every query of an episode is paired with every support utterance; a pair is similar
(y = 1) when both carry the same label. With the cosine distance D = 1 − cos::

    L = y · D + (1 − y) · max(0, m − D)

Similar pairs are pulled together, dissimilar pairs pushed at least the margin ``m``
apart. An episode has many more dissimilar pairs (N − 1 labels) than similar ones, so by
default the two terms are averaged separately and added (``balance``), which keeps the
pull from drowning in the push as N grows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..nn.protonet import cosine_distance

__all__ = ["SiameseConfig", "contrastive_loss", "episode_pairs", "siamese_loss"]


@dataclass(frozen=True)  # no slots: its defaults are read as SiameseConfig.margin
class SiameseConfig:
    margin: float = 0.5          # m: dissimilar pairs closer than this are pushed apart
    balance: bool = True         # average similar and dissimilar pairs separately


def contrastive_loss(distance: torch.Tensor, similar: torch.Tensor, margin: float = SiameseConfig.margin,
                     balance: bool = SiameseConfig.balance) -> torch.Tensor:
    """``distance`` and ``similar`` (P,) -> the mean of y·D + (1−y)·max(0, m − D).

    With ``balance`` the similar and the dissimilar terms are each averaged over their
    own pairs and then added (a side with no pairs contributes 0).
    """
    y = similar.float()
    pull = y * distance                                  # (P,)
    push = (1.0 - y) * F.relu(margin - distance)         # (P,)
    if not balance:
        return (pull + push).mean()
    return pull.sum() / y.sum().clamp(min=1.0) + push.sum() / (1.0 - y).sum().clamp(min=1.0)


def episode_pairs(support: torch.Tensor, query: torch.Tensor, query_labels: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """All query × support pairs: distances (Q·N·K,) and similar flags (Q·N·K,).

    ``support`` (N, K, D), ``query`` (Q, D), ``query_labels`` (Q,) integers in [0, N).
    """
    n, k, d = support.shape
    distance = cosine_distance(query, support.reshape(n * k, d))                       # (Q, N·K)
    support_labels = torch.arange(n, device=query.device).repeat_interleave(k)           # (N·K,)
    similar = query_labels[:, None] == support_labels[None, :]                           # (Q, N·K)
    return distance.reshape(-1), similar.reshape(-1)


def siamese_loss(support: torch.Tensor, query: torch.Tensor, query_labels: torch.Tensor,
                 config: SiameseConfig = SiameseConfig()) -> torch.Tensor:
    """The contrastive loss over all support/query pairs of one episode."""
    distance, similar = episode_pairs(support, query, query_labels)
    return contrastive_loss(distance, similar, config.margin, config.balance)
