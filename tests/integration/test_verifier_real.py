"""The shipped verifier on hand-written near misses, through the engine's matching (real encoder, real artifact)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.learning.matching import Matching
from engine.learning.support_set import SupportSet
from engine.learning.verifier import DEFAULT_VERIFIER, Verdict
from engine.settings import EncoderSettings, LearningSettings
from engine.store import StoredCorrection

pytestmark = pytest.mark.slow

NEAR_MISS = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "near_miss"


def _lines(name: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in (NEAR_MISS / name).read_text().splitlines() if line.strip()]


async def _applies(matching: Matching, support: SupportSet, texts: list[str], answers: dict[str, str],
                   labels: list[str], verified: bool) -> float:
    """Share of ``texts`` that the taught answer of their label applies to (verifier, or the radius alone)."""
    hits = 0
    for text, label in zip(texts, labels, strict=True):
        matches, checks = await matching.check(support, text)
        if verified:
            applied = [m for m, c in zip(matches, checks, strict=True)
                       if c is not None and c.verdict is Verdict.APPLIES]
        else:
            applied = [m for m in matches[:1] if m.score >= matching.answer_threshold_for(m.support)]
        hits += any(m.correction.answer == answers[label] for m in applied)
    return hits / len(texts)


async def test_the_shipped_verifier_turns_away_near_misses_the_radius_lets_in() -> None:
    assert DEFAULT_VERIFIER.exists(), "the verifier artifact ships with the package"
    matching = Matching(LearningSettings(adapt=False), EncoderSettings())
    assert matching.verifier is not None
    await matching.start()
    try:
        support = _lines("handwritten_support.jsonl")
        answers = {row["label"]: f"answer for {row['label']}" for row in support}
        vectors = await matching.encoder.embed([row["text"] for row in support])
        corrections = [StoredCorrection(i + 1, row["text"], answers[row["label"]], "u", vectors[i],
                                        matching.encoder.name, 0.0) for i, row in enumerate(support)]
        taught = await matching.support_set(corrections)
        query, near = _lines("handwritten_query.jsonl"), _lines("handwritten_near_miss.jsonl")
        q_texts, q_labels = [r["text"] for r in query], [r["label"] for r in query]
        n_texts, n_labels = [r["text"] for r in near], [r["label"] for r in near]
        radius_near = await _applies(matching, taught, n_texts, answers, n_labels, verified=False)
        verified_near = await _applies(matching, taught, n_texts, answers, n_labels, verified=True)
        verified_query = await _applies(matching, taught, q_texts, answers, q_labels, verified=True)
        # The radius cannot tell a near miss from the question; the verifier turns most away
        # and still answers most paraphrases.
        assert verified_near < radius_near
        assert verified_query > verified_near + 0.25
    finally:
        await matching.stop()
        await matching.encoder.stop()
