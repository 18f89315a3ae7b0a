"""The file format of every trained artifact: fp16 safetensors, with a JSON header in its metadata.

The metric and the verifier both ship this way: the tensors, and under the metadata key
``heedful`` one JSON object that names the format (``"format": "heedful-<kind>/<n>"``) and
holds what is not a tensor (config, calibrated thresholds, the record of the run).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_artifact", "load_artifact"]


def save_artifact(path: str | Path, fmt: str, header: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    """Write ``tensors`` (as fp16) and ``header`` (with ``format`` = ``fmt``) to ``path``; returns it."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    half = {k: v.detach().to(torch.float16).contiguous() for k, v in tensors.items()}
    save_file(half, str(path), metadata={"heedful": json.dumps({"format": fmt, **header})})
    return path


def load_artifact(path: str | Path, fmt: str, what: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(header, tensors) of an artifact of format ``fmt``; ``ValueError`` naming ``what`` (``"metric"``)
    for a file without a heedful header or of another format."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get("heedful")
        if raw is None:
            raise ValueError(f"{path} is not a heedful {what} artifact")
        header: dict[str, Any] = json.loads(raw)
        if header.get("format") != fmt:
            raise ValueError(f"{path}: unsupported {what} format {header.get('format')!r}")
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    return header, tensors
