"""A direct forward pass for Llama-family decoders: what the model worker runs to prefill and decode.

Why it exists: at decode sizes transformers' forward spends about as long in Python and in
small tensor ops (mask building, per-projection calls, rotary tables rebuilt per call, a
five-op RMSNorm, keys and values repeated for grouped-query attention) as in the matrix
products that are the real work; for SmolLM2-135M on two cores about half of a one-token
step. This module does the same arithmetic with fewer, larger ops, nanoGPT style:

- q/k/v and gate/up are one matrix product each (bfloat16 weights fused and packed once
  for oneDNN when the worker decodes in bfloat16; float32 keeps the model's own tensors,
  so no copy is made);
- rotary cos/sin come from a table built once, indexed by position, shared by all layers;
- RMSNorm is ``torch.nn.functional.rms_norm``;
- grouped-query attention folds each key/value head's query heads into the query length
  for a one-token step, so keys and values are never repeated;
- only the last position goes through the LM head (the worker samples from it alone).

It reads the model's own modules, so it serves whatever they hold: per-row LoRA slots set
by ``use_rows`` (``LoraLinear.rows``) are applied exactly as ``LoraLinear`` applies them.
Training never goes through here; it keeps transformers' forward.

Numerics equal transformers' up to float rounding (``tests/unit/test_direct_forward.py``
compares logits and greedy text). ``DirectForward.build`` returns None for a model it does
not cover (another architecture, biases, scaled rotary embeddings, ...); the worker then
keeps transformers' forward.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.lora import LoraLinear
from ..nn.packed_linear import packed_product
from .model_loader import packed_weight, unpack_linear

__all__ = ["DirectForward"]

log = logging.getLogger(__name__)


# Float32 products from 2 rows, where the loader prepared oneDNN's (``LoadedModel.matmul_kernel``): the layers'
# weights multiply as ``(w @ xᵀ)ᵀ`` (``transposed_product``), the LM head's up to this many rows. Measured per
# product on the model's shapes (``benchmarks/bench_products.py``; docs/BENCHMARKS.md, "A few rows as the
# weights times the rows' transpose"): a layer's product that way is 1.2-2x faster than oneDNN's or torch's
# ``x @ wᵀ`` from 2 to 32 rows and as fast or faster up to 720 (a prefill); the head's only up to 4 rows (8.3
# against oneDNN's 13.8 ms at 4, 17.2 against 12.9 at 8).
HEAD_TRANSPOSED_UP_TO = 4


class _Product:
    """One matrix product of the direct forward, over one or more of the model's linear layers
    (``modules``: plain, or wrapped in ``LoraLinear``), plus the per-row LoRA updates of the wrapped ones.

    bfloat16: the layers' weights concatenated, converted and packed once (one oneDNN call for
    q/k/v, one for gate/up; the layers' own packed copies are dropped, so memory does not grow;
    a single layer keeps using its own packed copy). float32: the layers' own weight tensors, one
    call each, so the direct forward holds no second copy of the model, multiplied by torch's default
    product, or, where the loader gave the layers float32 weights for oneDNN (``LoadedModel.matmul_kernel``),
    by whichever product was fastest at the row count (``times``).
    """

    def __init__(self, modules: Sequence[nn.Module], bf16: bool, head: bool = False) -> None:
        linears = [_base(m) for m in modules]
        weights = [m.weight.detach() for m in linears]
        offsets = [0]
        for w in weights:
            offsets.append(offsets[-1] + w.shape[0])
        # The LoRA-wrapped parts, with their columns of the output: most layers carry none.
        self.loras = [(offsets[i], offsets[i + 1], m) for i, m in enumerate(modules) if isinstance(m, LoraLinear)]
        self.packed: torch.Tensor | None = None
        self.weights: list[torch.Tensor] = []
        self.tuned = False  # float32: the product is picked by row count (``times``), else torch's throughout
        self.head = head
        if bf16:
            own = packed_weight(linears[0]) if len(linears) == 1 else None
            if own is not None:
                self.packed = own  # the layer's own packed copy: nothing new in memory
            else:
                fused = torch.cat(weights).to(torch.bfloat16)
                self.packed = torch.ops.mkldnn._reorder_linear_weight(fused, 1)
                for m in linears:  # their packed copies now live fused here: drop the duplicates
                    unpack_linear(m)
        else:
            self.weights = weights
            self.tuned = all(packed_weight(m) is not None for m in linears)

    def times(self, rows: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The product that multiplies one float32 weight by ``rows`` rows: torch's (``F.linear``),
        oneDNN's (``packed_product``) or ``transposed_product``; all agree up to float rounding.

        Where tuned: a single row goes to torch's product except through the LM head, where oneDNN's halves
        the time (6.9 against 12.7 ms); oneDNN's float32 product on a weight it has not packed pays a per-call
        cost that a single row of a small matrix does not earn back (0.05 against 0.04 ms for a 192 x 576 key
        projection; docs/BENCHMARKS.md, "A single stream's products as inductor's own loops"). From 2 rows the
        layers are turned around, and the head up to ``HEAD_TRANSPOSED_UP_TO`` rows, beyond which oneDNN's."""
        if not self.tuned:
            return F.linear
        if rows == 1:
            return packed_product if self.head else F.linear
        if self.head and rows > HEAD_TRANSPOSED_UP_TO:
            return packed_product
        return transposed_product

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The parts' outputs side by side on the last axis, each with its rows' LoRA update."""
        if self.packed is not None:
            y = packed_product(x, self.packed)
        else:
            y = side_by_side(self.times(x.numel() // x.shape[-1]), x, self.weights)
        for start, end, module in self.loras:
            # Outside use_rows a LoraLinear's own A/B are zero (training substitutes weights through
            # functional_call instead of writing them), so there is nothing to add.
            delta = module.row_delta(x)
            if delta is not None:
                y[..., start:end] += delta
        return y


def transposed_product(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weightᵀ`` computed as ``(weight @ xᵀ)ᵀ`` (a view of the result, not a copy). Why: for a few rows
    the library's kernels for a tall weight times a narrow matrix read the weight far faster than those for
    a few rows times a wide transposed weight (MKL's, on an AVX2 EPYC: see ``HEAD_TRANSPOSED_UP_TO``)."""
    flat = x.reshape(-1, x.shape[-1])
    return torch.mm(weight, flat.t()).t().reshape(*x.shape[:-1], weight.shape[0])


def side_by_side(times: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                 weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """``times(x, w)`` for each of ``weights``, side by side on the last axis (no copy for a single one)."""
    if len(weights) == 1:
        return times(x, weights[0])
    return torch.cat([times(x, w) for w in weights], dim=-1)


def _base(module: nn.Module) -> nn.Linear:
    base = module.base if isinstance(module, LoraLinear) else module
    assert isinstance(base, nn.Linear)
    return base


class _Layer:
    def __init__(self, layer: Any, bf16: bool) -> None:  # a transformers LlamaDecoderLayer (untyped)
        attn, mlp = layer.self_attn, layer.mlp
        self.norm_in: torch.Tensor = layer.input_layernorm.weight
        self.norm_post: torch.Tensor = layer.post_attention_layernorm.weight
        self.qkv = _Product([attn.q_proj, attn.k_proj, attn.v_proj], bf16)
        self.o = _Product([attn.o_proj], bf16)
        self.gate_up = _Product([mlp.gate_proj, mlp.up_proj], bf16)
        self.down = _Product([mlp.down_proj], bf16)


class DirectForward:
    """Prefill and decode steps for a transformers ``LlamaForCausalLM``; see the module docstring."""

    def __init__(self, model: Any, bf16: bool) -> None:  # a transformers LlamaForCausalLM (untyped)
        config = model.config
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(config.num_key_value_heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // self.heads)
        self.eps = float(config.rms_norm_eps)
        inner = model.model
        self.embed: nn.Embedding = inner.embed_tokens
        self.layers = [_Layer(layer, bf16) for layer in inner.layers]
        self.norm: torch.Tensor = inner.norm.weight
        self.head = _Product([model.lm_head], bf16, head=True)
        positions = torch.arange(int(config.max_position_embeddings), device=self.embed.weight.device)[None]
        with torch.no_grad():
            cos, sin = inner.rotary_emb(self.embed.weight[:1].float(), positions)
        self.cos, self.sin = cos[0], sin[0]  # (positions, head_dim): transformers' own values

    @classmethod
    def build(cls, model: Any, bf16: bool) -> DirectForward | None:
        """The direct forward for ``model``, or None where it does not cover the architecture."""
        reason = _unsupported(model)
        if reason is not None:
            log.info("decoding through transformers' forward: %s", reason)
            return None
        return cls(model, bf16)

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: Any,
                 between: Callable[[], None] | None = None) -> torch.Tensor:
        """Run ``ids`` (rows, new) through the model, appending their keys/values to ``cache``.

        ``mask`` (rows, cached + new) marks real tokens with 1 and left padding with 0;
        ``positions`` (rows, new) are the new tokens' position ids. Returns the logits of the
        last position, (rows, vocab), in float32. ``between`` is called after each layer but the
        last: the worker may pause there (it changes no number).
        """
        rows, new = ids.shape
        x = self.embed(ids)
        cos = self.cos[positions].unsqueeze(2).to(x.dtype)  # (rows, new, 1, head_dim)
        sin = self.sin[positions].unsqueeze(2).to(x.dtype)
        attend = self._attention_mask(mask, new)
        for i, layer in enumerate(self.layers):
            h = F.rms_norm(x, (x.shape[-1],), layer.norm_in, self.eps)
            qkv = layer.qkv(h).view(rows, new, self.heads + 2 * self.kv_heads, self.head_dim)
            # Rotary on queries and keys in one pass: (rows, new, heads + kv_heads, head_dim).
            qk = qkv[:, :, : self.heads + self.kv_heads]
            qk = (qk * cos + _rotate_half(qk) * sin).transpose(1, 2)
            q, k = qk[:, : self.heads], qk[:, self.heads :]
            v = qkv[:, :, self.heads + self.kv_heads :].transpose(1, 2)
            keys, values = cache.update(k, v, i)
            out = self._attend(q, keys, values, attend, rows, new)
            o = layer.o(out)
            x = x + o
            h = F.rms_norm(x, (x.shape[-1],), layer.norm_post, self.eps)
            gate, up = layer.gate_up(h).chunk(2, dim=-1)
            down = layer.down(F.silu(gate) * up)
            x = x + down
            if between is not None and i < len(self.layers) - 1:
                between()
        last = F.rms_norm(x[:, -1:], (x.shape[-1],), self.norm, self.eps)
        return self.head(last)[:, -1].float()

    def _attention_mask(self, mask: torch.Tensor, new: int) -> torch.Tensor | None:
        """A boolean mask (rows, 1, new, total), or None when every row attends to everything.

        Causal within the new tokens; padding masked. A padding query position also sees
        itself, so that its (unused) output stays finite instead of a softmax over nothing.
        """
        total = mask.shape[1]
        real = mask.bool()
        if new == 1:
            return None if bool(real.all()) else real[:, None, None, :]
        past = total - new
        query = torch.arange(new, device=mask.device)[:, None] + past
        key = torch.arange(total, device=mask.device)[None, :]
        allowed = (key <= query)[None] & real[:, None, :]
        allowed |= key == query  # (rows, new, total)
        return allowed[:, None]

    def _attend(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, attend: torch.Tensor | None,
                rows: int, new: int) -> torch.Tensor:
        groups = self.heads // self.kv_heads
        if new == 1:
            # One token: the query heads sharing a key/value head become that head's "query
            # positions" (transformers' repeat_kv order: head h reads key/value head h // groups).
            folded = q.reshape(rows, self.kv_heads, groups, self.head_dim)
            out = F.scaled_dot_product_attention(folded, keys, values, attn_mask=attend)
            return out.reshape(rows, 1, self.heads * self.head_dim)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=attend, enable_gqa=groups > 1)
        return out.transpose(1, 2).reshape(rows, new, self.heads * self.head_dim)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _unsupported(model: Any) -> str | None:
    """Why the direct forward does not cover ``model`` (None: it does)."""
    config = getattr(model, "config", None)
    if type(model).__name__ != "LlamaForCausalLM" or config is None:
        return f"{type(model).__name__} is not a LlamaForCausalLM"
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return "the model's projections have biases"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act}"
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        return f"rotary embedding type {rope.get('rope_type')}"
    if getattr(config, "pretraining_tp", 1) != 1:
        return "tensor-parallel pretraining layout"
    return None
