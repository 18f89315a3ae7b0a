"""Background consolidation: a channel's corrections become its own LoRA weights.

When a channel's corrections change, a durable job is requested (it survives a
restart) and, after ``debounce_s`` of quiet, queued. One job runs at a time, in
request order, inside the model worker thread one inner step at a time, so jobs
never block turns and a busy channel cannot starve the others (a channel re-taught
while queued keeps its place). The candidate is trained on most corrections and
judged on the ones held back: it is promoted only if it beats both the base model
and the channel's current LoRA there, and keeps base behaviour on unrelated
probe prompts (locality). With ``lora.scope = "related"`` (the default) LoRA weights only
ever serves messages the channel's corrections relate to, so the probes it is judged on
are those it would serve. Otherwise the current LoRA keeps serving.

Several processes may share one database (PostgreSQL): a job is claimed before it is trained
(``Store.claim_job``, a lease), so each is trained exactly once; a process that finds a job
claimed leaves it to its claimant, and a periodic sweep takes over jobs whose claimant died.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import metrics
from ..contract import ChannelKey
from ..generation.worker import ModelWorker
from ..nn import openmp
from ..nn.lora import (
    LoraConfig,
    LoraWeights,
    init_mismatch,
    inject_lora,
    random_weights,
    weights_from_bytes,
    weights_to_bytes,
)
from ..settings import LoraSettings
from ..store import Store, StoredCorrection
from .consolidation import DEFAULT_INIT_PATH, DEFAULT_PROBES, Candidate, consolidation_job

__all__ = ["Consolidator", "JobFn", "LoraSetup", "prepare_lora"]

log = logging.getLogger(__name__)


Related = Callable[[ChannelKey, Sequence[str]], Awaitable[list[bool]]]
"""``related(scope, texts)``: which texts the scope's LoRA would serve (``lora.scope``)."""

JobFn = Callable[..., Generator[object, None, Candidate]]
"""``job(support=, held_out=, current=, steps=)`` -> a generator, run in the model
thread, that yields after each inner step and returns a ``Candidate``."""


class Consolidator:
    """Owns the consolidation queue and the channels' active LoRA versions."""

    def __init__(
        self, store: Store, worker: ModelWorker, settings: LoraSettings, config: LoraConfig, job: JobFn,
        related: Related | None = None,
    ) -> None:
        self.store, self.worker, self.settings, self.config = store, worker, settings, config
        self.job = job
        # With scoped serving, a channel's LoRA never answers messages its corrections do not
        # relate to, so locality is judged on the probes it would actually serve (often none).
        self.related = related
        self._timers: dict[ChannelKey, asyncio.TimerHandle] = {}
        self._queue: asyncio.Queue[ChannelKey] = asyncio.Queue()
        self._queued: set[ChannelKey] = set()
        self._runner: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # this process, in job claims
        self._cache: OrderedDict[ChannelKey, tuple[str, LoraWeights] | None] = OrderedDict()
        self.idle = asyncio.Event()
        self.idle.set()

    async def start(self) -> None:
        """Start the queue, re-queue the jobs a previous run left behind, and sweep for jobs
        nobody is training (their process died) from then on."""
        self._runner = asyncio.create_task(self._serve(), name="heedful-consolidation")
        await self._sweep_once(settled_before=float("inf"))
        self._sweeper = asyncio.create_task(self._sweep(), name="heedful-consolidation-sweep")

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in (self._runner, self._sweeper):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._runner = self._sweeper = None

    async def corrections_changed(self, channel: ChannelKey, *, forgotten: bool = False) -> None:
        """Note a change in ``channel``'s corrections; a job follows after the debounce.

        After a forget, LoRA weights trained on the forgotten corrections stop serving
        at once (they would still remember them).
        """
        scope = channel.scope
        if forgotten:
            while await self.store.rollback_lora(scope) is not None:
                pass
            self._cache.pop(scope, None)
        await self.store.request_job(scope)
        self.idle.clear()
        if scope in self._timers:
            self._timers[scope].cancel()
        loop = asyncio.get_running_loop()
        self._timers[scope] = loop.call_later(self.settings.debounce_s, self._enqueue, scope)

    def forget_scope(self, scope: ChannelKey) -> None:
        """``scope`` no longer exists under that key (it moved): drop its timer and cached LoRA weights."""
        timer = self._timers.pop(scope, None)
        if timer is not None:
            timer.cancel()
        self.drop_cached(scope)

    def cached(self) -> dict[ChannelKey, int | None]:
        """The scopes whose active LoRA is cached, with its version (None: the base model)."""
        return {scope: int(entry[0].rsplit("@", 1)[1]) if entry else None for scope, entry in self._cache.items()}

    def drop_cached(self, scope: ChannelKey) -> None:
        """Look ``scope``'s active LoRA up again on its next reply."""
        self._cache.pop(scope, None)

    def _enqueue(self, scope: ChannelKey) -> None:
        self._timers.pop(scope, None)
        if scope not in self._queued:
            self._queued.add(scope)
            self._queue.put_nowait(scope)
            self.idle.clear()

    async def lora_for(self, channel: ChannelKey) -> tuple[str, LoraWeights] | None:
        """``(key@version, weights)`` of the channel's active LoRA version, or None (base model)."""
        scope = channel.scope
        if scope in self._cache:
            self._cache.move_to_end(scope)
            return self._cache[scope]
        stored = await self.store.active_lora_version(scope)
        entry = None
        if stored is not None and stored.weights is not None:
            weights, _, _ = await openmp.to_thread(weights_from_bytes, stored.weights)
            entry = (f"{scope}@{stored.version}", weights)
        self._cache[scope] = entry
        while len(self._cache) > self.settings.cached_loras:
            self._cache.popitem(last=False)
        return entry

    async def _sweep_once(self, settled_before: float) -> None:
        for scope in await self.store.claimable_jobs(self.owner, settled_before):
            if scope not in self._timers:  # a debounce in progress enqueues it anyway
                self._enqueue(scope)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.settings.job_sweep_s)
            try:
                await self._sweep_once(settled_before=time.time() - self.settings.debounce_s)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the database is away for a moment: sweep next time
                log.warning("consolidation sweep failed: %s", err)

    def backlog(self) -> int:
        """Consolidations queued or waiting for their debounce."""
        return self._queue.qsize() + len(self._timers)

    async def rollback(self, channel: ChannelKey, *, author_id: str = "") -> int | None:
        """Re-activate the previous LoRA version (None: back to the base model)."""
        version = await self.store.rollback_lora(channel.scope, author_id=author_id)
        self.drop_cached(channel.scope)
        return version

    async def _serve(self) -> None:
        while True:
            if self._queue.empty() and not self._timers:
                self.idle.set()
            scope = await self._queue.get()
            self._queued.discard(scope)
            try:
                await self._consolidate(scope)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                metrics.LORA_JOBS.labels("failed").inc()
                attempts = await self.store.fail_job(scope)
                log.warning("consolidation of %s failed (attempt %d): %s", scope, attempts, err)
                if attempts < self.settings.max_attempts:
                    self._enqueue(scope)
                else:
                    await self.store.finish_job(scope, float("inf"))

    async def _consolidate(self, scope: ChannelKey) -> None:
        requested_at = await self.store.claim_job(scope, self.owner, self.settings.job_lease_s)
        if requested_at is None:
            return  # done already, or another process is training it
        corrections = await self.store.corrections(scope)
        if len(corrections) < self.settings.min_corrections:
            await self._finish(scope, requested_at)
            return
        support, held_out = split(corrections, self.settings.held_out_every)
        current = await self.lora_for(scope)
        probes: list[str] | None = None
        if self.related is not None:
            related = await self.related(scope, DEFAULT_PROBES)
            probes = [p for p, ok in zip(DEFAULT_PROBES, related, strict=True) if ok]
        candidate: Candidate = await self.worker.run_job(
            lambda: self.job(support=support, held_out=held_out, current=current[1] if current else None,
                             steps=self._steps(), probes=probes, optimizer=self.settings.optimizer,
                             adam_lr=self.settings.adam_lr, anchor=self.settings.anchor)
        )
        ok, why = candidate.beats(self.settings.min_locality)
        measured = {
            "held_out_loss": candidate.held_out_loss,
            "base_held_out_loss": candidate.base_held_out_loss,
            "current_held_out_loss": candidate.current_held_out_loss,
            "locality": candidate.locality,
            "steps": candidate.steps,
            "seconds": round(candidate.seconds, 3),
            "corrections": len(corrections),
            "held_out": len(held_out),
            "probes": len(DEFAULT_PROBES) if probes is None else len(probes),
            "decision": why,
            **candidate.metrics,
        }
        blob = await openmp.to_thread(weights_to_bytes, candidate.lora, self.config)
        if await self._still_current(scope, corrections):
            version = await self.store.add_lora_version(scope, blob, measured, "active" if ok else "rejected")
            if ok:
                self._cache.pop(scope, None)
            log.info("%s LoRA v%d for %s: %s", "promoted" if ok else "rejected", version, scope, why)
            metrics.LORA_JOBS.labels("promoted" if ok else "rejected").inc()
        await self._finish(scope, requested_at)

    async def _finish(self, scope: ChannelKey, requested_at: float) -> None:
        if not await self.store.finish_job(scope, requested_at):
            self._enqueue(scope)  # re-requested while it trained (maybe by another process): train again

    def _steps(self) -> int:
        """Inner steps: as configured, else Adam's count (0 lets the job use the init's own count)."""
        if self.settings.steps or self.settings.optimizer == "meta":
            return self.settings.steps
        return self.settings.adam_steps

    async def _still_current(self, scope: ChannelKey, used: list[StoredCorrection]) -> bool:
        """False when corrections were forgotten meanwhile (the candidate learned them)."""
        now = {c.id for c in await self.store.corrections(scope)}
        return all(c.id in now for c in used)


def split(corrections: list[StoredCorrection], every: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Support and held-out (question, answer) pairs: every ``every``-th correction is held out."""
    support: list[tuple[str, str]] = []
    held_out: list[tuple[str, str]] = []
    for i, c in enumerate(corrections):
        (held_out if i % every == every - 1 else support).append((c.question, c.answer))
    return support, held_out


@dataclass
class LoraSetup:
    """What the engine needs to serve and consolidate LoRA versions."""

    config: LoraConfig
    init: LoraWeights
    job: JobFn
    source: str


def prepare_lora(model: Any, tokenizer: Any, settings: LoraSettings) -> LoraSetup:
    """Inject LoRA layers into the served model and bind the consolidation job.

    The initialisation is the shipped meta-learned one (``init = "default"``), a
    file, or the standard LoRA start (``"zero"``: A small random, B zero), which is
    also the fallback when no artifact is installed and when the init does not fit
    the served model (another model, e.g. ``tiny:`` or a 7B one: logged as a warning).
    Raises ``FileNotFoundError`` for a configured file that does not exist, and
    ``ValueError`` when the model has no layers LoRA can target.
    """
    path = DEFAULT_INIT_PATH if settings.init == "default" else Path(settings.init) if settings.init != "zero" else None
    init: LoraWeights | None = None
    config = LoraConfig()
    source = "standard init"
    metadata: dict[str, str] = {}
    if path is not None and path.is_file():
        tensors, file_config, file_metadata = weights_from_bytes(path.read_bytes())
        problem = init_mismatch(model, tensors, file_config)
        if problem is None:
            init, config, metadata = tensors, file_config, file_metadata
            source = path.name
        else:
            log.warning("LoRA init %s (trained for %s) does not fit this model: %s; consolidation starts from "
                        "the standard LoRA init instead", path.name, file_metadata.get("model", "?"), problem)
            source = f"standard init ({path.name} does not fit)"
    elif settings.init not in ("default", "zero"):
        raise FileNotFoundError(f"LoRA init {settings.init!r} not found")
    inject_lora(model, config)
    if init is None:
        init = random_weights(model, torch.Generator().manual_seed(0))
    steps_hint = int(metadata.get("inner_steps", "0") or 0)

    def job(**kwargs: Any) -> Generator[object, None, Candidate]:
        if not kwargs.get("steps"):
            kwargs["steps"] = steps_hint or 8
        return consolidation_job(model, tokenizer, init, config, metadata, **kwargs)

    return LoraSetup(config=config, init=init, job=job, source=source)
