"""A channel's support set: its corrections, embedded, matched by one prototype per distinct answer.

The set is kept in memory per learning scope and updated incrementally: a new
correction adds one row, a forget removes rows; nothing is re-embedded.

Each distinct answer (compared case- and space-insensitively) is one class; its
prototype is the normalised mean of its corrections' embeddings. The sums behind the
means are updated when a correction arrives or is forgotten, so nothing is re-embedded
and nothing is recomputed from scratch (a test checks the running prototypes against
recomputed ones).

A message is scored against every answer at once (``answer_scores``)::

    proto[a]  = cos(q, c_a)                         c_a = normalize(Σ e_i / n_a)
    member[a] = max_{i ∈ a} cos(q, e_i)
    score[a]  = max(proto[a], member[a]) if member[a] ≥ exact else proto[a]

Prototypes classify paraphrases better than the nearest single correction (5 points
on held-out CLINC150 domains, docs/LEARNING.md); the ``exact`` clause keeps a corrected
question itself (or a near copy of it) answered by its own correction.

The set also keeps *negatives*: phrasings an answer was served for and then corrected on
("this answer does not apply to messages like this"), embedded in the same space but
never part of a prototype. ``match`` reports, per answer, the message's best similarity
to one of that answer's negatives (``Match.negative``) next to its best similarity to a
member (``Match.nearest``); ``Match.blocked`` says the negative is at least as close. Background
adaptation (``adaptation.py``) may attach the same corrections embedded in the channel's
own encoder space as ``adapted``, valid while ``version`` is unchanged.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..store import StoredCorrection

__all__ = ["EXACT", "NEGATIVE", "Match", "Scorer", "CosineScorer", "answer_key", "answer_scores", "SupportSet"]

EXACT = 0.95
"""Member similarity from which a correction counts as asked again (its own question)."""

NEGATIVE = 0.5
"""Similarity to a negative phrasing below which it never blocks its answer."""

_TAGS = itertools.count(1)  # ``negatives_version`` values: unique across support sets


@dataclass(frozen=True, slots=True)
class Match:
    correction: StoredCorrection
    score: float
    support: int = 1  # corrections teaching this answer (its prototype's size)
    negative: float = -1.0  # best similarity of the message to a negative phrasing of this answer (-1: none)
    nearest: float | None = None  # best similarity to a member of this answer (None: ``score``)

    @property
    def blocked(self) -> bool:
        """The message is at least as close to a phrasing this answer was corrected on as to the
        answer's nearest member, and that close (``NEGATIVE``): the answer does not apply to it."""
        nearest = self.score if self.nearest is None else self.nearest
        return self.negative >= NEGATIVE and self.negative >= nearest


class Scorer(Protocol):
    """How similar a message is to each correction; a meta-learned metric plugs in here."""

    def scores(self, query: np.ndarray, support: np.ndarray) -> np.ndarray:
        """``query`` (dim,) against ``support`` (n, dim) -> (n,) similarity, higher is closer."""
        ...


class CosineScorer:
    """Cosine similarity of unit vectors (the plain encoder's own geometry)."""

    def scores(self, query: np.ndarray, support: np.ndarray) -> np.ndarray:
        similarity: np.ndarray = support @ query
        return similarity


def answer_key(answer: str) -> str:
    return " ".join(answer.split()).casefold()


def answer_scores(member: np.ndarray, rows: np.ndarray, proto: np.ndarray, exact: float = EXACT) -> np.ndarray:
    """Per-answer scores of Q messages.

    ``member`` (Q, n) similarity to each correction, ``rows`` (n,) answer slot of each
    correction, ``proto`` (Q, A) similarity to each answer's prototype -> (Q, A).
    """
    assert member.shape[1] == rows.shape[0], "one answer slot per correction"
    best = np.full(proto.shape, -np.inf, dtype=np.float32)                    # (Q, A)
    for slot in np.unique(rows):
        best[:, slot] = member[:, rows == slot].max(axis=1)
    return np.where(best >= exact, np.maximum(proto, best), proto)


class SupportSet:
    """The active corrections of one learning scope, matched by answer prototypes.

    ``version`` counts changes, so background work can tell whether what it
    computed still describes the set. ``on_change`` (if set) is called after each change.
    Negatives (``negatives``) change neither: their own ``negatives_version`` (unique across
    sets) changes with them, so an adapted space re-embeds them without retraining.
    """

    def __init__(self, corrections: Iterable[StoredCorrection] = (), scorer: Scorer | None = None,
                 exact: float = EXACT, negatives: Iterable[StoredCorrection] = ()) -> None:
        self.scorer: Scorer = scorer or CosineScorer()
        # The channel's adapted encoder space (``adaptation.AdaptedSpace``), valid for one ``version``.
        self.adapted: Any = None
        self.exact = exact
        self.version = 0
        self.on_change: Callable[[SupportSet], None] | None = None
        self._items: list[StoredCorrection] = []
        self._vectors: list[np.ndarray] = []             # (dim,) each, in arrival order
        self._rows: list[int] = []                        # answer slot of each correction
        self._slots: dict[str, int] = {}                  # answer key -> slot
        self._sums = np.zeros((0, 0), dtype=np.float64)   # (slots, dim) running sums
        self._counts = np.zeros(0, dtype=np.int64)        # (slots,) corrections per slot
        self._matrix: np.ndarray | None = None            # (n, dim) cache of the stacked vectors
        self._negatives: list[StoredCorrection] = []      # never in a prototype
        self._negative_vectors: list[np.ndarray] = []
        self.negatives_version = next(_TAGS)
        for correction in corrections:
            self._add(correction)
        for negative in negatives:
            self._add_negative(negative)
        self._changed(notify=False)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[StoredCorrection]:
        return iter(self._items)

    @property
    def answers(self) -> int:
        """Distinct answers taught (prototypes)."""
        return int((self._counts > 0).sum())

    @property
    def negatives(self) -> tuple[StoredCorrection, ...]:
        """The negative phrasings, in arrival order (``answer``: the answer they block)."""
        return tuple(self._negatives)

    @property
    def fingerprint(self) -> tuple[int, int]:
        """(corrections + negatives, newest correction id + newest negative id), as ``Store.fingerprints``."""
        return (len(self._items) + len(self._negatives),
                max((c.id for c in self._items), default=0) + max((n.id for n in self._negatives), default=0))

    # -- changes ----------------------------------------------------------------------

    def add(self, correction: StoredCorrection) -> None:
        self._add(correction)
        self._changed()

    def _add(self, correction: StoredCorrection) -> None:
        vector = np.asarray(correction.embedding, dtype=np.float32).reshape(-1)
        if self._sums.shape[1] == 0:  # the first correction fixes the dimension
            self._sums = np.zeros((len(self._counts), vector.shape[0]), dtype=np.float64)
        assert vector.shape[0] == self._sums.shape[1], "all corrections of a scope share one embedding space"
        key = answer_key(correction.answer)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = len(self._counts)
            self._sums = np.vstack([self._sums, np.zeros((1, vector.shape[0]))])
            self._counts = np.append(self._counts, 0)
        self._sums[slot] += vector
        self._counts[slot] += 1
        self._items.append(correction)
        self._vectors.append(vector)
        self._rows.append(slot)

    def add_negative(self, negative: StoredCorrection) -> None:
        """A phrasing ``negative.answer`` does not apply to (it never enters a prototype)."""
        self._add_negative(negative)
        self.negatives_version = next(_TAGS)

    def _add_negative(self, negative: StoredCorrection) -> None:
        vector = np.asarray(negative.embedding, dtype=np.float32).reshape(-1)
        assert self._sums.shape[1] in (0, vector.shape[0]), "negatives share the corrections' embedding space"
        self._negatives.append(negative)
        self._negative_vectors.append(vector)

    def remove_negatives(self, where: Callable[[StoredCorrection], bool]) -> None:
        """Drop the negatives ``where`` is true of."""
        keep = [i for i, n in enumerate(self._negatives) if not where(n)]
        if len(keep) == len(self._negatives):
            return
        self._negatives = [self._negatives[i] for i in keep]
        self._negative_vectors = [self._negative_vectors[i] for i in keep]
        self.negatives_version = next(_TAGS)

    def replace_negatives(self, negatives: Iterable[StoredCorrection], version: int) -> None:
        """All negatives at once, as of another set's ``negatives_version`` (an adapted space's copy)."""
        self._negatives, self._negative_vectors = [], []
        for negative in negatives:
            self._add_negative(negative)
        self.negatives_version = version

    def remove(self, ids: Iterable[int]) -> None:
        """Forget corrections ``ids``, with what was derived from them (as ``Store.forget`` does):
        the confirmed paraphrases and the negatives whose ``source_id`` is among them."""
        drop = set(ids)
        self.remove_negatives(lambda n: n.source_id in drop)
        drop |= {c.id for c in self._items if c.source_id in drop}
        if not any(c.id in drop for c in self._items):
            return
        keep = []
        for i, correction in enumerate(self._items):
            if correction.id in drop:
                self._sums[self._rows[i]] -= self._vectors[i]
                self._counts[self._rows[i]] -= 1
            else:
                keep.append(i)
        self._items = [self._items[i] for i in keep]
        self._vectors = [self._vectors[i] for i in keep]
        self._rows = [self._rows[i] for i in keep]
        for slot in np.flatnonzero(self._counts == 0):
            self._sums[slot] = 0.0  # an emptied answer starts again from exact zero
        self._changed()

    def _changed(self, notify: bool = True) -> None:
        self._matrix = None
        self.version += 1
        if notify and self.on_change is not None:
            self.on_change(self)

    # -- reading ----------------------------------------------------------------------

    @property
    def matrix(self) -> np.ndarray:
        """(n, dim) the corrections' embeddings, in order."""
        if self._matrix is None:
            self._matrix = np.stack(self._vectors) if self._vectors else np.zeros((0, self._sums.shape[1]), np.float32)
        return self._matrix

    def members(self, answer: str) -> np.ndarray:
        """Indices (in order) of the corrections that teach ``answer`` (compared as ``answer_key``)."""
        slot = self._slots.get(answer_key(answer))
        return np.empty(0, dtype=np.int64) if slot is None else np.flatnonzero(self.answer_rows() == slot)

    def answer_rows(self) -> np.ndarray:
        """(n,) the answer slot of each correction."""
        return np.asarray(self._rows, dtype=np.int64)

    def prototypes(self) -> tuple[np.ndarray, np.ndarray]:
        """(slots,) which slots are live, (live, dim) their unit prototypes."""
        live = np.flatnonzero(self._counts > 0)
        means = self._sums[live] / self._counts[live, None]
        norms = np.linalg.norm(means, axis=1, keepdims=True)
        return live, (means / np.maximum(norms, 1e-12)).astype(np.float32)

    def scores(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``queries`` (Q, dim) -> live slots (A,), per-answer scores (Q, A)."""
        live, protos = self.prototypes()
        rows = self.answer_rows()
        member = np.stack([self.scorer.scores(q, self.matrix) for q in queries])           # (Q, n)
        proto = np.stack([self.scorer.scores(q, protos) for q in queries])                 # (Q, A)
        remap = np.full(len(self._counts), -1, dtype=np.int64)
        remap[live] = np.arange(len(live))
        return live, answer_scores(member, remap[rows], proto, self.exact)

    def match(self, query: np.ndarray) -> list[Match]:
        """One match per distinct answer, best first, each represented by its best-scoring correction.

        When a question was corrected twice, the newer answer wins a tie: later
        corrections overrule earlier ones.
        """
        if not self._items:
            return []
        q = np.asarray(query, dtype=np.float32).reshape(1, -1)
        live, scores = self.scores(q)
        member = self.scorer.scores(q[0], self.matrix)
        best_member: dict[int, int] = {}
        for i, slot in enumerate(self._rows):  # the newest correction wins ties
            j = best_member.get(slot)
            if j is None or member[i] >= member[j]:
                best_member[slot] = i
        negative = self._negative_scores(q[0])
        matches = [Match(self._items[best_member[int(slot)]], float(scores[0, a]), int(self._counts[slot]),
                         negative.get(int(slot), -1.0), float(member[best_member[int(slot)]]))
                   for a, slot in enumerate(live)]
        return sorted(matches, key=lambda m: (m.score, m.correction.id), reverse=True)

    def _negative_scores(self, query: np.ndarray) -> dict[int, float]:
        """Answer slot -> the best similarity of ``query`` to one of that answer's negatives."""
        if not self._negatives:
            return {}
        similarity = self.scorer.scores(query, np.stack(self._negative_vectors))
        best: dict[int, float] = {}
        for negative, value in zip(self._negatives, similarity, strict=True):
            slot = self._slots.get(answer_key(negative.answer))
            if slot is not None:
                best[slot] = max(best.get(slot, -1.0), float(value))
        return best

