"""The model worker: one thread owns the model and decodes many requests at once.

Continuous batching: a request joins the running batch at the next step (its prompt
is prefilled, then its KV cache is left-padded to the batch's length and stacked in),
and leaves it the step it finishes or is cancelled. Each request streams text through
its own asyncio queue, filled with ``call_soon_threadsafe``: the worker never waits
for a consumer, so a slow reader cannot stall anybody else.

Rows of one batch may use different per-channel LoRA weights: each row carries an
LoRA key, the worker keeps the most recently used LoRA weights resident on the device
(an LRU), and each forward pass applies each row's A/B matrices (``use_rows``), gathered
once per batch composition.

Background jobs (LoRA consolidation) run in the same thread, one step between
decode steps, so they never touch the model concurrently with generation and a turn
waits at most one job step.

Understanding first: while a message is being understood (``understanding/foreground.py``), the
worker starts no new step (at most ``model.understanding_first_ms``) and hands back its CPU
threads, so the embedding and the verifier's pass on that message's path get the cores; a step
already running through the direct forward (every prefill, and the decode steps that are not
compiled) pauses between two layers for as long, so the message waits for one layer, not a prefill. A turn
stays in the foreground until its request is submitted, and the worker takes every request that
arrived while it waited before it prefills: turns asked together start in one prefill, not the
first alone and the rest after it.

Failures stay with their row: a request whose prefill fails is retried alone, so a
bad one fails by itself and the rows already decoding carry on. A stream that gets no
text for ``stall_timeout_s`` fails with ``GenerationError`` instead of waiting forever,
and ``health()`` says when the thread has work but makes no progress.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Generator, Sequence
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import EngineClosed, GenerationError, Overloaded
from ..nn.lora import LoraWeights, RowWeights, gather_rows, lora_modules, stack_weights, use_rows
from ..nn.openmp import release_team, releasing
from ..settings import ModelSettings
from ..understanding.foreground import Foreground
from .compiled_decode import CompiledDecode, RecompileNeeded, compile_applies
from .copy_bias import CopySource
from .copy_bias import apply as copy_bias
from .direct_forward import DirectForward
from .kv_cache import new_cache, rebuild, stack
from .model_loader import LoadedModel, decoding
from .padding import left_pad

__all__ = ["ModelWorker", "GenerationStream"]

log = logging.getLogger(__name__)

_END = object()
_WAKE = object()  # put in the inbox to wake an idle worker for a job


@dataclass(eq=False)
class _Job:
    factory: Callable[[], Generator[object, None, Any]]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    steps: Generator[object, None, Any] | None = None

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        def apply() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)

        with suppress(RuntimeError):  # the loop is closed; nobody waits for the result
            self.loop.call_soon_threadsafe(apply)


@dataclass(eq=False)
class _Request:
    prompt: list[int]
    max_new_tokens: int
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[object]
    lora: str | None = None  # LoRA key (see ModelWorker.submit)
    weights: LoraWeights | None = None  # its device tensors, held while the row is in flight
    cancelled: bool = False
    generated: list[int] = field(default_factory=list)
    sent_chars: int = 0
    exempt: frozenset[int] = frozenset()  # tokens the repetition penalty spares (see ModelWorker.submit)
    penalised: torch.Tensor | None = None  # (vocab,) bool: the tokens it applies to (ModelWorker._penalised)
    copy: tuple[CopySource, ...] = ()  # facts the reply may copy (see ModelWorker.submit)

    def emit(self, item: object) -> None:
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)
        except RuntimeError:  # the consumer's loop is closed; nobody is listening
            self.cancelled = True


class GenerationStream:
    """Text deltas of one generation. Iterate it; ``aclose()`` (or leaving the loop
    early) cancels the request and frees its batch slot at the next step. Raises
    ``GenerationError`` when no text comes for ``stall_s`` seconds."""

    def __init__(self, request: _Request, stall_s: float) -> None:
        self._request = request
        self._stall_s = stall_s
        self.tokens = 0

    def __aiter__(self) -> AsyncIterator[str]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str]:
        try:
            while True:
                try:
                    async with asyncio.timeout(self._stall_s):  # no task per chunk, unlike wait_for
                        item = await self._request.out.get()
                except TimeoutError:
                    raise GenerationError(
                        f"the model produced nothing for {self._stall_s:g} s; try again shortly"
                    ) from None
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, str)
                yield item
        finally:
            self.tokens = len(self._request.generated)
            self._request.cancelled = True

    def cancel(self) -> None:
        self._request.cancelled = True


class ModelWorker:
    """Owns the model; ``submit`` from the event loop, decoding happens in its thread."""

    def __init__(self, loaded: LoadedModel, settings: ModelSettings, foreground: Foreground | None = None) -> None:
        """``foreground``: the understanding calls each unit of work waits for, at most
        ``settings.understanding_first_ms`` (``engine/understanding/foreground.py``)."""
        self.loaded = loaded
        self.settings = settings
        self._foreground = foreground
        self._inbox: queue.Queue[object] = queue.Queue(maxsize=settings.max_pending)
        self._thread: threading.Thread | None = None
        tok = loaded.tokenizer
        stops = {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")}
        gen_eos = getattr(getattr(loaded.model, "generation_config", None), "eos_token_id", None)
        stops.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        self._stop_ids = {i for i in stops if isinstance(i, int) and i >= 0 and i != tok.unk_token_id}
        self._pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        self._resident: OrderedDict[str, LoraWeights] = OrderedDict()
        self._resident_lock = threading.Lock()
        self._stacks: tuple[tuple[str, ...], dict[str, tuple[torch.Tensor, torch.Tensor]]] | None = None
        self._rows: tuple[tuple[tuple[str, ...], tuple[int, ...]], RowWeights] | None = None
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._job: _Job | None = None
        self.has_lora = bool(lora_modules(loaded.model))
        # Built here, in the caller's thread, which then hands back the OpenMP team that took.
        self._direct = (releasing(DirectForward.build)(loaded.model, bf16=loaded.matmul_dtype == "bfloat16")
                        if settings.direct_forward else None)
        self._compiled: CompiledDecode | None = None
        if self._direct is not None and compile_applies(settings, loaded, self._direct):
            self._compiled = CompiledDecode(self._direct)
        self._busy_since: float | None = None  # when the thread last started a unit of work not yet done
        self.failed_rows = 0  # requests that ended with a generation error
        self.rows_in_flight = 0  # rows of the batch decoding now (read from other threads: a plain int)

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="heedful-model-worker", daemon=True)
        self._thread.start()
        if self._compiled is not None:
            self._compiled.warm_in_background(self.settings.compile_delay_s)

    @property
    def compiled(self) -> CompiledDecode | None:
        """The compiled decode step (``compiled_decode.py``), where it applies; None: always eager."""
        return self._compiled

    async def stop(self) -> None:
        """Stop the thread; requests still running end with ``EngineClosed``."""
        if self._compiled is not None:
            self._compiled.cancel()
        if self._thread is None:
            return
        await asyncio.to_thread(self._inbox.put, None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- requests ---------------------------------------------------------------------

    def submit(
        self,
        prompt: Sequence[int],
        max_new_tokens: int | None = None,
        lora: tuple[str, LoraWeights] | None = None,
        exempt: frozenset[int] = frozenset(),
        copy: Sequence[CopySource] = (),
    ) -> GenerationStream:
        """Queue a generation for ``prompt`` (token ids), optionally under LoRA weights.

        ``exempt``: token ids the repetition penalty spares in this row: the prompt's words the
        reply is meant to repeat (a person's facts about themselves), which the penalty on every
        prompt token would otherwise push the model to misspell.

        ``copy``: the same facts as copy sources (engine/generation/copy_bias.py): with
        ``copy_bias`` set, the row's logits favour completing a fact it has started to repeat, so
        that a told value is copied whole. Rows without are unchanged.

        ``lora`` is ``(key, weights)``; the key names this exact version (e.g.
        ``"slack:T1:C1@3"``) so the worker can keep it resident. Raises ``Overloaded``
        when ``max_pending`` requests already wait, and ``EngineClosed`` when the
        worker is not running.
        """
        if not self.running:
            raise EngineClosed("the model worker is not running")
        limit = min(max_new_tokens or self.settings.max_new_tokens, self.settings.max_new_tokens)
        key, weights = None, None
        if lora is not None and self.has_lora:
            key, weights = lora[0], self._make_resident(*lora)
        request = _Request(
            list(prompt), limit, asyncio.get_running_loop(), asyncio.Queue(), lora=key, weights=weights,
            exempt=exempt, copy=tuple(copy),
        )
        try:
            self._inbox.put_nowait(request)
        except queue.Full:
            raise Overloaded("the model is busy; try again shortly", retry_after=2.0) from None
        return GenerationStream(request, self.settings.stall_timeout_s)

    def health(self) -> dict[str, Any]:
        """Whether the thread is alive and making progress (a unit of work: one decode or job step).

        ``stalled``: one unit of work has been running for longer than ``stall_timeout_s``
        (a hung model); ``busy_s``: how long the current one has run so far.
        """
        started = self._busy_since
        busy = 0.0 if started is None else time.monotonic() - started
        return {"alive": self.running, "busy_s": round(busy, 3), "stalled": busy > self.settings.stall_timeout_s,
                "pending": self._inbox.qsize(), "rows": self.rows_in_flight, "failed_rows": self.failed_rows,
                "decode_step": self._compiled.state if self._compiled is not None else "eager"}

    def run_job(self, steps: Callable[[], Generator[object, None, Any]]) -> asyncio.Future[Any]:
        """Run a background job in the model thread, one step between decode steps.

        ``steps()`` is called in the worker thread and must return a generator that
        yields after each unit of work and finally returns its result, which the
        returned future receives (or the exception it raised). Jobs run one at a time,
        in order; cancelling the future stops the job at its next step.
        """
        if not self.running:
            raise EngineClosed("the model worker is not running")
        loop = asyncio.get_running_loop()
        job = _Job(steps, loop, loop.create_future())
        self._jobs.put(job)
        with suppress(queue.Full):  # a full inbox means the worker is awake anyway
            self._inbox.put_nowait(_WAKE)  # a sleeping worker notices the job at once
        return job.future

    def resident_loras(self) -> int:
        return len(self._resident)

    def _make_resident(self, key: str, weights: LoraWeights) -> LoraWeights:
        """The device copy of LoRA weights, cached by key (least recently used evicted)."""
        with self._resident_lock:
            if key in self._resident:
                self._resident.move_to_end(key)
                return self._resident[key]
            device = self.loaded.device
            dtype = next(self.loaded.model.parameters()).dtype
            resident = {k: v.to(device=device, dtype=dtype) for k, v in weights.items()}
            self._resident[key] = resident
            while len(self._resident) > self.settings.max_resident_loras:
                self._resident.popitem(last=False)  # rows in flight keep their own reference
            return resident

    # -- the decoding loop (worker thread) ----------------------------------------------

    def _run(self) -> None:
        batch = _Batch()
        stopping = False
        while True:
            joining: list[_Request] = []
            idle = not batch.rows and self._job is None and self._jobs.empty()
            if idle and not stopping:
                release_team()  # hold CPU threads only while decoding (engine/nn/openmp.py)
                item = self._inbox.get()
                if item is None:
                    stopping = True
                elif isinstance(item, _Request):  # else _WAKE
                    joining.append(item)
            stopping = stopping or self._take_waiting(batch, joining)
            if not stopping and self._foreground is not None and not self._foreground.idle:
                # A message being understood gets the cores first, and its OpenMP team spins alone:
                # with this thread's team alive too, libgomp would throttle both (nn/openmp.py).
                self._give_way(self.settings.understanding_first_ms / 1000.0)
                # The messages understood meanwhile may have arrived: one prefill starts them all
                # (a row admitted alone first costs a prefill more, and the others wait for it).
                stopping = self._take_waiting(batch, joining)
            if stopping:
                for request in batch.rows + joining:
                    request.emit(EngineClosed("the engine is shutting down"))
                self._drain_inbox()
                self._cancel_jobs()
                return
            joining = [r for r in joining if not r.cancelled]
            self._busy_since = time.monotonic()
            try:
                if joining:
                    self._admit(batch, joining)
                elif batch.rows:
                    self._step(batch)
                self._finish_rows(batch)
            except Exception as err:  # the batch's shared cache is in an unknown state: end its rows
                log.exception("decode step failed")
                self._fail(list(dict.fromkeys(batch.rows + joining)), err)  # admitted rows are in both
                batch = _Batch()
            self.rows_in_flight = len(batch.rows)
            self._job_step()
            self._busy_since = None

    def _take_waiting(self, batch: _Batch, joining: list[_Request]) -> bool:
        """Move the requests waiting in the inbox to ``joining``, up to ``max_batch`` rows in all;
        True when the stop sentinel was among them."""
        while len(batch.rows) + len(joining) < self.settings.max_batch:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return False
            if item is None:
                return True
            if isinstance(item, _Request):  # else _WAKE
                joining.append(item)
        return False

    def _admit(self, batch: _Batch, joining: list[_Request]) -> None:
        """Prefill ``joining`` together; if that fails, one by one, so only a bad request fails.

        The running batch is untouched until a prefill succeeded (``_join`` merges last).
        """
        try:
            self._join(batch, joining)
            return
        except Exception as err:
            if len(joining) == 1:
                log.exception("prefill failed")
                self._fail(joining, err)
                return
            started = [r for r in joining if r.generated]  # text already sent: cannot start over
            self._fail(started, err)
            joining = [r for r in joining if not r.generated]
        for request in joining:
            self._admit(batch, [request])

    def _fail(self, rows: list[_Request], err: Exception) -> None:
        self.failed_rows += len(rows)
        for request in rows:
            request.emit(GenerationError(f"generation failed: {err}"))
            request.cancelled = True

    def _job_step(self) -> None:
        """Advance the current background job by one step (starting the next if none)."""
        if self._job is None:
            try:
                self._job = self._jobs.get_nowait()
            except queue.Empty:
                return
        job = self._job
        if job.future.cancelled():
            self._job = None
            return
        try:
            with torch.enable_grad():
                if job.steps is None:
                    job.steps = job.factory()
                next(job.steps)
        except StopIteration as done:
            self._job = None
            job.settle(result=done.value)
        except Exception as err:
            log.exception("background job failed")
            self._job = None
            job.settle(error=err)

    def _cancel_jobs(self) -> None:
        pending = [self._job] if self._job else []
        while not self._jobs.empty():
            pending.append(self._jobs.get_nowait())
        for job in pending:
            job.settle(error=EngineClosed("the engine is shutting down"))
        self._job = None

    def _drain_inbox(self) -> None:
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, _Request):
                item.emit(EngineClosed("the engine is shutting down"))

    @torch.no_grad()
    def _join(self, batch: _Batch, joining: list[_Request]) -> None:
        """Prefill new requests together and stack their caches into the batch."""
        device = self.loaded.device
        budget = self.loaded.context_length
        prompts = [r.prompt[-(budget - r.max_new_tokens) :] for r in joining]
        ids, mask, positions = left_pad(prompts, self._pad_id)
        cache = new_cache()
        with self._loras(joining):
            logits = self._forward(ids.to(device), mask.to(device), positions.to(device), cache)
        # The cache is updated in place by the forward pass.
        new = _Batch(rows=list(joining), cache=cache, mask=mask.to(device), positions=positions[:, -1].to(device) + 1)
        for req, p in zip(joining, prompts, strict=True):
            req.prompt = p
        self._sample_and_emit(new, logits)
        batch.merge(new)

    @torch.no_grad()
    def _step(self, batch: _Batch) -> None:
        assert batch.mask is not None and batch.positions is not None, "a running batch has its cache"
        device = self.loaded.device
        last = torch.tensor([[r.generated[-1]] for r in batch.rows], device=device)
        batch.mask = torch.cat([batch.mask, torch.ones((len(batch.rows), 1), dtype=torch.long, device=device)], dim=1)
        logits = None
        compiled = self._compiled
        with self._loras(batch.rows):
            if compiled is not None and compiled.covers(batch.rows, batch.mask):
                with suppress(RecompileNeeded):  # the step then stays eager for good (its state says why)
                    logits = compiled(last, batch.mask, batch.positions.unsqueeze(1), batch.cache)
            if logits is None:
                logits = self._forward(last, batch.mask, batch.positions.unsqueeze(1), batch.cache)
        batch.positions = batch.positions + 1
        self._sample_and_emit(batch, logits)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: object) -> torch.Tensor:
        """Logits (rows, vocab) of the last position, appending the new keys/values to ``cache``."""
        if self._direct is not None:
            return self._direct(ids, mask, positions, cache, between=self._pause_between_layers())
        with decoding():
            out = self.loaded.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                                    use_cache=True, logits_to_keep=1)
        logits: torch.Tensor = out.logits[:, -1, :].float()
        return logits

    def _pause_between_layers(self) -> Callable[[], None] | None:
        """For one forward pass: between two layers, while a message is being understood, wait for it
        (at most ``understanding_first_ms`` in all for the pass), with the CPU threads handed back.

        Why: the wait before a step does not help a message that arrives while a step runs, and a
        prefill runs long (~0.5 s for a 200-token prompt of SmolLM2-135M on two cores); the message's
        embedding and the verifier's pass then shared the cores with it for as long. Between layers the
        message waits for one layer at most (docs/BENCHMARKS.md, "Pausing a running step")."""
        foreground, left = self._foreground, self.settings.understanding_first_ms / 1000.0
        if foreground is None or left <= 0:
            return None

        def pause() -> None:
            nonlocal left
            if not foreground.idle and left > 0:
                left -= self._give_way(left)

        return pause

    def _give_way(self, limit_s: float) -> float:
        """Hand back the CPU threads and wait until no message is being understood, at most ``limit_s``
        (the message's OpenMP team then spins alone: nn/openmp.py); the seconds waited."""
        assert self._foreground is not None
        release_team()
        started = time.monotonic()
        self._foreground.wait_idle(limit_s)
        return time.monotonic() - started

    def _loras(self, rows: list[_Request]) -> AbstractContextManager[None]:
        """Per-row LoRA weights for one forward pass (slot 0: none)."""
        by_key = {r.lora: r.weights for r in rows if r.lora is not None}
        keys = tuple(sorted(by_key))
        if not keys:
            return nullcontext()
        if self._stacks is None or self._stacks[0] != keys:
            # Rebuilt only when the set of LoRA weights in the batch changes, not every step.
            self._stacks = (keys, stack_weights(self.loaded.model, [by_key[k] for k in keys]))
        slot = {k: i + 1 for i, k in enumerate(keys)}
        slots = tuple(slot.get(r.lora, 0) if r.lora else 0 for r in rows)
        if self._rows is None or self._rows[0] != (keys, slots):
            # Gathered again only when the batch's rows change (a row joins or leaves).
            index = torch.tensor(slots, device=self.loaded.device)
            self._rows = ((keys, slots), gather_rows(self._stacks[1], index))
        return use_rows(self.loaded.model, self._rows[1])

    def _sample_and_emit(self, batch: _Batch, logits: torch.Tensor) -> None:
        s = self.settings
        if s.repetition_penalty != 1.0:
            # One mask for the batch, kept per row as it decodes: a few whole-batch ops a step
            # instead of a set, a sort and two index ops per row.
            seen = torch.stack([self._penalised(req, logits.shape[-1], logits.device) for req in batch.rows])
            logits = torch.where(seen, torch.where(logits > 0, logits / s.repetition_penalty,
                                                   logits * s.repetition_penalty), logits)
        if s.copy_bias:
            for i, req in enumerate(batch.rows):
                if req.copy:
                    copy_bias(logits[i], req.generated, req.copy, s.copy_bias)
        if s.temperature <= 0:
            # max's indices, not argmax: the same first maximal index (ties included), ~3x faster on a
            # (rows, 49,152) CPU tensor (argmax 66 / 542 us at 1 / 16 rows, max 22 / 177 us).
            chosen = logits.max(-1).indices
        else:
            probs = torch.softmax(logits / s.temperature, dim=-1)
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            drop = sorted_probs.cumsum(-1) - sorted_probs > s.top_p
            sorted_probs[drop] = 0.0
            chosen = order.gather(-1, torch.multinomial(sorted_probs, 1)).squeeze(-1)
        for req, token in zip(batch.rows, chosen.tolist(), strict=True):
            req.generated.append(int(token))
            if req.penalised is not None and token not in req.exempt:
                req.penalised[token] = True
            finished = self._finished(req)
            if finished or len(req.generated) % s.stream_interval == 0:
                self._emit_text(req, final=finished)

    @staticmethod
    def _penalised(req: _Request, vocab: int, device: torch.device) -> torch.Tensor:
        """The row's tokens the repetition penalty applies to, (vocab,) bool: those of its prompt's
        last 256 tokens and of its reply, less ``exempt``; built at its first step, then kept."""
        if req.penalised is None:
            ids = sorted(i for i in set(req.prompt[-256:] + req.generated) - req.exempt if 0 <= i < vocab)
            req.penalised = torch.zeros(vocab, dtype=torch.bool, device=device)
            req.penalised[torch.tensor(ids, dtype=torch.long, device=device)] = True
        return req.penalised

    def _finished(self, req: _Request) -> bool:
        return (
            req.cancelled
            or req.generated[-1] in self._stop_ids
            or len(req.generated) >= req.max_new_tokens
            or len(req.prompt) + len(req.generated) >= self.loaded.context_length
        )

    def _emit_text(self, req: _Request, final: bool) -> None:
        if req.cancelled:
            return
        text = self.loaded.tokenizer.decode(req.generated, skip_special_tokens=True)
        if not final:
            # An incomplete UTF-8 sequence decodes to U+FFFD; wait for the rest of it.
            text = text.rstrip("\ufffd")
        if len(text) > req.sent_chars:
            req.emit(text[req.sent_chars :])
            req.sent_chars = len(text)

    def _finish_rows(self, batch: _Batch) -> None:
        keep: list[int] = []
        for i, req in enumerate(batch.rows):
            if self._finished(req):
                req.emit(_END)
            else:
                keep.append(i)
        if len(keep) != len(batch.rows):
            batch.select(keep)


@dataclass
class _Batch:
    """The rows decoding together, with their shared (left-padded) KV cache."""

    rows: list[_Request] = field(default_factory=list)
    cache: object = None
    mask: torch.Tensor | None = None  # (rows, cached length); 0 marks padding
    positions: torch.Tensor | None = None  # (rows,) next position id of each row

    def select(self, keep: list[int]) -> None:
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache = self.mask = self.positions = None
            return
        assert self.mask is not None and self.positions is not None
        index = torch.tensor(keep, device=self.mask.device)
        # Drop the columns that are padding for every remaining row.
        start = int((self.mask[index].sum(0) > 0).nonzero()[0])
        self.mask = self.mask[index, start:]
        self.positions = self.positions[index]
        self.cache = rebuild(self.cache, lambda t: t[index, :, start:, :])

    def merge(self, other: _Batch) -> None:
        if not self.rows:
            self.rows, self.cache, self.mask, self.positions = other.rows, other.cache, other.mask, other.positions
            return
        assert self.mask is not None and self.positions is not None, "a non-empty batch has its cache"
        assert other.mask is not None and other.positions is not None
        width = max(self.mask.shape[1], other.mask.shape[1])
        pad_a, pad_b = width - self.mask.shape[1], width - other.mask.shape[1]
        self.mask = torch.cat(
            [torch.nn.functional.pad(self.mask, (pad_a, 0)), torch.nn.functional.pad(other.mask, (pad_b, 0))]
        )
        self.positions = torch.cat([self.positions, other.positions])
        self.cache = stack(self.cache, other.cache, pad_a, pad_b)
        self.rows = self.rows + other.rows
