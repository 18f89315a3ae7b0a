"""A channel's support set: its corrections, embedded, ready to be matched.

The set is kept in memory per learning scope and updated incrementally: a new
correction appends one row, a forget removes rows; nothing is re-embedded. Matching
groups corrections by their answer (one prototype per distinct answer) and scores a
message by its nearest member, so several phrasings of one question all count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..store import StoredCorrection

__all__ = ["Match", "SupportSet", "Scorer", "CosineScorer"]


@dataclass(frozen=True, slots=True)
class Match:
    correction: StoredCorrection
    score: float
    support: int = 1  # corrections teaching this answer (its prototype's size)


class Scorer(Protocol):
    """How similar a message is to each correction; a meta-learned metric plugs in here."""

    def scores(self, query: np.ndarray, support: np.ndarray) -> np.ndarray:
        """``query`` (dim,) against ``support`` (n, dim) -> (n,) similarity, higher is closer."""
        ...


class CosineScorer:
    """Cosine similarity of unit vectors (the plain encoder's own geometry)."""

    def scores(self, query: np.ndarray, support: np.ndarray) -> np.ndarray:
        return support @ query


class SupportSet:
    """The active corrections of one learning scope."""

    def __init__(self, corrections: Iterable[StoredCorrection] = (), scorer: Scorer | None = None) -> None:
        self.scorer: Scorer = scorer or CosineScorer()
        self._items: list[StoredCorrection] = []
        self._matrix: np.ndarray | None = None
        for correction in corrections:
            self.add(correction)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._items)

    def add(self, correction: StoredCorrection) -> None:
        row = correction.embedding.reshape(1, -1)
        self._matrix = row if self._matrix is None else np.vstack([self._matrix, row])
        self._items.append(correction)

    def remove(self, ids: Iterable[int]) -> None:
        drop = set(ids)
        keep = [i for i, c in enumerate(self._items) if c.id not in drop]
        self._items = [self._items[i] for i in keep]
        self._matrix = self._matrix[keep] if keep and self._matrix is not None else None

    def match(self, query: np.ndarray) -> list[Match]:
        """One match per distinct answer (its best-scoring correction), best first.

        When a question was corrected twice, the newer answer wins a tie: later
        corrections overrule earlier ones.
        """
        if self._matrix is None:
            return []
        scores = self.scorer.scores(np.asarray(query, dtype=np.float32), self._matrix)
        best: dict[str, Match] = {}
        for correction, score in zip(self._items, scores.tolist(), strict=True):
            key = " ".join(correction.answer.split()).casefold()
            current = best.get(key)
            if current is None or score >= current.score:
                best[key] = Match(correction, float(score))
        return sorted(best.values(), key=lambda m: (m.score, m.correction.id), reverse=True)
