"""The inner loop: a few gradient steps on one channel's corrections, from an initialisation.

Written on ``torch.func`` (``grad_and_value``), so it nests: meta-training differentiates
through it (second-order MAML), and a channel's consolidation runs it as plain SGD (or
Meta-SGD with per-parameter rates). ``optimizer_step`` is the same step for a torch
optimiser (Adam).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import grad_and_value

from .decoder_top import Cached, DecoderTop, ce_loss
from .lora import LoraWeights

__all__ = ["clip_norm", "optimizer_step", "inner_loop", "adapt", "split_state"]


def clip_norm(g: LoraWeights, clip: float) -> LoraWeights:
    """``g`` rescaled to global norm ≤ ``clip`` (differentiable; 0 = unchanged)."""
    if not clip:
        return g
    norm = torch.sqrt(torch.stack([(v * v).sum() for v in g.values()]).sum())
    return {k: v * torch.clamp(clip / (norm + 1e-12), max=1.0) for k, v in g.items()}


def optimizer_step(
    opt: torch.optim.Optimizer, leaves: LoraWeights, loss_fn: Callable[[LoraWeights], torch.Tensor]
) -> float:
    """One step of a torch optimiser (Adam) on ``leaves`` (tensors that require grad), even
    when called under ``no_grad``; returns the loss before the step."""
    with torch.enable_grad():
        loss = loss_fn(leaves)
        opt.zero_grad()
        loss.backward()
    opt.step()
    return float(loss.detach())


def inner_loop(
    params: LoraWeights,
    lrs: LoraWeights | float,
    steps: int,
    loss_fn: Callable[[LoraWeights], torch.Tensor],
    *,
    keep_graph: bool = False,
    clip: float = 0.0,
    on_step: Callable[[int, float, LoraWeights], None] | None = None,
) -> LoraWeights:
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
    stack: DecoderTop,
    init: LoraWeights,
    lrs: LoraWeights | float,
    support: Cached,
    steps: int,
    clip: float = 0.0,
    on_step: Callable[[int, float, LoraWeights], None] | None = None,
) -> LoraWeights:
    """Fine-tune ``init`` on a cached support set (first order, no graph kept): what a channel runs."""
    params = {k: v.detach() for k, v in init.items()}
    lrs = lrs if isinstance(lrs, float) else {k: v.detach() for k, v in lrs.items()}
    out = inner_loop(params, lrs, steps, lambda p: ce_loss(p, stack, support), clip=clip, on_step=on_step)
    return {k: v.detach() for k, v in out.items()}


def split_state(tensors: dict[str, torch.Tensor]) -> tuple[LoraWeights, LoraWeights | None]:
    """(LoRA weights, per-parameter inner lrs or None) from a saved state (see ``MetaLearner.state``)."""
    lora = {k: v for k, v in tensors.items() if not k.startswith("inner_lr.")}
    lrs = {k[len("inner_lr.") :]: v for k, v in tensors.items() if k.startswith("inner_lr.")}
    return lora, (lrs or None)

