"""A stored LoRA version as a PEFT directory, in the standard library alone.

heedful stores a version as safetensors (``engine.nn.lora.weights_to_bytes``): float32 tensors
keyed like the model's parameters (``model.layers.29.self_attn.q_proj.lora_A``) and the
``LoraConfig`` as JSON under the metadata key ``lora_config``. PEFT's directory is
``adapter_config.json`` plus ``adapter_model.safetensors`` with the same tensors renamed
(``base_model.model.<module>.lora_A.weight``). The tensors' bytes are copied as they are, so
this needs no torch; the files are what ``engine.nn.peft_format.save_peft`` writes (a test
checks that both agree).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["read_safetensors", "safetensors_bytes", "peft_files", "write_peft"]

_PREFIX = "base_model.model."


def read_safetensors(blob: bytes) -> tuple[dict[str, dict[str, Any]], dict[str, str], memoryview]:
    """(tensor name -> {dtype, shape, data_offsets}, metadata, the data section) of a safetensors file."""
    if len(blob) < 8:
        raise ValueError("not a safetensors file: too short")
    size = int.from_bytes(blob[:8], "little")
    if size <= 0 or 8 + size > len(blob):
        raise ValueError("not a safetensors file: bad header length")
    header = json.loads(bytes(blob[8:8 + size]))
    if not isinstance(header, dict):
        raise ValueError("not a safetensors file: the header is not an object")
    metadata = header.pop("__metadata__", None) or {}
    return header, dict(metadata), memoryview(blob)[8 + size:]


def safetensors_bytes(tensors: dict[str, tuple[str, list[int], bytes]], metadata: dict[str, str]) -> bytes:
    """A safetensors file of ``name -> (dtype, shape, raw little-endian bytes)``, tensors in name order."""
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name in sorted(tensors):
        dtype, shape, data = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data section starts 8-byte aligned, as safetensors writes it
    return len(text).to_bytes(8, "little") + text + b"".join(tensors[name][2] for name in sorted(tensors))


def _peft_name(key: str) -> str:
    module, _, which = key.rpartition(".")
    return f"{_PREFIX}{module}.{which}.weight"


def peft_files(blob: bytes, *, base_model: str) -> tuple[dict[str, Any], bytes]:
    """(adapter_config.json's content, adapter_model.safetensors' bytes) of a stored LoRA version."""
    header, metadata, data = read_safetensors(blob)
    if "lora_config" not in metadata:
        raise ValueError("not a heedful LoRA version: no lora_config in its metadata")
    config = json.loads(metadata["lora_config"])
    tensors: dict[str, tuple[str, list[int], bytes]] = {}
    for key, info in header.items():
        start, end = info["data_offsets"]
        tensors[_peft_name(key)] = (info["dtype"], list(info["shape"]), bytes(data[start:end]))
    layers = sorted({int(k.split(".layers.", 1)[1].split(".", 1)[0]) for k in header if ".layers." in k})
    adapter_config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": config["rank"], "lora_alpha": config["alpha"], "lora_dropout": 0.0, "bias": "none",
        "target_modules": sorted(config["targets"]), "layers_to_transform": layers or None,
        "fan_in_fan_out": False, "inference_mode": True, "modules_to_save": None, "use_rslora": False,
        "use_dora": False, "init_lora_weights": True,
    }
    return adapter_config, safetensors_bytes(tensors, {"format": "pt"})


def write_peft(blob: bytes, directory: str | Path, *, base_model: str) -> Path:
    """Write a stored LoRA version as a PEFT directory at ``directory``, atomically: a reader
    (or a second writer) sees no directory or a whole one."""
    target = Path(directory)
    adapter_config, weights = peft_files(blob, base_model=base_model)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        (staging / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n", encoding="utf-8")
        (staging / "adapter_model.safetensors").write_bytes(weights)
        os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide it from a server running as another user
        try:
            staging.rename(target)
        except OSError:
            if not (target / "adapter_model.safetensors").is_file():
                raise  # not a concurrent writer that got there first
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
