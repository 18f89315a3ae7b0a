"""LoRA versions in PEFT's on-disk format, which vLLM, TGI and ``peft`` itself load.

A directory with ``adapter_config.json`` and ``adapter_model.safetensors``; tensor names
as PEFT writes them (``base_model.model.<module path>.lora_A.weight``, shapes (r, in) and
(out, r), as ours), ``lora_alpha / r`` the same scaling as ``LoraConfig.scaling``, and
only the decoder layers that carry LoRA listed in ``layers_to_transform``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .lora import LoraConfig, LoraWeights

__all__ = ["save_peft", "peft_name"]

_PREFIX = "base_model.model."


def peft_name(key: str) -> str:
    """Our key (``model.layers.3.self_attn.q_proj.lora_A``) as PEFT names it."""
    module, _, which = key.rpartition(".")
    return f"{_PREFIX}{module}.{which}.weight"


def save_peft(weights: LoraWeights, config: LoraConfig, directory: str | Path, *, base_model: str) -> Path:
    """Write ``weights`` as a PEFT LoRA directory for ``base_model`` (its Hugging Face id or path)."""
    from safetensors.torch import save_file

    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    layers = sorted({int(k.split(".layers.", 1)[1].split(".", 1)[0]) for k in weights if ".layers." in k})
    adapter_config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": config.rank, "lora_alpha": config.alpha, "lora_dropout": 0.0, "bias": "none",
        "target_modules": sorted(config.targets), "layers_to_transform": layers or None,
        "fan_in_fan_out": False, "inference_mode": True, "modules_to_save": None, "use_rslora": False,
        "use_dora": False, "init_lora_weights": True,
    }
    (target / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n", encoding="utf-8")
    tensors = {peft_name(k): v.detach().to("cpu", torch.float32).contiguous() for k, v in weights.items()}
    save_file(tensors, str(target / "adapter_model.safetensors"), metadata={"format": "pt"})
    return target
