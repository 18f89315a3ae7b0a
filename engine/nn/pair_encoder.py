"""The pair model: MiniLM reading a message and a taught question *together* (a cross-encoder).

The metric embeds each text alone, so two questions that differ in one meaningful word
("open on Saturdays" / "open on Sunday") land next to each other and no radius can part
them. A cross-encoder attends across the two texts, token to token, and so can see the
one word that differs. It is the encoder the metric starts from, with LoRA on every
linear map of its layers and a small head::

    ids    = [CLS] message [SEP] taught question [SEP]              (B, T)
    h      = MiniLM layers, W ← W + B_i A_i for each linear          (B, T, 384)
    logit  = head([h_CLS ; mean_tokens(h)])                           (B,)
    p      = sigmoid(logit)     the probability that the taught answer applies

Only the LoRA tensors and the head are trained (``engine.training.verifier_train``) and
shipped (about 1.4 MB in fp16); at run time LoRA is merged into the weights (``merge``),
so a pair costs one ordinary MiniLM pass over both texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..settings import EMBEDDED_ENCODER
from .encoder_top import Bert, linears
from .lora import LoraLinear

__all__ = ["PairConfig", "PairModel", "load_bert", "encode_pairs"]


@dataclass(frozen=True, slots=True)
class PairConfig:
    """The shape of the pair model's trainable part."""

    encoder: str = EMBEDDED_ENCODER  # the sentence encoder it starts from
    rank: int = 16                   # LoRA rank on every linear map
    top_layers: int = 6              # layers (from the top) that carry LoRA; MiniLM has 6
    max_tokens: int = 128            # both texts together; longer pairs are cut from the end


def load_bert(encoder: str = EMBEDDED_ENCODER) -> tuple[Bert, Any]:
    """(BertModel, tokenizer) of the sentence encoder, as the engine loads it (no network)."""
    from ..understanding.encoder import embedded_encoder_path
    from .sentence_encoder import load_sentence_encoder

    source = str(embedded_encoder_path()) if encoder == EMBEDDED_ENCODER else encoder
    model = load_sentence_encoder(source, device="cpu")
    return model[0].auto_model, model.tokenizer


def encode_pairs(tokenizer: Any, messages: Sequence[str], questions: Sequence[str],
                 max_tokens: int) -> dict[str, torch.Tensor]:
    """Token ids of ``[CLS] message [SEP] question [SEP]`` for each pair, padded to the longest.

    User text is tokenised as plain text (no special tokens can be forged from it): the
    tokenizer's own split on ``[SEP]``-like strings is turned off by passing words only.
    """
    assert len(messages) == len(questions), "one question per message"
    encoded: dict[str, torch.Tensor] = tokenizer(
        list(messages), list(questions), padding=True, truncation="longest_first",
        max_length=max_tokens, return_tensors="pt", split_special_tokens=True,
    )
    return encoded


class PairModel(nn.Module):
    """MiniLM with LoRA on its top layers and a one-logit head over (message, question) pairs."""

    def __init__(self, bert: Bert, config: PairConfig) -> None:
        super().__init__()
        self.bert, self.config = bert, config
        for p in bert.parameters():
            p.requires_grad_(False)
        layers = bert.encoder.layer
        assert 1 <= config.top_layers <= len(layers), f"top_layers must be in 1..{len(layers)}"
        self.first = len(layers) - config.top_layers
        for layer in layers[self.first:]:
            for parent, name in linears(layer):
                base = getattr(parent, name)
                if isinstance(base, LoraLinear):
                    continue
                lora = LoraLinear(base, config.rank, scaling=1.0)
                with torch.no_grad():  # A random, B zero: the plain encoder until trained
                    lora.lora_A.copy_(torch.randn(config.rank, base.in_features) / base.in_features**0.5)
                setattr(parent, name, lora)
        hidden = int(bert.config.hidden_size)
        self.head = nn.Linear(2 * hidden, 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) logits: > 0 means the taught answer applies to the message."""
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                      token_type_ids=token_type_ids).last_hidden_state                 # (B, T, D)
        mask = attention_mask[..., None].to(h.dtype)
        mean = (h * mask).sum(1) / mask.sum(1).clamp(min=1)                            # (B, D)
        logits: torch.Tensor = self.head(torch.cat([h[:, 0], mean], dim=-1)).squeeze(-1)
        return logits

    def _loras(self) -> list[tuple[str, LoraLinear]]:
        found = []
        for i, layer in enumerate(self.bert.encoder.layer[self.first:]):
            for j, (parent, name) in enumerate(linears(layer)):
                module = getattr(parent, name)
                if isinstance(module, LoraLinear):
                    found.append((f"{i}.{j}", module))
        return found

    def trainable(self) -> list[nn.Parameter]:
        """The parameters training moves: every LoRA A and B, and the head."""
        params: list[nn.Parameter] = []
        for _, lora in self._loras():
            params += [lora.lora_A, lora.lora_B]
        return [*params, *self.head.parameters()]

    def tensors(self) -> dict[str, torch.Tensor]:
        """What an artifact stores: ``<layer>.<linear>.A|B`` and ``head.weight|bias``."""
        out = {}
        for key, lora in self._loras():
            out[f"{key}.A"] = lora.lora_A.detach().clone()
            out[f"{key}.B"] = lora.lora_B.detach().clone()
        out["head.weight"] = self.head.weight.detach().clone()
        out["head.bias"] = self.head.bias.detach().clone()
        return out

    @torch.no_grad()
    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for key, lora in self._loras():
            lora.lora_A.copy_(tensors[f"{key}.A"].float())
            lora.lora_B.copy_(tensors[f"{key}.B"].float())
        self.head.weight.copy_(tensors["head.weight"].float())
        self.head.bias.copy_(tensors["head.bias"].float())

    @torch.no_grad()
    def merge(self) -> None:
        """Fold each ``B @ A`` into its linear map and unwrap it: inference runs plain MiniLM code."""
        for layer in self.bert.encoder.layer[self.first:]:
            for parent, name in linears(layer):
                lora = getattr(parent, name)
                if isinstance(lora, LoraLinear):
                    lora.base.weight.add_(lora.scaling * lora.lora_B @ lora.lora_A)
                    setattr(parent, name, lora.base)
