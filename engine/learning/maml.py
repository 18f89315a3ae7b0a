"""Gradient meta-learning of a LoRA initialisation: MAML, first-order MAML, Reptile, Meta-SGD.

Only the LoRA parameters learn; the base model stays frozen and is never modified. Every
forward pass substitutes an adapter ``dict[str, Tensor]`` for one call with
``torch.func.functional_call``, and gradients come from ``torch.func.grad``, which nests:
the second-order MAML gradient is ``grad`` of a query loss whose inner loop itself calls
``grad``.

For one task (a channel) with support set S and query set Q::

    θ_0 = init                                   (the meta-learned initialisation)
    θ_{i+1} = θ_i − α ⊙ ∇L_S(θ_i)                (inner loop, ``inner_steps`` times)
    meta loss = L_Q(θ_n) + λ · KL(base ‖ θ_n on unrelated prompts)

- ``maml``:    ∂ meta loss / ∂ init, backpropagating through the inner loop (second order)
- ``fomaml``:  the same with the inner gradients treated as constants: ∇L_Q(θ_n)
- ``reptile``: no outer gradient: init moves towards θ_n (pseudo-gradient init − θ_n); its
               inner loop trains on S ∪ Q with the locality term, as Reptile's task loss
- ``metasgd``: ``maml`` plus a learned inner learning rate for every parameter (α, kept
               positive as exp(log α)); ``first_order=True`` drops the second-order terms

Truncated backpropagation (the CPU trick): when only the top k decoder layers carry
adapters, the layers below never change, so they run once per task (``cache_batch``,
under no_grad), and every inner step runs only the top k layers, the final norm and the
LM head, and the head only at the answer positions (``TopStack``). This is exact: the
loss equals the full forward's loss (a test checks it). ``truncate=False`` runs the whole
stack every step instead (the reference, and what an all-layers adapter needs).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, grad_and_value
from torch.nn.attention import SDPBackend, sdpa_kernel

from .lora import Adapter, lora_modules, random_adapter
from .lora_tasks import Batch

__all__ = [
    "MetaConfig",
    "Cached",
    "CachedTask",
    "TopStack",
    "first_adapted_layer",
    "cache_batch",
    "with_base_logp",
    "ce_loss",
    "kl_loss",
    "anchored_loss",
    "clip_norm",
    "optimizer_step",
    "inner_loop",
    "adapt",
    "MetaLearner",
    "ALGOS",
]

ALGOS = ("maml", "fomaml", "reptile", "metasgd")


@dataclass
class MetaConfig:
    algo: str = "fomaml"  # maml | fomaml | reptile | metasgd
    inner_steps: int = 5  # inner-loop SGD steps per task
    inner_lr: float = 1.0  # α (Meta-SGD: the starting value of every per-parameter α)
    inner_clip: float = 1.0  # inner gradients rescaled to at most this norm (0 = off): plain SGD on LoRA diverges
    outer_lr: float = 1e-3  # Adam on the initialisation
    lr_lr: float = 1e-2  # Meta-SGD: Adam on log α
    first_order: bool = False  # metasgd only: drop second-order terms (maml is always second order)
    meta_batch: int = 4  # tasks per outer step
    meta_steps: int = 100  # outer steps
    locality_weight: float = 1.0  # λ: KL to the base model on unrelated prompts, in the meta loss
    grad_clip: float = 1.0  # outer gradient norm clip (0 = off)
    truncate: bool = True  # run frozen layers once per task (see module docstring)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {ALGOS}, not {self.algo!r}")
        assert self.inner_steps >= 0 and self.inner_lr > 0 and self.meta_batch >= 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the model, split at the first adapted layer ---------------------------------------------


def _body(model: nn.Module) -> nn.Module:
    body = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    for need in ("embed_tokens", "layers", "norm", "rotary_emb"):
        assert body is not None and hasattr(body, need), (
            f"truncated LoRA training expects a Llama-style decoder (model.{need}); got {type(model).__name__}"
        )
    return body


def first_adapted_layer(model: nn.Module) -> int:
    """Index of the lowest decoder layer that carries a LoRA module."""
    layers = [int(name.split(".layers.", 1)[1].split(".", 1)[0]) for name in lora_modules(model)]
    assert layers, "the model carries no LoRA layers: call inject_lora first"
    return min(layers)


class TopStack(nn.Module):
    """Decoder layers ``start:``, final norm and LM head, evaluated only where the loss is taken.

    Registers the model's own submodules under the model's own names (``model.*``,
    ``lm_head``), so adapter keys like ``model.layers.29.self_attn.q_proj.lora_A`` address
    it directly through ``functional_call``. It owns no parameters of its own.
    """

    def __init__(self, model: nn.Module, start: int) -> None:
        super().__init__()
        self.prefix = getattr(model, "base_model_prefix", "model")
        setattr(self, self.prefix, _body(model))
        self.lm_head = model.get_output_embeddings()
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
        return self.lm_head(picked)


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
def cache_batch(model: nn.Module, stack: TopStack, batch: Batch, *, with_base: bool = False) -> Cached:
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
def with_base_logp(model: nn.Module, stack: TopStack, cached: Cached) -> Cached:
    """``cached`` plus the base model's log-probs at its positions (kept out of stored caches: (N, V) is big)."""
    if cached.base_logp is not None:
        return cached
    zero = {k: torch.zeros_like(v) for k, v in _lora_params(model).items()}  # the base model, explicitly
    base_logp = F.log_softmax(_wide(functional_call(stack, zero, cached.args())), dim=-1)
    return Cached(cached.hidden, cached.mask, cached.cos, cached.sin, cached.position_ids, cached.pos, cached.tgt,
                  base_logp)


def _lora_params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{name}.{p}": getattr(m, p) for name, m in lora_modules(model).items() for p in ("lora_A", "lora_B")}


def _wide(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits in float32 for the softmax; float32 / float64 as they are."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def ce_loss(params: Adapter, stack: TopStack, c: Cached) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens under adapter ``params``."""
    logits = functional_call(stack, params, c.args())  # (N, V)
    return F.cross_entropy(_wide(logits), c.tgt)


def kl_loss(params: Adapter, stack: TopStack, c: Cached) -> torch.Tensor:
    """Mean KL(base ‖ adapted) of the next-token distributions at the cached positions."""
    assert c.base_logp is not None, "cache the batch with with_base=True"
    logp = F.log_softmax(_wide(functional_call(stack, params, c.args())), dim=-1)  # (N, V)
    return (c.base_logp.exp() * (c.base_logp - logp)).sum(-1).mean()


def anchored_loss(params: Adapter, stack: TopStack, support: Cached, anchor: Cached | None,
                  weight: float) -> torch.Tensor:
    """The inner loop's loss: cross-entropy on the corrections, plus ``weight`` × KL(base ‖ adapted)
    on unrelated anchor prompts (``weight`` 0 or no anchor: the plain cross-entropy).

    The anchor term is the locality constraint of knowledge-editing methods: it lets the
    adapter learn a channel's answers while leaving the rest of the model's behaviour alone.
    """
    loss = ce_loss(params, stack, support)
    if weight and anchor is not None:
        loss = loss + weight * kl_loss(params, stack, anchor)
    return loss


@dataclass
class CachedTask:
    support: Cached
    query: Cached
    unrelated: Cached | None


# -- the inner loop ----------------------------------------------------------------------------


def clip_norm(g: Adapter, clip: float) -> Adapter:
    """``g`` rescaled to global norm ≤ ``clip`` (differentiable; 0 = unchanged)."""
    if not clip:
        return g
    norm = torch.sqrt(sum((v * v).sum() for v in g.values()))
    return {k: v * torch.clamp(clip / (norm + 1e-12), max=1.0) for k, v in g.items()}


def optimizer_step(opt: torch.optim.Optimizer, leaves: Adapter, loss_fn: Callable[[Adapter], torch.Tensor]) -> float:
    """One step of a torch optimiser (Adam) on ``leaves`` (tensors that require grad), even
    when called under ``no_grad``; returns the loss before the step."""
    with torch.enable_grad():
        loss = loss_fn(leaves)
        opt.zero_grad()
        loss.backward()
    opt.step()
    return float(loss.detach())


def inner_loop(
    params: Adapter,
    lrs: Adapter | float,
    steps: int,
    loss_fn: Callable[[Adapter], torch.Tensor],
    *,
    keep_graph: bool = False,
    clip: float = 0.0,
    on_step: Callable[[int, float, Adapter], None] | None = None,
) -> Adapter:
    """``steps`` of θ ← θ − α ⊙ ∇loss(θ), the gradient rescaled to norm ≤ ``clip`` (0: unclipped).

    With ``keep_graph`` the result stays differentiable with respect to ``params`` and ``lrs``
    through the inner gradients (second order) when called inside an outer ``torch.func.grad``.
    """
    for step in range(steps):
        g, loss = grad_and_value(loss_fn)(params)  # g: same keys and shapes as params
        if not keep_graph:
            g = {k: v.detach() for k, v in g.items()}
        g = clip_norm(g, clip)
        params = {k: p - (lrs if isinstance(lrs, float) else lrs[k]) * g[k] for k, p in params.items()}
        if on_step is not None:
            on_step(step, float(loss), params)
    return params


def adapt(
    stack: TopStack,
    init: Adapter,
    lrs: Adapter | float,
    support: Cached,
    steps: int,
    clip: float = 0.0,
    on_step: Callable[[int, float, Adapter], None] | None = None,
) -> Adapter:
    """Fine-tune ``init`` on a cached support set (first order, no graph kept): what a channel runs."""
    params = {k: v.detach() for k, v in init.items()}
    lrs = lrs if isinstance(lrs, float) else {k: v.detach() for k, v in lrs.items()}
    out = inner_loop(params, lrs, steps, lambda p: ce_loss(p, stack, support), clip=clip, on_step=on_step)
    return {k: v.detach() for k, v in out.items()}


# -- the meta-learner --------------------------------------------------------------------------


class MetaLearner:
    """Holds the initialisation (and Meta-SGD's log α) and takes outer steps over task batches."""

    def __init__(self, model: nn.Module, config: MetaConfig, init: Adapter | None = None,
                 log_lr: Adapter | None = None) -> None:
        self.model, self.config = model, config
        self.stack = TopStack(model, first_adapted_layer(model) if config.truncate else 0)
        g = torch.Generator().manual_seed(config.seed)
        start = init if init is not None else random_adapter(model, g)
        self.init = {k: v.detach().clone().requires_grad_(True) for k, v in start.items()}
        groups: list[dict[str, Any]] = [{"params": list(self.init.values()), "lr": config.outer_lr}]
        self.log_lr: Adapter | None = None
        if config.algo == "metasgd":
            base = math.log(config.inner_lr)
            self.log_lr = {
                k: (log_lr[k].detach().clone() if log_lr is not None else torch.full_like(v, base)).requires_grad_(True)
                for k, v in self.init.items()
            }
            groups.append({"params": list(self.log_lr.values()), "lr": config.lr_lr})
        self.opt = torch.optim.Adam(groups)
        self.steps_done = 0

    # The per-parameter learning rates a consolidation should use.
    def lrs(self) -> Adapter | float:
        if self.log_lr is None:
            return self.config.inner_lr
        return {k: v.detach().exp() for k, v in self.log_lr.items()}

    def cache(self, batches: tuple[Batch, Batch, Batch | None]) -> CachedTask:
        support, query, unrelated = batches
        return CachedTask(
            cache_batch(self.model, self.stack, support),
            cache_batch(self.model, self.stack, query),
            cache_batch(self.model, self.stack, unrelated) if unrelated is not None else None,
        )

    def _outer_loss(self, params: Adapter, task: CachedTask) -> torch.Tensor:
        loss = ce_loss(params, self.stack, task.query)
        if task.unrelated is not None and self.config.locality_weight:
            loss = loss + self.config.locality_weight * kl_loss(params, self.stack, task.unrelated)
        return loss

    def meta_gradient(self, task: CachedTask) -> tuple[Adapter, Adapter | None, dict[str, float]]:
        """(∂/∂init, ∂/∂log α or None, metrics) of one task's meta loss."""
        cfg, stack = self.config, self.stack
        init = {k: v.detach() for k, v in self.init.items()}
        support_loss = lambda p: ce_loss(p, stack, task.support)  # noqa: E731
        if task.unrelated is not None and cfg.locality_weight:
            task = CachedTask(task.support, task.query, with_base_logp(self.model, stack, task.unrelated))

        if cfg.algo == "maml" or (cfg.algo == "metasgd" and not cfg.first_order):
            log_lr = {k: v.detach() for k, v in (self.log_lr or {}).items()}

            def objective(init: Adapter, log_lr: Adapter) -> torch.Tensor:
                lrs = {k: v.exp() for k, v in log_lr.items()} if log_lr else cfg.inner_lr
                adapted = inner_loop(init, lrs, cfg.inner_steps, support_loss, keep_graph=True,
                                     clip=cfg.inner_clip)
                return self._outer_loss(adapted, task)

            # The fused CPU attention kernel has no double backward; the math kernel (same result) has.
            with sdpa_kernel([SDPBackend.MATH]):
                (g_init, g_lr), loss = grad_and_value(objective, argnums=(0, 1))(init, log_lr)
            return g_init, (g_lr if self.log_lr is not None else None), {"query_loss": float(loss)}

        if cfg.algo == "reptile":
            def task_loss(p: Adapter) -> torch.Tensor:
                loss = ce_loss(p, stack, task.support) + ce_loss(p, stack, task.query)
                if task.unrelated is not None and cfg.locality_weight:
                    loss = loss + cfg.locality_weight * kl_loss(p, stack, task.unrelated)
                return loss

            adapted = inner_loop(init, cfg.inner_lr, cfg.inner_steps, task_loss, clip=cfg.inner_clip)
            with torch.no_grad():
                loss = self._outer_loss(adapted, task)
            return {k: init[k] - adapted[k] for k in init}, None, {"query_loss": float(loss)}

        # fomaml, and first-order Meta-SGD: inner gradients are constants.
        lrs = self.lrs()
        inner_grads: list[Adapter] = []
        params = init
        for _ in range(cfg.inner_steps):  # the inner loop, spelled out to keep each step's gradient
            g = clip_norm({k: v.detach() for k, v in grad(support_loss)(params).items()}, cfg.inner_clip)
            inner_grads.append(g)
            params = {k: p - (lrs if isinstance(lrs, float) else lrs[k]) * g[k] for k, p in params.items()}
        g_query, loss = grad_and_value(lambda p: self._outer_loss(p, task))(params)
        g_lr = None
        if self.log_lr is not None:
            assert not isinstance(lrs, float)
            # θ_n = θ_0 − Σ_i α ⊙ g_i  ⇒  ∂L/∂log α = −α ⊙ Σ_i g_i ⊙ ∇L(θ_n)   (first order)
            g_lr = {k: -lrs[k] * sum(gi[k] for gi in inner_grads) * g_query[k] for k in params}
        return g_query, g_lr, {"query_loss": float(loss)}

    def step(self, tasks: list[CachedTask]) -> dict[str, float]:
        """One outer step over a meta-batch; returns mean metrics."""
        t0 = time.perf_counter()
        sums_init = {k: torch.zeros_like(v) for k, v in self.init.items()}
        sums_lr = {k: torch.zeros_like(v) for k, v in (self.log_lr or {}).items()}
        losses = []
        for task in tasks:
            g_init, g_lr, metrics = self.meta_gradient(task)
            for k in sums_init:
                sums_init[k] += g_init[k] / len(tasks)
            if g_lr is not None:
                for k in sums_lr:
                    sums_lr[k] += g_lr[k] / len(tasks)
            losses.append(metrics["query_loss"])
        for k, v in self.init.items():
            v.grad = sums_init[k]
        for k, v in (self.log_lr or {}).items():
            v.grad = sums_lr[k]
        norm = 0.0
        if self.config.grad_clip:
            norm = float(torch.nn.utils.clip_grad_norm_(list(self.init.values()), self.config.grad_clip))
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.steps_done += 1
        return {"query_loss": sum(losses) / len(losses), "grad_norm": norm, "seconds": time.perf_counter() - t0}

    def state(self) -> dict[str, torch.Tensor]:
        """The learned tensors: the init (adapter keys) and Meta-SGD's α as ``inner_lr.<key>``."""
        out = {k: v.detach().clone() for k, v in self.init.items()}
        if self.log_lr is not None:
            out |= {f"inner_lr.{k}": v.detach().exp() for k, v in self.log_lr.items()}
        return out


def split_state(tensors: dict[str, torch.Tensor]) -> tuple[Adapter, Adapter | None]:
    """(adapter, per-parameter inner lrs or None) from a saved state (see ``MetaLearner.state``)."""
    adapter = {k: v for k, v in tensors.items() if not k.startswith("inner_lr.")}
    lrs = {k[len("inner_lr.") :]: v for k, v in tensors.items() if k.startswith("inner_lr.")}
    return adapter, (lrs or None)


__all__ += ["split_state"]
