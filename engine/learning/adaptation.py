"""Per-channel adaptation: the channel's own LoRA, trained in the background.

The meta-learned metric is the starting point every channel shares. Once a channel has
enough corrections, the inner loop (``channel_encoder.py``) continues training the
metric's LoRA weights on episodes drawn from *that channel's* corrections, with the loss the
metric was meta-trained with (MAML-style: meta-learned init, a few inner steps).

A candidate is judged before it serves: trained on all but every ``hold_out_every``-th
correction, it must classify those held-back corrections at least as well as the shared
metric, and must not move their scores away from the calibrated radius by more than
``max_shift`` on average. Then it is retrained on all corrections, the channel's
corrections are re-embedded in its space, and it is installed on the support set as an
``AdaptedSpace`` for that set's version. Until then — and whenever the set changes
again (a new correction, a forget) — the instant prototype path in the shared space
serves; the change also schedules a new job (debounced, one job at a time).

At most ``max_channels`` adapted spaces are held (432 KB each with the shipped metric):
installing one more drops the least recently used, whose channel goes back to the
instant path until its next change adapts it again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from ..nn import openmp
from ..understanding.foreground import lower_priority
from .channel_encoder import ChannelEncoder, EncoderAdaptConfig, Tensors, nbytes
from .support_set import SupportSet

__all__ = ["AdaptConfig", "AdaptedSpace", "Adaptation", "held_out_accuracy"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AdaptConfig:
    min_corrections: int = 20    # a channel needs this many corrections ...
    min_answers: int = 3         # ... spread over this many answers, with 2+ corrections each
    hold_out_every: int = 4      # every n-th correction judges a candidate
    max_shift: float = 0.05      # candidates may move held-back scores this much on average
    debounce_s: float = 5.0      # wait this long after the last change before training
    max_channels: int = 1024     # adapted spaces held at once (least recently used dropped)
    yield_s: float = 0.05        # the longest a training step waits for a message being understood
    inner: EncoderAdaptConfig = field(default_factory=EncoderAdaptConfig)


@dataclass(frozen=True, slots=True)
class AdaptedSpace:
    """A channel's adapted encoder and its corrections embedded with it, for one set version."""

    version: int
    tensors: Tensors
    support: SupportSet
    report: dict[str, float]

    @property
    def nbytes(self) -> int:
        return nbytes(self.tensors)


def eligible(rows: np.ndarray, config: AdaptConfig) -> bool:
    counts = np.bincount(rows) if len(rows) else np.zeros(0, dtype=np.int64)
    return len(rows) >= config.min_corrections and int((counts >= 2).sum()) >= config.min_answers


def held_out_accuracy(vectors: np.ndarray, rows: np.ndarray, train: np.ndarray,
                      test: np.ndarray) -> tuple[float, np.ndarray]:
    """Accuracy of classifying ``test`` corrections by prototypes of ``train`` ones, and their best scores."""
    labels = np.unique(rows[train])
    protos = np.stack([vectors[train][rows[train] == a].mean(0) for a in labels])
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    known = np.isin(rows[test], labels)
    scores = vectors[test][known] @ protos.T                                         # (T, A)
    return float((labels[scores.argmax(1)] == rows[test][known]).mean()), scores.max(1)


class Adaptation:
    """Debounced background adaptation for every support set it watches (one job at a time)."""

    def __init__(self, config: AdaptConfig, encoder: ChannelEncoder) -> None:
        self.config, self.encoder = config, encoder
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        self._closed = False
        self._installed: OrderedDict[SupportSet, None] = OrderedDict()  # least recently used first
        self.reports: deque[dict[str, float]] = deque(maxlen=1000)  # the latest jobs' reports
        # The inner loops run in a thread of their own at the lowest CPU priority: a training step
        # already running when a message arrives then yields the cores to it (foreground.py).
        self._trainer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heedful-adapt",
                                           initializer=lower_priority)

    def watch(self, support: SupportSet) -> None:
        support.on_change = self.changed
        self.changed(support)

    def release(self, support: SupportSet) -> None:
        """Stop watching ``support``: no pending job, no adapted space held for it."""
        support.on_change = None
        support.adapted = None
        timer = self._timers.pop(id(support), None)
        if timer is not None:
            timer.cancel()
        self._installed.pop(support, None)

    def changed(self, support: SupportSet) -> None:
        """Called by the support set after each change (from the event loop)."""
        if self._closed or not eligible(support.answer_rows(), self.config):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # built outside a loop (scripts): adapt on the next change
            return
        key = id(support)
        if key in self._timers:
            self._timers[key].cancel()
        self._timers[key] = loop.call_later(self.config.debounce_s, self._start, support)

    def _start(self, support: SupportSet) -> None:
        self._timers.pop(id(support), None)
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self._run(support))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, support: SupportSet) -> None:
        async with self._lock:
            version, corrections, rows = support.version, list(support), support.answer_rows()
            if not eligible(rows, self.config):
                return
            try:
                adapted = await self.adapt([c.question for c in corrections], rows)
            except InterruptedError:
                return
            except Exception:  # a failed job leaves the instant path serving
                log.exception("channel adaptation failed")
                return
            if adapted is None or support.version != version or support.on_change != self.changed:
                return  # rejected, changed meanwhile (its own debounce retrains), or released
            tensors, vectors, report = adapted
            report["installed"] = 1.0
            fresh = [dataclasses.replace(c, embedding=vectors[i]) for i, c in enumerate(corrections)]
            self.install(support, AdaptedSpace(version, tensors, SupportSet(fresh), report))
            log.info("channel adaptation installed: %s", report)

    def install(self, support: SupportSet, space: AdaptedSpace) -> None:
        """Serve ``support`` from ``space``; beyond ``max_channels`` the least recently used space goes."""
        support.adapted = space
        self.used(support)
        while len(self._installed) > self.config.max_channels:
            oldest, _ = self._installed.popitem(last=False)
            oldest.adapted = None  # the instant path serves it until its next change
            log.info("dropped a channel's adapted space (more than %d held)", self.config.max_channels)

    def used(self, support: SupportSet) -> None:
        """Note that ``support``'s adapted space just served a message (recency for the LRU)."""
        self._installed[support] = None
        self._installed.move_to_end(support)

    @property
    def installed(self) -> int:
        """Adapted spaces held now."""
        return len(self._installed)

    async def adapt(self, questions: list[str], rows: np.ndarray
                    ) -> tuple[Tensors, np.ndarray, dict[str, float]] | None:
        """The gated inner loop: (LoRA weights, the questions embedded with them, report), or None."""
        started = time.perf_counter()
        cfg, n = self.config, len(rows)
        test = np.arange(n)[cfg.hold_out_every - 1:: cfg.hold_out_every]
        train = np.setdiff1d(np.arange(n), test)
        states = await self.encoder.hidden_states(questions)
        shared = await self.encoder.embed_states(states, self.encoder.meta_tensors())
        foreground = self.encoder.encoder.foreground

        def stopped() -> bool:  # polled between steps: a message being understood goes first
            foreground.wait_idle(cfg.yield_s)
            return self._closed

        candidate = await self._train(self.encoder.train_blocking, [states[i] for i in train], rows[train],
                                            cfg.inner, stopped)
        base_acc, base_best = held_out_accuracy(shared, rows, train, test)
        new_acc, new_best = held_out_accuracy(await self.encoder.embed_states(states, candidate), rows, train, test)
        shift = float(np.abs(new_best - base_best).mean())
        report = {"corrections": n, "held_out": len(test), "base_accuracy": round(base_acc, 4),
                  "adapted_accuracy": round(new_acc, 4), "score_shift": round(shift, 4)}
        self.reports.append(report)
        if new_acc < base_acc or shift > cfg.max_shift:
            report["seconds"] = round(time.perf_counter() - started, 2)
            log.info("channel adaptation rejected: %s", report)
            return None
        tensors = await self._train(self.encoder.train_blocking, states, rows, cfg.inner, stopped)
        vectors = await self.encoder.embed_states(states, tensors)
        report["seconds"] = round(time.perf_counter() - started, 2)
        report["bytes"] = nbytes(tensors)
        return tensors, vectors, report

    async def _train(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the training thread (which hands its OpenMP team back afterwards)."""
        return await asyncio.get_running_loop().run_in_executor(self._trainer, openmp.releasing(fn), *args)

    async def settle(self) -> None:
        """Wait until no job is pending or running (benchmarks measure adapted channels)."""
        while self._timers or self._tasks:
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """Cancel pending and running jobs (a running inner loop stops at its next step)."""
        self._closed = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._trainer.shutdown(wait=False, cancel_futures=True)  # a running loop ends at its next step
