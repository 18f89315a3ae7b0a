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

from ..settings import EncoderSettings, LearningSettings
from ..store import StoredCorrection
from ..understanding.encoder import Encoder
from .adaptation import Adaptation, AdaptConfig
from .channel_encoder import ChannelEncoder
from .metric import MetricArtifact, MetricEncoder, resolve_artifact, shot_threshold
from .support_set import Match, SupportSet

__all__ = ["Matching"]

log = logging.getLogger(__name__)


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

    def answer_threshold_for(self, support: int) -> float:
        """The radius for an answer taught by ``support`` corrections (calibrated per size)."""
        return shot_threshold(self._answer_thresholds, support, self.answer_threshold)

    async def support_set(self, corrections: Sequence[StoredCorrection]) -> SupportSet:
        """A scope's support set; corrections embedded by another encoder (or metric) are re-embedded once."""
        stale = [i for i, c in enumerate(corrections) if c.encoder != self.encoder.name]
        fresh = list(corrections)
        if stale:
            vectors = await self.encoder.embed([corrections[i].question for i in stale])
            for row, i in enumerate(stale):
                fresh[i] = dataclasses.replace(corrections[i], embedding=vectors[row], encoder=self.encoder.name)
            log.info("re-embedded %d correction(s) for %s", len(stale), self.encoder.name)
        support = SupportSet(fresh)
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
        adapted = support.adapted
        if self.channel_encoder is not None and adapted is not None and adapted.version == support.version:
            if self.adaptation is not None:
                self.adaptation.used(support)
            vectors = await self.channel_encoder.embed(list(texts), adapted.tensors)
            return [adapted.support.match(v) for v in vectors]
        vectors = await self.encoder.embed(list(texts))
        return [support.match(v) for v in vectors]

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
