"""The embedded sentence encoder without the sentence-transformers library.

Why: ``import sentence_transformers`` costs far more than the model it loads. Its ``util`` and
``backend`` packages import scikit-learn and SciPy (``sklearn.metrics``, ``scipy.stats``,
``scipy.sparse``: 0.8 s), accelerate and more. Measured with ``python -X importtime`` on the
development box (2 shared cores, sentence-transformers 6.3, transformers 5.25, median of 3):
torch + transformers' auto classes + sentence_transformers take 3.7 s, the same without
sentence_transformers (with the BERT modules instead) 2.7 s; loading all-MiniLM-L6-v2
itself then takes ~0.12 s. The engine paid that second on every start (issue 18: the first
answer of a fresh install within 5 s), yet it needs only a BERT forward pass, mean pooling
and an L2 normalisation.

``SentenceEncoder`` loads a sentence-transformers folder of the one layout it knows with
plain transformers (``AutoModel``, ``AutoTokenizer``, local files only)::

    modules.json   0: Transformer (the folder itself)  sentence_bert_config.json: max_seq_length
                   1: Pooling (mean, or cls)            1_Pooling/config.json
                   2: Normalize (optional)

and offers the part of the ``SentenceTransformer`` API that the engine uses at run time:
``model[0].auto_model``, ``model.tokenizer``, ``model.max_seq_length``,
``model.get_sentence_embedding_dimension()`` and ``model.encode(...)``, which tokenises,
batches (longest texts first, as sentence-transformers sorts them), pools and normalises
exactly as sentence-transformers does, so the vectors are the same float32 numbers
(tests/unit/test_sentence_encoder.py compares them).

Anything else (a hub id, another architecture, prompts, other pooling, extra modules or
options: ``layout`` returns None) is loaded by ``load_sentence_encoder`` with
``SentenceTransformer`` as before, so a configured other encoder behaves as it did.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Layout", "SentenceEncoder", "layout", "load_sentence_encoder", "import_libraries"]

# The module types sentence-transformers writes into modules.json (2.x-5.x names, then 6.x names).
_TRANSFORMER = {"sentence_transformers.models.Transformer", "sentence_transformers.base.modules.Transformer",
                "sentence_transformers.base.modules.transformer.Transformer"}
_POOLING = {"sentence_transformers.models.Pooling", "sentence_transformers.sentence_transformer.modules.Pooling",
            "sentence_transformers.sentence_transformer.modules.pooling.Pooling"}
_NORMALIZE = {"sentence_transformers.models.Normalize", "sentence_transformers.base.modules.Normalize",
              "sentence_transformers.base.modules.normalize.Normalize"}
_MODEL_TYPES = {"bert"}  # AutoModel gives the encoder itself; other families go to sentence-transformers
_POOLING_FLAGS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
                  "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                  "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}


@dataclass(frozen=True, slots=True)
class Layout:
    """What a supported sentence-transformers folder holds."""

    path: Path
    max_seq_length: int
    pooling: str       # "mean" or "cls"
    dimension: int     # the pooled (sentence) embedding's size
    normalize: bool    # a Normalize module ends the pipeline


def _json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _pooling_mode(config: dict[str, Any]) -> str | None:
    """The one pooling mode of a Pooling config (legacy ``pooling_mode_*`` flags or ``pooling_mode``)."""
    if "pooling_mode" in config:
        mode = config["pooling_mode"]
        modes = [mode] if isinstance(mode, str) else list(mode) if isinstance(mode, list) else []
    else:
        modes = [name for key, name in _POOLING_FLAGS.items() if config.get(key)]
    return modes[0] if len(modes) == 1 and modes[0] in ("mean", "cls") else None


def layout(source: str | Path) -> Layout | None:
    """The layout of the local folder ``source`` when ``SentenceEncoder`` can load it, else None."""
    path = Path(source)
    try:
        if not path.is_dir() or (path / "adapter_config.json").exists():
            return None
        modules = _json(path / "modules.json")
        if not isinstance(modules, list) or not 2 <= len(modules) <= 3:
            return None
        if any(not isinstance(m, dict) or set(m) - {"idx", "name", "path", "type"} for m in modules):
            return None  # e.g. per-module kwargs
        types = [m.get("type") for m in modules]
        if types[0] not in _TRANSFORMER or modules[0].get("path") != "" or types[1] not in _POOLING:
            return None
        if len(modules) == 3 and types[2] not in _NORMALIZE:
            return None
        bert = _json(path / "sentence_bert_config.json")
        if not isinstance(bert, dict) or set(bert) - {"max_seq_length", "do_lower_case"}:
            return None  # model, tokenizer or processing arguments of its own
        if bert.get("do_lower_case") or not isinstance(bert.get("max_seq_length"), int):
            return None
        config = _json(path / "config.json")
        if config.get("model_type") not in _MODEL_TYPES:
            return None
        if bert["max_seq_length"] > int(config.get("max_position_embeddings", 0)):
            return None
        st_config_file = path / "config_sentence_transformers.json"
        if st_config_file.exists():
            st_config = _json(st_config_file)
            if st_config.get("model_type", "SentenceTransformer") != "SentenceTransformer":
                return None
            if st_config.get("prompts") or st_config.get("default_prompt_name") or st_config.get("truncate_dim"):
                return None  # encode() would prepend a prompt or cut the vectors
        pooling = _json(path / str(modules[1].get("path", "")) / "config.json")
        mode = _pooling_mode(pooling)
        dimension = pooling.get("embedding_dimension", pooling.get("word_embedding_dimension"))
        if mode is None or dimension != config.get("hidden_size"):
            return None
        if set(pooling) - {"embedding_dimension", "word_embedding_dimension", "pooling_mode", "include_prompt",
                           *_POOLING_FLAGS}:
            return None
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    return Layout(path=path, max_seq_length=bert["max_seq_length"], pooling=mode, dimension=int(dimension),
                  normalize=len(modules) == 3)


def import_libraries() -> None:
    """Import what loading the embedded encoder needs (transformers' lazy imports are not thread-safe)."""
    from transformers import AutoModel, AutoTokenizer  # noqa: F401
    from transformers.models.bert import modeling_bert, tokenization_bert  # noqa: F401


class TransformerModule:
    """What ``model[0]`` is in sentence-transformers: the transformers model and its tokenizer."""

    def __init__(self, auto_model: Any, tokenizer: Any) -> None:
        self.auto_model = auto_model
        self.tokenizer = tokenizer

    @property
    def max_seq_length(self) -> int:
        return int(self.tokenizer.model_max_length)


class SentenceEncoder:
    """A sentence-transformers folder of the known layout (see ``layout``), run with plain transformers."""

    def __init__(self, source: str | Path | Layout, device: str = "cpu") -> None:
        from transformers import AutoModel, AutoTokenizer

        found = source if isinstance(source, Layout) else layout(source)
        if found is None:
            raise ValueError(f"{source}: not a sentence-transformers folder of the layout SentenceEncoder loads")
        self.layout = found
        # As sentence-transformers does: the tokenizer truncates at max_seq_length (its model_max_length).
        tokenizer = AutoTokenizer.from_pretrained(str(found.path), model_max_length=found.max_seq_length,
                                                  local_files_only=True)
        model = AutoModel.from_pretrained(str(found.path), local_files_only=True).to(device).eval()
        self._modules = [TransformerModule(model, tokenizer)]
        self.device = torch.device(device)

    def __getitem__(self, index: int) -> TransformerModule:
        return self._modules[index]  # only the Transformer module: pooling and normalising are code

    @property
    def tokenizer(self) -> Any:
        return self._modules[0].tokenizer

    @property
    def max_seq_length(self) -> int:
        return self._modules[0].max_seq_length

    def get_sentence_embedding_dimension(self) -> int:
        return self.layout.dimension

    get_embedding_dimension = get_sentence_embedding_dimension  # sentence-transformers 6's name

    @torch.inference_mode()
    def _embed(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), dim) sentence embeddings of one batch: the Transformer, Pooling and Normalize modules."""
        features = self.tokenizer(texts, padding=True, truncation="longest_first", return_tensors="pt")
        features = {key: value.to(self.device) for key, value in features.items()}
        tokens: torch.Tensor = self[0].auto_model(**features, return_dict=True).last_hidden_state  # (B, T, D)
        mask = features["attention_mask"]
        if self.layout.pooling == "cls":
            first = mask.to(torch.int).argmax(dim=1)                                                  # (B,)
            pooled = torch.gather(tokens, 1, first[:, None, None].expand(-1, 1, tokens.shape[-1])).squeeze(1)
        else:  # mean over the attention mask, summed in float32 (sentence-transformers' Pooling)
            accumulate = torch.float32 if tokens.dtype in (torch.float16, torch.bfloat16) else tokens.dtype
            weights = mask.unsqueeze(-1).to(tokens.dtype)
            total = (tokens * weights).sum(dim=1, dtype=accumulate)
            count = torch.clamp(weights.sum(dim=1, dtype=accumulate), min=1e-9)
            pooled = (total / count).to(tokens.dtype)                                                  # (B, D)
        return F.normalize(pooled, p=2, dim=-1) if self.layout.normalize else pooled

    def encode(self, texts: str | Sequence[str], batch_size: int = 32, normalize_embeddings: bool = False,
               convert_to_numpy: bool = True, convert_to_tensor: bool = False) -> Any:
        """Sentence embeddings as ``SentenceTransformer.encode`` gives them: a (len(texts), dim) float32
        array (one vector for one string), a tensor with ``convert_to_tensor``, else a list of tensors."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
        single = isinstance(texts, str)
        inputs = [texts] if isinstance(texts, str) else list(texts)
        if convert_to_tensor:
            convert_to_numpy = False
        # Longest first, with sentence-transformers' very sort: the same batches, padded alike.
        order = np.argsort([-len(text) for text in inputs])
        vectors: list[torch.Tensor] = []
        for start in range(0, len(inputs), batch_size):
            batch = self._embed([inputs[i] for i in order[start:start + batch_size]])
            if normalize_embeddings:
                batch = F.normalize(batch, p=2, dim=1)
            vectors.extend(batch.cpu() if convert_to_numpy else batch)
        ordered = [vectors[i] for i in np.argsort(order)]
        out: Any
        if convert_to_tensor:
            out = torch.stack(ordered) if ordered else torch.tensor([], device=self.device)
        elif convert_to_numpy:
            out = torch.stack(ordered).float().numpy() if ordered else np.array([], dtype=np.float32)
        else:
            out = ordered
        return out[0] if single else out


def load_sentence_encoder(source: str, device: str = "cpu") -> Any:
    """A ``SentenceEncoder`` for a folder of the known layout, else a ``SentenceTransformer``."""
    found = layout(source)
    if found is not None:
        return SentenceEncoder(found, device=device)
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(source, device=device)
