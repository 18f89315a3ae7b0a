"""Tutoring progress: what one student missed and mastered in one channel (docs/LEARNING.md, "Tutoring progress").

Part of a person's personal scope (DESIGN.md, "Scopes": "a tutor's student"), derived, never
stored: the signals are rows the store keeps anyway, read when the student's progress is first
needed (``progress_signals``) and followed as new ones land (``Profiles.learn_progress``):

- *missed*: someone else (a teacher) corrected a reply to the student's question (an active
  channel correction whose ``message_id`` is that reply): the topic is the student's question,
  what they missed the correction's answer. The student's 👎 on a reply to them: missed, without
  a known right answer (the explanation was unclear to them).
- *mastered*: the student's 👍 on a reply to them.

Signals are folded oldest first into *topics* by the encoder's similarity (the space corrections
are matched in): a signal whose question is at least ``threshold`` similar to a phrasing of a
topic updates that topic (a later 👍 on a related question turns a miss into mastered; a later
correction or 👎 turns it back), any other starts a new one. A message finds its related topics
the same way (``Progress.related``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from ..contract import ChannelKey
from ..store import Store, StoredCorrection, question_key
from ..understanding.encoder import Encoder

__all__ = ["MASTERED", "MISSED", "PROGRESS_SIGNALS", "Progress", "ProgressSignal", "Topic", "forget_progress_notes",
           "progress_signals"]

MISSED, MASTERED = "missed", "mastered"
PROGRESS_SIGNALS = 64
"""The newest signals a student's progress in one channel is read from (and the most topics held)."""
FORGOTTEN = "progress_forgotten_at"
"""Key of a reply's stored explanation: signals about it made up to then are no longer its asker's progress."""
_PHRASINGS = 4
"""Phrasings (question vectors) a topic keeps, the newest; a near-copy of one it has is not added."""
_SAME = 0.98


@dataclasses.dataclass(frozen=True, slots=True)
class ProgressSignal:
    """One judgement of what a student understood: ``status`` (``MISSED`` / ``MASTERED``) on ``topic``
    (their question, ``vector`` its unit embedding); ``answer``: what they missed (a correction's
    answer), "" when unknown. ``key`` names its source (``correction:<id>``, ``thumb:<reply id>``)."""

    key: str
    topic: str
    vector: np.ndarray
    status: str
    answer: str
    created_at: float


@dataclasses.dataclass(slots=True)
class Topic:
    """A topic of a student's: the question it is known by (that of its newest correction, else its
    first), its status, what they missed ("" unknown) and the phrasings it was asked in."""

    question: str
    status: str
    answer: str
    vectors: list[np.ndarray]
    updated_at: float

    def score(self, vector: np.ndarray) -> float:
        """Similarity of a message (its unit ``vector``) to the topic: to its closest phrasing."""
        return max(float(v @ vector) for v in self.vectors)


class Progress:
    """A student's topics in one channel, folded from their signals oldest first (module doc)."""

    def __init__(self, threshold: float, signals: Iterable[ProgressSignal] = ()) -> None:
        self.threshold = threshold
        self.topics: list[Topic] = []
        for signal in sorted(signals, key=lambda s: s.created_at):
            self.add(signal)

    def __len__(self) -> int:
        return len(self.topics)

    def add(self, signal: ProgressSignal) -> None:
        """Fold in a signal newer than every one so far (the same one again changes nothing)."""
        vector = np.asarray(signal.vector, dtype=np.float32).reshape(-1)
        scored = [(topic.score(vector), i) for i, topic in enumerate(self.topics)]
        best = max(scored, default=(-2.0, -1))
        if best[0] < self.threshold:
            self.topics.append(Topic(signal.topic, signal.status, signal.answer, [vector], signal.created_at))
            if len(self.topics) > PROGRESS_SIGNALS:  # the least recently judged goes
                self.topics.remove(min(self.topics, key=lambda t: t.updated_at))
            return
        topic = self.topics[best[1]]
        topic.status, topic.updated_at = signal.status, max(topic.updated_at, signal.created_at)
        if signal.answer:
            topic.question, topic.answer = signal.topic, signal.answer
        if all(float(v @ vector) < _SAME for v in topic.vectors):
            topic.vectors = [*topic.vectors[-(_PHRASINGS - 1):], vector]

    def related(self, vector: np.ndarray, limit: int) -> list[tuple[Topic, float]]:
        """The topics a message (its unit ``vector``) relates to: at least ``threshold`` similar, at
        most ``limit`` of them, most similar first."""
        if limit <= 0:
            return []
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        scored = [(topic, topic.score(vector)) for topic in self.topics]
        return sorted([(t, s) for t, s in scored if s >= self.threshold], key=lambda ts: -ts[1])[:limit]

    @property
    def nbytes(self) -> int:
        """What it holds in memory, roughly: vectors and texts."""
        return sum(sum(v.nbytes for v in t.vectors) + len(t.question.encode()) + len(t.answer.encode())
                   for t in self.topics)


async def progress_signals(store: Store, encoder: Encoder, scope: ChannelKey, person: str) -> list[ProgressSignal]:
    """What ``person``'s progress in ``scope`` is read from, oldest first, the newest ``PROGRESS_SIGNALS``:
    the active channel corrections someone else made of the replies to their questions there, and
    their newest 👍 / 👎 on each reply to them (``Store.rated_replies``); none made before the reply
    was marked forgotten (``forget_progress_notes``)."""
    corrected = await store.corrected_replies(scope, person, PROGRESS_SIGNALS)
    rated = await store.rated_replies(scope, person, PROGRESS_SIGNALS)
    rows: list[tuple[str, str, str, str, float, StoredCorrection | None]] = [
        (f"correction:{c.id}", asked.text, MISSED, c.answer, c.created_at, c) for c, reply, asked in corrected
        if c.created_at > _forgotten(reply.explanation)]
    rows += [(f"thumb:{reply.id}", asked.text, MASTERED if liked else MISSED, "", when, None)
             for reply, asked, liked, when in rated if when > _forgotten(reply.explanation)]
    rows = sorted(rows, key=lambda r: r[4])[-PROGRESS_SIGNALS:]
    # A correction of the very question the student asked was embedded when it was taught.
    known = [c.embedding if c is not None and c.encoder == encoder.name and question_key(c.question) ==
             question_key(topic) else None for _, topic, _, _, _, c in rows]
    missing = [r[1] for r, v in zip(rows, known, strict=True) if v is None]
    fresh = iter(await encoder.embed(missing) if missing else [])
    return [ProgressSignal(key, topic, v if v is not None else next(fresh), status, answer, when)
            for (key, topic, status, answer, when, _), v in zip(rows, known, strict=True)]


def forget_progress_notes(when: float) -> dict[str, float]:
    """``/forget me`` for tutoring progress: what ``Store.forget_person`` adds to the explanations of the
    replies a signal of the person's came from (the replies they judged, and those to them that others
    corrected), in the same transaction as the rest of their scope, so that signals made until
    ``when`` are no longer read as their progress; the store also scrubs the progress the replies to
    them quote. The corrections and thumbs themselves stay (the channel's) until ``heedful user delete``."""
    return {FORGOTTEN: when}


def _forgotten(explanation: dict[str, object] | None) -> float:
    when = (explanation or {}).get(FORGOTTEN, 0.0)
    return float(when) if isinstance(when, int | float) else 0.0
