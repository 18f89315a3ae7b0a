"""Left-padded prompt batches, as the model worker builds them (tests of the decode paths)."""

from __future__ import annotations

import torch

from engine.generation.model_loader import LoadedModel
from engine.generation.padding import left_pad


def left_padded(loaded: LoadedModel, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, mask, positions) for ``texts``, left-padded to the longest: every row's last token aligned."""
    return left_pad([list(loaded.tokenizer(t)["input_ids"]) for t in texts])
