"""The verification stage: does a retrieved correction apply to this message, relate to it, or neither?

The metric (``metric.py``) retrieves: it scores a message against every answer a channel
was taught, in one embedding pass. It cannot tell a paraphrase from a near miss that
differs in one meaningful word ("open on Saturdays?" / "open on Sunday?"), because a
sentence embedding puts them side by side. The verifier reads the message and a
candidate's taught question *together* (the pair model, ``engine/nn/pair_encoder.py``)
and gives the probability ``p`` that the taught answer applies. Three outcomes::

    applies   the metric's radius takes the message in, and p ≥ related_threshold
              → the reply is the taught answer                               (route "correction")
    related   p ≥ related_threshold, outside the radius → the correction goes into the
              prompt as context, with an instruction not to carry over details that differ
                                                                             (route "examples")
    none      p < related_threshold → it plays no part, however close the metric put it
              (a near miss). With ``learning.pair_veto = "near_copies"``, inside the radius
              only for a message that is a near copy of one of the answer's taught
              phrasings; the radius decides for the rest (matching.py).

So the verifier vetoes where it is sure a message asks something else; it does not widen
the radius. (Accepting outside the radius when ``p ≥ apply_threshold`` was measured and
left off: a message is checked against up to six taught phrasings, and the maximum of six
probabilities let in far more untaught in-domain questions than the per-pair calibration
promised — docs/BENCHMARKS.md. ``apply_threshold`` stays in the artifact and in ``/why`` as
the verifier's own calibrated point of certainty.)

Both thresholds were calibrated when the verifier was trained, on validation episodes
of the training data (never on evaluation data): the share of near misses, untaught
neighbouring questions and out-of-scope lines that stay below each. Only the few
candidates the metric retrieves are verified (the ``top_answers`` best answers above the
retrieval floor, each against its ``members_per_answer`` nearest taught phrasings): a
message costs one pair-model pass over a handful of short pairs, batched, in the
encoder's thread (never on the event loop).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..nn.artifact_file import load_artifact, save_artifact
from ..nn.digests import tensors_digest
from ..nn.packed_linear import packed
from ..nn.pair_encoder import PairConfig, PairModel, encode_pairs, load_bert
from ..understanding.encoder import Encoder, pack_for

__all__ = ["DEFAULT_VERIFIER", "Verdict", "VerifierArtifact", "Verifier", "resolve_verifier"]

DEFAULT_VERIFIER = Path(__file__).resolve().parent / "artifacts" / "verifier.safetensors"
"""The shipped verifier, trained on CLINC150 by ``heedful meta-train verifier`` (docs/LEARNING.md)."""

FORMAT = "heedful-verifier/1"


class Verdict(enum.StrEnum):
    """What the verifier decided about one candidate correction."""

    APPLIES = "applies"
    RELATED = "related"
    NONE = "none"


@dataclass
class VerifierArtifact:
    """A trained pair model: LoRA and head tensors, calibrated thresholds, the record of its run."""

    config: PairConfig
    tensors: dict[str, torch.Tensor]
    apply_threshold: float            # p ≥ this: the correction applies
    related_threshold: float          # p ≥ this: the correction is related context
    floor: float = 0.0                # metric score from which an answer is a candidate at all
    metric: str = ""                  # digest of the metric the floor was measured in ('' = plain encoder)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return tensors_digest(self.tensors)

    def verdict(self, p: float, within_radius: bool = False) -> Verdict:
        """Applies when the metric's radius takes the message in and the pair model does not
        object (``p ≥ related``); related when it does not object outside the radius; none when
        it objects (``p < related``: another question, however close)."""
        if p < self.related_threshold:
            return Verdict.NONE
        return Verdict.APPLIES if within_radius else Verdict.RELATED

    def save(self, path: str | Path) -> Path:
        header = {"config": asdict(self.config), "apply_threshold": self.apply_threshold,
                  "related_threshold": self.related_threshold, "floor": self.floor, "metric": self.metric,
                  "meta": self.meta}
        return save_artifact(path, FORMAT, header, self.tensors)

    @classmethod
    def load(cls, path: str | Path) -> VerifierArtifact:
        header, tensors = load_artifact(path, FORMAT, "verifier")
        return cls(config=PairConfig(**header["config"]), tensors=tensors,
                   apply_threshold=float(header["apply_threshold"]),
                   related_threshold=float(header["related_threshold"]),
                   floor=float(header.get("floor", 0.0)), metric=str(header.get("metric", "")),
                   meta=header.get("meta", {}))


def resolve_verifier(spec: str) -> Path | None:
    """``default`` -> the shipped artifact (None when a source checkout lacks it), ``none`` -> None, else a path."""
    if spec.strip().lower() in ("", "none", "off"):
        return None
    if spec == "default":
        return DEFAULT_VERIFIER if DEFAULT_VERIFIER.exists() else None
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"learning.verifier: no verifier artifact at {path}")
    return path


class Verifier:
    """The pair model, loaded with its LoRA merged, scoring (message, taught question) pairs.

    It runs in the encoder's thread (``Encoder.run``): one thread owns the understanding
    models, and the event loop only awaits.
    """

    def __init__(self, artifact: VerifierArtifact, runner: Encoder, batch: int = 32) -> None:
        self.artifact = artifact
        self.name = f"verifier:{artifact.digest}"
        self._runner, self._batch = runner, batch
        self._model: PairModel | None = None
        self._tokenizer: Any = None
        self.matmul_dtype = "float32"  # of the linear layers, once loaded

    def load(self) -> None:
        """Load and merge (blocking: call it in the encoder's thread, or from a script)."""
        bert, tokenizer = load_bert(self.artifact.config.encoder)
        model = PairModel(bert, self.artifact.config)
        model.load_tensors(self.artifact.tensors)
        model.merge()
        self.matmul_dtype = pack_for(model, self._runner.settings)  # used in the encoder's thread (Encoder.run)
        self._model, self._tokenizer = model.eval(), tokenizer

    async def start(self) -> None:
        await self._runner.run(self.load)

    def probabilities_blocking(self, messages: Sequence[str], questions: Sequence[str]) -> np.ndarray:
        """(n,) probability that each question's taught answer applies to its message."""
        if self._model is None:
            self.load()
        assert self._model is not None
        out = np.empty(len(messages), dtype=np.float32)
        with torch.inference_mode(), packed():  # bfloat16 layers where loaded so (pack_for), in any thread
            for i in range(0, len(messages), self._batch):
                batch = encode_pairs(self._tokenizer, messages[i:i + self._batch], questions[i:i + self._batch],
                                     self.artifact.config.max_tokens)
                out[i:i + self._batch] = torch.sigmoid(self._model(**batch)).numpy()
        return out

    async def probabilities(self, messages: Sequence[str], questions: Sequence[str]) -> np.ndarray:
        """``probabilities_blocking`` in the encoder's thread; safe to cancel."""
        if not messages:
            return np.zeros(0, dtype=np.float32)
        return await self._runner.run(self.probabilities_blocking, list(messages), list(questions))
