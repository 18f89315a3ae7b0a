"""Content digests: what names a data file, a cache entry or a trained set of tensors.

Artifacts record the digest of the data they were trained on, caches are keyed by the
digest of their inputs, and a metric's embedding space is named by its tensors' digest,
so a result can always say exactly what produced it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch

__all__ = ["file_digest", "text_digest", "tensors_digest"]


def file_digest(path: str | Path) -> str:
    """sha256 (hex) of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def text_digest(text: str) -> str:
    """sha256 (hex) of a text's UTF-8 bytes."""
    return hashlib.sha256(text.encode()).hexdigest()


def tensors_digest(tensors: Mapping[str, torch.Tensor], length: int = 12) -> str:
    """A short id of named tensors, independent of dict order (fp16 bytes, so a dtype round trip keeps it)."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].to(torch.float16).numpy().tobytes())
    return h.hexdigest()[:length]
