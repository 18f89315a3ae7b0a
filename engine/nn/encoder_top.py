"""The sentence encoder's top layers with LoRA: what the metric trains and a channel adapts.

MiniLM splits at the first adapted layer. The layers below never change, so their output
(``hidden_states``, ``lower_layers``) is computed once per utterance and cached; the copy
of the top ``top_layers`` layers carries a LoRA update on every linear map
(``EncoderTop``), then mean pooling and normalisation give the unit embedding. With zero
``B`` the stack reproduces the plain encoder exactly. Meta-training (``engine.training``)
trains it across many episodes; the engine (``engine.learning``) merges it into the
encoder's weights (``merge_into``) or continues it per channel (``ChannelEncoder``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..settings import EMBEDDED_ENCODER
from .digests import text_digest
from .lora import LoraLinear

Bert = Any
"""A transformers ``BertModel`` (MiniLM): its submodules are reached by name, which torch's types cannot follow."""

__all__ = [
    "MetricConfig",
    "EncoderTop",
    "States",
    "linears",
    "merge_into",
    "load_encoder",
    "lower_layers",
    "hidden_states",
    "collate",
    "embed",
]


@dataclass(frozen=True, slots=True)
class MetricConfig:
    """The shape of the metric's trainable part: LoRA on the encoder's top layers."""

    encoder: str = EMBEDDED_ENCODER  # the sentence encoder the metric was trained on
    top_layers: int = 2              # transformer layers (from the top) that carry LoRA
    rank: int = 16                   # LoRA rank on every linear map of those layers


def linears(layer: nn.Module) -> list[tuple[nn.Module, str]]:
    """(parent, attribute) of every linear map of a BERT layer, in a fixed order."""
    found = []
    for parent in layer.modules():
        if isinstance(parent, LoraLinear):
            continue  # its ``base`` is the wrapped map itself
        for name, child in parent.named_children():
            if isinstance(child, (nn.Linear, LoraLinear)):
                found.append((parent, name))
    return found


class EncoderTop(nn.Module):
    """The encoder's top layers with LoRA, mean pooling and normalisation.

    Input: the frozen hidden states entering the first adapted layer (cached once per
    utterance during meta-training), output: unit embeddings. With zero ``B`` it
    reproduces the plain encoder exactly.
    """

    def __init__(self, bert: Bert, config: MetricConfig) -> None:
        super().__init__()
        layers = bert.encoder.layer
        assert 1 <= config.top_layers <= len(layers), f"top_layers must be in 1..{len(layers)}"
        self.config = config
        self.first = len(layers) - config.top_layers  # index of the first adapted layer
        self.layers = nn.ModuleList(copy.deepcopy(layers[self.first:]))
        for p in self.layers.parameters():
            p.requires_grad_(False)
        for layer in self.layers:
            for parent, name in linears(layer):
                base = getattr(parent, name)
                lora = LoraLinear(base, config.rank, scaling=1.0)
                with torch.no_grad():  # A starts random, B at zero: the plain encoder until trained
                    lora.lora_A.copy_(torch.randn(config.rank, base.in_features) / base.in_features**0.5)
                setattr(parent, name, lora)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``hidden`` (B, T, D) frozen states, ``mask`` (B, T) 1 for tokens -> (B, D) unit vectors."""
        additive = (1.0 - mask.to(hidden.dtype))[:, None, None, :] * torch.finfo(hidden.dtype).min  # (B,1,1,T)
        h = hidden
        for layer in self.layers:
            out = layer(h, attention_mask=additive)
            h = out[0] if isinstance(out, tuple) else out
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)               # (B, D)
        return F.normalize(pooled, dim=-1)

    def lora_tensors(self) -> dict[str, torch.Tensor]:
        """The trained tensors, named ``<layer>.<linear>.A|B`` (what an artifact stores)."""
        out: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.layers):
            for j, (parent, name) in enumerate(linears(layer)):
                lora = getattr(parent, name)
                out[f"{i}.{j}.A"] = lora.lora_A.detach().clone()
                out[f"{i}.{j}.B"] = lora.lora_B.detach().clone()
        return out

    def load_lora_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for i, layer in enumerate(self.layers):
                for j, (parent, name) in enumerate(linears(layer)):
                    lora = getattr(parent, name)
                    lora.lora_A.copy_(tensors[f"{i}.{j}.A"].float())
                    lora.lora_B.copy_(tensors[f"{i}.{j}.B"].float())


@torch.no_grad()
def merge_into(bert: Bert, config: MetricConfig, tensors: dict[str, torch.Tensor]) -> None:
    """Add ``B @ A`` to the weights of ``bert``'s top layers, in place (inference needs no LoRA code)."""
    layers = bert.encoder.layer
    for i, layer in enumerate(layers[len(layers) - config.top_layers:]):
        for j, (parent, name) in enumerate(linears(layer)):
            linear = getattr(parent, name)
            delta = tensors[f"{i}.{j}.B"].float() @ tensors[f"{i}.{j}.A"].float()    # (out, in)
            assert delta.shape == linear.weight.shape, f"LoRA {i}.{j} does not fit this encoder"
            linear.weight.add_(delta.to(linear.weight.dtype))



States = list[torch.Tensor]  # one (T_i, 384) fp16 tensor per utterance


def load_encoder(device: str = "cpu") -> Any:
    """The embedded sentence encoder (a ``SentenceEncoder``), as the engine loads it."""
    from ..understanding.encoder import embedded_encoder_path
    from .sentence_encoder import load_sentence_encoder

    return load_sentence_encoder(str(embedded_encoder_path()), device=device)


def lower_layers(bert: Bert, input_ids: torch.Tensor, mask: torch.Tensor,
                 token_type_ids: torch.Tensor | None, first: int) -> torch.Tensor:
    """(B, T, D) hidden states entering layer ``first``: the embeddings and layers below it only.

    The same states as ``bert(..., output_hidden_states=True).hidden_states[first]`` (a test
    checks it) without running the layers above, which the adapted copy runs instead.
    """
    h = bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
    additive = (1.0 - mask.to(h.dtype))[:, None, None, :] * torch.finfo(h.dtype).min              # (B,1,1,T)
    for layer in bert.encoder.layer[:first]:
        out = layer(h, attention_mask=additive)
        h = out[0] if isinstance(out, tuple) else out
    states: torch.Tensor = h
    return states


@torch.no_grad()
def hidden_states(model: Any, texts: Sequence[str], first: int, cache_dir: Path | None = None,
                  batch: int = 128, progress: Callable[[int], None] | None = None) -> States:
    """The frozen hidden states entering layer ``first``, per text, trimmed to its tokens.

    Cached under ``cache_dir`` by a hash of the texts and the layer, so a second run
    (another loss, another seed) skips the encoder's lower layers entirely.
    """
    key = text_digest("\n".join(texts) + f"\x00{first}")[:20]
    path = cache_dir / f"hidden-{key}.pt" if cache_dir else None
    if path is not None and path.exists():
        cached: States = torch.load(path)
        return cached
    bert, tokenizer = model[0].auto_model.eval(), model.tokenizer
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths batch with little padding
    out: list[torch.Tensor | None] = [None] * len(texts)
    for start in range(0, len(order), batch):
        ix = order[start:start + batch]
        enc = tokenizer([texts[i] for i in ix], padding=True, truncation=True,
                        max_length=model.max_seq_length, return_tensors="pt")
        h = lower_layers(bert, enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"), first)
        for row, i in enumerate(ix):
            out[i] = h[row, : int(enc["attention_mask"][row].sum())].to(torch.float16).clone()
        if progress:
            progress(len(ix))
    states = [s for s in out if s is not None]
    assert len(states) == len(texts)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(states, path)
    return states


def collate(states: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad per-utterance states -> hidden (B, T, D) float32, mask (B, T)."""
    t = max(s.shape[0] for s in states)
    hidden = torch.zeros(len(states), t, states[0].shape[1])
    mask = torch.zeros(len(states), t)
    for i, s in enumerate(states):
        hidden[i, : s.shape[0]] = s.float()
        mask[i, : s.shape[0]] = 1.0
    return hidden, mask


@torch.no_grad()
def embed(top: EncoderTop, states: Sequence[torch.Tensor], batch: int = 256) -> np.ndarray:
    """(n, D) unit embeddings of cached states through ``top``."""
    top.eval()
    order = sorted(range(len(states)), key=lambda i: states[i].shape[0])
    out = np.zeros((len(states), states[0].shape[1]), dtype=np.float32)
    for start in range(0, len(order), batch):
        ix = order[start:start + batch]
        out[ix] = top(*collate([states[i] for i in ix])).numpy()
    return out

