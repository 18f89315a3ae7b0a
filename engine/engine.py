"""The engine: one object that platform adapters talk to.

A turn goes: clean the text -> store it -> embed it -> match the channel's support
set -> answer from a correction, or generate (with learned examples when they are
close) -> stream -> store the reply with its explanation. Turns in one thread are
served one at a time; different channels run concurrently and share model batches.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing, suppress
from typing import Any

from . import metrics
from .chat_template import plain_ids, render_chat
from .contract import (
    AuditEntry,
    ChannelKey,
    ChannelSettings,
    Correction,
    CorrectionUse,
    Explanation,
    FactUse,
    Feedback,
    FeedbackKind,
    FeedbackReceipt,
    LoraVersion,
    PersonalFact,
    PersonalProfile,
    ProgressUse,
    Route,
    Turn,
)
from .dialog.prompt import PromptParts, assemble, second_person
from .dialog.sanitize import MentionGuard, clean_text
from .errors import EngineClosed, InputError, NotFound
from .generation.copy_bias import CopySource, copy_source
from .generation.model_loader import LoadedModel, load_model, prepare_model, read_embedded_weights
from .generation.openai_compat import OpenAICompatible
from .generation.vllm_backend import VllmBackend, served_lora_name
from .generation.worker import ModelWorker
from .keyed_locks import KeyedLocks
from .learning.consolidator import Consolidator, LoraSetup, prepare_lora
from .learning.matching import Check, Matching, applying
from .learning.personal import Profiles, forget_taste_notes, visible_history
from .learning.preference import Signal, Taste, TastePrior, features, load_prior
from .learning.progress import MASTERED, MISSED, ProgressSignal, forget_progress_notes
from .learning.support_set import Match, SupportSet, answer_key
from .learning.support_sets import SupportSets
from .learning.verifier import Verdict
from .nn import openmp
from .nn.lora import LoraWeights
from .reply import Reply
from .settings import EngineSettings
from .store import AlreadyApplied, Derived, Spaces, Store, StoredCorrection, StoredMessage, question_key
from .understanding.encoder import Encoder

__all__ = ["Engine"]

log = logging.getLogger(__name__)

_NO_ANSWER = "Sorry, I have no answer to that."
_FALLBACK_PERSONA = "You are heedful, a helpful assistant in a group chat. Answer briefly and accurately."


class Engine:
    """The heedful engine. Use as ``async with Engine(settings) as engine: ...``."""

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.store = Store(settings.store_location)
        # Matching (learning/matching.py): the meta-learned metric's encoder, its calibrated radius
        # (the thresholds) and per-answer prototype support sets; plain cosine with learning.metric=none.
        self.matching = Matching(settings.learning, settings.encoder)
        self.encoder: Encoder = self.matching.encoder
        self._loaded: LoadedModel | None = None
        self._worker: ModelWorker | None = None
        self._locks: KeyedLocks[ChannelKey] = KeyedLocks()        # one turn at a time per channel
        self._teach_locks: KeyedLocks[ChannelKey] = KeyedLocks()  # one change at a time per learning scope
        # Support sets of recently used learning scopes; the rest reload from the store when asked.
        self._support = SupportSets(self.store, self.matching, settings.learning.cached_scopes,
                                    busy=self._teach_locks.busy)
        # People's personal scopes inside channels (learning/personal.py), looked up only by their own turns;
        # public for what measures them (``Profile.nbytes``), changed only through the engine's methods.
        # The taste prior (learning/preference.py): with it, a person's 👍/👎 teach which of several
        # candidates to send them (``dialog.preference_candidates``; docs/LEARNING.md, "Taste").
        self.taste_prior: TastePrior | None = _taste_prior(settings.dialog.preference_candidates)
        self.profiles = Profiles(self.store, self.encoder, settings.learning.cached_profiles,
                                  busy=self._teach_locks.busy, prior=self.taste_prior)
        self._started = False
        self._data_version = 0  # the store's PRAGMA data_version when caches were last checked
        self.consolidator: Consolidator | None = None
        self._pruning: asyncio.Task[None] | None = None
        # model.backend = "openai" or "vllm": replies come from a server ("vllm": LoRA training stays here)
        self._remote: OpenAICompatible | None = None

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, load encoder and model (in threads) and start the worker."""
        if self._started:
            return
        try:
            await self.store.open()
            log.info("store: %s on %s", self.store.backend, self.store.where)
            self._data_version = await self.store.data_version()
            # One load at a time: transformers' lazy imports and its meta-device initialisation
            # (from_pretrained patches module construction process-wide) are not thread-safe, and
            # loading the encoder and the LLM in two threads at once left LLM weights on "meta".
            local = self.settings.model.backend in ("local", "vllm")  # vllm: the local model trains LoRA versions
            # A fresh install de-quantises the embedded GGUF while transformers' models are imported
            # (read_embedded_weights needs only its GGUF reader, imported first: two threads importing
            # transformers' own package at once can each see it half initialised).
            await asyncio.to_thread(_import_gguf_reader)
            reading = asyncio.ensure_future(openmp.to_thread(read_embedded_weights, self.settings.model,
                                                              self.settings.model_cache_dir)) if local else None
            try:
                await asyncio.to_thread(_import_model_libraries)
            finally:  # a thread cannot be cancelled: let it finish
                weights = await asyncio.shield(reading) if reading is not None else None
            setup = None
            if local:
                # ... then builds the model in memory beside the encoder's and the verifier's load, which
                # it does not disturb (see prepare_model), and writes its cache after the model serves.
                converting = asyncio.ensure_future(openmp.to_thread(prepare_model, self.settings.model,
                                                                     self.settings.model_cache_dir, weights))
                try:
                    await self.matching.start()
                finally:
                    prepared = await asyncio.shield(converting)  # a thread cannot be cancelled: let it finish
                self._loaded = await openmp.to_thread(load_model, self.settings.model,
                                                       self.settings.model_cache_dir, prepared)
                setup = await openmp.to_thread(self._prepare_lora) if self.settings.lora.enabled else None
                self._worker = ModelWorker(self._loaded, self.settings.model, self.encoder.foreground)
                self._worker.start()
                if self.settings.model.backend == "vllm":
                    self._remote = VllmBackend(
                        self.settings.model, lora_config=setup.config if setup is not None else None,
                        lora_dir=self.settings.model.lora_dir or self.settings.data_dir / "lora-exports")
                    await self._remote.start()
                    log.info("replies come from %s at %s, channels' LoRA versions by name (%s)", self._remote.model,
                             self.settings.model.base_url, self.settings.model.lora_loading)
            else:
                self._remote = OpenAICompatible(self.settings.model)
                await self._remote.start()
                await self.matching.start()
                log.info("replies come from %s at %s; %s", self._remote.model, self.settings.model.base_url,
                         self.lora_note)
            if setup is not None and self._worker is not None:
                related = self._related if self.settings.lora.scope == "related" else None
                self.consolidator = Consolidator(self.store, self._worker, self.settings.lora, setup.config, setup.job,
                                                 related=related)
                await self.consolidator.start()
            if self.settings.store.retention_days > 0:
                self._pruning = asyncio.create_task(self._prune_history(), name="heedful-retention")
        except BaseException:
            await self.stop()
            raise
        self._started = True
        metrics.track(self)

    async def _prune_history(self) -> None:
        """Delete message history older than ``store.retention_days``, now and then every hour."""
        keep_s = self.settings.store.retention_days * 86400.0
        while True:
            try:
                pruned = await self.store.prune_messages(time.time() - keep_s)
                if pruned:
                    log.info("retention: deleted %d message(s) older than %g day(s)", pruned,
                             self.settings.store.retention_days)
            except Exception:  # a locked or busy file now is no reason to stop pruning later
                log.exception("retention pruning failed")
            await asyncio.sleep(min(3600.0, keep_s / 4))

    async def stop(self) -> None:
        """Stop generation (running replies end with ``EngineClosed``) and close the store."""
        self._started = False
        if self._pruning is not None:
            self._pruning.cancel()
            with suppress(asyncio.CancelledError):
                await self._pruning
            self._pruning = None
        if self.consolidator is not None:
            await self.consolidator.stop()
            self.consolidator = None
        if self._worker is not None:
            await self._worker.stop()
            self._worker = None
        if self._remote is not None:
            await self._remote.stop()
            self._remote = None
        await self.matching.stop()  # per-channel adaptation jobs
        await self.encoder.stop()
        await self.store.close()

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def model_name(self) -> str:
        if self._remote is not None:
            return self._remote.model
        return self._loaded.name if self._loaded else self.settings.model.id

    @property
    def lora_note(self) -> str:
        """Why per-channel LoRA versions do not shape replies, when they do not ("" when they may)."""
        return self.settings.lora_note()

    def health(self) -> dict[str, Any]:
        """Is the engine serving? ``healthy`` is false when it is stopped, or its model thread
        died or has been stuck on one step for longer than ``model.stall_timeout_s``."""
        backend = self._remote or self._worker  # vllm has both: replies come from the server
        model = backend.health() if backend is not None else {"alive": False, "stalled": False}
        return {"healthy": self._started and model["alive"] and not model["stalled"], "model": model}

    def queue_depths(self) -> dict[str, float]:
        """Work waiting or in progress, by stage (the ``heedful_queue_depth`` metric)."""
        backend = self._remote or self._worker
        worker = backend.health() if backend is not None else {}
        return {"model_pending": float(worker.get("pending", 0)), "decoding": float(worker.get("rows", 0)),
                "consolidation": float(self.consolidator.backlog() if self.consolidator is not None else 0)}

    async def _lora_for(self, channel: ChannelKey) -> tuple[str, LoraWeights] | None:
        """The channel's active LoRA version, where versions are consolidated (``Consolidator.lora_for``)."""
        return await self.consolidator.lora_for(channel) if self.consolidator is not None else None

    def _check_running(self) -> None:
        if not self._started:
            raise EngineClosed("the engine is not running")

    # -- turns ------------------------------------------------------------------------

    def reply(self, turn: Turn) -> Reply:
        """Start answering ``turn``; iterate the returned ``Reply`` for its text.

        Raises (while iterating) ``InputError`` for unusable input, with a message fit
        for the user, ``Overloaded`` when the model queue is full and ``EngineClosed``
        when the engine stops. Cancelling is safe.
        """
        return Reply(lambda reply: self._answer(turn, reply))

    async def _answer(self, turn: Turn, reply: Reply) -> AsyncGenerator[str, None]:
        self._check_running()
        started = time.perf_counter()
        text = clean_text(turn.text, limit=self.settings.dialog.max_input_chars)
        await self._sync_external()
        async with self._locks(turn.channel):
            # Until its request reaches the model worker, this turn is on its first chunk's critical path:
            # background work (decode steps, training) waits for it, and the worker starts the turns that
            # arrive together in one prefill (understanding/foreground.py).
            hold = self.encoder.foreground.hold()
            try:
                # The message's store write, its understanding and the lookup of the channel's LoRA
                # version (a store read and a decode when not cached) run at once.
                question_id, (matches, checks), lora = await asyncio.gather(self.store.add_message(
                    turn.channel, role="user", text=text, platform_message_id=turn.message_id,
                    reply_to=turn.reply_to, author_id=turn.author_id, author_name=turn.author_name,
                ), self._match(turn.channel, text), self._lora_for(turn.channel))
                persona = await self._persona(turn.channel)
                explanation = self._explain(reply.reply_id, turn.channel, matches, checks, persona, lora)
                explanation = await self._personalise(turn, text, explanation)
                explanation = await self._tutoring(turn, text, explanation)
                taste = await self._taste(turn, explanation)
                if explanation.lora_version is None:
                    lora = None  # out of the LoRA's scope (``lora.scope``)
                if lora is not None and isinstance(self._remote, VllmBackend):  # /why: the name the server serves
                    explanation = dataclasses.replace(explanation, notes=(
                        *explanation.notes, f"served by vLLM as {served_lora_name(turn.channel.scope, lora)!r}"))
                reply.explanation = explanation
                metrics.TURNS.labels(explanation.route.value).inc()
                answer_id = await self.store.add_message(
                    turn.channel, role="assistant", text="", reply_id=reply.reply_id, question_id=question_id,
                    complete=False,
                )
            except BaseException:
                hold.release()
                raise
            if taste is not None:
                hold.release()  # several candidates, submitted apart
            produced: list[str] = []
            guard = MentionGuard()
            try:
                chunks = (self._produce_preferred(turn, text, question_id, explanation, persona, lora, taste, reply)
                          if taste is not None else
                          self._produce(turn.channel, text, question_id, explanation, persona, lora,
                                        asker=turn.author_id, submitted=hold.release))
                async with aclosing(chunks):
                    async for chunk in chunks:
                        safe = guard.feed(chunk)
                        if safe:
                            produced.append(safe)
                            yield safe
                tail = guard.flush()
                if not "".join([*produced, tail]).strip():
                    tail += _NO_ANSWER  # platforms refuse blank messages, and users deserve a word
                if tail:
                    produced.append(tail)
                    yield tail
            finally:
                hold.release()
                # Store what was produced even when the consumer went away mid-reply.
                await asyncio.shield(
                    self.store.finish_message(answer_id, "".join(produced),
                                              (reply.explanation or explanation).to_dict())
                )
                metrics.TURN_SECONDS.observe(time.perf_counter() - started)

    async def _produce(
        self,
        channel: ChannelKey,
        text: str,
        question_id: int,
        explanation: Explanation,
        persona: str,
        lora: tuple[str, LoraWeights] | None,
        asker: str = "",
        submitted: Callable[[], None] = lambda: None,
    ) -> AsyncGenerator[str, None]:
        """The reply's text: the correction's answer quoted, or the model's stream.
        ``submitted`` is called once the request is with the model worker (or needs none, or failed)."""
        learned = self.settings.learning
        if explanation.route is Route.CORRECTION and not learned.rephrase:
            submitted()
            answer = explanation.corrections[0].answer
            for word in _words(answer):  # stream it like generated text, so platform adapters need one path
                yield word
            return
        try:
            history = visible_history(
                await self.store.history(channel, self.settings.dialog.history_turns, before_id=question_id), asker)
            grounding = explanation.corrections[0].answer if explanation.route is Route.CORRECTION else ""
            uses = [] if grounding else list(reversed(explanation.corrections))
            parts = PromptParts(
                persona=persona,
                examples=[(u.question, u.answer) for u in uses if u.verdict != Verdict.RELATED],
                related=[(u.question, u.answer) for u in uses if u.verdict == Verdict.RELATED],
                history=[(m.role, m.text) for m in history if m.text],
                message=text,
                grounding=grounding,
                profile=[f.text for f in reversed(explanation.facts)],  # the closest fact nearest the question
                progress=[(u.status, u.topic, u.answer) for u in explanation.progress],
            )
            if self._remote is None:
                assert self._worker is not None and self._loaded is not None
                prompt = await asyncio.to_thread(self._render, parts)
                exempt, copy = (await asyncio.to_thread(self._copied, parts.profile) if parts.profile
                                else (frozenset(), ()))
                stream = self._worker.submit(prompt, lora=lora, exempt=exempt, copy=copy)
        finally:
            submitted()
        if self._remote is not None:
            model = self.settings.model
            chars = 4 * (model.context_tokens - model.max_new_tokens)  # ~4 characters a token: no tokenizer here
            messages = assemble(parts, lambda m: sum(len(x["content"]) + 16 for x in m), chars)
            deltas = (self._remote.stream_lora(messages, channel.scope, lora)
                      if lora is not None and isinstance(self._remote, VllmBackend) else self._remote.stream(messages))
            async with aclosing(deltas):
                async for delta in deltas:
                    yield delta
            return
        try:
            async for delta in stream:
                yield delta
        finally:
            stream.cancel()  # frees the batch slot if the reader left early

    async def _taste(self, turn: Turn, explanation: Explanation) -> Taste | None:
        """The asker's taste, when it should choose among candidates for this reply: a generated reply
        (not one quoted from a correction), ``dialog.preference_candidates`` above 1, and at least one
        signal of theirs in this channel."""
        if self.taste_prior is None or not turn.author_id or self.settings.dialog.preference_candidates < 2:
            return None
        if explanation.route is Route.CORRECTION and not self.settings.learning.rephrase:
            return None
        taste = await self.profiles.taste(turn.channel, turn.author_id)
        return taste if taste is not None and len(taste) else None

    async def _produce_preferred(
        self,
        turn: Turn,
        text: str,
        question_id: int,
        explanation: Explanation,
        persona: str,
        lora: tuple[str, LoraWeights] | None,
        taste: Taste,
        reply: Reply,
    ) -> AsyncGenerator[str, None]:
        """A reply chosen by the asker's taste (docs/LEARNING.md, "Taste"): ``dialog.preference_candidates``
        candidates generated at once (so they share model batches): the plain prompt, and the same with
        each of the styles the taste ranks best asked for in the system prompt. The one the taste scores
        highest is sent, streamed once all are done, and ``reply.explanation`` says why. A candidate that
        fails (an overloaded queue) is left out; when all fail, the first error is raised."""
        styles = taste.styles(text, self.settings.dialog.preference_candidates - 1)
        personas = [persona, *(f"{persona}\n{style.hint()}" for style, _ in styles)]

        async def one(system: str) -> str:
            parts: list[str] = []
            async with aclosing(self._produce(turn.channel, text, question_id, explanation, system, lora,
                                              asker=turn.author_id)) as chunks:
                async for chunk in chunks:
                    parts.append(chunk)
            return "".join(parts)

        results = await asyncio.gather(*(one(system) for system in personas), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # cancellation and the like
        done = [(i, r) for i, r in enumerate(results) if isinstance(r, str)]
        if not done:
            first = results[0]
            assert isinstance(first, Exception)
            raise first
        scores = taste.scores([r for _, r in done], text)
        best = max(range(len(done)), key=lambda j: (bool(done[j][1].strip()), scores[j]))
        labels = ["plain", *(style.label() for style, _ in styles)]
        reply.explanation = dataclasses.replace(explanation, preference={
            "person": turn.author_id, **taste.summary(text),
            "candidates": [{"style": labels[i], "score": round(scores[j], 3)} for j, (i, _) in enumerate(done)],
            "chosen": best})
        for word in _words(done[best][1]):
            yield word

    def _render(self, parts: PromptParts) -> list[int]:
        """Token ids of the prompt (runs in a thread: tokenising is CPU work)."""
        assert self._loaded is not None
        tokenizer = self._loaded.tokenizer
        model = self.settings.model
        budget = min(model.context_tokens, self._loaded.context_length) - model.max_new_tokens

        def ids(messages: list[dict[str, str]]) -> list[int]:
            return render_chat(tokenizer, messages, add_generation_prompt=True)

        return ids(assemble(parts, lambda m: len(ids(m)), budget))

    def _copied(self, facts: Sequence[str]) -> tuple[frozenset[int], tuple[CopySource, ...]]:
        """The asker's facts as the reply may repeat them (runs in a thread): the token ids of the facts
        as the prompt shows them, which the repetition penalty must not punish, and the facts as copy
        sources (``model.copy_bias``: engine/generation/copy_bias.py)."""
        assert self._loaded is not None
        tokenizer = self._loaded.tokenizer
        sources = tuple(copy_source((f, second_person(f)), lambda t: plain_ids(tokenizer, t)) for f in facts)
        return frozenset(i for s in sources for span in s.spans for i in span), sources

    # -- learning ---------------------------------------------------------------------

    async def _support_set(self, channel: ChannelKey) -> SupportSet:
        return await self._support.get(channel.scope)

    async def _sync_external(self) -> None:
        """Another process changed the database (the ``heedful`` CLI forgets a channel's
        corrections or rolls its LoRA back): drop what is cached for the scopes it
        changed, so their next message reloads them. One PRAGMA when nothing changed."""
        version = await self.store.data_version()
        if version == self._data_version:
            return
        # Personal scopes are small: reload them rather than compare (those our own change holds: next time).
        profiles_settled = self.profiles.clear()
        loras = self.consolidator.cached() if self.consolidator is not None else {}
        scopes = list(dict.fromkeys([*self._support.scopes(), *loras]))
        settled = True
        for scope, (count, newest, active) in (await self.store.fingerprints(scopes)).items():
            support = self._support.peek(scope)
            if support is not None and support.fingerprint != (count, newest):  # negatives counted too
                if self._teach_locks.busy(scope):
                    settled = False  # our own change in flight: look again next time
                else:
                    self._support.drop(scope)
                    log.info("corrections of %s changed elsewhere: reloading them", scope)
            if scope in loras and loras[scope] != active:
                assert self.consolidator is not None
                self.consolidator.drop_cached(scope)
                log.info("active LoRA of %s changed elsewhere: v%s", scope, active)
        if settled and profiles_settled:
            self._data_version = version

    async def _match(self, channel: ChannelKey, text: str) -> tuple[list[Match], list[Check | None]]:
        """The scope's matches for ``text``, best first, and the verifier's check of each (or None)."""
        support = await self._support_set(channel)
        if not len(support):
            return [], []
        return await self.matching.check(support, text)

    def _verified_route(self, matches: list[Match], checks: list[Check | None]
                        ) -> tuple[Route, list[tuple[Match, Check]], list[tuple[Match, Check]]]:
        """(route, corrections used, candidates turned away) when the verifier decided.

        The metric's best candidate that applies answers; failing that, related ones join the
        prompt as context; a correction a user marked as not applying to such a phrasing
        (``Match.blocked``) can only be related."""
        checked = [(m, c) for m, c in zip(matches, checks, strict=True) if c is not None]
        applies = applying(matches, checks)
        if applies:
            best = applies[0]
            return Route.CORRECTION, [best], [mc for mc in checked if mc is not best and mc[1].verdict is Verdict.NONE]
        related = [(m, c) for m, c in checked if c.verdict is not Verdict.NONE][: self.settings.learning.max_examples]
        rejected = [(m, c) for m, c in checked if c.verdict is Verdict.NONE]
        return (Route.EXAMPLES if related else Route.BASE), related, rejected

    def _route(self, matches: list[Match]) -> tuple[Route, list[Match], float, float]:
        """(route, corrections used, answer threshold, example threshold) by the metric's radius alone."""
        # The metric's calibrated radius, unless thresholds were configured explicitly (learning/matching.py).
        answer_threshold, example_threshold = self.matching.answer_threshold, self.matching.example_threshold
        if matches:
            answer_threshold = self.matching.answer_threshold_for(matches[0].support)
        if matches and matches[0].score >= answer_threshold and not matches[0].blocked:
            return Route.CORRECTION, matches[:1], answer_threshold, example_threshold
        used: list[Match] = []
        if self.settings.learning.max_examples:
            used = [m for m in matches if m.score >= example_threshold][: self.settings.learning.max_examples]
        return (Route.EXAMPLES if used else Route.BASE), used, answer_threshold, example_threshold

    async def _related(self, scope: ChannelKey, texts: Sequence[str]) -> list[bool]:
        """Which ``texts`` the scope's corrections relate to (not the base route): the messages a
        channel LoRA serves with ``lora.scope = "related"``, and so the probes its locality is judged on."""
        support = await self._support_set(scope)
        if not len(support):
            return [False] * len(texts)
        return [self._route(m)[0] is not Route.BASE for m in await self.matching.match_many(support, texts)]

    def _explain(
        self,
        reply_id: str,
        channel: ChannelKey,
        matches: list[Match],
        checks: list[Check | None],
        persona: str,
        lora: tuple[str, LoraWeights] | None = None,
    ) -> Explanation:
        route, used, answer_threshold, example_threshold = self._route(matches)
        uses = tuple(_use(m) for m in used)
        rejected: tuple[CorrectionUse, ...] = ()
        verifier = self.matching.verifier
        if verifier is not None:  # it decides; the metric only retrieved (from its floor up)
            route, verified, turned_away = self._verified_route(matches, checks)
            example_threshold = self.matching.floor
            uses = tuple(_use(m, c) for m, c in verified)
            rejected = tuple(_use(m, c) for m, c in turned_away)
        generated = route is not Route.CORRECTION or self.settings.learning.rephrase
        in_scope = route is not Route.BASE or self.settings.lora.scope == "all"
        if not (generated and in_scope):
            lora = None  # no generation, or a message the channel's corrections do not relate to
        return Explanation(
            reply_id=reply_id,
            channel=channel,
            route=route,
            model=self.model_name,
            corrections=uses,
            answer_threshold=answer_threshold,
            example_threshold=example_threshold,
            lora_version=lora[0].rsplit("@", 1)[1] if lora else None,
            persona=persona,
            notes=(self.lora_note,) if self.lora_note else (),
            verifier=verifier.name if verifier else "",
            apply_threshold=verifier.artifact.apply_threshold if verifier else None,
            related_threshold=verifier.artifact.related_threshold if verifier else None,
            rejected=rejected,
        )

    async def _personalise(self, turn: Turn, text: str, explanation: Explanation) -> Explanation:
        """The asker's personal scope on top of the channel's (DESIGN.md, "Scopes").

        Their personal corrections are consulted first, by the same rule as the channel's: one
        that applies answers (whatever the channel's would have), related ones join the prompt
        ahead of the channel's examples. Then the facts they told about themselves that the
        message relates to (``learning.personal_fact_threshold``) join the prompt of a generated
        reply. Only the asker's own profile is read; a turn without an author has none."""
        if not turn.author_id:
            return explanation
        profile = await self.profiles.get(turn.channel, turn.author_id)
        if profile.empty:
            return explanation
        learned = self.settings.learning
        if len(profile.support):
            matches, checks = await self.matching.check(profile.support, text)
            mine = self._explain(explanation.reply_id, turn.channel, matches, checks, explanation.persona)
            uses = tuple(dataclasses.replace(u, personal=True) for u in mine.corrections)
            turned_away = tuple(dataclasses.replace(u, personal=True) for u in mine.rejected)
            if mine.route is Route.CORRECTION:
                explanation = dataclasses.replace(explanation, route=Route.CORRECTION, corrections=uses,
                                                  rejected=turned_away, lora_version=None,
                                                  answer_threshold=mine.answer_threshold)
            elif mine.route is Route.EXAMPLES and explanation.route is not Route.CORRECTION:
                explanation = dataclasses.replace(explanation, route=Route.EXAMPLES,
                                                  corrections=(*uses, *explanation.corrections)[: learned.max_examples],
                                                  rejected=(*explanation.rejected, *turned_away))
            else:
                explanation = dataclasses.replace(explanation, rejected=(*explanation.rejected, *turned_away))
        facts: list[FactUse] = []
        if profile.facts and (explanation.route is not Route.CORRECTION or learned.rephrase):  # a generated reply
            (vector,) = await self.encoder.embed([text])
            related = profile.related(vector, learned.personal_fact_threshold, learned.personal_max_facts)
            facts = [FactUse(f.id, f.text, round(score, 4)) for f, score in related]
        if not facts and not any(u.personal for u in (*explanation.corrections, *explanation.rejected)):
            return explanation
        return dataclasses.replace(explanation, person=turn.author_id, facts=tuple(facts))

    async def _tutoring(self, turn: Turn, text: str, explanation: Explanation) -> Explanation:
        """The asker's tutoring progress (docs/LEARNING.md, "Tutoring progress"): in a channel whose
        persona is the tutor preset (``learning.progress``), the topics they missed or mastered that
        the message relates to (``learning.progress_threshold``) join the prompt of a generated
        reply, at most ``learning.progress_max_items``. Only the asker's own progress is read."""
        learned = self.settings.learning
        if not turn.author_id or learned.progress == "off" or not learned.progress_max_items:
            return explanation
        if learned.progress == "tutor" and explanation.persona != self.settings.dialog.personas.get("tutor"):
            return explanation
        if explanation.route is Route.CORRECTION and not learned.rephrase:
            return explanation  # a quoted answer: no prompt
        progress = await self.profiles.progress(turn.channel, turn.author_id, learned.progress_threshold)
        if not len(progress):
            return explanation
        (vector,) = await self.encoder.embed([text])
        related = progress.related(vector, learned.progress_max_items)
        if not related:
            return explanation
        uses = tuple(ProgressUse(t.question, t.status, round(score, 4), t.answer if t.status == MISSED else "")
                     for t, score in related)
        return dataclasses.replace(explanation, person=turn.author_id, progress=uses)

    async def feedback(self, feedback: Feedback) -> FeedbackReceipt:
        """Apply a user's feedback. A returned receipt with ``accepted`` is durable.

        Raises ``NotFound`` when the targeted reply does not exist in that channel and
        ``InputError`` when a correction is empty or too long.
        """
        self._check_running()
        await self._sync_external()
        try:
            with self.encoder.foreground.busy():  # a correction's effect waits for this: background work waits
                receipt = await self._apply(feedback)
        except AlreadyApplied as done:  # the same platform event again: answer as the first time
            if feedback.kind is FeedbackKind.CORRECTION:
                metrics.CORRECTIONS.labels("repeated").inc()
            return _receipt(feedback.kind, done.result)
        if feedback.kind is FeedbackKind.CORRECTION:
            outcome = "refused" if not receipt.accepted else "pending" if receipt.pending else "learned"
            metrics.CORRECTIONS.labels(outcome).inc()
        return receipt

    async def _apply(self, feedback: Feedback) -> FeedbackReceipt:
        channel = feedback.channel
        target = await self._target(feedback)
        if feedback.kind is FeedbackKind.CORRECTION:
            return await self._correct(feedback, target)
        if target is None:
            raise NotFound("there is no reply of mine here to give feedback on")
        if feedback.kind is FeedbackKind.FORGET:
            used = [u["correction_id"] for u in (target.explanation or {}).get("corrections", [])]
            forgotten = (await self.forget(channel, used, author_id=feedback.author_id, event_id=feedback.event_id)
                         if used else 0)
            return _receipt(feedback.kind, {"forgotten": forgotten})
        paraphrase = await self._confirmed(feedback, target) if feedback.kind is FeedbackKind.UP else None
        if paraphrase is None:
            await self.store.add_thumb(channel, target.id, feedback.kind.value, feedback.author_id,
                                       event_id=feedback.event_id)
            await self._learn_taste(feedback, target)
            await self._learn_progress(feedback, target)
            return _receipt(feedback.kind, {"kind": feedback.kind.value})
        async with self._teach_locks(channel.scope):  # the thumb and the new member land together
            support = await self._support_set(channel)
            added = await self.store.add_thumb(channel, target.id, feedback.kind.value, feedback.author_id,
                                               event_id=feedback.event_id, paraphrase=paraphrase)
            if added is not None:
                support.add(added)
        if added is not None:
            log.info("confirmed paraphrase #%d of #%s in %s", added.id, added.source_id, channel.scope)
            if self.consolidator is not None:
                await self.consolidator.corrections_changed(channel)
        await self._learn_taste(feedback, target)
        await self._learn_progress(feedback, target)
        return _receipt(feedback.kind, {"kind": feedback.kind.value})

    async def _learn_taste(self, feedback: Feedback, target: StoredMessage) -> None:
        """A 👍 / 👎 of the person a reply answered joins their taste in that channel, if it is held (a
        taste not yet loaded reads it from the store with the others)."""
        if self.taste_prior is None or not feedback.author_id or target.question_id is None or not target.text:
            return
        if self.profiles.peek(feedback.channel, feedback.author_id) is None:
            return
        asked = await self.store.message(target.question_id)
        if asked is None or asked.author_id != feedback.author_id:
            return  # someone else's reply: not their taste
        signal = Signal(f"thumb:{target.id}", feedback.kind is FeedbackKind.UP, features(target.text, asked.text),
                        time.time())
        await self.profiles.learn(feedback.channel, feedback.author_id, signal)

    async def _learn_progress(self, feedback: Feedback, target: StoredMessage) -> None:
        """A 👍 / 👎 of the person a reply answered joins their tutoring progress in that channel, if it
        is held (a progress not yet loaded reads it from the store with the rest)."""
        if self.settings.learning.progress == "off" or not feedback.author_id or target.question_id is None \
                or not target.text or self.profiles.peek(feedback.channel, feedback.author_id) is None:
            return
        asked = await self.store.message(target.question_id)
        if asked is None or asked.author_id != feedback.author_id:
            return  # someone else's reply: not their progress
        (vector,) = await self.encoder.embed([asked.text])
        await self.profiles.learn_progress(feedback.channel, feedback.author_id, ProgressSignal(
            f"thumb:{target.id}", asked.text, vector, MASTERED if feedback.kind is FeedbackKind.UP else MISSED, "",
            time.time()))

    async def _progress_corrected(self, feedback: Feedback, target: StoredMessage | None,
                                  correction: StoredCorrection) -> None:
        """A channel correction of a reply to someone else's question: a topic that person missed
        joins their tutoring progress there, if it is held (else it is read with the rest)."""
        if self.settings.learning.progress == "off" or target is None or target.question_id is None:
            return
        asked = await self.store.message(target.question_id)
        if asked is None or not asked.author_id or asked.author_id == correction.author_id \
                or self.profiles.peek(feedback.channel, asked.author_id) is None:
            return
        same = question_key(asked.text) == question_key(correction.question)
        (vector,) = [correction.embedding] if same else await self.encoder.embed([asked.text])
        await self.profiles.learn_progress(feedback.channel, asked.author_id, ProgressSignal(
            f"correction:{correction.id}", asked.text, vector, MISSED, correction.answer, correction.created_at))

    async def _served(self, channel: ChannelKey, target: StoredMessage | None
                      ) -> tuple[StoredMessage, StoredCorrection, SupportSet] | None:
        """(its question, the active correction it was served from, the scope's set) of a reply
        answered from a correction (route ``correction``); None for any other reply."""
        explanation = target.explanation if target is not None else None
        if target is None or not explanation or explanation.get("route") != Route.CORRECTION.value \
                or not explanation.get("corrections") or target.question_id is None:
            return None
        used = explanation["corrections"][0].get("correction_id")
        support = await self._support_set(channel)
        correction = next((c for c in support if c.id == used), None)
        asked = await self.store.message(target.question_id) if correction is not None else None
        return (asked, correction, support) if asked is not None and correction is not None else None

    @staticmethod
    def _derivable(support: SupportSet, question: str, answer: str) -> bool:
        """Neither a member of the set (any answer) nor already a negative of ``answer``."""
        return not any(question_key(c.question) == question_key(question) for c in support) and not any(
            question_key(n.question) == question_key(question) and answer_key(n.answer) == answer_key(answer)
            for n in support.negatives)

    async def _confirmed(self, feedback: Feedback, target: StoredMessage) -> Derived | None:
        """The asker's 👍 on a reply served from a correction: their question, to become a confirmed
        paraphrase (a member) of that correction's answer. None for anyone else's thumb, other
        replies, and phrasings already a member or a negative (the store checks again)."""
        served = await self._served(feedback.channel, target) if not feedback.needs_review else None
        if served is None:
            return None
        asked, correction, support = served
        if not asked.author_id or asked.author_id != feedback.author_id \
                or not self._derivable(support, asked.text, correction.answer):
            return None
        (vector,) = await self.encoder.embed([asked.text])
        return Derived(correction.source_id or correction.id, asked.text, vector, self.encoder.name, target.id)

    async def _negative(self, feedback: Feedback, target: StoredMessage | None, question: str, answer: str,
                        vector: Any) -> Derived | None:
        """A correction of a reply served from a correction, on that reply's own question, with a
        different answer: the question, to become a negative of the correction it was served from.
        None otherwise, and when the question is that correction's own (it is replaced instead)."""
        served = await self._served(feedback.channel, target)
        if served is None:
            return None
        asked, correction, support = served
        source = correction.source_id or correction.id
        taught = next((c for c in support if c.id == source), correction)
        if question_key(question) != question_key(asked.text) or answer_key(answer) == answer_key(correction.answer) \
                or question_key(question) == question_key(taught.question):
            return None
        negatives = support.negatives
        if any(question_key(n.question) == question_key(question) and answer_key(n.answer) == answer_key(
                correction.answer) for n in negatives):
            return None
        return Derived(source, question, vector, self.encoder.name, target.id if target is not None else None)

    async def _target(self, feedback: Feedback) -> StoredMessage | None:
        target = await self.store.find_reply(
            feedback.channel, reply_id=feedback.reply_id, message_id=feedback.message_id
        )
        if target is None and (feedback.reply_id or feedback.message_id):
            raise NotFound("that message is not one of my replies in this channel")
        return target

    async def _correct(self, feedback: Feedback, target: StoredMessage | None) -> FeedbackReceipt:
        limit = self.settings.learning.max_correction_chars
        answer = clean_text(feedback.text, limit=limit, what="correction")
        if feedback.question:
            question = clean_text(feedback.question, limit=self.settings.dialog.max_input_chars, what="question")
        elif target is not None and target.question_id is not None:
            asked = await self.store.message(target.question_id)
            if asked is None:
                raise NotFound("the question behind that reply is gone")
            question = asked.text
        else:
            raise InputError("There is nothing to correct yet: ask me something first.")
        refused = await self._over_rate(feedback)
        if refused is not None:
            return refused
        if feedback.personal:
            return await self._correct_personal(feedback, target, question, answer)
        (vector,) = await self.encoder.embed([question])
        if feedback.needs_review:  # waits, inactive, for a manager (``review``): nothing changes now
            stored = await self.store.add_correction(
                feedback.channel, question=question, answer=answer, author_id=feedback.author_id,
                embedding=vector, encoder=self.encoder.name, message_id=target.id if target else None,
                event_id=feedback.event_id, pending=True,
            )
            return _receipt(FeedbackKind.CORRECTION, {"correction_id": stored.id, "question": question,
                                                      "answer": answer, "pending": True})
        async with self._teach_locks(feedback.channel.scope):  # one change of a scope's corrections at a time
            support = await self._support_set(feedback.channel)
            # A served answer corrected on its own question: that question is a negative of the
            # correction it was served from (in the same transaction).
            negative = await self._negative(feedback, target, question, answer, vector)
            # A new answer to the very same question replaces the old one (in one transaction).
            same = [c.id for c in support if question_key(c.question) == question_key(question)]
            stored, added = await self.store.add_correction_and_negative(
                feedback.channel, question=question, answer=answer, author_id=feedback.author_id,
                embedding=vector, encoder=self.encoder.name, message_id=target.id if target else None,
                replaces=same, event_id=feedback.event_id, negative=negative,
            )
            support.remove(same)
            support.add(stored)
            if added is not None:
                support.add_negative(added)
                log.info("negative #%d of #%s in %s", added.id, added.source_id, feedback.channel.scope)
        if self.consolidator is not None:
            await self.consolidator.corrections_changed(feedback.channel)
        await self._progress_corrected(feedback, target, stored)
        log.info("learned correction #%d in %s", stored.id, feedback.channel.scope)
        return _receipt(FeedbackKind.CORRECTION, {"correction_id": stored.id, "question": question, "answer": answer})

    async def _correct_personal(self, feedback: Feedback, target: StoredMessage | None, question: str,
                                answer: str) -> FeedbackReceipt:
        """A "just for me" correction: it joins its author's personal scope in this channel, where a
        newer answer to the same question replaces the older. It shapes nobody else's replies, so it
        waits for no review, makes no negative of the channel's answers and trains no channel LoRA."""
        person = feedback.author_id
        if not person:
            raise InputError("A correction just for you needs to know who you are.")
        (vector,) = await self.encoder.embed([question])
        scope = feedback.channel.scope
        async with self._teach_locks(scope):
            profile = await self.profiles.get(scope, person)
            same = [c.id for c in profile.support if question_key(c.question) == question_key(question)]
            stored, _ = await self.store.add_correction_and_negative(
                scope, question=question, answer=answer, author_id=person, embedding=vector,
                encoder=self.encoder.name, message_id=target.id if target else None, replaces=same,
                event_id=feedback.event_id, person=person)
            profile.support.remove(same)
            profile.support.add(stored)
        await self.profiles.learn(scope, person, Signal(f"correction:{stored.id}", True, features(answer, question),
                                                        stored.created_at), replaces=[f"correction:{i}" for i in same])
        log.info("learned personal correction #%d in %s", stored.id, scope)
        return _receipt(FeedbackKind.CORRECTION, {"correction_id": stored.id, "question": question, "answer": answer,
                                                  "personal": True})

    async def _over_rate(self, feedback: Feedback) -> FeedbackReceipt | None:
        """A refusal when the author taught more than ``teach.rate`` allows (counted in the store,
        so it holds across restarts and processes), else None."""
        limit = self.settings.teach.limit()
        if limit is None:
            return None
        count, period = limit
        taught = await self.store.taught_since(feedback.channel.platform, feedback.author_id, time.time() - period)
        if taught < count:
            return None
        return FeedbackReceipt(False, f"You have taught me {taught} corrections recently (the limit is "
                                      f"{self.settings.teach.rate}); please try again later.")

    async def pending(self, channel: ChannelKey) -> list[Correction]:
        """Corrections of ``channel``'s scope waiting for a manager's review, oldest first."""
        self._check_running()
        return [c.public() for c in await self.store.pending(channel.scope)]

    async def review(self, channel: ChannelKey, correction_id: int, *, approve: bool,
                     author_id: str = "") -> FeedbackReceipt:
        """Approve a pending correction (it serves from the next message; a newer answer to the
        same question replaces the old one) or reject it. ``author_id``: the manager."""
        self._check_running()
        await self._sync_external()
        async with self._teach_locks(channel.scope):
            # The store retires the active answers to the same question in the approving transaction.
            stored = await self.store.review(channel.scope, correction_id, approve=approve, author_id=author_id)
            if stored is None:
                raise NotFound(f"no correction #{correction_id} waits for review here")
            if approve:
                support = await self._support_set(channel)
                support.remove([c.id for c in support if question_key(c.question) == question_key(stored.question)])
                support.add(stored)
        if approve:  # it may be a topic a student missed: their progress there reloads
            await self.profiles.reset_progress(channel)
        if approve and self.consolidator is not None:
            await self.consolidator.corrections_changed(channel)
        return FeedbackReceipt(True, f"{'Approved' if approve else 'Rejected'} correction #{correction_id}.",
                               correction_id=correction_id)

    async def audit(self, channel: ChannelKey | None = None, *, author_id: str | None = None, spaces: Spaces = None,
                    limit: int = 100) -> list[AuditEntry]:
        """Who changed what the bot learned (corrections, forgets, reviews, personas, rollbacks,
        LoRA versions), newest first; of one channel's scope and/or one author, and with ``spaces``
        only of channels in those (platform, space) pairs (None: everything)."""
        self._check_running()
        entries = await self.store.audit(channel.scope if channel else None, author_id=author_id, spaces=spaces,
                                         limit=limit)
        return [AuditEntry(e.id, str(e.scope) if e.scope else "", e.author_id, e.action, e.detail, e.created_at)
                for e in entries]

    async def export_user(self, platform: str, user_id: str) -> dict[str, Any]:
        """Everything kept about one person of ``platform`` (``Store.user_data``)."""
        self._check_running()
        return await self.store.user_data(platform, user_id)

    async def delete_user(self, platform: str, user_id: str, *, author_id: str = "") -> dict[str, int]:
        """Delete one person of ``platform`` from the database file (``Store.delete_user``); what
        is cached of the scopes they taught reloads."""
        self._check_running()
        counts = await self.store.delete_user(platform, user_id, author_id=author_id)
        self.encoder.forget_recent()  # vectors of their messages, even by digest, go too
        self.profiles.clear()
        for scope in self._support.scopes():
            self._support.drop(scope)
        if self.consolidator is not None:
            for scope in list(self.consolidator.cached()):
                self.consolidator.drop_cached(scope)
        return counts

    async def forget(self, channel: ChannelKey, correction_ids: Sequence[int] | None = None, *,
                     author_id: str = "", of_author: str | None = None, event_id: str = "") -> int:
        """Forget all corrections of ``channel``'s scope (or only ``correction_ids``, or only those
        ``of_author`` taught: undo by author); returns how many. What was derived from them goes
        too, counted (confirmed paraphrases) or not (negatives; undo by author: the negatives their
        corrections made as well). The scope's LoRA versions stop serving too (they may remember
        it). ``author_id``: who forgets, for the audit log.

        With ``event_id`` (a platform event) it is applied at most once (``Feedback.event_id``):
        a repeat changes nothing and returns the first count."""
        self._check_running()
        await self._sync_external()
        async with self._teach_locks(channel.scope):
            try:
                ids = await self.store.forget(channel.scope, correction_ids, author_id=author_id, event_id=event_id,
                                              by_author=of_author)
            except AlreadyApplied as done:
                return int(done.result.get("forgotten", 0))
            support = await self._support_set(channel)
            support.remove(ids)  # with what was derived from them, as the store did
            if ids:  # a forget gesture on a reply a personal correction shaped forgets that one
                self.profiles.drop(channel)
            if of_author is not None:
                support.remove_negatives(lambda n: n.author_id == of_author)
        if ids and self.consolidator is not None:
            await self.consolidator.corrections_changed(channel, forgotten=True)
        return len(ids)

    async def move_channel(self, old: ChannelKey, new: ChannelKey) -> int:
        """The platform gave a channel a new id (Telegram upgrades a group to a supergroup):
        what ``old``'s scope learned, its settings and history move to ``new``'s scope
        (``Store.move_channel``). Returns how many corrections moved; idempotent."""
        self._check_running()
        old, new = old.scope, new.scope
        first, second = sorted((old, new), key=str)  # one lock order, whoever moves what
        async with self._teach_locks(first), self._teach_locks(second):
            moved = await self.store.move_channel(old, new)
            for scope in (old, new):
                self._support.drop(scope)
                self.profiles.drop(scope)
        if self.consolidator is not None:
            self.consolidator.forget_scope(old)
            self.consolidator.drop_cached(new)
            if moved:
                await self.consolidator.corrections_changed(new)
        if moved:
            log.info("moved %d correction(s) from %s to %s", moved, old, new)
        return moved

    async def learned(self, channel: ChannelKey) -> list[Correction]:
        """The active corrections of ``channel``'s scope, oldest first: ``origin`` ``taught``, or
        ``confirmed`` (a paraphrase its asker confirmed, ``source_id`` the correction it came from).
        The channel's only: a person's personal items are listed by ``personal``, for them."""
        self._check_running()
        return [c.public() for c in await self.store.corrections(channel.scope)]

    # -- the personal scope ----------------------------------------------------------------

    async def remember(self, channel: ChannelKey, author_id: str, text: str) -> PersonalFact:
        """Remember something ``author_id`` tells about themselves ("my plan is Pro") in ``channel``'s
        scope: from their next related question there on, it joins the prompt of the replies to
        them (as data, never as template), and never of anyone else's. The same text again replaces
        the older copy; past ``learning.personal_facts_kept`` the oldest goes. Durable once returned.

        Raises ``InputError`` without an author, or for an empty or too long text."""
        self._check_running()
        if not author_id:
            raise InputError("I can only remember something about you when I know who you are.")
        learned = self.settings.learning
        fact = clean_text(text, limit=learned.max_fact_chars, what="fact")
        await self._sync_external()
        (vector,) = await self.encoder.embed([fact])
        scope = channel.scope
        async with self._teach_locks(scope):
            profile = await self.profiles.get(scope, author_id)
            stored = await self.store.add_fact(scope, author_id, fact, vector, self.encoder.name,
                                               limit=learned.personal_facts_kept)
            profile.add_fact(stored, learned.personal_facts_kept)
        log.info("remembered personal fact #%d in %s", stored.id, scope)
        return stored.public()

    async def personal(self, channel: ChannelKey, author_id: str) -> PersonalProfile:
        """``author_id``'s personal scope in ``channel``'s: the facts they told, their "just for me"
        corrections; for them (``/learned``), or a manager."""
        self._check_running()
        corrections, facts = await self.store.personal_rows(channel.scope, author_id)
        return PersonalProfile(channel.scope, author_id, tuple(f.public() for f in facts),
                               tuple(c.public() for c in corrections))

    async def forget_person(self, channel: ChannelKey, author_id: str, *, by: str = "") -> dict[str, int]:
        """``/forget me``: delete ``author_id``'s personal scope in ``channel``'s scope (their facts and
        personal corrections), and their taste there: their 👍/👎 so far no longer teach it
        (``forget_taste_notes``), nor their tutoring progress (``forget_progress_notes``); all in one
        store transaction (``Store.forget_person``). Returns ``{"facts": n, "corrections": m}``.
        ``by``: who asked, for the audit log (default: the person)."""
        self._check_running()
        await self._sync_external()
        async with self._teach_locks(channel.scope):
            now = time.time()  # their 👍/👎 so far no longer teach their taste, nor their tutoring progress
            counts = await self.store.forget_person(channel.scope, author_id, author_id=by or author_id,
                                                    judged_notes=forget_taste_notes(now) | forget_progress_notes(now),
                                                    corrected_notes=forget_progress_notes(now))
            self.profiles.drop(channel, author_id)
        return counts

    async def negatives(self, channel: ChannelKey) -> list[Correction]:
        """The active negatives of ``channel``'s scope, oldest first (``origin`` ``negative``): phrasings
        the answer of correction ``source_id`` (``answer``) was corrected on and does not apply to."""
        self._check_running()
        return [c.public() for c in await self.store.negatives(channel.scope)]

    async def explain(self, channel: ChannelKey, *, reply_id: str = "", message_id: str = "",
                      viewer: str | None = None) -> Explanation:
        """What shaped a reply (the last one in the thread when no id is given).

        ``viewer``: who asks. Anyone but the person the reply answered sees no item of that
        person's personal scope, only that some shaped it (``Explanation.for_viewer``); None (a
        trusted caller: the CLI, a manager's console) sees everything."""
        self._check_running()
        target = await self.store.find_reply(channel, reply_id=reply_id, message_id=message_id)
        if target is None or target.explanation is None:
            raise NotFound("there is no finished reply of mine to explain")
        return Explanation.from_dict(target.explanation).for_viewer(viewer)

    async def link_message(self, channel: ChannelKey, reply_id: str, platform_message_id: str) -> None:
        """Record that a platform message shows (part of) a reply, so feedback on it finds the reply."""
        self._check_running()
        await self.store.link_message(channel, reply_id, platform_message_id)

    # -- LoRA versions ---------------------------------------------------------------------

    async def lora_versions(self, channel: ChannelKey) -> list[LoraVersion]:
        """The LoRA versions of ``channel``'s scope, newest first."""
        self._check_running()
        return [
            LoraVersion(a.version, a.status, a.created_at, a.metrics)
            for a in await self.store.lora_versions(channel.scope)
        ]

    async def rollback_lora(self, channel: ChannelKey, *, author_id: str = "") -> int | None:
        """Serve the channel's previous LoRA version; returns it (None: the base model)."""
        self._check_running()
        if self.consolidator is None:
            return await self.store.rollback_lora(channel.scope, author_id=author_id)
        return await self.consolidator.rollback(channel, author_id=author_id)

    async def settle(self) -> None:
        """Wait until background learning has caught up with every correction so far.

        That is the per-channel metric adaptation and the LoRA consolidation jobs (after their
        debounce); returns at once when neither has work. Benchmarks and tests use it to
        measure what a channel serves once its background learning is done.
        """
        self._check_running()
        await self.matching.settle()  # per-channel encoder adaptation
        if self.consolidator is not None:
            await self.consolidator.idle.wait()

    def _prepare_lora(self) -> LoraSetup | None:
        """Inject LoRA weights into the served model and bind the consolidation job (model thread not yet running).

        None (LoRA off, with a warning) when the model has no layers the LoRA weights can target.
        """
        assert self._loaded is not None
        try:
            setup = prepare_lora(self._loaded.model, self._loaded.tokenizer, self.settings.lora)
        except ValueError as err:
            log.warning("per-channel LoRA weights are off: %s", err)
            return None
        log.info("per-channel LoRA weights on %s start from the %s", self.model_name, setup.source)
        return setup

    # -- channel settings -------------------------------------------------------------

    async def channel_settings(self, channel: ChannelKey) -> ChannelSettings:
        self._check_running()
        return await self.store.channel_settings(channel.scope)

    async def set_persona(self, channel: ChannelKey, persona: str, *, author_id: str = "") -> ChannelSettings:
        """Set the channel's persona: a preset name (``support``, ``tutor``, ...) or free text."""
        self._check_running()
        text = clean_text(persona, limit=2000, what="persona")
        settings = ChannelSettings(persona=text)
        await self.store.set_channel_settings(channel.scope, settings, author_id=author_id)
        return settings

    def personas(self) -> dict[str, str]:
        """The preset personas, name -> system prompt."""
        return dict(self.settings.dialog.personas)

    async def _persona(self, channel: ChannelKey) -> str:
        chosen = (await self.store.channel_settings(channel.scope)).persona or self.settings.dialog.default_persona
        presets = self.settings.dialog.personas
        if chosen in presets:
            return presets[chosen]
        return chosen if chosen != self.settings.dialog.default_persona else _FALLBACK_PERSONA


    # -- the learning report and the admin console's reads ------------------------------

    async def channels(self, spaces: Spaces = None) -> list[dict[str, Any]]:
        """The channels (learning scopes) of ``spaces`` (None: every space) with their activity:
        ``channel`` (its key), ``messages``, ``last_active``, ``corrections``, ``pending``,
        ``lora_version``; most recently active first."""
        self._check_running()
        return await self.store.channel_overview(spaces)

    async def stats(self, channel: ChannelKey | None = None, *, spaces: Spaces = None,
                    days: int = 30) -> dict[str, Any]:
        """Whether learning works: for one channel's scope (or every channel of ``spaces``), over
        the last ``days`` days.

        ``corrections`` / ``pending`` / ``forgotten``: counts now; ``answers``: replies;
        ``from_corrections``: replies answered from a correction, with their ``up`` / ``down``
        thumbs; ``recurrences``: replies to an already corrected question (same words up to case
        and spacing) that the base model answered again, out of ``asked_again`` (the corrected
        mistake came back); ``lora``: LoRA versions by status; ``daily``: the same per day (UTC).
        """
        self._check_running()
        since = time.time() - days * 86400
        raw = await self.store.activity(since, spaces, channel.scope if channel is not None else None)
        day = [_day(since + 86400 * (i + 1)) for i in range(days)]
        daily: dict[str, dict[str, Any]] = {
            d: {"day": d, "corrections": 0, "from_corrections": 0, "up": 0, "down": 0, "recurrences": 0} for d in day}
        for c in raw["corrections"]:
            if c["review"] != "pending" and c["created_at"] >= since and _day(c["created_at"]) in daily:
                daily[_day(c["created_at"])]["corrections"] += 1
        corrected: dict[str, list[dict[str, Any]]] = {}
        for c in raw["corrections"]:
            if c["review"] not in ("pending", "rejected"):
                corrected.setdefault(question_key(c["question"]), []).append(c)
        served: set[int] = set()
        asked_again = recurrences = 0
        for r in raw["replies"]:
            route = r["explanation"].get("route")
            bucket = daily.get(_day(r["created_at"]))
            if route == Route.CORRECTION.value:
                served.add(r["id"])
                if bucket is not None:
                    bucket["from_corrections"] += 1
            earlier = [c for c in corrected.get(question_key(r["question"]), ()) if c["created_at"] < r["created_at"]
                       and (c["forgotten_at"] is None or c["forgotten_at"] > r["created_at"])]
            if earlier:
                asked_again += 1
                if route == Route.BASE.value:
                    recurrences += 1
                    if bucket is not None:
                        bucket["recurrences"] += 1
        up = down = 0
        for t in raw["thumbs"]:
            if t["message_id"] in served:
                up += t["kind"] == "up"
                down += t["kind"] == "down"
                bucket = daily.get(_day(t["created_at"]))
                if bucket is not None:
                    bucket[t["kind"]] += 1
        return {
            "channel": str(channel.scope) if channel is not None else None,
            "days": days,
            "corrections": sum(c["active"] for c in raw["corrections"]),
            "pending": sum(c["review"] == "pending" for c in raw["corrections"]),
            "forgotten": sum(c["forgotten_at"] is not None for c in raw["corrections"]),
            "answers": len(raw["replies"]),
            "from_corrections": len(served),
            "up": up,
            "down": down,
            "asked_again": asked_again,
            "recurrences": recurrences,
            "lora": raw["lora"],
            "daily": [daily[d] for d in day],
        }

    async def correction_usage(self, channel: ChannelKey) -> list[dict[str, Any]]:
        """The active corrections of ``channel``'s scope, newest first, each with who taught it,
        when, and how often a reply used it since (``uses``, ``last_used``)."""
        self._check_running()
        raw = await self.store.activity(time.time(), None, channel.scope)
        rows = []
        for c in reversed(raw["corrections"]):
            if c["active"]:
                uses, last = raw["usage"].get(c["id"], (0, None))
                rows.append({**c, "uses": uses, "last_used": last})
        return rows

    async def promote_lora(self, channel: ChannelKey, version: int, *, author_id: str = "") -> None:
        """Serve ``version`` of the channel's LoRA versions from its next reply (a manager
        overriding the gate; ``rollback_lora`` goes back). Raises ``NotFound`` when it has none."""
        self._check_running()
        if not await self.store.promote_lora(channel.scope, version, author_id=author_id):
            raise NotFound(f"{channel.scope} has no LoRA version {version} with weights")
        if self.consolidator is not None:
            self.consolidator.drop_cached(channel.scope)


def _taste_prior(candidates: int) -> TastePrior | None:
    """The shipped taste prior when candidates are on (``dialog.preference_candidates`` > 1); None, with a
    warning, when its artifact cannot be read (replies are then never chosen by taste)."""
    if candidates < 2:
        return None
    try:
        return load_prior()
    except (OSError, ValueError) as err:
        log.warning("taste is off: %s", err)
        return None


def _import_gguf_reader() -> None:
    """Import transformers' package and its GGUF reader (what ``read_embedded_weights`` uses), alone."""
    import transformers.integrations.gguf.dequant
    import transformers.integrations.gguf.reader  # noqa: F401


def _import_model_libraries() -> None:
    """Import, before any load, what the loads import: the embedded encoder loads without
    sentence-transformers (seconds of imports; see engine.nn.sentence_encoder)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401

    from .nn.sentence_encoder import import_libraries

    import_libraries()


def _day(when: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(when))


def _words(text: str) -> list[str]:
    """Split into chunks that concatenate back to ``text`` exactly."""
    out: list[str] = []
    start = 0
    for i in range(1, len(text) + 1):
        if i == len(text) or (text[i] == " " and text[i - 1] != " "):
            out.append(text[start:i])
            start = i
    return out


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"




def _receipt(kind: FeedbackKind, result: dict[str, Any]) -> FeedbackReceipt:
    """The receipt for feedback that did ``result`` (built the same way for a repeated event)."""
    if kind is FeedbackKind.CORRECTION:
        question, answer = str(result["question"]), str(result["answer"])
        if result.get("pending"):
            return FeedbackReceipt(True, f"Thanks: a manager will review your answer to {_short(question)!r} "
                                         "before I use it.", correction_id=int(result["correction_id"]), pending=True)
        if result.get("personal"):
            return FeedbackReceipt(True, f"Learned, just for you: when you ask {_short(question)!r}, I answer "
                                         f"{_short(answer)!r}.", correction_id=int(result["correction_id"]))
        return FeedbackReceipt(True, f"Learned: when asked {_short(question)!r}, answer {_short(answer)!r}.",
                               correction_id=int(result["correction_id"]))
    if kind is FeedbackKind.FORGET:
        forgotten = int(result["forgotten"])
        return FeedbackReceipt(True, f"Forgot {forgotten} correction(s) behind that reply.", forgotten=forgotten)
    return FeedbackReceipt(True, "Thanks for the feedback." if kind is FeedbackKind.UP
                           else "Noted. Reply with a correction to teach me the better answer.")


def _use(match: Match, check: Check | None = None) -> CorrectionUse:
    """How a correction shaped (or, turned away, did not shape) a reply, for ``/why``."""
    c = match.correction
    if check is None:
        return CorrectionUse(c.id, c.question, c.answer, round(match.score, 4))
    return CorrectionUse(check.phrasing.id, check.phrasing.question, c.answer, round(match.score, 4),
                         verdict=check.verdict.value, probability=round(check.probability, 4), differs=check.differs)
