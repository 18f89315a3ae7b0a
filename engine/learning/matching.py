"""How the engine decides whether a correction applies: encoder, thresholds, support sets.

``Matching`` is built from the settings once per engine. With a metric artifact
(``learning.metric``: ``default`` is the shipped one) messages and corrections are
embedded by the ``MetricEncoder`` and the artifact's calibrated thresholds apply, unless
``answer_threshold`` / ``example_threshold`` were set explicitly; the answer threshold
depends on how many corrections teach the answer (``answer_threshold_for``). With ``none`` it is the
plain encoder with the configured cosine thresholds. Either way support sets match by
answer prototypes (``support_set.py``), and with ``learning.adapt`` each channel gets its
background inner loop on the metric's LoRA (``adaptation.py``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np

from ..settings import EncoderSettings, LearningSettings
from ..store import StoredCorrection
from ..understanding.encoder import Encoder
from .adaptation import Adaptation, AdaptConfig
from .channel_encoder import ChannelEncoder
from .metric import MetricArtifact, MetricEncoder, resolve_artifact, shot_threshold
from .minimal_pairs import near_copy
from .slots import asks_about_other
from .support_set import Match, SupportSet
from .verifier import Verdict, Verifier, VerifierArtifact, resolve_verifier

__all__ = ["Matching", "Check", "applying"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Check:
    """The verifier's decision on one candidate answer, against its best-fitting taught phrasing."""

    probability: float
    verdict: Verdict
    phrasing: StoredCorrection
    # Slot classes in which the message names other values than every phrasing the answer was taught
    # with, and open classes in which it names a sibling of what one names (slots.asks_about_other):
    # such an answer can be related context, never the answer.
    differs: tuple[str, ...] = ()


def applying(matches: Sequence[Match], checks: Sequence[Check | None]) -> list[tuple[Match, Check]]:
    """The candidates that apply (the verifier said so and no user marked the correction as not
    applying to such a phrasing: ``Match.blocked``), in the metric's order: the first one answers
    (the metric ranks better than the pair model, docs/BENCHMARKS.md)."""
    return [(m, c) for m, c in zip(matches, checks, strict=True)
            if c is not None and c.verdict is Verdict.APPLIES and not m.blocked]


class Matching:
    """The encoder, the thresholds and the per-channel support sets the engine matches with."""

    def __init__(self, learning: LearningSettings, encoder: EncoderSettings) -> None:
        path = resolve_artifact(learning.metric)
        self.artifact = MetricArtifact.load(path) if path else None
        if self.artifact is not None and self.artifact.config.encoder != encoder.id:
            log.warning("metric %s was trained on %s, not on the configured encoder %s: using plain cosine",
                        path, self.artifact.config.encoder, encoder.id)
            self.artifact = None
        self.encoder: Encoder = MetricEncoder(encoder, self.artifact) if self.artifact else Encoder(encoder)
        explicit = learning.model_fields_set
        calibrated = self.artifact is not None
        self.answer_threshold = (self.artifact.answer_threshold  # type: ignore[union-attr]
                                 if calibrated and "answer_threshold" not in explicit else learning.answer_threshold)
        self.example_threshold = (self.artifact.example_threshold  # type: ignore[union-attr]
                                  if calibrated and "example_threshold" not in explicit else learning.example_threshold)
        # Per support size (corrections behind an answer) when the metric calibrated them.
        self._answer_thresholds = (self.artifact.answer_thresholds  # type: ignore[union-attr]
                                   if calibrated and "answer_threshold" not in explicit else None)
        self.metric_name = f"metric:{self.artifact.digest}" if self.artifact else "cosine"
        # The per-channel inner loop continues the metric's own LoRA: it needs a metric.
        self.channel_encoder = ChannelEncoder(self.encoder) \
            if learning.adapt and isinstance(self.encoder, MetricEncoder) else None
        self.adaptation = Adaptation(AdaptConfig(min_corrections=learning.adapt_min_corrections,
                                                 max_channels=learning.adapt_max_channels),
                                     self.channel_encoder) if self.channel_encoder else None
        if learning.adapt and self.adaptation is None:
            log.warning("learning.adapt needs a metric (learning.metric); channels will not adapt")
        self.verifier = self._load_verifier(learning, encoder)
        self.verify_answers, self.verify_members = learning.verify_answers, learning.verify_members
        self.slot_check, self.swap_check = learning.slot_check, learning.swap_check
        self.near_copy_veto, self.pair_veto = learning.near_copy_veto, learning.pair_veto
        # The verifier checks answers from this metric score up (measured with the metric
        # it was trained beside; with another space, the example threshold).
        self.floor = self.example_threshold
        space = self.artifact.digest if self.artifact else ""
        if self.verifier is not None and self.verifier.artifact.metric == space:
            self.floor = self.verifier.artifact.floor

    def _load_verifier(self, learning: LearningSettings, encoder: EncoderSettings) -> Verifier | None:
        path = resolve_verifier(learning.verifier)
        if path is None:
            return None
        artifact = VerifierArtifact.load(path)
        if artifact.config.encoder != encoder.id:
            log.warning("verifier %s starts from %s, not from the configured encoder %s: not verifying",
                        path, artifact.config.encoder, encoder.id)
            return None
        return Verifier(artifact, self.encoder)

    async def start(self) -> None:
        """Load the encoder and the verifier, in the encoder's thread."""
        await self.encoder.start()
        if self.verifier is not None:
            await self.verifier.start()

    def answer_threshold_for(self, support: int) -> float:
        """The radius for an answer taught by ``support`` corrections (calibrated per size)."""
        return shot_threshold(self._answer_thresholds, support, self.answer_threshold)

    def within_radius(self, match: Match) -> bool:
        """Does the metric's radius for this answer (by its number of corrections) take the message in?"""
        return match.score >= self.answer_threshold_for(match.support)

    async def support_set(self, corrections: Sequence[StoredCorrection],
                          negatives: Sequence[StoredCorrection] = ()) -> SupportSet:
        """A scope's support set; corrections (and negatives) embedded by another encoder (or metric)
        are re-embedded once."""
        rows = [*corrections, *negatives]
        stale = [i for i, c in enumerate(rows) if c.encoder != self.encoder.name]
        fresh = list(rows)
        if stale:
            vectors = await self.encoder.embed([rows[i].question for i in stale])
            for row, i in enumerate(stale):
                fresh[i] = dataclasses.replace(rows[i], embedding=vectors[row], encoder=self.encoder.name)
            log.info("re-embedded %d correction(s) for %s", len(stale), self.encoder.name)
        support = SupportSet(fresh[:len(corrections)], negatives=fresh[len(corrections):])
        if self.adaptation is not None:
            self.adaptation.watch(support)
        return support

    async def match(self, support: SupportSet, text: str) -> list[Match]:
        """Score ``text`` against a channel's support set: in the channel's adapted space when
        one is ready for the set as it is now, else in the shared space (the instant path)."""
        (matches,) = await self.match_many(support, [text])
        return matches

    async def match_many(self, support: SupportSet, texts: Sequence[str]) -> list[list[Match]]:
        """``match`` for several texts, embedded in one batch."""
        if not texts:
            return []
        space, vectors = await self._embed(support, texts)
        return [space.match(v) for v in vectors]

    async def _embed(self, support: SupportSet, texts: Sequence[str]) -> tuple[SupportSet, np.ndarray]:
        """(the set in the space that serves, the texts' vectors in that space)."""
        adapted = support.adapted
        if self.channel_encoder is not None and adapted is not None and adapted.version == support.version:
            if self.adaptation is not None:
                self.adaptation.used(support)
            if adapted.support.negatives_version != support.negatives_version:  # negatives changed: re-embed
                version, negatives = support.negatives_version, support.negatives
                embedded = await self.channel_encoder.embed([n.question for n in negatives], adapted.tensors) \
                    if negatives else np.zeros((0, 0), np.float32)
                adapted.support.replace_negatives(
                    [dataclasses.replace(n, embedding=v) for n, v in zip(negatives, embedded, strict=True)], version)
            return adapted.support, await self.channel_encoder.embed(list(texts), adapted.tensors)
        return support, await self.encoder.embed(list(texts))

    async def check(self, support: SupportSet, text: str) -> tuple[list[Match], list[Check | None]]:
        """``match``, then the verifier's decision on the best candidates (aligned with the
        matches; ``None`` for matches it did not check: below the floor, beyond the top
        ``verify_answers``, or ranked below one that applies). Without a verifier every entry is ``None``.

        The metric's best candidate is checked first, alone: the first candidate that applies answers
        (``applying``), so when it does (a taught answer's paraphrase: a correction's effect) the
        others need no pass of the pair model, which costs in proportion to the pairs it reads.
        Otherwise the rest are checked together. A candidate the message asks again word for word
        needs no pass either (it applies as it was taught)."""
        space, vectors = await self._embed(support, [text])
        matches = space.match(vectors[0])
        checks: list[Check | None] = [None] * len(matches)
        if self.verifier is None or not matches:
            return matches, checks
        candidates = [i for i, m in enumerate(matches[: self.verify_answers]) if m.score >= self.floor]
        similarity = space.matrix @ vectors[0]                                      # (n,) to every phrasing
        items = list(space)
        for group in (candidates[:1], candidates[1:]):
            if group:
                checks_of = await self._verify(space, similarity, items, matches, text, group)
                for i, check in checks_of.items():
                    checks[i] = check
                if applying([matches[i] for i in group], [checks[i] for i in group]):
                    break
        return matches, checks

    async def _verify(self, space: SupportSet, similarity: np.ndarray, items: Sequence[StoredCorrection],
                      matches: Sequence[Match], text: str, candidates: Sequence[int]) -> dict[int, Check]:
        """The verifier's check of each of ``candidates`` (match indices), over its nearest taught phrasings
        (``similarity``: the message's to each of the set's ``items``, in its order)."""
        assert self.verifier is not None
        pairs: list[tuple[int, StoredCorrection]] = []                              # (match index, phrasing)
        differs: dict[int, tuple[str, ...]] = {}  # what it asks about that no phrasing of a candidate does (slots.py)
        taught_by: dict[int, list[str]] = {}
        for i in candidates:
            answer = matches[i].correction.answer
            members = space.members(answer)
            nearest = members[np.argsort(-similarity[members], kind="stable")][: self.verify_members]
            pairs += [(i, items[int(j)]) for j in nearest]
            taught = taught_by[i] = [items[int(j)].question for j in members]
            differs[i] = asks_about_other(text, taught, answer, slots=self.slot_check, swaps=self.swap_check)
        asked = " ".join(text.split()).casefold()
        same = [" ".join(c.question.split()).casefold() == asked for _, c in pairs]
        # A candidate asked again word for word scores 1 on that phrasing, which is then its best and
        # keeps it from any near-copy veto: its other phrasings cannot change its check, so none is scored.
        again = {i for (i, _), s in zip(pairs, same, strict=True) if s}
        scored = [k for k, (i, _) in enumerate(pairs) if i not in again]
        raw = np.zeros(len(pairs), dtype=np.float32)  # unscored: below the phrasing asked again
        if scored:
            raw[scored] = await self.verifier.probabilities([text] * len(scored),
                                                            [pairs[k][1].question for k in scored])
        artifact = self.verifier.artifact
        probs = [1.0 if s else float(p) for s, p in zip(same, raw, strict=True)]
        # Each answer's best phrasing speaks for it, unless the message is a near miss of one of them.
        best = self._near_copy_vetoes(text, pairs, probs, same, artifact.related_threshold)
        vetoed = set(best)
        for (i, phrasing), p in zip(pairs, probs, strict=True):
            if i not in vetoed and (i not in best or p > best[i][0]):
                best[i] = (float(p), phrasing)
        checks: dict[int, Check] = {}
        for i, (p, phrasing) in best.items():
            # An answer about other slot values or siblings counts as outside the radius: related at most.
            inside = self.within_radius(matches[i]) and not differs[i]
            verdict = artifact.verdict(p, inside)
            if verdict is Verdict.NONE and inside and i not in vetoed and self.pair_veto == "near_copies" \
                    and not any(near_copy(text, q) for q in taught_by[i]):
                verdict = Verdict.APPLIES  # not a near miss of a phrasing: the radius decides (learning.pair_veto)
            checks[i] = Check(p, verdict, phrasing, differs[i])
        return checks

    def _near_copy_vetoes(self, text: str, pairs: list[tuple[int, StoredCorrection]], probs: Sequence[float],
                          same: Sequence[bool], related: float) -> dict[int, tuple[float, StoredCorrection]]:
        """Answers (match index -> the rejecting phrasing and its probability) that ``text`` is a near
        miss of: a phrasing with a word or two changed that the pair model rejects, while no phrasing the
        message is as near a copy of (or the same as) accepts it. Another phrasing in other words may
        score high, but the best of several probabilities beats a calibration made per pair, and it
        cannot make the changed word not matter."""
        if not self.near_copy_veto:
            return {}
        rejected: dict[int, tuple[float, StoredCorrection]] = {}
        accepted: set[int] = set()
        for (i, phrasing), p, again in zip(pairs, probs, same, strict=True):
            if not (again or near_copy(text, phrasing.question)):
                continue
            if p >= related:
                accepted.add(i)
            elif i not in rejected:
                rejected[i] = (p, phrasing)
        return {i: v for i, v in rejected.items() if i not in accepted}

    def release(self, support: SupportSet) -> None:
        """The engine no longer holds ``support`` (evicted from its cache): drop its adaptation state."""
        if self.adaptation is not None:
            self.adaptation.release(support)

    async def settle(self) -> None:
        """Wait for pending per-channel adaptation jobs."""
        if self.adaptation is not None:
            await self.adaptation.settle()

    async def stop(self) -> None:
        if self.adaptation is not None:
            await self.adaptation.stop()
