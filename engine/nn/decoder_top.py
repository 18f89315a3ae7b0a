"""The LLM split at its first LoRA layer: run the frozen layers once, train the top.

Truncated backpropagation (the CPU trick): when only the top k decoder layers carry
LoRA, the layers below never change, so they run once per batch (``cache_batch``, under
no_grad), and every step runs only the top k layers, the final norm and the LM head, and
the head only at the answer positions (``DecoderTop``). This is exact: the loss equals
the full forward's loss (a test checks it). The losses here (``ce_loss``, ``kl_loss``,
``anchored_loss``) are what a channel's consolidation and meta-training both minimise.

Weights are substituted per call with ``torch.func.functional_call``: the model itself
is never modified.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .chat_batches import Batch
from .lora import LoraWeights, lora_modules

CausalLM = Any
"""A transformers causal LM (Llama-style): its submodules are reached by name, which torch's types cannot follow."""

__all__ = [
    "DecoderTop",
    "Cached",
    "first_adapted_layer",
    "cache_batch",
    "with_base_logp",
    "lora_params",
    "wide",
    "ce_loss",
    "kl_loss",
    "anchored_loss",
]


def _body(model: CausalLM) -> Any:
    body = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    for need in ("embed_tokens", "layers", "norm", "rotary_emb"):
        assert body is not None and hasattr(body, need), (
            f"truncated LoRA training expects a Llama-style decoder (model.{need}); got {type(model).__name__}"
        )
    return body


def first_adapted_layer(model: CausalLM) -> int:
    """Index of the lowest decoder layer that carries a LoRA module."""
    layers = [int(name.split(".layers.", 1)[1].split(".", 1)[0]) for name in lora_modules(model)]
    assert layers, "the model carries no LoRA layers: call inject_lora first"
    return min(layers)


class DecoderTop(nn.Module):
    """Decoder layers ``start:``, final norm and LM head, evaluated only where the loss is taken.

    Registers the model's own submodules under the model's own names (``model.*``,
    ``lm_head``), so LoRA keys like ``model.layers.29.self_attn.q_proj.lora_A`` address
    it directly through ``functional_call``. It owns no parameters of its own.
    """

    def __init__(self, model: CausalLM, start: int) -> None:
        super().__init__()
        self.prefix = getattr(model, "base_model_prefix", "model")
        setattr(self, self.prefix, _body(model))
        self.lm_head: nn.Module = model.get_output_embeddings()
        self.start = start

    def forward(
        self,
        hidden: torch.Tensor,  # (B, T, C) output of layer start-1 (or the embeddings)
        mask: Any,  # the causal mask as the layers expect it (4-D tensor or None)
        cos: torch.Tensor,  # (1, T, head_dim) rotary position embeddings
        sin: torch.Tensor,
        position_ids: torch.Tensor,  # (1, T)
        pos: torch.Tensor,  # (N,) flat indices b * T + t whose logits are needed
    ) -> torch.Tensor:  # (N, V) logits
        body = getattr(self, self.prefix)
        for layer in body.layers[self.start :]:
            hidden = layer(hidden, attention_mask=mask, position_embeddings=(cos, sin), position_ids=position_ids)
        hidden = body.norm(hidden)
        picked = hidden.reshape(-1, hidden.shape[-1])[pos]  # (N, C)
        logits: torch.Tensor = self.lm_head(picked)
        return logits


@dataclass
class Cached:
    """One batch after the frozen layers: what every inner step starts from."""

    hidden: torch.Tensor  # (B, T, C)
    mask: Any
    cos: torch.Tensor
    sin: torch.Tensor
    position_ids: torch.Tensor
    pos: torch.Tensor  # (N,)
    tgt: torch.Tensor  # (N,)
    base_logp: torch.Tensor | None = None  # (N, V) the base model's log-probs (locality targets)

    def args(self) -> tuple[Any, ...]:
        return (self.hidden, self.mask, self.cos, self.sin, self.position_ids, self.pos)


@torch.no_grad()
def cache_batch(model: CausalLM, stack: DecoderTop, batch: Batch, *, with_base: bool = False) -> Cached:
    """Run embeddings and the frozen layers below ``stack.start`` once; optionally the base log-probs."""
    from transformers.masking_utils import create_causal_mask

    body = _body(model)
    device = next(model.parameters()).device
    ids, attention = batch.input_ids.to(device), batch.attention_mask.to(device)
    hidden = body.embed_tokens(ids)  # (B, T, C)
    position_ids = torch.arange(ids.shape[1], device=device).unsqueeze(0)  # (1, T); right padding
    mask = create_causal_mask(
        config=model.config, inputs_embeds=hidden, attention_mask=attention, cache=None, position_ids=position_ids
    )
    cos, sin = body.rotary_emb(hidden, position_ids=position_ids)
    for layer in body.layers[: stack.start]:
        hidden = layer(hidden, attention_mask=mask, position_embeddings=(cos, sin), position_ids=position_ids)
    cached = Cached(hidden, mask, cos, sin, position_ids, batch.pos.to(device), batch.tgt.to(device))
    return with_base_logp(model, stack, cached) if with_base else cached


@torch.no_grad()
def with_base_logp(model: CausalLM, stack: DecoderTop, cached: Cached) -> Cached:
    """``cached`` plus the base model's log-probs at its positions (kept out of stored caches: (N, V) is big)."""
    if cached.base_logp is not None:
        return cached
    zero = {k: torch.zeros_like(v) for k, v in lora_params(model).items()}  # the base model, explicitly
    base_logp = F.log_softmax(wide(functional_call(stack, zero, cached.args())), dim=-1)
    return Cached(cached.hidden, cached.mask, cached.cos, cached.sin, cached.position_ids, cached.pos, cached.tgt,
                  base_logp)


def lora_params(model: CausalLM) -> dict[str, torch.Tensor]:
    return {f"{name}.{p}": getattr(m, p) for name, m in lora_modules(model).items() for p in ("lora_A", "lora_B")}


def wide(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits in float32 for the softmax; float32 / float64 as they are."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def ce_loss(params: LoraWeights, stack: DecoderTop, c: Cached) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens under LoRA ``params``."""
    logits = functional_call(stack, params, c.args())  # (N, V)
    return F.cross_entropy(wide(logits), c.tgt)


def kl_loss(params: LoraWeights, stack: DecoderTop, c: Cached) -> torch.Tensor:
    """Mean KL(base ‖ adapted) of the next-token distributions at the cached positions."""
    assert c.base_logp is not None, "cache the batch with with_base=True"
    logp = F.log_softmax(wide(functional_call(stack, params, c.args())), dim=-1)  # (N, V)
    return (c.base_logp.exp() * (c.base_logp - logp)).sum(-1).mean()


def anchored_loss(params: LoraWeights, stack: DecoderTop, support: Cached, anchor: Cached | None,
                  weight: float) -> torch.Tensor:
    """The inner loop's loss: cross-entropy on the corrections, plus ``weight`` × KL(base ‖ adapted)
    on unrelated anchor prompts (``weight`` 0 or no anchor: the plain cross-entropy).

    The anchor term is the locality constraint of knowledge-editing methods: it lets the
    LoRA learn a channel's answers while leaving the rest of the model's behaviour alone.
    """
    loss = ce_loss(params, stack, support)
    if weight and anchor is not None:
        loss = loss + weight * kl_loss(params, stack, anchor)
    return loss

