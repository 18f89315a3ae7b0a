"""The personal scope in memory: one person's facts and "just for me" corrections in one channel.

DESIGN.md, "Scopes": learning is keyed narrowest first, a person inside a channel before the
channel. A ``Profile`` is one person's part of one channel's scope: their personal corrections
as a support set of their own (matched exactly as the channel's is, and before it) and the facts
they told about themselves, embedded in the same space as messages, so that a message finds the
facts related to it by similarity. ``Profiles`` keeps the recently used ones (LRU) and loads the
others from the store on first use. A profile is only ever looked up by the person a turn comes
from: nobody else's reply can use it.

A profile also holds the person's *taste* there (``preference.Taste``, docs/LEARNING.md, "Taste"),
derived from rows the store already keeps: their 👍 / 👎 on the replies to them in the channel
(``taste_signals``) and their personal corrections. It is loaded on first use only
(``Profiles.taste``) and follows new signals (``Profiles.learn``). ``forget_taste_notes`` (``/forget
me``) marks the replies whose judgements it used as no longer this person's taste.

So does a student's *tutoring progress* there (``progress.Progress``, docs/LEARNING.md, "Tutoring
progress"): loaded on first use (``Profiles.progress``), following new corrections and thumbs
(``Profiles.learn_progress``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from ..contract import ChannelKey
from ..store import Store, StoredCorrection, StoredFact, StoredMessage, question_key
from ..understanding.encoder import Encoder
from .preference import Signal, Taste, TastePrior, features
from .progress import Progress, ProgressSignal, progress_signals
from .support_set import SupportSet

__all__ = ["Profile", "Profiles", "TASTE_SIGNALS", "forget_taste_notes", "taste_signals", "visible_history"]

TASTE_SIGNALS = 64
"""The newest signals a person's taste in one channel learns from."""
FORGOTTEN = "taste_forgotten_at"
"""Key of a reply's stored explanation: judgements of it made up to then are no longer its asker's taste."""


class Profile:
    """One person's personal scope in one channel: ``support`` (their personal corrections) and ``facts``."""

    def __init__(self, scope: ChannelKey, person: str, support: SupportSet, facts: Sequence[StoredFact]) -> None:
        self.scope, self.person, self.support = scope, person, support
        self.facts: list[StoredFact] = list(facts)
        self._matrix: np.ndarray | None = None
        self.taste: Taste | None = None  # loaded on first use (``Profiles.taste``)
        self.progress: Progress | None = None  # loaded on first use (``Profiles.progress``)

    @property
    def empty(self) -> bool:
        return not self.facts and not len(self.support)

    def related(self, vector: np.ndarray, threshold: float, limit: int) -> list[tuple[StoredFact, float]]:
        """The facts a message (its unit ``vector``) relates to: at least ``threshold`` similar, at
        most ``limit`` of them, most similar first."""
        if not self.facts or limit <= 0:
            return []
        if self._matrix is None:
            self._matrix = np.stack([f.embedding for f in self.facts]).astype(np.float32)
        scores = self._matrix @ np.asarray(vector, dtype=np.float32).reshape(-1)
        order = [int(i) for i in np.argsort(-scores, kind="stable") if scores[i] >= threshold]
        return [(self.facts[i], float(scores[i])) for i in order[:limit]]

    def add_fact(self, fact: StoredFact, kept: int) -> None:
        """``fact`` as ``Store.add_fact`` stored it: the same text replaced, past ``kept`` the oldest gone."""
        others = [f for f in self.facts if question_key(f.text) != question_key(fact.text)]
        self.facts = [*others[max(0, len(others) - kept + 1):], fact]
        self._matrix = None

    @property
    def nbytes(self) -> int:
        """What the profile holds in memory, roughly: embeddings and texts."""
        facts = sum(f.embedding.nbytes + len(f.text.encode()) for f in self.facts)
        corrections = sum(c.embedding.nbytes + len(c.question.encode()) + len(c.answer.encode())
                          for c in self.support)
        return (facts + corrections + (self.taste.nbytes if self.taste is not None else 0)
                + (self.progress.nbytes if self.progress is not None else 0))


class Profiles:
    """``await profiles.get(scope, person)``: that person's profile there, loaded once and cached (LRU).

    A profile ``busy`` says is being changed (its scope's teach lock is held) is never evicted, so an
    acknowledged change always lands in the profile that serves."""

    def __init__(self, store: Store, encoder: Encoder, capacity: int, busy: Callable[[ChannelKey], bool],
                 prior: TastePrior | None = None) -> None:
        self.store, self.encoder, self.capacity, self.busy = store, encoder, capacity, busy
        self.prior = prior  # the taste prior (None: no taste is learned)
        self._profiles: OrderedDict[tuple[ChannelKey, str], Profile] = OrderedDict()
        self._loading = asyncio.Lock()
        self._tasting = asyncio.Lock()  # a taste loads whole before a new signal joins it
        self._progressing = asyncio.Lock()  # so does a student's progress

    def __len__(self) -> int:
        return len(self._profiles)

    async def get(self, scope: ChannelKey, person: str) -> Profile:
        key = (scope.scope, person)
        if key not in self._profiles:
            async with self._loading:
                if key not in self._profiles:
                    corrections, facts = await self.store.personal_rows(scope.scope, person)
                    corrections, facts = await self._fresh(corrections, facts)
                    self._profiles[key] = Profile(scope.scope, person, SupportSet(corrections), facts)
                    self._evict()
        self._profiles.move_to_end(key)
        return self._profiles[key]

    async def _fresh(self, corrections: list[StoredCorrection], facts: list[StoredFact]
                     ) -> tuple[list[StoredCorrection], list[StoredFact]]:
        """Rows embedded by another encoder (or metric) re-embedded in the one that serves."""
        name = self.encoder.name
        stale = [c.question for c in corrections if c.encoder != name] + [f.text for f in facts if f.encoder != name]
        if not stale:
            return corrections, facts
        vectors = iter(await self.encoder.embed(stale))
        corrections = [c if c.encoder == name else dataclasses.replace(c, embedding=next(vectors), encoder=name)
                       for c in corrections]
        facts = [f if f.encoder == name else dataclasses.replace(f, embedding=next(vectors), encoder=name)
                 for f in facts]
        return corrections, facts

    async def taste(self, scope: ChannelKey, person: str) -> Taste | None:
        """``person``'s taste in ``scope`` (loaded with their profile on first use); None without a prior."""
        if self.prior is None:
            return None
        profile = await self.get(scope, person)
        if profile.taste is None:
            async with self._tasting:
                if profile.taste is None:
                    signals = await taste_signals(self.store, scope.scope, person, profile.support)
                    profile.taste = Taste(self.prior, signals[-TASTE_SIGNALS:])
        return profile.taste

    async def learn(self, scope: ChannelKey, person: str, signal: Signal, replaces: Iterable[str] = ()) -> None:
        """A new judgement of ``person``'s, already stored: into their taste if it is held (else it is
        read with the rest when their taste loads). ``replaces``: signals it supersedes."""
        profile = self.peek(scope, person)
        if profile is None:
            return
        async with self._tasting:  # after a load in flight, which may or may not have read it (keys dedupe)
            if profile.taste is not None:
                for key in replaces:
                    profile.taste.discard(key)
                profile.taste.add(signal)
                profile.taste.keep(TASTE_SIGNALS)

    async def progress(self, scope: ChannelKey, person: str, threshold: float) -> Progress:
        """``person``'s tutoring progress in ``scope`` (loaded with their profile on first use; topics
        are one at ``threshold`` similarity)."""
        profile = await self.get(scope, person)
        if profile.progress is None:
            async with self._progressing:
                if profile.progress is None:
                    profile.progress = Progress(threshold, await progress_signals(
                        self.store, self.encoder, scope.scope, person))
        return profile.progress

    async def learn_progress(self, scope: ChannelKey, person: str, signal: ProgressSignal) -> None:
        """A new signal of ``person``'s progress, already stored: into their progress if it is held
        (else it is read with the rest when their progress loads)."""
        profile = self.peek(scope, person)
        if profile is None:
            return
        async with self._progressing:  # after a load in flight, which may or may not have read it (it is idempotent)
            if profile.progress is not None:
                profile.progress.add(signal)

    async def reset_progress(self, scope: ChannelKey) -> None:
        """Everyone's progress held in ``scope`` reloads when next needed (a correction there was approved)."""
        async with self._progressing:
            for (where, _), profile in self._profiles.items():
                if where == scope.scope:
                    profile.progress = None

    def peek(self, scope: ChannelKey, person: str) -> Profile | None:
        """The held profile, if any, without loading it or touching its recency."""
        return self._profiles.get((scope.scope, person))

    def drop(self, scope: ChannelKey, person: str | None = None) -> None:
        """Forget the held profile of ``person`` in ``scope`` (None: everyone's there); reloads when next asked."""
        for key in [k for k in self._profiles if k[0] == scope.scope and (person is None or k[1] == person)]:
            del self._profiles[key]

    def clear(self) -> bool:
        """Forget every held profile (another process changed the store), except those ``busy`` says
        are being changed (an acknowledged change must land in the profile that serves); True when
        none was kept."""
        kept = [k for k in self._profiles if self.busy(k[0])]
        self._profiles = OrderedDict((k, self._profiles[k]) for k in kept)
        return not kept

    def _evict(self) -> None:
        excess = len(self._profiles) - self.capacity
        for key in list(self._profiles):
            if excess <= 0:
                break
            if not self.busy(key[0]):
                del self._profiles[key]
                excess -= 1


async def taste_signals(store: Store, scope: ChannelKey, person: str, corrections: Iterable[StoredCorrection] = ()
                        ) -> list[Signal]:
    """What ``person``'s taste in ``scope`` learns from, oldest first: their newest 👍 / 👎 on each reply
    to them there (unless made before that reply was marked forgotten: ``forget_taste_notes``), and their
    personal ``corrections`` there (each a 👍 on its answer)."""
    signals = [Signal(f"thumb:{reply.id}", liked, features(reply.text, asked.text), when)
               for reply, asked, liked, when in await store.rated_replies(scope, person, TASTE_SIGNALS)
               if when > float((reply.explanation or {}).get(FORGOTTEN, 0.0))]
    signals += [Signal(f"correction:{c.id}", True, features(c.answer, c.question), c.created_at)
                for c in corrections if c.person == person]
    return sorted(signals, key=lambda s: s.created_at)


def forget_taste_notes(when: float) -> dict[str, float]:
    """``/forget me`` for taste: what ``Store.forget_person`` adds to the explanations of the replies the
    person judged, in the same transaction as the rest of their scope, so that judgements made until
    ``when`` are no longer read as their taste; the thumbs themselves stay, counted in the channel's
    report, until ``heedful user delete``."""
    return {FORGOTTEN: when}


def visible_history(history: Sequence[StoredMessage], asker: str) -> list[StoredMessage]:
    """A thread's history as the prompt of a reply to ``asker`` may show it: without the replies
    someone else's personal scope shaped, nor the questions they answered (a reply that carried
    another person's fact would otherwise be copied into this one)."""
    hidden = {m.id for m in history if m.role == "assistant" and m.explanation
              and m.explanation.get("person", "") not in ("", asker)}
    asked = {m.question_id for m in history if m.id in hidden}
    return [m for m in history if m.id not in hidden and m.id not in asked]
