"""Gradient meta-learning of a LoRA initialisation: MAML, first-order MAML, Reptile, Meta-SGD.

Only the LoRA parameters learn; the base model stays frozen and is never modified. Every
forward pass substitutes LoRA weights ``dict[str, Tensor]`` for one call with
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

Truncated backpropagation (``engine.nn.decoder_top``): the frozen layers below the
adapted ones run once per task, every inner step only the top. ``truncate=False`` runs
the whole stack every step instead (the reference, and what an all-layers LoRA needs).
The inner loop itself is ``engine.nn.inner_loop``, shared with a channel's consolidation.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.func import grad, grad_and_value
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..nn.chat_batches import Batch
from ..nn.decoder_top import Cached, DecoderTop, cache_batch, ce_loss, first_adapted_layer, kl_loss, with_base_logp
from ..nn.inner_loop import clip_norm, inner_loop
from ..nn.lora import LoraWeights, random_weights

__all__ = ["ALGOS", "MetaConfig", "CachedTask", "MetaLearner"]

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


@dataclass
class CachedTask:
    support: Cached
    query: Cached
    unrelated: Cached | None


# -- the inner loop ----------------------------------------------------------------------------


# -- the meta-learner --------------------------------------------------------------------------


class MetaLearner:
    """Holds the initialisation (and Meta-SGD's log α) and takes outer steps over task batches."""

    def __init__(self, model: nn.Module, config: MetaConfig, init: LoraWeights | None = None,
                 log_lr: LoraWeights | None = None) -> None:
        self.model, self.config = model, config
        self.stack = DecoderTop(model, first_adapted_layer(model) if config.truncate else 0)
        g = torch.Generator().manual_seed(config.seed)
        start = init if init is not None else random_weights(model, g)
        self.init = {k: v.detach().clone().requires_grad_(True) for k, v in start.items()}
        groups: list[dict[str, Any]] = [{"params": list(self.init.values()), "lr": config.outer_lr}]
        self.log_lr: LoraWeights | None = None
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
    def lrs(self) -> LoraWeights | float:
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

    def _outer_loss(self, params: LoraWeights, task: CachedTask) -> torch.Tensor:
        loss = ce_loss(params, self.stack, task.query)
        if task.unrelated is not None and self.config.locality_weight:
            loss = loss + self.config.locality_weight * kl_loss(params, self.stack, task.unrelated)
        return loss

    def meta_gradient(self, task: CachedTask) -> tuple[LoraWeights, LoraWeights | None, dict[str, float]]:
        """(∂/∂init, ∂/∂log α or None, metrics) of one task's meta loss."""
        cfg, stack = self.config, self.stack
        init = {k: v.detach() for k, v in self.init.items()}
        support_loss = lambda p: ce_loss(p, stack, task.support)  # noqa: E731
        if task.unrelated is not None and cfg.locality_weight:
            task = CachedTask(task.support, task.query, with_base_logp(self.model, stack, task.unrelated))

        if cfg.algo == "maml" or (cfg.algo == "metasgd" and not cfg.first_order):
            log_lr = {k: v.detach() for k, v in (self.log_lr or {}).items()}

            def objective(init: LoraWeights, log_lr: LoraWeights) -> torch.Tensor:
                lrs = {k: v.exp() for k, v in log_lr.items()} if log_lr else cfg.inner_lr
                adapted = inner_loop(init, lrs, cfg.inner_steps, support_loss, keep_graph=True,
                                     clip=cfg.inner_clip)
                return self._outer_loss(adapted, task)

            # The fused CPU attention kernel has no double backward; the math kernel (same result) has.
            with sdpa_kernel([SDPBackend.MATH]):
                (g_init, g_lr), loss = grad_and_value(objective, argnums=(0, 1))(init, log_lr)
            return g_init, (g_lr if self.log_lr is not None else None), {"query_loss": float(loss)}

        if cfg.algo == "reptile":
            def task_loss(p: LoraWeights) -> torch.Tensor:
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
        inner_grads: list[LoraWeights] = []
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
        """The learned tensors: the init (LoRA keys) and Meta-SGD's α as ``inner_lr.<key>``."""
        out = {k: v.detach().clone() for k, v in self.init.items()}
        if self.log_lr is not None:
            out |= {f"inner_lr.{k}": v.detach().exp() for k, v in self.log_lr.items()}
        return out

