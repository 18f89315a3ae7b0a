"""Left padding: how several prompts of different lengths become one batch for the decoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["left_pad"]


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, mask, positions), each (rows, longest prompt): padding on the left, so that every row's
    last token is in the last column and the next tokens of all rows go in one column; ``positions``
    count each row's own tokens from 0 (padding at 0, masked out)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)
