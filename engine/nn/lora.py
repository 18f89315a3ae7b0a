"""Low-rank adaptation (LoRA) on the LLM: one module serves training and mixed batches.

``inject_lora`` wraps the target ``nn.Linear`` layers of a model in ``LoraLinear``.
Each wrapper computes ``y = W x + s · B A x`` (``s = alpha / rank``), where ``A``
and ``B`` come from one of two places:

- **its own parameters** ``lora_A`` (rank, in) and ``lora_B`` (out, rank), zero by
  default so an injected model behaves exactly like the base model. Training never
  mutates them: it passes LoRA weights through ``torch.func.functional_call(model,
  weights, ...)``, which substitutes them for one call (see ``decoder_top.py``);
- **a per-row batch** set with ``use_rows``: each row's A (batch, rank, in) and B
  (batch, out, rank), gathered by ``gather_rows`` from stacked LoRA weights (n, rank, in) /
  (n, out, rank) and a row index (batch,), so one forward pass serves rows of
  different channels with different LoRA weights (Punica / S-LoRA style gather).
  Index 0 is the all-zero "no LoRA" slot. The gathered rows stay valid while the batch's
  rows do, so a decoder gathers once per batch composition, not once per step.

``LoraWeights`` (one channel's, or an initialisation) is a ``dict[str, Tensor]`` keyed like
the model's own parameters:
``"<module path>.lora_A"`` / ``"<module path>.lora_B"``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

__all__ = [
    "LoraConfig",
    "LoraLinear",
    "LoraWeights",
    "inject_lora",
    "lora_modules",
    "zero_weights",
    "random_weights",
    "stack_weights",
    "gather_rows",
    "RowWeights",
    "rows_delta",
    "use_rows",
    "weights_to_bytes",
    "weights_from_bytes",
    "weights_nbytes",
    "init_mismatch",
]

LoraWeights = dict[str, torch.Tensor]
RowWeights = dict[str, tuple[torch.Tensor, torch.Tensor]]
"""Per LoRA module: each row's A (batch, rank, in) and B (batch, out, rank) (see ``gather_rows``)."""


@dataclass(frozen=True)
class LoraConfig:
    """Which layers carry LoRA, and their size."""

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    top_layers: int = 4
    """Only the last ``top_layers`` decoder layers are adapted (0 = all layers).
    Keeping LoRA at the top lets training run the frozen layers below once."""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LoraConfig:
        data = json.loads(text)
        data["targets"] = tuple(data["targets"])
        return cls(**data)


class LoraLinear(nn.Module):
    """``nn.Linear`` plus a low-rank update; see the module docstring."""

    def __init__(self, base: nn.Linear, rank: int, scaling: float) -> None:
        super().__init__()
        self.base = base
        self.scaling = scaling
        weight = base.weight
        self.lora_A = nn.Parameter(torch.zeros(rank, base.in_features, dtype=weight.dtype, device=weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=weight.dtype, device=weight.device))
        self.rows: tuple[torch.Tensor, torch.Tensor] | None = None  # each row's (A, B), set by use_rows

    def row_delta(self, x: torch.Tensor) -> torch.Tensor | None:
        """The per-row update ``s · B A x`` (batch, time, out) while ``use_rows`` sets this layer's rows,
        else None. The model worker's direct forward adds it to its own product of the base weight."""
        if self.rows is None:
            return None
        return rows_delta(x, *self.rows, self.scaling)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (batch, time, in)
        y = self.base(x)
        delta = self.row_delta(x)
        if delta is not None:
            out: torch.Tensor = y + delta
            return out
        out = y + self.scaling * (x @ self.lora_A.T) @ self.lora_B.T
        return out


def inject_lora(model: nn.Module, config: LoraConfig) -> list[str]:
    """Wrap the target linears of ``model`` in place; returns their module paths.

    Base weights are frozen. Idempotent: already wrapped layers are left alone.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    layers = _decoder_layers(model)
    chosen = layers[-config.top_layers :] if config.top_layers else layers
    paths: list[str] = []
    for layer_path, layer in chosen:
        for name, module in list(layer.named_modules()):
            leaf = name.rsplit(".", 1)[-1]
            if leaf in config.targets and isinstance(module, nn.Linear):
                parent = layer.get_submodule(name.rsplit(".", 1)[0]) if "." in name else layer
                setattr(parent, leaf, LoraLinear(module, config.rank, config.scaling))
                paths.append(f"{layer_path}.{name}")
            elif leaf in config.targets and isinstance(module, LoraLinear):
                paths.append(f"{layer_path}.{name}")
    if not paths:
        raise ValueError(f"no target modules {config.targets} found in the top {config.top_layers} layers")
    return paths


def _decoder_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    for name, module in model.named_modules():
        if name.endswith("layers") and isinstance(module, nn.ModuleList):
            return [(f"{name}.{i}", layer) for i, layer in enumerate(module)]
    raise ValueError("cannot find the decoder layers (a ModuleList named '*layers')")


def init_mismatch(model: nn.Module, tensors: LoraWeights, config: LoraConfig) -> str | None:
    """Why ``tensors`` cannot start LoRA weights of ``model`` under ``config`` (None: it fits).

    ``tensors`` is an init artifact's content: ``lora_A`` / ``lora_B`` entries and, for
    Meta-SGD inits, ``inner_lr.<key>`` rates. Checks the keys and shapes ``inject_lora``
    would create (or already created) and the scaling; leaves the model unchanged.
    """
    try:
        layers = _decoder_layers(model)
    except ValueError as err:
        return str(err)
    chosen = layers[-config.top_layers :] if config.top_layers else layers
    expected: dict[str, tuple[int, ...]] = {}
    for layer_path, layer in chosen:
        for name, module in layer.named_modules():
            if name.rsplit(".", 1)[-1] not in config.targets:
                continue
            if isinstance(module, LoraLinear):
                if module.lora_A.shape[0] != config.rank or module.scaling != config.scaling:
                    return (f"{layer_path}.{name} already carries rank {module.lora_A.shape[0]} / scaling "
                            f"{module.scaling}, the init rank {config.rank} / scaling {config.scaling}")
                module = module.base
            if isinstance(module, nn.Linear):
                expected[f"{layer_path}.{name}.lora_A"] = (config.rank, module.in_features)
                expected[f"{layer_path}.{name}.lora_B"] = (module.out_features, config.rank)
    if not expected:
        return f"no target modules {config.targets} in the top {config.top_layers} layers"
    lora = {k: v for k, v in tensors.items() if not k.startswith("inner_lr.")}
    rates = {k.removeprefix("inner_lr."): v for k, v in tensors.items() if k.startswith("inner_lr.")}
    if set(lora) != set(expected):
        missing, extra = sorted(set(expected) - set(lora))[:2], sorted(set(lora) - set(expected))[:2]
        return f"its LoRA layers differ from this model's (missing {missing}, unexpected {extra})"
    for k, v in {**lora, **rates}.items():
        if k not in expected:
            return f"unexpected inner rate inner_lr.{k}"
        if tuple(v.shape) != expected[k]:
            return f"{k}: init has {tuple(v.shape)}, this model needs {expected[k]}"
    return None


def lora_modules(model: nn.Module) -> dict[str, LoraLinear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLinear)}


def zero_weights(model: nn.Module) -> LoraWeights:
    """LoRA weights that changes nothing (B = 0, A = 0)."""
    out: LoraWeights = {}
    for name, m in lora_modules(model).items():
        out[f"{name}.lora_A"] = torch.zeros_like(m.lora_A)
        out[f"{name}.lora_B"] = torch.zeros_like(m.lora_B)
    return out


def random_weights(model: nn.Module, generator: torch.Generator | None = None, std: float | None = None) -> LoraWeights:
    """The usual LoRA start: A ~ Kaiming-uniform-ish small noise, B = 0 (so the output is unchanged)."""
    out: LoraWeights = {}
    for name, m in lora_modules(model).items():
        scale = std if std is not None else 1.0 / math.sqrt(m.lora_A.shape[1])
        a = torch.randn(m.lora_A.shape, generator=generator, dtype=torch.float32) * scale
        out[f"{name}.lora_A"] = a.to(m.lora_A)
        out[f"{name}.lora_B"] = torch.zeros_like(m.lora_B)
    return out


def stack_weights(
    model: nn.Module, loras: Sequence[LoraWeights | None]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per module: (A stack, B stack) with slot 0 = no LoRA, slot i+1 = ``loras[i]``."""
    stacks: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, m in lora_modules(model).items():
        a = [torch.zeros_like(m.lora_A)] + [
            (ad[f"{name}.lora_A"].to(m.lora_A) if ad is not None else torch.zeros_like(m.lora_A)) for ad in loras
        ]
        b = [torch.zeros_like(m.lora_B)] + [
            (ad[f"{name}.lora_B"].to(m.lora_B) if ad is not None else torch.zeros_like(m.lora_B)) for ad in loras
        ]
        stacks[name] = (torch.stack(a), torch.stack(b))
    return stacks


def gather_rows(stacks: dict[str, tuple[torch.Tensor, torch.Tensor]], index: torch.Tensor) -> RowWeights:
    """Each row's LoRA weights: row ``r`` gets slot ``index[r]`` of ``stacks`` (``stack_weights``)."""
    return {name: (a[index], b[index]) for name, (a, b) in stacks.items()}


def rows_delta(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scaling: float) -> torch.Tensor:
    """``scaling · B A x`` with each row's own A (batch, rank, in) and B (batch, out, rank): (batch, time, out)."""
    low = torch.einsum("bti,bri->btr", x, a)
    delta: torch.Tensor = scaling * torch.einsum("btr,bor->bto", low, b)
    return delta


@contextmanager
def use_rows(model: nn.Module, rows: RowWeights) -> Iterator[None]:
    """Within the block, every forward pass gives row ``r`` its LoRA weights from ``rows``
    (``gather_rows``)."""
    modules = lora_modules(model)
    try:
        for name, m in modules.items():
            m.rows = rows[name]
        yield
    finally:
        for m in modules.values():
            m.rows = None


def weights_to_bytes(lora: LoraWeights, config: LoraConfig, metadata: dict[str, str] | None = None) -> bytes:
    """Serialise as safetensors (weights in float32), with the config in the metadata."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in lora.items()}
    return save(tensors, metadata={"lora_config": config.to_json(), **(metadata or {})})


def weights_from_bytes(data: bytes) -> tuple[LoraWeights, LoraConfig, dict[str, str]]:
    from safetensors.torch import load

    tensors = load(data)
    # The safetensors header: an 8-byte little-endian length, then JSON with __metadata__.
    header_len = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__", {})
    return tensors, LoraConfig.from_json(metadata["lora_config"]), metadata


def weights_nbytes(lora: LoraWeights) -> int:
    return sum(t.numel() * t.element_size() for t in lora.values())
