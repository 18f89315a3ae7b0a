"""Per-channel adaptation: a small head trained on a channel's own corrections, in the background.

The meta-learned metric is the starting point every channel shares. Once a channel has
enough corrections, an inner loop adapts a residual low-rank head to *its* answers,
starting from the identity (so step 0 is exactly the meta-learned metric), with the same
prototypical loss the metric was meta-trained with, on episodes drawn from the channel's
own support set::

    f(z)   = normalize(z + (z A) B)         A (D, r), B (r, D) zero: f = identity at start
    step   : each answer: hold out one correction as query, prototype from the rest
             loss = prototypical_loss(f(support), f(query)); Adam on A, B

The per-channel state is A and B: 2·D·r floats (48 KB at r = 16), so thousands of
channels fit in one process. A candidate is kept only when it classifies the channel's
held-back corrections (every ``hold_out_every``-th) at least as well as the plain metric
and does not move scores of those held-back corrections away from the calibrated
radius (``max_shift``); then it is retrained on all corrections and installed as the
support set's scorer. Until then, and whenever the set changed meanwhile, the instant
prototype path serves. Jobs are debounced and run one at a time in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .prototypes import PrototypeSupportSet
from .protonet import prototypical_loss
from .support_set import CosineScorer

__all__ = ["AdaptConfig", "ChannelHead", "HeadScorer", "inner_loop", "adapt", "Adaptation"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AdaptConfig:
    min_corrections: int = 20    # a channel needs this many corrections ...
    min_answers: int = 3         # ... spread over this many answers, with 2+ corrections each
    rank: int = 16               # rank of the residual head
    steps: int = 100             # inner-loop steps
    lr: float = 1e-3
    scale: float = 20.0          # the meta-training softmax temperature
    hold_out_every: int = 4      # every n-th correction judges a candidate
    max_shift: float = 0.05      # candidates may move held-back scores this much on average
    debounce_s: float = 5.0      # wait this long after the last change before training
    seed: int = 0


class ChannelHead(nn.Module):
    """``normalize(z + (z A) B)``: the per-channel state (A, B)."""

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.randn(dim, rank) / dim**0.5)   # (D, r)
        self.B = nn.Parameter(torch.zeros(rank, dim))              # (r, D): the head starts as the identity

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(z + (z @ self.A) @ self.B, dim=-1)


class HeadScorer:
    """Scorer in a channel's adapted space: cosine after the channel's head."""

    def __init__(self, head: ChannelHead) -> None:
        self.A = head.A.detach().numpy().astype(np.float32).copy()   # (D, r)
        self.B = head.B.detach().numpy().astype(np.float32).copy()   # (r, D)

    @property
    def nbytes(self) -> int:
        return self.A.nbytes + self.B.nbytes

    def project(self, z: np.ndarray) -> np.ndarray:
        out = z + (z @ self.A) @ self.B
        return out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)

    def scores(self, query: np.ndarray, support: np.ndarray) -> np.ndarray:
        return self.project(support) @ self.project(query)


def inner_loop(vectors: np.ndarray, rows: np.ndarray, config: AdaptConfig) -> ChannelHead:
    """``config.steps`` Adam steps of the prototypical loss on the channel's own corrections.

    ``vectors`` (n, D) the corrections in the metric's space, ``rows`` (n,) their answer.
    Answers with a single correction take part only as prototypes of other queries' rivals.
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    x = torch.as_tensor(vectors, dtype=torch.float32)
    answers = [np.flatnonzero(rows == a) for a in np.unique(rows)]
    head = ChannelHead(x.shape[1], config.rank)
    opt = torch.optim.Adam(head.parameters(), lr=config.lr)
    for _ in range(config.steps):
        z = head(x)                                                                   # (n, D)
        protos, queries, labels = [], [], []
        for label, ix in enumerate(answers):
            pick = rng.permutation(ix)
            if len(pick) >= 2:                                                        # one held out as query
                queries.append(z[pick[0]])
                labels.append(label)
                pick = pick[1:]
            protos.append(z[pick].mean(0))
        support = torch.stack(protos)[:, None, :]                                     # (N, 1, D) prototypes
        loss, _ = prototypical_loss(support, torch.stack(queries), torch.as_tensor(labels), config.scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return head


def _held_out(vectors: np.ndarray, rows: np.ndarray, train: np.ndarray, test: np.ndarray,
              scorer: CosineScorer | HeadScorer) -> tuple[float, np.ndarray]:
    """Accuracy of classifying ``test`` corrections by prototypes of ``train`` ones, and their best scores."""
    labels = np.unique(rows[train])
    protos = np.stack([vectors[train][rows[train] == a].mean(0) for a in labels])
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    known = np.isin(rows[test], labels)
    scores = np.stack([scorer.scores(vectors[i], protos) for i in test[known]])      # (T, A)
    return float((labels[scores.argmax(1)] == rows[test][known]).mean()), scores.max(1)


def eligible(rows: np.ndarray, config: AdaptConfig) -> bool:
    counts = np.bincount(rows) if len(rows) else np.zeros(0, dtype=np.int64)
    return len(rows) >= config.min_corrections and int((counts >= 2).sum()) >= config.min_answers


def adapt(vectors: np.ndarray, rows: np.ndarray, config: AdaptConfig) -> tuple[HeadScorer | None, dict[str, float]]:
    """The gated inner loop: a scorer for the channel, or None when the candidate does no better."""
    started = time.perf_counter()
    n = len(rows)
    test = np.arange(n)[config.hold_out_every - 1:: config.hold_out_every]
    train = np.setdiff1d(np.arange(n), test)
    candidate = HeadScorer(inner_loop(vectors[train], rows[train], config))
    base_acc, base_best = _held_out(vectors, rows, train, test, CosineScorer())
    new_acc, new_best = _held_out(vectors, rows, train, test, candidate)
    shift = float(np.abs(new_best - base_best).mean())
    report = {"held_out": len(test), "base_accuracy": round(base_acc, 4), "adapted_accuracy": round(new_acc, 4),
              "score_shift": round(shift, 4)}
    if new_acc < base_acc or shift > config.max_shift:
        report["seconds"] = round(time.perf_counter() - started, 2)
        return None, report
    scorer = HeadScorer(inner_loop(vectors, rows, config))
    report["seconds"] = round(time.perf_counter() - started, 2)
    return scorer, report


class Adaptation:
    """Debounced background adaptation for every support set it watches (one job at a time)."""

    def __init__(self, config: AdaptConfig) -> None:
        self.config = config
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self._closed = False
        self.reports: list[dict[str, float]] = []

    def watch(self, support: PrototypeSupportSet) -> None:
        support.on_change = self.changed
        self.changed(support)

    def changed(self, support: PrototypeSupportSet) -> None:
        """Called by the support set after each change (from the event loop)."""
        if not eligible(support.answer_rows(), self.config):
            support.scorer = CosineScorer()  # too few corrections left: back to the shared metric
            return
        if self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # built outside a loop (scripts): adapt on the next change
            return
        key = id(support)
        if key in self._timers:
            self._timers[key].cancel()
        self._timers[key] = loop.call_later(self.config.debounce_s, self._start, support)

    def _start(self, support: PrototypeSupportSet) -> None:
        self._timers.pop(id(support), None)
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._run(support))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, support: PrototypeSupportSet) -> None:
        async with self._lock:
            version = support.version
            vectors, rows = support.matrix.copy(), support.answer_rows()
            if not eligible(rows, self.config):
                return
            try:
                scorer, report = await asyncio.to_thread(adapt, vectors, rows, self.config)
            except Exception:  # a failed job leaves the instant path serving
                log.exception("channel adaptation failed")
                return
            self.reports.append(report)
            if support.version != version:
                return  # the set changed meanwhile; its own debounce will retrain
            if scorer is not None:
                support.scorer = scorer
            log.info("channel adaptation %s: %s", "installed" if scorer else "rejected", report)

    async def stop(self) -> None:
        """Cancel pending and running jobs (a running inner loop finishes in its thread)."""
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
