"""De-quantise a llama-architecture GGUF (the embedded SmolLM2) into a transformers checkpoint, fast.

transformers converts a llama GGUF through its general, older path: it parses the file's
metadata twice (once for the config, once for the tokenizer) with ``gguf``'s reader, which walks
the 49,152 tokens and merges one memory-mapped slice at a time, then de-quantises with numpy:
~17 s on two cores, all before a first answer. The file's own pieces are simple, so this reads
the metadata once with transformers' newer reader, de-quantises with its torch kernels, and
renames the tensors as ``LlamaForCausalLM`` names them: ~2 s. The result is the same checkpoint
(``tests/unit/test_gguf_convert.py`` compares every tensor, the config and the tokenizer with
transformers' own conversion). Anything but a llama GGUF of plain and block-quantised tensors
raises ``Unsupported``, and the caller falls back to transformers.

A fresh install serves from the model read into memory (``read_llama_gguf``) and writes the
checkpoint afterwards, off the path to the first answer (``model_loader.prepare_model``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["Unsupported", "GgufWeights", "convert_llama_gguf", "read_gguf_weights", "read_llama_gguf",
           "save_checkpoint"]


class Unsupported(ValueError):
    """The file is not one this converter handles (the caller uses transformers' own path)."""


_CONFIG = {  # llama.cpp's metadata key (after "llama.") -> LlamaConfig's field
    "context_length": "max_position_embeddings",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "embedding_length": "hidden_size",
    "rope.dimension_count": "head_dim",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "vocab_size": "vocab_size",
}

_TOKEN_IDS = {"bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id",
              "unknown_token_id": "unk_token_id", "padding_token_id": "pad_token_id"}

_NAMES = [  # llama.cpp's tensor name -> LlamaForCausalLM's
    (re.compile(r"^token_embd\.weight$"), "model.embed_tokens.weight"),
    (re.compile(r"^output_norm\.weight$"), "model.norm.weight"),
    (re.compile(r"^output\.weight$"), "lm_head.weight"),
    (re.compile(r"^blk\.(\d+)\.attn_norm\.weight$"), r"model.layers.\1.input_layernorm.weight"),
    (re.compile(r"^blk\.(\d+)\.ffn_norm\.weight$"), r"model.layers.\1.post_attention_layernorm.weight"),
    (re.compile(r"^blk\.(\d+)\.attn_q\.weight$"), r"model.layers.\1.self_attn.q_proj.weight"),
    (re.compile(r"^blk\.(\d+)\.attn_k\.weight$"), r"model.layers.\1.self_attn.k_proj.weight"),
    (re.compile(r"^blk\.(\d+)\.attn_v\.weight$"), r"model.layers.\1.self_attn.v_proj.weight"),
    (re.compile(r"^blk\.(\d+)\.attn_output\.weight$"), r"model.layers.\1.self_attn.o_proj.weight"),
    (re.compile(r"^blk\.(\d+)\.ffn_gate\.weight$"), r"model.layers.\1.mlp.gate_proj.weight"),
    (re.compile(r"^blk\.(\d+)\.ffn_up\.weight$"), r"model.layers.\1.mlp.up_proj.weight"),
    (re.compile(r"^blk\.(\d+)\.ffn_down\.weight$"), r"model.layers.\1.mlp.down_proj.weight"),
]


def _hf_name(name: str) -> str:
    for pattern, replacement in _NAMES:
        if pattern.match(name):
            return pattern.sub(replacement, name)
    raise Unsupported(f"unexpected tensor {name!r} in a llama GGUF")


def _unpermute(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Undo llama.cpp's interleaving of the rotary halves in q_proj / k_proj rows."""
    rows = weight.shape[0]
    return weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _config(metadata: dict[str, Any], tensor_names: tuple[str, ...]) -> Any:
    from transformers import LlamaConfig

    fields: dict[str, Any] = {target: metadata[f"llama.{key}"] for key, target in _CONFIG.items()
                              if f"llama.{key}" in metadata}
    fields.setdefault("vocab_size", int(metadata.get("tokenizer.ggml.tokens", 0)) or None)
    fields.update({target: metadata[f"tokenizer.ggml.{key}"] for key, target in _TOKEN_IDS.items()
                   if f"tokenizer.ggml.{key}" in metadata})
    fields["rope_parameters"] = {"rope_theta": float(metadata.get("llama.rope.freq_base", 10000.0)),
                                 "rope_type": "default"}
    fields["tie_word_embeddings"] = "output.weight" not in tensor_names
    return LlamaConfig(**{k: v for k, v in fields.items() if v is not None})


def _tokenizer(gguf: Path) -> Any:
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer, get_gguf_tokenizer

    architecture, tokenizer_dict, tokenizer_config = get_gguf_tokenizer(str(gguf))
    backend, extra = convert_gguf_tokenizer(architecture, tokenizer_dict)
    build: Any = PreTrainedTokenizerFast  # transformers' own types: untyped
    return build(tokenizer_object=backend, **tokenizer_config, **extra)


def _state_dict(gguf: Path, heads: int, kv_heads: int) -> dict[str, torch.Tensor]:
    from transformers.integrations.gguf.dequant import dequantize
    from transformers.integrations.gguf.reader import GgufHeader, load_gguf_state_dict

    header = GgufHeader.from_file(str(gguf))
    lazy = load_gguf_state_dict(header)
    tensors: dict[str, torch.Tensor] = {}
    for info in header.tensors:
        raw = lazy[info.name][...]
        if raw.dtype == torch.uint8:  # blocks of a quantised type
            weight = dequantize(raw.reshape(-1), info.ggml_type).reshape(info.shape)
        else:
            weight = raw.to(torch.float32).reshape(info.shape)
        name = _hf_name(info.name)
        if name.endswith("q_proj.weight"):
            weight = _unpermute(weight, heads)
        elif name.endswith("k_proj.weight"):
            weight = _unpermute(weight, kv_heads)
        tensors[name] = weight.contiguous()
    return tensors


@dataclass(frozen=True, slots=True)
class GgufWeights:
    """A llama GGUF's metadata and its tensors de-quantised and named as ``LlamaForCausalLM`` names them."""

    metadata: dict[str, Any]
    tensor_names: tuple[str, ...]
    state: dict[str, torch.Tensor]


def read_gguf_weights(gguf: Path) -> GgufWeights:
    """The de-quantised weights of the llama GGUF ``gguf`` (``Unsupported`` for a file this converter does
    not handle). It imports only transformers' GGUF reader, not its models, so it can run beside them."""
    from transformers.integrations.gguf.reader import read_gguf_metadata

    try:
        metadata, tensor_names = read_gguf_metadata(str(gguf))
    except Exception as err:  # a file this reader cannot parse: transformers' path may
        raise Unsupported(f"cannot read {gguf.name}: {err}") from err
    if metadata.get("general.architecture") != "llama":
        raise Unsupported(f"{gguf.name} is not a llama GGUF")
    heads = int(metadata.get("llama.attention.head_count", 0))
    kv_heads = int(metadata.get("llama.attention.head_count_kv", heads))
    if not heads:
        raise Unsupported(f"{gguf.name} does not say its attention heads")
    try:
        state = _state_dict(gguf, heads, kv_heads)
    except ValueError as err:  # a tensor type the kernels do not know
        raise Unsupported(str(err)) from err
    return GgufWeights(metadata, tuple(tensor_names), state)


def read_llama_gguf(gguf: Path, weights: GgufWeights | None = None) -> tuple[Any, Any]:
    """The llama GGUF ``gguf`` as a float32 ``LlamaForCausalLM`` and its tokenizer, in memory
    (``Unsupported`` for a file this converter does not handle); ``weights``: ``read_gguf_weights(gguf)``
    when it was read already."""
    from transformers import GenerationConfig, LlamaForCausalLM

    weights = weights or read_gguf_weights(gguf)
    config = _config(weights.metadata, weights.tensor_names)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model.load_state_dict(weights.state, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    missing = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if missing:
        raise Unsupported(f"{gguf.name} lacks {missing[:3]}")
    # Buffers computed from the config, not stored (rotary frequencies): built again, off the meta device.
    rotary = model.model.rotary_emb
    model.model.rotary_emb = type(rotary)(config=config)
    unbuilt = [n for n, b in model.named_buffers() if b.device.type == "meta"]
    if unbuilt:
        raise Unsupported(f"{gguf.name}: cannot build {unbuilt[:3]}")
    model.generation_config = GenerationConfig.from_model_config(config)
    return model, _tokenizer(gguf)


def save_checkpoint(model: Any, tokenizer: Any, target: Path, state: dict[str, torch.Tensor] | None = None) -> None:
    """``save_pretrained``'s files for ``model`` and ``tokenizer`` in the directory ``target``;
    ``state``: the weights to write (a ``state_dict()`` taken before the model was changed for serving)."""
    model.save_pretrained(target, state_dict=dict(state) if state is not None else None)  # it empties the dict
    tokenizer.save_pretrained(target)


def convert_llama_gguf(gguf: Path, target: Path) -> None:
    """Write the checkpoint of the llama GGUF ``gguf`` (float32) to the directory ``target``
    (``save_pretrained``'s files: config, generation config, weights, tokenizer, chat template)."""
    model, tokenizer = read_llama_gguf(gguf)
    save_checkpoint(model, tokenizer, target)
