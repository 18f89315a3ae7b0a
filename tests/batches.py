"""Left-padded prompt batches, as the model worker builds them (tests of the decode paths)."""

from __future__ import annotations

import torch

from engine.generation.model_loader import LoadedModel


def left_padded(loaded: LoadedModel, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, mask, positions) for ``texts``, left-padded to the longest: every row's last token aligned."""
    rows = [list(loaded.tokenizer(t)["input_ids"]) for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)
